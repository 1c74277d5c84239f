"""A switch that never completes: its bound, and the hand-back of traffic to the live release.

A deployment in `switching` has green attached to the load balancer beside the live release and
waits for the load balancer to see green healthy before the live release leaves. A backend that
never does (a named port or firewall mistake, a health check green cannot pass) would hold the
environment lock for ever. The watchdog ends such a switch once it is overdue (`judge_switch`):

1. it commits `failed` (and frees the lock) first, so that a late poll that finds green healthy
   at that moment cannot commit `live` (its transaction only accepts `switching`) nor take the
   live release off (its `keep_only_group` asks first whether the record is still switching);
2. it hands the traffic back: the live release's group serves, green does not
   (`hand_traffic_back`); a late poll whose own `keep_only_group(green)` ran before it saw the
   record failed does the same, so whichever hands back last leaves the live release serving;
3. green drains: the watchdog's clean-up deletes it `draining_timeout_seconds` after it left.

The cool-down step, published before the commit, finishes step 2 with its own retries
when the watchdog cannot (Compute unavailable, a crash, the live group not yet healthy again).
"""

from __future__ import annotations

from datetime import datetime

from shared import topology
from shared.config import EnvironmentConfig
from shared.domain.records import Deployment
from shared.domain.retention import cleanup_due
from shared.domain.status import DeploymentStatus
from shared.logging import bind, get_logger
from shared.ports import PermanentError, TransientError
from shared.usecases.lifecycle import commit_failure, start_next
from shared.usecases.services import NotReadyYet, Services, notify_status, publish_step

log = get_logger("abandon")


def judge_switch(
    services: Services, env: EnvironmentConfig, deployment: Deployment, now: datetime
) -> str | None:
    """Why a switching deployment's switch is to be abandoned; None while it may still complete.

    Overdue (the provisioning deadline, counted from the switch's start), a switch whose green the
    load balancer sees healthy now is late, not stuck: its step completes it. Twice that is the
    end whatever the load balancer says, so that a Compute outage cannot hold the environment."""
    deadline = env.provisioning_deadline_seconds
    if not deployment.is_switch_overdue(now, deadline):
        return None
    if deployment.is_switch_overdue(now, 2 * deadline):
        return f"switch not complete within twice the {deadline} s deadline"
    if services.compute.serving_healthy(env, deployment.group_name):
        return None
    return f"the load balancer did not see green healthy within {deadline} s of the switch"


def abandon_switch(services: Services, deployment_id: str, reason: str) -> Deployment | None:
    """Fail a deployment still `switching`, free its lock, hand the traffic back; green drains.

    Returns the failed deployment (also when the hand-back is left to the cool-down step, Compute
    being unavailable), or None if it is no longer switching (its switch completed)."""
    bind(deployment_id=deployment_id)
    current = services.store.get_deployment(deployment_id)
    if current is None or current.status is not DeploymentStatus.SWITCHING:
        return None
    # Published before the commit, so that no crash can leave a failed record with nobody to
    # finish its hand-back: the cool-down step does it, with its own retries, for a failed record
    # that went through `switching` (and is one more harmless poll if the commit does not happen).
    publish_step(services, topology.COOL_DOWN_COMPLETE, current)
    env = services.environment_config(current.app, current.environment)
    result = commit_failure(
        services,
        deployment_id,
        reason,
        (DeploymentStatus.SWITCHING,),
        drain_seconds=env.draining_timeout_seconds,
    )
    if result is None:
        return None
    failed, next_deployment = result
    log.warning("switch abandoned: %s", reason, extra={"fields": {"version": failed.version}})
    state = services.store.get_environment(failed.app, failed.environment)
    serving = state.live_version if state is not None and state.live_version else None
    notify_status(
        services,
        failed,
        f"{reason}; " + (f"{serving} keeps the traffic" if serving else "nothing was live here"),
    )
    start_next(services, next_deployment)
    try:
        finish_abandoned_switch(services, failed)
    except (TransientError, PermanentError, NotReadyYet) as exc:  # any: the published step retries
        log.warning("hand-back left to the cool-down step: %s", exc)
    return failed


def finish_abandoned_switch(services: Services, failed: Deployment) -> None:
    """Hand the traffic back, for a failed deployment whose switch had begun, and leave green to
    drain: the watchdog's clean-up deletes it `draining_timeout_seconds` after it left the backend
    service (a partly healthy green, or one a late poll switched to, may have served requests).
    Safe to repeat, and a no-op for any other failed deployment. Raises `NotReadyYet` while the
    live group, put back, is not yet seen healthy (green stays until it is)."""
    if failed.status is not DeploymentStatus.FAILED or failed.switch_started_at is None:
        return
    env = services.environment_config(failed.app, failed.environment)
    if not hand_traffic_back(services, env, failed):
        return
    now = services.clock.now()
    due = cleanup_due(now, env.draining_timeout_seconds, 0)

    def drained_later(current: Deployment) -> Deployment | None:
        # The due time the failure set counted from its commit; green left the service only now.
        waiting = current.cleanup_due_at is not None and current.cleanup_due_at < due
        return current.with_changes(now, cleanup_due_at=due) if waiting else None

    services.store.update_deployment(failed.deployment_id, drained_later)


def hand_traffic_back(services: Services, env: EnvironmentConfig, failed: Deployment) -> bool:
    """Make the load balancer serve the environment's live release, not `failed`'s green.

    The live group goes back only when nothing but green (or nothing) is attached: a late poll's
    `keep_only_group(green)` took it off. When another group is attached beside green, the live
    one is still there, or a newer deployment has since taken the traffic (and its switch, not
    this one, decides what serves). Green leaves only once the load balancer sees the live group
    healthy, and never as the last backend while there is a live release: if a late poll took
    the live group off since this looked, the detach fails and a retry looks again. Returns
    whether green was attached when this looked (and has now left)."""
    green = failed.group_name
    attached = services.compute.attached_groups(env)
    live_group = _live_group(services, failed)
    if live_group is not None and live_group != green and not [g for g in attached if g != green]:
        services.compute.attach_group(env, live_group)
        attached.append(live_group)
        log.warning("re-attached the live group %s after a late switch to %s", live_group, green)
    if green in attached and live_group in attached and not services.compute.serving_healthy(env, live_group):
        raise NotReadyYet(
            f"the live group {live_group} is back; waiting for the load balancer to see it healthy"
        )
    services.compute.detach_group(env, green, leave_empty=live_group is None)
    return green in attached


def _live_group(services: Services, failed: Deployment) -> str | None:
    state = services.store.get_environment(failed.app, failed.environment)
    if state is None or state.live_deployment_id is None:
        return None
    live = services.store.get_deployment(state.live_deployment_id)
    if live is None or live.status is not DeploymentStatus.LIVE:
        return None
    return live.group_name
