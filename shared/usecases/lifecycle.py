"""Ending a deployment's run: failing it, handing the environment lock to the next one."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared import topology
from shared.domain.queue import release_lock
from shared.domain.records import Deployment, EnvironmentState
from shared.domain.retention import cleanup_due
from shared.domain.status import DeploymentStatus
from shared.domain.windows import ALWAYS_OPEN, DeployPolicy, may_start_now, waiting_note
from shared.logging import bind, get_logger
from shared.ports import Transaction
from shared.usecases.services import Services, notify_status, publish_step

log = get_logger("lifecycle")

FAILABLE = (DeploymentStatus.QUEUED, DeploymentStatus.PROVISIONING, DeploymentStatus.COOLING_DOWN)

ANNOUNCE_GRACE_SECONDS = 60
"""How long the call that ended a deployment has to announce it before the watchdog does: the
call publishes within a second; the grace only keeps a sweep from announcing what a slow call is
about to (harmless either way: on_notify sends one per status)."""


def announce_due(now: datetime) -> datetime:
    """The `announce_due_at` of an outcome committed at `now`."""
    return now + timedelta(seconds=ANNOUNCE_GRACE_SECONDS)


def announce_outcome(services: Services, deployment: Deployment, detail: str = "") -> None:
    """Announce the deployment's outcome, then record it announced (`announce_due_at` cleared).

    Safe to repeat, and what the watchdog calls for an outcome whose announcement a crash lost
    (a watchdog sweep that died between its commit and its publish is not redelivered with
    anything left to do: the record has moved on)."""
    notify_status(services, deployment, detail)
    if deployment.announce_due_at is None:
        return
    status = deployment.status

    def announced(current: Deployment) -> Deployment | None:
        if current.status is not status or current.announce_due_at is None:
            return None
        return replace(current, announce_due_at=None)

    services.store.update_deployment(deployment.deployment_id, announced)


@dataclass(frozen=True)
class Handover:
    """The environment after its deployment ended, and the deployment that takes it over."""

    state: EnvironmentState
    next_deployment: Deployment | None
    """The next deployment, changed: started (`provisioning`), or still `queued` with a line
    saying until when it waits for a deploy window. None when nothing changed."""


def deploy_policy(services: Services, app: str, environment: str) -> DeployPolicy:
    """The environment's windows and freezes; an environment no longer configured has none."""
    env = services.config.environment(app, environment)
    return env.deploy_policy if env is not None else ALWAYS_OPEN


def held_for_window(deployment: Deployment, policy: DeployPolicy, now: datetime) -> Deployment | None:
    """The queued deployment with a history line saying why and until when it waits; None if
    its last line says so already (so a watchdog tick that changes nothing writes nothing)."""
    note = waiting_note(policy, now)
    if deployment.history and deployment.history[-1].detail == note:
        return None
    return deployment.noted(now, note)


def hand_over_lock(
    tx: Transaction, state: EnvironmentState, ending_id: str, now: datetime, *, policy: DeployPolicy
) -> Handover:
    """Inside a transaction: free the environment if `ending_id` holds it, starting the next queued
    if the environment's deploy windows allow it now (a rollback always starts).

    Outside a window the next one stays queued, first in line, with the lock free; the watchdog
    starts it when the window opens. Reads only; the caller writes the returned state and next
    deployment.
    """
    if state.active_deployment_id != ending_id:
        queue = tuple(d for d in state.queue if d != ending_id)
        return Handover(replace(state, queue=queue, updated_at=now), None)
    in_line = release_lock(state.queue)
    next_deployment = None
    if in_line.next_deployment_id is not None:
        waiting = tx.deployment(in_line.next_deployment_id)
        if waiting is not None and waiting.status is DeploymentStatus.QUEUED:
            if not may_start_now(policy, now, rollback=waiting.is_rollback):
                return Handover(
                    replace(
                        state,
                        active_deployment_id=None,
                        locked_at=None,
                        queue=(waiting.deployment_id, *in_line.queue),
                        updated_at=now,
                    ),
                    held_for_window(waiting, policy, now),
                )
            next_deployment = waiting.advance(
                DeploymentStatus.PROVISIONING, now, f"environment freed by {ending_id}"
            )
    return Handover(
        replace(
            state,
            active_deployment_id=next_deployment.deployment_id if next_deployment else None,
            locked_at=now if next_deployment else None,
            queue=in_line.queue,
            updated_at=now,
        ),
        next_deployment,
    )


def free_lock(
    tx: Transaction, state: EnvironmentState | None, ending_id: str, now: datetime, *, policy: DeployPolicy
) -> Deployment | None:
    """Inside a transaction: `hand_over_lock` and write what it changed. Returns the next
    deployment, for `start_next` once the transaction committed; None with no environment record."""
    if state is None:
        return None
    handover = hand_over_lock(tx, state, ending_id, now, policy=policy)
    tx.put_environment(handover.state)
    if handover.next_deployment is not None:
        tx.put_deployment(handover.next_deployment)
    return handover.next_deployment


