"""rollback: deploy again a release that was live in the environment, as a new deployment.

Only the environment's `rollback_callers` may ask. The caller's verified identity, the reason and the deployment rolled back are written in a
release request; the republished event only names it (see `shared.domain.release_request`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.identity import CallerCheck
from shared.domain.release_request import RequestKind
from shared.domain.rollback import (
    NotAllowedToRollBack,
    TargetWithoutDigest,
    UnknownTarget,
    choose_rollback_target,
)
from shared.usecases.release_requests import request_redeploy
from shared.usecases.services import Services


@dataclass(frozen=True)
class RollbackAccepted:
    deployment_id: str
    version: str
    rollback_of: str | None


def request_rollback(
    services: Services,
    *,
    app: str,
    environment: str,
    caller: str,
    caller_matches: CallerCheck,
    to_version: str | None = None,
    reason: str | None = None,
) -> RollbackAccepted:
    """Record and publish the rollback; raises `RollbackRefused` subclasses (403, 404, 409: also for
    a release recorded before artifact digests, which no instance would start)."""
    env = services.config.environment(app, environment)
    if env is None:
        raise UnknownTarget(f"unknown app or environment {app}/{environment}")
    if not caller_matches(env.rollback_callers):
        raise NotAllowedToRollBack(f"{caller} may not roll back {app}/{environment}")
    state = services.store.get_environment(app, environment)
    live_id = state.live_deployment_id if state else None
    live_version = state.live_version if state else None
    target = choose_rollback_target(
        services.store.live_history(app, environment), live_id, live_version, to_version
    )
    deployment_id = request_redeploy(
        services,
        kind=RequestKind.ROLLBACK,
        source=target.source,
        version=target.version,
        environment=environment,
        requested_by=caller,
        reason=reason,
        unavailable=UnknownTarget,
        without_digest=TargetWithoutDigest,
        rollback_of=live_id,
    )
    return RollbackAccepted(deployment_id=deployment_id, version=target.version, rollback_of=live_id)
