"""on_build_succeeded: validate, version, record, take the environment lock or queue.

In an environment that is not `auto_deploy`, every deployment but a rollback is recorded
`awaiting_approval` instead, and joins the queue only when an approver says so
(`usecases.approval`). A message naming a release request (a rollback or promotion from the
pipeline's HTTP functions) must match that request; the authority fields come from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from shared import topology
from shared.config import EnvironmentConfig
from shared.domain.approval import awaiting_detail
from shared.domain.artifact_origin import artifact_origin_problem
from shared.domain.build_event import BuildSucceeded, InvalidBuildEvent, parse_build_succeeded
from shared.domain.identifiers import deployment_id_for
from shared.domain.messages import stored_payload
from shared.domain.notify_message import NotifyRequest
from shared.domain.queue import admit
from shared.domain.records import Deployment, EnvironmentState, Release
from shared.domain.release_request import ProvenanceRefused, ReleaseRequest, check_request_matches
from shared.domain.status import DeploymentStatus
from shared.domain.versioning import next_version
from shared.domain.windows import DeployPolicy, may_start_now
from shared.logging import bind, get_logger
from shared.ports import RejectedEvent, Transaction, TransientError
from shared.usecases.lifecycle import held_for_window
from shared.usecases.services import Services, UnknownEnvironment, notify_status, publish_notify, publish_step

log = get_logger("admit_build")


class Outcome(StrEnum):
    REJECTED = "rejected"
    STARTED = "started"
    QUEUED = "queued"
    AWAITING_APPROVAL = "awaiting_approval"
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
        env = services.environment_config(event.app, event.environment)
        request = proven_request(services, event)
    except InvalidBuildEvent as exc:  # permanent: the message itself is bad
        return reject_build_event(services, data, attributes, event_id, exc.reason)
    except UnknownEnvironment as exc:  # permanent: the pipeline file does not declare it
        return reject_build_event(services, data, attributes, event_id, str(exc))
    except ProvenanceRefused as exc:  # permanent: a claim of provenance without the proof
        return reject_build_event(services, data, attributes, event_id, str(exc))
    origin_problem = artifact_origin_problem(
        event.artifact, services.config.apps[event.app].artifact_prefixes
    )
    if origin_problem is not None:
        return reject_build_event(services, data, attributes, event_id, origin_problem)

    deployment_id = deployment_id_for(event.app, event.environment, event.build_id)
    bind(deployment_id=deployment_id)
    admitted = services.store.atomically(lambda tx: _admit(services, tx, env, event, request, deployment_id))
    if isinstance(admitted, _Refused):
        return reject_build_event(services, data, attributes, event_id, admitted.reason)
    deployment = admitted.deployment

    # On a duplicate too: the first delivery may have died between its commit and these.
    for cancelled in admitted.cancelled:
        notify_status(services, cancelled)
    if deployment.status is DeploymentStatus.AWAITING_APPROVAL:
        notify_status(services, deployment)  # deduplicated per (deployment, status): safe on a duplicate
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
    outcome = {
        DeploymentStatus.PROVISIONING: Outcome.STARTED,
        DeploymentStatus.AWAITING_APPROVAL: Outcome.AWAITING_APPROVAL,
    }.get(deployment.status, Outcome.QUEUED)
    log.info("deployment %s as version %s", outcome, deployment.version)
    return AdmitResult(outcome, deployment_id, deployment.version)


def proven_request(services: Services, event: BuildSucceeded) -> ReleaseRequest | None:
    """The release request the message names, checked against it; None for a plain CI build.

    Raises `ProvenanceRefused` when the named request does not exist or is for another
    deployment. Requests are written before their message is published and never change, and
    Firestore reads are strongly consistent, so a missing one is a forgery, not a delay.
    """
    if event.release_request is None:
        return None
    request = services.store.get_release_request(event.release_request)
    if request is None:
        raise ProvenanceRefused(
            f"release request {event.release_request} does not exist; only the pipeline's own"
            " HTTP functions make rollbacks and promotions"
        )
    check_request_matches(
        request,
        app=event.app,
        environment=event.environment,
        build_id=event.build_id,
        commit=event.commit,
        artifact=event.artifact,
        artifact_sha256=event.artifact_sha256,
    )
    return request


def _admit(
    services: Services,
    tx: Transaction,
    env: EnvironmentConfig,
    event: BuildSucceeded,
    request: ReleaseRequest | None,
    deployment_id: str,
) -> _Admitted | _Refused:
    # One round trip for the records every new build's admission reads (a duplicate needs only
    # the first, and is rare).
    tx.read_ahead(
        deployments=[deployment_id],
        environments=[(event.app, event.environment)],
        commits=[(event.app, event.commit)],
    )
    existing = tx.deployment(deployment_id)
    if existing is not None:
        return _Admitted(existing, created=False, cancelled=still_superseded(tx.deployment, existing))
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

    cancelled: list[Deployment] = []
    # Newest wins among those awaiting approval too: whatever comes next supersedes the one waiting.
    if state.awaiting_deployment_id and state.awaiting_deployment_id != deployment_id:
        waiting = tx.deployment(state.awaiting_deployment_id)
        if waiting is not None and waiting.status is DeploymentStatus.AWAITING_APPROVAL:
            cancelled.append(
                waiting.advance(DeploymentStatus.CANCELLED, now, f"superseded by {deployment_id} ({version})")
            )
        state = replace(state, awaiting_deployment_id=None)

    # A rollback never waits: it is how an environment gets out of trouble. Only a verified
    # rollback request makes one (the message's own fields never do).
    is_rollback = request is not None and request.is_rollback
    needs_approval = not env.auto_deploy and not is_rollback
    detail = _origin(event, request, version)
    if needs_approval:
        detail = f"{detail}; {awaiting_detail(deployment_id, env.approvers)}"
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
        rollback_of=request.rollback_of if request else None,
        # A verified requester is also who triggered it; otherwise CI's claim, kept as such.
        triggered_by=request.requested_by if request else event.triggered_by,
        reason=request.reason if request else None,
        build_url=event.build_url,
        branch=event.branch,
        commit_messages=event.commit_messages,
        detail=detail,
        artifact_sha256=artifact_sha256,
        committed_at=event.committed_at,
        requested_by=request.requested_by if request else None,
        promoted_from=request.promoted_from if request else None,
        request_id=request.request_id if request else None,
        awaiting_approval=needs_approval,
        is_rollback=is_rollback,
    )
    if needs_approval:
        state = replace(state, awaiting_deployment_id=deployment_id, updated_at=now)
    else:
        # Deploy windows decide whether it may take a free environment now; outside them it waits,
        # queued, for the watchdog to start it when the window opens. A rollback always may.
        deployment, state, superseded_queued = join_queue(
            tx,
            state,
            deployment,
            now,
            policy=env.deploy_policy,
            rollback=deployment.is_rollback,
        )
        cancelled.extend(superseded_queued)
    deployment = replace(deployment, superseded=tuple(c.deployment_id for c in cancelled))

    if new_release is not None:
        tx.put_release(new_release)
    if pinned_release is not None:
        tx.put_release(pinned_release)
    for superseded in cancelled:
        tx.put_deployment(superseded)
    tx.put_deployment(deployment)
    tx.put_environment(state)
    return _Admitted(deployment, created=True, cancelled=tuple(cancelled))


def join_queue(
    tx: Transaction,
    state: EnvironmentState,
    deployment: Deployment,
    now: datetime,
    *,
    policy: DeployPolicy,
    rollback: bool,
) -> tuple[Deployment, EnvironmentState, list[Deployment]]:
    """Inside a transaction: a `queued` deployment takes the free lock if the deploy windows allow
    it now (a rollback always may), or queues (newest wins).

    Returns the deployment (now `provisioning` if it took the lock; still `queued` with a line
    saying until when if only the window holds it back), the environment's new state and the
    queued deployments it superseded (now `cancelled`). Reads only; the caller writes all three.
    """
    may_start = may_start_now(policy, now, rollback=rollback)
    admission = admit(state.active_deployment_id, state.queue, deployment.deployment_id, may_start=may_start)
    cancelled: list[Deployment] = []
    for superseded_id in admission.cancelled:
        superseded = tx.deployment(superseded_id)
        if superseded is not None and superseded.status is DeploymentStatus.QUEUED:
            cancelled.append(
                superseded.advance(
                    DeploymentStatus.CANCELLED,
                    now,
                    f"superseded by {deployment.deployment_id} ({deployment.version})",
                )
            )
    if admission.takes_lock:
        deployment = deployment.advance(DeploymentStatus.PROVISIONING, now, "environment lock taken")
        state = replace(
            state, active_deployment_id=deployment.deployment_id, locked_at=now, queue=(), updated_at=now
        )
    else:
        if state.active_deployment_id is None:
            # The lock is free: only the deploy window holds it back. Say until when.
            deployment = held_for_window(deployment, policy, now) or deployment
        state = replace(state, queue=admission.queue, updated_at=now)
    return deployment, state, cancelled


def still_superseded(
    read: Callable[[str], Deployment | None], deployment: Deployment
) -> tuple[Deployment, ...]:
    """The deployments `deployment` cancelled on arrival, as recorded now, for a retried step to
    announce again (announcements are deduplicated downstream, so a second one is never sent)."""
    found = (read(deployment_id) for deployment_id in deployment.superseded)
    return tuple(d for d in found if d is not None and d.status is DeploymentStatus.CANCELLED)


def _origin(event: BuildSucceeded, request: ReleaseRequest | None, version: str) -> str:
    """The first history line: where the deployment comes from, with verified names only."""
    if request is None:
        return f"build {event.build_id}"
    if request.is_rollback:
        target = f"rollback of {request.rollback_of}" if request.rollback_of else f"rollback to {version}"
        return f"{target} requested by {request.requested_by}"
    return f"promotion of {version} from {request.promoted_from} requested by {request.requested_by}"


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
