"""Ending a deployment's run: failing it, handing the environment lock to the next one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared import topology
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.queue import release_lock
from shared.domain.records import Deployment, EnvironmentState
from shared.domain.status import DeploymentStatus
from shared.logging import bind, get_logger
from shared.ports import Transaction
from shared.usecases.services import Services, notify_status, publish_step

log = get_logger("lifecycle")

FAILABLE = (DeploymentStatus.QUEUED, DeploymentStatus.PROVISIONING, DeploymentStatus.COOLING_DOWN)


@dataclass(frozen=True)
class Handover:
    state: EnvironmentState
    next_deployment: Deployment | None


def hand_over_lock(tx: Transaction, state: EnvironmentState, ending_id: str, now: datetime) -> Handover:
    """Inside a transaction: free the environment if `ending_id` holds it, starting the next queued.

    Reads only; the caller writes the returned state and next deployment.
    """
    if state.active_deployment_id != ending_id:
        queue = tuple(d for d in state.queue if d != ending_id)
        return Handover(replace(state, queue=queue, updated_at=now), None)
    handover = release_lock(state.queue)
    next_deployment = None
    if handover.next_deployment_id is not None:
        waiting = tx.deployment(handover.next_deployment_id)
        if waiting is not None and waiting.status is DeploymentStatus.QUEUED:
            next_deployment = waiting.advance(
                DeploymentStatus.PROVISIONING, now, f"environment freed by {ending_id}"
            )
    return Handover(
        replace(
            state,
            active_deployment_id=next_deployment.deployment_id if next_deployment else None,
            locked_at=now if next_deployment else None,
            queue=handover.queue,
            updated_at=now,
        ),
        next_deployment,
    )


def start_next(services: Services, next_deployment: Deployment | None) -> None:
    if next_deployment is not None:
        publish_step(services, topology.START_ROLLING_REPLACE, next_deployment)


def delete_green(services: Services, deployment: Deployment) -> None:
    """Delete the deployment's group and template (derived names, so even a half-made green)."""
    env = services.environment_config(deployment.app, deployment.environment)
    group = deployment.instance_group or instance_group_name(deployment.deployment_id)
    preview = env.preview()
    if preview is not None:
        # Compute Engine refuses to delete a group a backend service still uses.
        services.compute.detach_group(preview, group)
    services.compute.delete_instance_group(env, group)
    services.compute.delete_instance_template(
        env, deployment.instance_template or instance_template_name(deployment.deployment_id)
    )


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
        notify_status(services, current)  # a redelivery after a lost notification
        return current
    if current.status not in FAILABLE:
        return None
    # Green never received traffic, so it goes at once: no draining to wait for.
    delete_green(services, current)
    now = services.clock.now()

    def work(tx: Transaction) -> tuple[Deployment, Deployment | None] | None:
        deployment = tx.deployment(deployment_id)
        if deployment is None or deployment.status not in FAILABLE:
            return None
        failed = deployment.advance(DeploymentStatus.FAILED, now, reason, resources_deleted_at=now)
        state = tx.environment(deployment.app, deployment.environment)
        next_deployment = None
        if state is not None:
            handover = hand_over_lock(tx, state, deployment_id, now)
            tx.put_environment(handover.state)
            next_deployment = handover.next_deployment
            if next_deployment is not None:
                tx.put_deployment(next_deployment)
        tx.put_deployment(failed)
        return failed, next_deployment

    result = services.store.atomically(work)
    if result is None:
        return None
    failed, next_deployment = result
    log.warning("deployment failed: %s", reason, extra={"fields": {"version": failed.version}})
    notify_status(services, failed, reason)
    start_next(services, next_deployment)
    return failed
