"""Retained groups: a retired release's group kept running, detached, after a switch.

While it is retained, a rollback to that release adopts the group instead of building a new
one, so the rollback is a traffic switch. The rules here decide which group may be adopted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from shared.domain.records import Deployment
from shared.domain.status import DeploymentStatus

ADOPTION_MARGIN = timedelta(seconds=10)
"""A group whose clean-up is due sooner than this is left to the watchdog: its sweep may have
read the record already and be about to delete the group, so adopting it could race."""


def cleanup_due(
    switched_at: datetime, draining_timeout_seconds: int, retain_previous_seconds: int
) -> datetime:
    """When a group retired at `switched_at` may be deleted: after draining, and after retention.

    >>> from datetime import timezone
    >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> cleanup_due(at, 60, 3600) - at
    datetime.timedelta(seconds=3600)
    >>> cleanup_due(at, 60, 0) - at
    datetime.timedelta(seconds=60)
    """
    return switched_at + timedelta(seconds=max(draining_timeout_seconds, retain_previous_seconds))


def is_adoptable(
    candidate: Deployment, by: Deployment, now: datetime, margin: timedelta = ADOPTION_MARGIN
) -> bool:
    """Whether `by` (a deployment of the same release) may take over `candidate`'s retained group."""
    return (
        candidate.deployment_id != by.deployment_id
        and candidate.app == by.app
        and candidate.environment == by.environment
        and candidate.version == by.version
        and candidate.artifact == by.artifact
        and candidate.status is DeploymentStatus.RETIRED
        and candidate.instance_group is not None
        and candidate.instance_template is not None
        and candidate.resources_deleted_at is None
        and candidate.adopted_by is None
        and candidate.cleanup_due_at is not None
        and candidate.cleanup_due_at > now + margin
    )


def retained_deployment_for(
    deployment: Deployment,
    live_history: Iterable[Deployment],
    now: datetime,
    margin: timedelta = ADOPTION_MARGIN,
) -> Deployment | None:
    """The most recent retired deployment of the same release whose group may be adopted, if any."""
    return next((d for d in live_history if is_adoptable(d, deployment, now, margin)), None)
