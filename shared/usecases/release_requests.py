"""What rollback and promotion share: deploying a recorded release again, through a request.

A request is recorded first and then published: the record is the proof admission checks, so
it must exist before anyone can see the message. If publishing fails the record stays unused
(it proves a request that never ran, which is harmless) and the caller may simply retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from shared import topology
from shared.domain.build_event import AUTHORITY_FIELDS, BuildSucceeded, InvalidBuildEvent, parse_build_payload
from shared.domain.identifiers import deployment_id_for
from shared.domain.records import Deployment
from shared.domain.redeploy import missing_digest_problem
from shared.domain.release_request import ReleaseRequest, RequestKind, build_id_for
from shared.logging import bind, get_logger
from shared.usecases.services import Services

log = get_logger("release_requests")


class ReleaseUnavailable(Exception):
    """Neither the source deployment's event nor the release record can be used (404)."""


Refusal = Callable[[str], Exception]
"""Builds the calling use case's own refusal (e.g. `UnknownTarget`) from the reason."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_redeploy(
    services: Services,
    *,
    kind: RequestKind,
    source: Deployment,
    version: str,
    environment: str,
    requested_by: str,
    reason: str | None,
    unavailable: Refusal,
    without_digest: Refusal,
    rollback_of: str | None = None,
    promoted_from: str | None = None,
) -> str:
    """Deploy `source`'s release (`version`) to `environment` again: record the request, then
    publish its event; returns the deployment id it makes.

    Refused in the caller's own terms: `unavailable` (404) when neither the source's stored event
    nor the release record can be used, `without_digest` (409) when the release was recorded
    before artifact digests. Refused here, not at admission: a 202 for a build that admission
    then rejects would tell the caller a rollback or promotion is under way while nothing happens.
    """
    try:
        event = _release_event(services, source)
    except ReleaseUnavailable as exc:  # permanent: nothing left to deploy that release from
        raise unavailable(str(exc)) from exc
    problem = missing_digest_problem(version, event.commit, event.artifact_sha256)
    if problem is not None:
        raise without_digest(problem)
    return _submit_request(
        services,
        kind=kind,
        event=event,
        environment=environment,
        version=version,
        requested_by=requested_by,
        source=source,
        reason=reason,
        rollback_of=rollback_of,
        promoted_from=promoted_from,
    )


def _release_event(services: Services, source: Deployment) -> BuildSucceeded:
    """The build event of `source`'s release, as CI published it (authority fields dropped)."""
    try:
        return parse_build_payload(_without_authority(source.event))
    except InvalidBuildEvent as exc:  # permanent for this record; fall back to the release record
        log.warning(
            "stored event of %s is unusable (%s); using the release record", source.deployment_id, exc
        )
    release = services.store.get_release(source.app, source.version)
    if release is None:
        raise ReleaseUnavailable(f"version {source.version} has no release record")
    return BuildSucceeded(
        app=source.app,
        environment=source.environment,
        commit=release.commit,
        build_id="pending",
        artifact=release.artifact,
        artifact_sha256=release.artifact_sha256,
        commit_messages=release.commit_messages,
    )


def _without_authority(payload: Mapping[str, Any]) -> dict[str, Any]:
    # Records written before release requests existed kept rollback_of and reason in the event.
    return {key: value for key, value in payload.items() if key not in AUTHORITY_FIELDS}


def _submit_request(
    services: Services,
    *,
    kind: RequestKind,
    event: BuildSucceeded,
    environment: str,
    version: str,
    requested_by: str,
    source: Deployment,
    reason: str | None,
    rollback_of: str | None = None,
    promoted_from: str | None = None,
) -> str:
    """Record the request, then publish its event; returns the deployment id it makes."""
    request_id = new_request_id()
    build_id = build_id_for(kind, request_id)
    republished = event.as_requested(environment=environment, build_id=build_id, request_id=request_id)
    request = ReleaseRequest(
        request_id=request_id,
        kind=kind,
        app=republished.app,
        environment=environment,
        build_id=build_id,
        version=version,
        commit=republished.commit,
        artifact=republished.artifact,
        artifact_sha256=republished.artifact_sha256,
        requested_by=requested_by,
        created_at=services.clock.now(),
        reason=reason,
        rollback_of=rollback_of,
        promoted_from=promoted_from,
        source_deployment_id=source.deployment_id,
    )
    deployment_id = deployment_id_for(republished.app, environment, build_id)
    bind(deployment_id=deployment_id)
    services.store.create_release_request(request)
    data, attributes = republished.to_message()
    services.publisher.publish(topology.BUILD_SUCCEEDED, data, attributes)
    log.info(
        "%s of %s requested by %s",
        kind,
        version,
        requested_by,
        extra={
            "fields": {"request_id": request_id, "rollback_of": rollback_of, "promoted_from": promoted_from}
        },
    )
    return deployment_id
