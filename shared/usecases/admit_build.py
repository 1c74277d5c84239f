"""on_build_succeeded: validate, version, record, take the environment lock or queue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from shared import topology
from shared.domain.artifact_origin import artifact_origin_problem
from shared.domain.build_event import BuildSucceeded, InvalidBuildEvent, parse_build_succeeded
from shared.domain.identifiers import deployment_id_for
from shared.domain.messages import stored_payload
from shared.domain.queue import admit
from shared.domain.records import Deployment, EnvironmentState, Release
from shared.domain.status import DeploymentStatus
from shared.domain.versioning import next_version
from shared.domain.windows import may_start_now
from shared.logging import bind, get_logger
from shared.notify_message import NotifyRequest
from shared.ports import RejectedEvent, Transaction, TransientError
from shared.usecases.lifecycle import held_for_window
from shared.usecases.services import Services, UnknownEnvironment, notify_status, publish_notify, publish_step

log = get_logger("admit_build")


class Outcome(StrEnum):
    REJECTED = "rejected"
    STARTED = "started"
    QUEUED = "queued"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class AdmitResult:
    outcome: Outcome
    deployment_id: str | None = None
    version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Admitted:
    deployment: Deployment
    created: bool
    cancelled: tuple[Deployment, ...] = ()


@dataclass(frozen=True)
class _Refused:
    """The build contradicts what is recorded (e.g. another digest for a released commit)."""

    reason: str


def admit_build(services: Services, data: bytes, attributes: Mapping[str, str], event_id: str) -> AdmitResult:
    """Handle one build-succeeded message. Bad input is recorded and announced, never raised."""
    try:
        event = parse_build_succeeded(data, attributes)
        services.environment_config(event.app, event.environment)
    except InvalidBuildEvent as exc:  # permanent: the message itself is bad
        return reject_build_event(services, data, attributes, event_id, exc.reason)
    except UnknownEnvironment as exc:  # permanent: the pipeline file does not declare it
        return reject_build_event(services, data, attributes, event_id, str(exc))
    origin_problem = artifact_origin_problem(
        event.artifact, services.config.apps[event.app].artifact_prefixes
    )
    if origin_problem is not None:
        return reject_build_event(services, data, attributes, event_id, origin_problem)

    deployment_id = deployment_id_for(event.app, event.environment, event.build_id)
    bind(deployment_id=deployment_id)
    admitted = services.store.atomically(lambda tx: _admit(services, tx, event, deployment_id))
    if isinstance(admitted, _Refused):
        return reject_build_event(services, data, attributes, event_id, admitted.reason)
    deployment = admitted.deployment

    for cancelled in admitted.cancelled:
        notify_status(services, cancelled)
    if deployment.status is DeploymentStatus.PROVISIONING:
        # Also on a duplicate: if the first delivery committed but crashed before publishing,
        # this is what resumes it. The next step is idempotent, so a spare message is harmless.
        publish_step(services, topology.START_ROLLING_REPLACE, deployment)
    if not admitted.created:
        log.info(
            "duplicate build event; deployment already recorded",
            extra={"fields": {"status": str(deployment.status)}},
        )
        return AdmitResult(Outcome.DUPLICATE, deployment_id, deployment.version)
    outcome = Outcome.STARTED if deployment.status is DeploymentStatus.PROVISIONING else Outcome.QUEUED
    log.info("deployment %s as version %s", outcome, deployment.version)
    return AdmitResult(outcome, deployment_id, deployment.version)


def _admit(
    services: Services, tx: Transaction, event: BuildSucceeded, deployment_id: str
) -> _Admitted | _Refused:
    existing = tx.deployment(deployment_id)
    if existing is not None:
        return _Admitted(existing, created=False)
    now = services.clock.now()
    state = tx.environment(event.app, event.environment) or EnvironmentState(event.app, event.environment)
    release = tx.release_for_commit(event.app, event.commit)
    # A commit's release is one set of bytes: the first build fixes its digest, and a later build
    # (a redeploy, a rollback) must bring the same one. A release recorded before digests existed
    # has none: the first build that brings one fixes it from then on.
    artifact_sha256 = event.artifact_sha256
    pinned_release: Release | None = None
    if release is not None and release.artifact_sha256:
        if release.artifact_sha256 != event.artifact_sha256:
            return _Refused(
                f"artifact_sha256: commit {event.commit} was released as {release.version} with digest "
                f"{release.artifact_sha256}; this build brings {event.artifact_sha256}, a different artifact"
            )
        artifact_sha256 = release.artifact_sha256
    elif release is not None:
        pinned_release = replace(release, artifact_sha256=event.artifact_sha256)
    new_release: Release | None = None
    if release is None:
        first_version = services.config.apps[event.app].first_version
        highest = tx.highest_version(event.app)
        version = next_version([highest] if highest else [], first_version, event.commit_messages, event.bump)
        # Reading the new release's document puts it in this transaction's read set, so two
        # builds racing for the same version conflict and one of them re-runs with a fresh view.
        clash = tx.release(event.app, version)
        if clash is not None:
            raise TransientError(f"version {version} was taken by commit {clash.commit} concurrently")
        new_release = Release(
            app=event.app,
            version=version,
            commit=event.commit,
            artifact=event.artifact,
            commit_messages=event.commit_messages,
            created_at=now,
            artifact_sha256=event.artifact_sha256,
        )
    else:
        version = release.version

    # Deploy windows decide whether a build that finds the environment free may take it now;
    # outside them it waits, queued, for the watchdog to start it when the window opens.
    policy = services.environment_config(event.app, event.environment).deploy_policy
    may_start = may_start_now(policy, now, rollback=event.rollback_of is not None)
    admission = admit(state.active_deployment_id, state.queue, deployment_id, may_start=may_start)
    cancelled: list[Deployment] = []
    for superseded_id in admission.cancelled:
        superseded = tx.deployment(superseded_id)
        if superseded is not None and superseded.status is DeploymentStatus.QUEUED:
            cancelled.append(
                superseded.advance(
                    DeploymentStatus.CANCELLED, now, f"superseded by {deployment_id} ({version})"
                )
            )

    detail = f"rollback of {event.rollback_of}" if event.rollback_of else f"build {event.build_id}"
    deployment = Deployment.queued(
        deployment_id=deployment_id,
        app=event.app,
        environment=event.environment,
        version=version,
        commit=event.commit,
        build_id=event.build_id,
        artifact=event.artifact,
        event=event.to_payload(),
        at=now,
        rollback_of=event.rollback_of,
        triggered_by=event.triggered_by,
        reason=event.reason,
        build_url=event.build_url,
        branch=event.branch,
        commit_messages=event.commit_messages,
        detail=detail,
        artifact_sha256=artifact_sha256,
        committed_at=event.committed_at,
    )
    if admission.takes_lock:
        deployment = deployment.advance(DeploymentStatus.PROVISIONING, now, "environment lock taken")
        state = replace(state, active_deployment_id=deployment_id, locked_at=now, queue=(), updated_at=now)
    else:
        if state.active_deployment_id is None:
            # The lock is free: only the deploy window holds it back. Say until when.
            deployment = held_for_window(deployment, policy, now) or deployment
        state = replace(state, queue=admission.queue, updated_at=now)

    if new_release is not None:
        tx.put_release(new_release)
    if pinned_release is not None:
        tx.put_release(pinned_release)
    for superseded in cancelled:
        tx.put_deployment(superseded)
    tx.put_deployment(deployment)
    tx.put_environment(state)
    return _Admitted(deployment, created=True, cancelled=tuple(cancelled))


def reject_build_event(
    services: Services, data: bytes, attributes: Mapping[str, str], event_id: str, reason: str
) -> AdmitResult:
    log.warning("rejected build-succeeded event: %s", reason)
    received_at: datetime = services.clock.now()
    services.store.record_rejected(
        RejectedEvent(
            event_id=event_id,
            reason=reason,
            payload=stored_payload(data),
            attributes=dict(attributes),
            received_at=received_at,
            topic=topology.BUILD_SUCCEEDED,
        )
    )
    app = attributes.get("app")
    environment = attributes.get("environment")
    publish_notify(
        services,
        NotifyRequest(
            kind="rejected",
            app=app,
            environment=environment,
            status="rejected",
            detail=f"build-succeeded message {event_id} rejected: {reason}",
            dedupe_key=f"rejected:{event_id}",
        ),
    )
    return AdmitResult(Outcome.REJECTED, reason=reason)
