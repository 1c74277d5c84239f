"""on_cool_down_complete: once green is healthy and the cool-down is over, move traffic to it."""

from __future__ import annotations

from dataclasses import replace

from shared.config import EnvironmentConfig
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.domain.records import Deployment
from shared.domain.retention import cleanup_due
from shared.domain.status import DeploymentStatus
from shared.logging import get_logger
from shared.ports import Transaction
from shared.usecases.lifecycle import fail_deployment, hand_over_lock, start_next
from shared.usecases.services import NotReadyYet, Services, notify_status

log = get_logger("switch")


def complete_cool_down(services: Services, message: StepMessage) -> Deployment | None:
    """Raise `NotReadyYet` until green may take traffic; then switch, retire blue, free the lock."""
    deployment = services.store.get_deployment(message.deployment_id)
    if deployment is None:
        log.error("no such deployment; dropping the message")
        return None
    if deployment.status is DeploymentStatus.LIVE:
        notify_status(services, deployment)  # a redelivery after a lost notification; deduplicated
        return deployment
    if deployment.status is DeploymentStatus.FAILED:
        notify_status(services, deployment)
        return deployment
    if deployment.status not in (DeploymentStatus.COOLING_DOWN, DeploymentStatus.SWITCHING):
        log.info("deployment is %s; nothing to switch", deployment.status)
        return None

    env = services.environment_config(deployment.app, deployment.environment)
    group = deployment.instance_group or instance_group_name(deployment.deployment_id)
    if deployment.status is DeploymentStatus.COOLING_DOWN:
        now = services.clock.now()
        if deployment.is_past_deadline(now, env.provisioning_deadline_seconds):
            return fail_deployment(
                services,
                deployment.deployment_id,
                f"green not healthy within the {env.provisioning_deadline_seconds} s deadline",
            )
        health = services.compute.group_health(env, group)
        if health.errors:
            return fail_deployment(
                services, deployment.deployment_id, "green cannot start: " + "; ".join(health.errors)
            )
        if deployment.not_before is not None and now < deployment.not_before:
            raise NotReadyYet(
                f"cool-down ends at {deployment.not_before.isoformat()} ({health.healthy}/{health.target_size} healthy)"
            )
        if not health.all_healthy:
            raise NotReadyYet(f"green {health.healthy}/{health.target_size} healthy")
        deployment = _to_switching(services, deployment)
        if deployment.status is not DeploymentStatus.SWITCHING:
            return deployment
    return _switch(services, env, deployment, group)


def _to_switching(services: Services, deployment: Deployment) -> Deployment:
    now = services.clock.now()

    def work(tx: Transaction) -> Deployment | None:
        current = tx.deployment(deployment.deployment_id)
        if current is None:
            return None
        if current.status is not DeploymentStatus.COOLING_DOWN:
            return current
        switching = current.advance(DeploymentStatus.SWITCHING, now, "green healthy; switching traffic")
        tx.put_deployment(switching)
        return switching

    result = services.store.atomically(work)
    return result or deployment


def _switch(
    services: Services, env: EnvironmentConfig, deployment: Deployment, group: str
) -> Deployment | None:
    # Attach green first; only once the load balancer sees it healthy does blue leave, so
    # there is never a moment without a healthy backend.
    services.compute.attach_group(env, group)
    if not services.compute.serving_healthy(env, group):
        raise NotReadyYet("green attached; the backend service does not see it healthy yet")
    removed = services.compute.keep_only_group(env, group)
    now = services.clock.now()

    def work(tx: Transaction) -> tuple[Deployment, Deployment | None] | None:
        current = tx.deployment(deployment.deployment_id)
        if current is None or current.status is not DeploymentStatus.SWITCHING:
            return None
        state = tx.environment(current.app, current.environment)
        blue = None
        if (
            state is not None
            and state.live_deployment_id
            and state.live_deployment_id != current.deployment_id
        ):
            blue = tx.deployment(state.live_deployment_id)
        handover = (
            hand_over_lock(tx, state, current.deployment_id, now, policy=env.deploy_policy)
            if state is not None
            else None
        )
        live = current.advance(
            DeploymentStatus.LIVE,
            now,
            f"serving {current.version}" + (f"; drained {', '.join(removed)}" if removed else ""),
            replaced_deployment_id=blue.deployment_id if blue else None,
        )
        if blue is not None and blue.status is DeploymentStatus.LIVE:
            # Blue's group is deleted (watchdog sweep) only once its connections have drained and
            # its retention is over: until then a rollback to it is a traffic switch.
            due = cleanup_due(now, env.draining_timeout_seconds, env.retain_previous_seconds)
            tx.put_deployment(
                blue.advance(
                    DeploymentStatus.RETIRED,
                    now,
                    f"replaced by {current.version} ({current.deployment_id});"
                    f" group retained until {due.isoformat()}",
                    cleanup_due_at=due,
                )
            )
        next_deployment = handover.next_deployment if handover else None
        if handover is not None:
            tx.put_environment(
                replace(
                    handover.state,
                    live_deployment_id=current.deployment_id,
                    live_version=current.version,
                )
            )
        if next_deployment is not None:
            tx.put_deployment(next_deployment)
        tx.put_deployment(live)
        return live, next_deployment

    result = services.store.atomically(work)
    if result is None:
        latest = services.store.get_deployment(deployment.deployment_id)
        if latest is not None and latest.status is DeploymentStatus.LIVE:
            notify_status(services, latest)
        return latest
    live, next_deployment = result
    log.info("live: %s", live.version)
    notify_status(services, live)
    start_next(services, next_deployment)
    return live