def start_next(services: Services, next_deployment: Deployment | None) -> None:
    """Publish the first step of the deployment a hand-over started (not of one it left queued)."""
    if next_deployment is not None and next_deployment.status is DeploymentStatus.PROVISIONING:
        publish_step(services, topology.START_ROLLING_REPLACE, next_deployment)


def delete_green(services: Services, deployment: Deployment) -> None:
    """Delete the deployment's group and template (derived names, so even a half-made green)."""
    env = services.environment_config(deployment.app, deployment.environment)
    group = deployment.group_name
    preview = env.preview()
    if preview is not None:
        # Compute Engine refuses to delete a group a backend service still uses.
        services.compute.detach_group(preview, group)
    services.compute.delete_instance_group(env, group)
    services.compute.delete_instance_template(env, deployment.template_name)


def fail_deployment(services: Services, deployment_id: str, reason: str) -> Deployment | None:
    """Fail a deployment that has not switched traffic: delete green, free the lock, notify.

    Safe to repeat: green's deletion is idempotent, the transaction changes nothing once the
    deployment has failed, and the notification is deduplicated per (deployment, status).
    Returns the failed deployment, or None if it had already moved on.
    """
    bind(deployment_id=deployment_id)
    current = services.store.get_deployment(deployment_id)
    if current is None:
        return None
    if current.status is DeploymentStatus.FAILED:
        # A redelivery: after a lost notification, or a crash before green was deleted. An
        # abandoned switch's green (its clean-up due) drains first: the watchdog deletes it.
        if current.cleanup_due_at is None:
            delete_green(services, current)
        announce_outcome(services, current)
        return current
    if current.status not in FAILABLE:
        return None
    failed = _announced(services, commit_failure(services, deployment_id, reason, FAILABLE), reason)
    if failed is None:
        return None
    # Green goes only once the record says failed: a step that switched traffic to it in the
    # meantime (a late cool-down step that found it ready) keeps it, as `commit_failure`
    # then changed nothing. It never received traffic, so it goes at once, without draining.
    delete_green(services, failed)
    return failed


UNCONFIGURED = "environment no longer configured; its Compute resources were left as they are"


def fail_unconfigured(services: Services, deployment_id: str) -> Deployment | None:
    """End an unfinished deployment whose environment was taken out of the pipeline file.

    Without its configuration nothing is known of its region or load balancer, so Compute is
    left as it is (whoever removes an environment removes what it runs); the record fails, the
    lock is freed and the team is told. A switch too: without this it would hold the lock for
    ever. Returns the failed deployment, or None if it had already moved on.
    """
    bind(deployment_id=deployment_id)
    unfinished = (*FAILABLE, DeploymentStatus.SWITCHING)
    committed = commit_failure(services, deployment_id, UNCONFIGURED, unfinished, leave_resources=True)
    return _announced(services, committed, UNCONFIGURED)


def _announced(
    services: Services, committed: tuple[Deployment, Deployment | None] | None, reason: str
) -> Deployment | None:
    """After `commit_failure`: the failure logged and announced, the next deployment started.
    The failed deployment, or None if nothing was committed."""
    if committed is None:
        return None
    failed, next_deployment = committed
    log.warning("deployment failed: %s", reason, extra={"fields": {"version": failed.version}})
    announce_outcome(services, failed, reason)
    start_next(services, next_deployment)
    return failed


def commit_failure(
    services: Services,
    deployment_id: str,
    reason: str,
    failable: Collection[DeploymentStatus],
    *,
    drain_seconds: int | None = None,
    leave_resources: bool = False,
) -> tuple[Deployment, Deployment | None] | None:
    """In one transaction: the deployment `failed` if it is still in one of `failable`, its lock
    handed over. Returns it and the deployment the hand-over changed (`start_next` it once this
    returns); None if it had moved on. Green is recorded deleted at once, or, with
    `drain_seconds`, due for the watchdog's clean-up that much later (it may have served); with
    `leave_resources`, neither (nothing will delete it)."""
    now = services.clock.now()
    green: dict[str, datetime] = {}
    if drain_seconds is not None:
        green = {"cleanup_due_at": cleanup_due(now, drain_seconds, 0)}
    elif not leave_resources:
        green = {"resources_deleted_at": now}

    def work(tx: Transaction) -> tuple[Deployment, Deployment | None] | None:
        deployment = tx.deployment(deployment_id)
        if deployment is None or deployment.status not in failable:
            return None
        failed = deployment.advance(
            DeploymentStatus.FAILED, now, reason, announce_due_at=announce_due(now), **green
        )
        state = tx.environment(deployment.app, deployment.environment)
        policy = deploy_policy(services, deployment.app, deployment.environment)
        next_deployment = free_lock(tx, state, deployment_id, now, policy=policy)
        tx.put_deployment(failed)
        return failed, next_deployment

    return services.store.atomically(work)
