"""Follow one deployment until it ends: print each status change as it happens, with elapsed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore

from releasectl.records import history_json, read_deployment
from shared.domain.records import Deployment

POLL_SECONDS = 0.5
STILL_SECONDS = 10.0
"""A status unchanged this long gets a `still …` line, so a long cool-down does not look stuck."""
SUCCEEDED = ("live", "retired")
"""`retired` was live and has since been replaced: the deployment itself succeeded."""
UNSUCCESSFUL = ("failed", "cancelled", "rolled_back")
"""`rolled_back` went live, failed its bake window and lost its traffic again: it did not succeed."""


@dataclass
class WatchOutcome:
    deployment_id: str
    status: str | None
    succeeded: bool
    timed_out: bool
    elapsed_seconds: float
    deployment: Deployment | None = None
    """The record as last read; None if it never appeared."""

    def as_json(self) -> dict[str, Any]:
        d = self.deployment
        return {
            "deployment_id": self.deployment_id,
            "app": d.app if d else None,
            "environment": d.environment if d else None,
            "version": d.version if d else None,
            "status": self.status,
            "succeeded": self.succeeded,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "history": history_json(d) if d else [],
        }


def _offset(at: datetime, origin: datetime) -> str:
    return f"+{(at - origin).total_seconds():6.1f} s"


def watch_deployment(
    client: firestore.Client,
    deployment_id: str,
    timeout_seconds: float,
    say: Callable[[str], None],
    *,
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    still_seconds: float = STILL_SECONDS,
) -> WatchOutcome:
    """Poll the deployment record until it ends or `timeout_seconds` pass (the record may not exist
    yet: a rollback's 202 names the deployment its event is about to create)."""
    started = clock()
    printed = 0
    last_status: str | None = None
    waiting_said = False
    last_said = started
    deployment: Deployment | None = None
    while True:
        found = read_deployment(client, deployment_id)
        if found is None:
            if not waiting_said:
                say(f"waiting for {deployment_id} to be recorded…")
                waiting_said = True
        else:
            deployment = found
            if printed == 0 and last_status is None:
                say(
                    f"{deployment_id}: {deployment.app} {deployment.version or '(version pending)'}"
                    f" on {deployment.environment}"
                )
            origin = deployment.created_at
            for entry in deployment.history[printed:]:
                detail = f"  {entry.detail}" if entry.detail else ""
                say(f"  {_offset(entry.at, origin)}  {entry.status!s:<13}{detail}")
                last_status = str(entry.status)
                last_said = clock()
            printed = len(deployment.history)
            status = str(deployment.status)
            if status != last_status:
                say(f"  {'':8}  {status}")
                last_status = status
                last_said = clock()
            elif clock() - last_said >= still_seconds and status not in (*SUCCEEDED, *UNSUCCESSFUL):
                say(f"  {_offset(datetime.now(UTC), origin)}  still {status}")
                last_said = clock()
            if status in SUCCEEDED or status in UNSUCCESSFUL:
                return WatchOutcome(
                    deployment_id,
                    status,
                    succeeded=status in SUCCEEDED,
                    timed_out=False,
                    elapsed_seconds=clock() - started,
                    deployment=deployment,
                )
        remaining = timeout_seconds - (clock() - started)
        if remaining <= 0:
            return WatchOutcome(
                deployment_id,
                str(deployment.status) if deployment else None,
                succeeded=False,
                timed_out=True,
                elapsed_seconds=clock() - started,
                deployment=deployment,
            )
        sleep(min(poll_seconds, remaining))
