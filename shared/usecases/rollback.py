"""rollback: deploy again a release that was live in the environment, as a new deployment.

The caller's verified identity, the reason and the deployment rolled back are written in a
release request; the republished event only names it (see `shared.domain.release_request`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.redeploy import missing_digest_problem
from shared.domain.release_request import RequestKind
from shared.domain.rollback import TargetWithoutDigest, UnknownTarget, choose_rollback_target
from shared.usecases.release_requests import ReleaseUnavailable, release_event, submit_request
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
    to_version: str | None = None,
    reason: str | None = None,
) -> RollbackAccepted:
    """Record and publish the rollback; raises `RollbackRefused` subclasses (404, 409: also for a
    release recorded before artifact digests, which no instance would start)."""
    if services.config.environment(app, environment) is None:
        raise UnknownTarget(f"unknown app or environment {app}/{environment}")
    state = services.store.get_environment(app, environment)
    live_id = state.live_deployment_id if state else None
    live_version = state.live_version if state else None
    target = choose_rollback_target(
        services.store.live_history(app, environment), live_id, live_version, to_version
    )
    try:
        event = release_event(services, target.source)
    except ReleaseUnavailable as exc:  # permanent: nothing left to deploy that release from
        raise UnknownTarget(str(exc)) from exc
    # Refused here, not at admission: a 202 for a build that admission then rejects would tell
    # the caller a rollback is under way while nothing happens.
    problem = missing_digest_problem(target.version, event.commit, event.artifact_sha256)
    if problem is not None:
        raise TargetWithoutDigest(problem)
    deployment_id = submit_request(
        services,
        kind=RequestKind.ROLLBACK,
        event=event,
        environment=environment,
        version=target.version,
        requested_by=caller,
        source=target.source,
        reason=reason,
        rollback_of=live_id,
    )
    return RollbackAccepted(deployment_id=deployment_id, version=target.version, rollback_of=live_id)
