"""Which release a rollback deploys (CONTRACT §4).

Without `to_version` the target is the last release that was live in the environment before
the current one. With `to_version` it is that release, which must have been live in this
environment: a version that never ran here has never been proved here (promote it instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.domain.records import Deployment
from shared.domain.refusal import RequestRefused


class RollbackRefused(RequestRefused):
    """The rollback cannot be accepted; `http_status` is the CONTRACT §4 answer."""


class NotAllowedToRollBack(RollbackRefused):
    """403: the caller is not among the environment's `rollback_callers`."""

    http_status = 403


class UnknownTarget(RollbackRefused):
    """404: the app, environment or `to_version` is unknown."""

    http_status = 404


class NothingToRollBack(RollbackRefused):
    """409: nothing earlier to roll back to, or the target is already live."""

    http_status = 409


class TargetWithoutDigest(RollbackRefused):
    """409: the target release has no artifact digest (recorded before CONTRACT v2)."""

    http_status = 409


@dataclass(frozen=True)
class RollbackTarget:
    version: str
    source: Deployment
    """The deployment whose stored event is republished."""


def choose_rollback_target(
    live_history: Sequence[Deployment],
    live_deployment_id: str | None,
    live_version: str | None,
    to_version: str | None,
) -> RollbackTarget:
    """Pick the target from the environment's deployments that went live, newest first.

    `live_history` holds every deployment of the environment that went live (whatever its
    status now), ordered by when it went live, most recent first.
    """
    if to_version is not None:
        if to_version == live_version:
            raise NothingToRollBack(f"version {to_version} is already live")
        source = next((d for d in live_history if d.version == to_version), None)
        if source is None:
            raise UnknownTarget(f"version {to_version} was never live in this environment")
        return RollbackTarget(version=to_version, source=source)
    if live_deployment_id is None:
        raise NothingToRollBack("nothing is live in this environment")
    for deployment in live_history:
        if deployment.deployment_id == live_deployment_id or deployment.version == live_version:
            continue
        return RollbackTarget(version=deployment.version, source=deployment)
    raise NothingToRollBack("no earlier release was live in this environment")
