"""Long-running operations: PENDING -> RUNNING -> DONE, with `error` when the work fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .clock import new_id, rfc3339_now
from .errors import ApiError, internal

LOG = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class Operation:
    def __init__(
        self, project: str, scope: str, operation_type: str, target_path: str, target_id: str
    ) -> None:
        self.project = project
        self.scope = scope  # "global", "zones/<zone>" or "regions/<region>"
        self.id = new_id()
        self.name = f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}"
        self.operation_type = operation_type
        self.target_path = target_path
        self.target_id = target_id
        self.status = "PENDING"
        self.progress = 0
        self.insert_time = rfc3339_now()
        self.start_time: str | None = None
        self.end_time: str | None = None
        self.error: ApiError | None = None
        self.done = asyncio.Event()

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope}/operations/{self.name}"

    def to_json(self, base_url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "operationType": self.operation_type,
            "targetLink": base_url + self.target_path,
            "targetId": self.target_id,
            "status": self.status,
            "user": "emulator@localhost",
            "progress": self.progress,
            "insertTime": self.insert_time,
            "creationTimestamp": self.insert_time,
            "selfLink": base_url + self.path,
        }
        if self.start_time:
            body["startTime"] = self.start_time
        if self.end_time:
            body["endTime"] = self.end_time
        if self.scope.startswith("zones/"):
            body["zone"] = base_url + f"projects/{self.project}/{self.scope}"
        elif self.scope.startswith("regions/"):
            body["region"] = base_url + f"projects/{self.project}/{self.scope}"
        if self.error is not None:
            # The client raises from httpErrorStatusCode/httpErrorMessage once the operation is DONE.
            body["error"] = {"errors": [{"code": self.error.operation_code(), "message": self.error.message}]}
            body["httpErrorStatusCode"] = self.error.code
            body["httpErrorMessage"] = _http_reason(self.error.code)
        return body


def _http_reason(code: int) -> str:
    return {
        400: "BAD REQUEST",
        404: "NOT FOUND",
        409: "CONFLICT",
        412: "PRECONDITION FAILED",
        500: "INTERNAL SERVER ERROR",
    }.get(code, "ERROR")


class OperationRegistry:
    def __init__(self) -> None:
        self._operations: dict[str, Operation] = {}
        self._by_request_id: dict[tuple[str, str], Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        project: str,
        scope: str,
        operation_type: str,
        target_path: str,
        target_id: str,
        work: Work,
        request_id: str | None = None,
    ) -> Operation:
        operation = Operation(project, scope, operation_type, target_path, target_id)
        self._operations[operation.path] = operation
        if request_id:
            self._by_request_id[(project, request_id)] = operation
        task = asyncio.create_task(self._run(operation, work), name=f"operation {operation.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return operation

    def replay(self, project: str, request_id: str | None) -> Operation | None:
        """The operation an earlier call with the same requestId started (retries are idempotent)."""
        if not request_id:
            return None
        return self._by_request_id.get((project, request_id))

    async def _run(self, operation: Operation, work: Work) -> None:
        operation.status = "RUNNING"
        operation.start_time = rfc3339_now()
        try:
            await work()
        except ApiError as exc:
            operation.error = exc
        except Exception:
            LOG.exception("operation %s (%s) failed", operation.name, operation.operation_type)
            operation.error = internal()
        operation.progress = 100
        operation.status = "DONE"
        operation.end_time = rfc3339_now()
        operation.done.set()

    def get(self, path: str) -> Operation | None:
        return self._operations.get(path)

    def in_scope(self, project: str, scope: str) -> list[Operation]:
        return [op for op in self._operations.values() if op.project == project and op.scope == scope]

    def all_in_project(self, project: str) -> list[Operation]:
        return [op for op in self._operations.values() if op.project == project]

    async def wait(self, operation: Operation, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(operation.done.wait(), timeout)
