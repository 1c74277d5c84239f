"""rollback: republish an earlier release's build-succeeded event as a new deployment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from shared import topology
from shared.domain.build_event import BuildSucceeded, InvalidBuildEvent, parse_build_payload
from shared.domain.identifiers import deployment_id_for
from shared.domain.records import Deployment
from shared.domain.redeploy import missing_digest_problem
from shared.domain.rollback import TargetWithoutDigest, UnknownTarget, choose_rollback_target
from shared.logging import bind, get_logger
from shared.usecases.services import Services

log = get_logger("rollback")


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
    """Publish the target release's event; raises `RollbackRefused` subclasses (404, 409: also
    for a release recorded before artifact digests, which no instance would start)."""
    if services.config.environment(app, environment) is None:
        raise UnknownTarget(f"unknown app or environment {app}/{environment}")
    state = services.store.get_environment(app, environment)
    live_id = state.live_deployment_id if state else None
    live_version = state.live_version if state else None
    target = choose_rollback_target(
        services.store.live_history(app, environment),
        live_id,
        live_version,
        to_version,
        services.store.released_versions(app),
    )
    source_event = _source_event(services, app, environment, target.version, target.source)
    # Refused here, not at admission: a 202 for a build that admission then rejects would tell
    # the caller a rollback is under way while nothing happens.
    problem = missing_digest_problem(target.version, source_event.commit, source_event.artifact_sha256)
    if problem is not None:
        raise TargetWithoutDigest(problem)
    build_id = f"rollback-{uuid.uuid4().hex}"
    event = source_event.as_rollback(
        build_id=build_id, rollback_of=live_id or "", triggered_by=caller, reason=reason
    )
    if live_id is None:
        event = replace(event, rollback_of=None)
    deployment_id = deployment_id_for(app, environment, build_id)
    bind(deployment_id=deployment_id)
    data, attributes = event.to_message()
    services.publisher.publish(topology.BUILD_SUCCEEDED, data, attributes)
    log.info(
        "rollback to %s requested by %s",
        target.version,
        caller,
        extra={"fields": {"rollback_of": live_id, "reason": reason}},
    )
    return RollbackAccepted(deployment_id=deployment_id, version=target.version, rollback_of=live_id)


def _source_event(
    services: Services, app: str, environment: str, version: str, source: Deployment | None
) -> BuildSucceeded:
    if source is not None:
        try:
            return replace(parse_build_payload(source.event), environment=environment)
        except InvalidBuildEvent as exc:  # permanent for this record; fall back to the release record
            log.warning(
                "stored event of %s is unusable (%s); using the release record", source.deployment_id, exc
            )
    release = services.store.get_release(app, version)
    if release is None:
        raise UnknownTarget(f"version {version} was never released")
    return BuildSucceeded(
        app=app,
        environment=environment,
        commit=release.commit,
        build_id="pending",
        artifact=release.artifact,
        artifact_sha256=release.artifact_sha256,
        commit_messages=release.commit_messages,
    )
