"""The emulator's registry: every resource by path, the lookups groups and load balancers make,
the operations, shutdown. What each resource accepts lives in the module named for it.

Every mutation validates synchronously (so bad input gets an immediate Google-shaped 4xx), records
the change, and returns an Operation whose work finishes it. Conflicts that Compute Engine reports
through the operation (deleting a resource still in use) fail the operation, not the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from ..backends import BackendService, close_all
from ..errors import invalid
from ..groups import ManagedInstanceGroup
from ..health import HealthChecker
from ..instances import close_guest_forkserver, kill_guest_forkserver_now
from ..monitoring import RequestCounts
from ..operations import Operation, OperationRegistry, Work

LOG = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_SECONDS = 20.0

# Output-only fields a caller may echo back from a get; Compute Engine ignores them on input.
OUTPUT_ONLY = ("kind", "id", "selfLink", "creationTimestamp", "selfLinkWithId")


def refuse(body: dict[str, Any], fields: tuple[str, ...], what: str) -> None:
    for field in fields:
        if field in body:
            raise invalid(f"Field '{field}' of {what} is not supported by the local Compute emulator.")


def int_in_range(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"Invalid value for field 'resource.{field}': '{value}'.") from exc
    if not low <= number <= high:
        raise invalid(f"Invalid value for field 'resource.{field}': '{number}'. Must be in [{low}, {high}].")
    return number


def default_zones(region: str) -> list[str]:
    """The zones a regional group spreads over when its distribution policy names none.

    >>> default_zones("europe-west1")
    ['europe-west1-a', 'europe-west1-b', 'europe-west1-c']
    """
    return [f"{region}-{suffix}" for suffix in ("a", "b", "c")]


class Registry:
    """Holds the resources; the per-resource classes add what may be done to them."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.health = HealthChecker()
        self.operations = OperationRegistry()
        self.templates: dict[str, dict[str, Any]] = {}
        self.health_checks: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, ManagedInstanceGroup] = {}
        self.services: dict[str, BackendService] = {}
        self.request_counts = RequestCounts()

    # -- what groups and backend services ask --------------------------------------------------

    def template_resource(self, path: str) -> dict[str, Any] | None:
        return self.templates.get(path)

    def health_check_resource(self, path: str) -> dict[str, Any] | None:
        return self.health_checks.get(path)

    def draining_timeout_for(self, group_path: str) -> float:
        timeouts = [s.draining_timeout for s in self.services.values() if s.serves(group_path)]
        return max(timeouts, default=0.0)

    def health_checks_serving(self, group_path: str) -> list[str]:
        return [hc for s in self.services.values() if s.serves(group_path) for hc in s.health_check_paths]

    def group(self, group_path: str) -> ManagedInstanceGroup | None:
        return self.groups.get(group_path.replace("/instanceGroups/", "/instanceGroupManagers/"))

    def _operation(
        self,
        project: str,
        scope: str,
        operation_type: str,
        target_path: str,
        target_id: str,
        work: Work,
        request_id: str | None,
    ) -> Operation:
        return self.operations.start(project, scope, operation_type, target_path, target_id, work, request_id)

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every instance's process tree, then close the load balancers."""
        groups = list(self.groups.values())
        try:
            await asyncio.wait_for(
                asyncio.gather(*(g.delete() for g in groups), return_exceptions=True),
                _SHUTDOWN_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            LOG.error("instances did not stop within %ss; killing them", _SHUTDOWN_TIMEOUT_SECONDS)
        for group in groups:
            group.kill_now()
        await close_guest_forkserver()
        await close_all(list(self.services.values()))
        with contextlib.suppress(Exception):
            await self.health.close()

    def kill_everything_now(self) -> None:
        for group in self.groups.values():
            group.kill_now()
        kill_guest_forkserver_now()
