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
3. green drains: its clean-up is due `draining_timeout_seconds` after it left the backend service.

The watchdog's clean-up of the failed record is the retry that never gives up: on each sweep it
hands back again (Compute unavailable, a crash, the live group not yet healthy again) and deletes
green only once green is off the backend service and has drained (`green_ready_for_cleanup`).
"""

from __future__ import annotations

from datetime import datetime

from shared.config import EnvironmentConfig
from shared.domain.naming import deployment_id_of_group
from shared.domain.records import Deployment
from shared.domain.retention import cleanup_due
from shared.domain.status import DeploymentStatus
from shared.domain.verification import AUTOMATIC_ROLLBACK_ACTOR
from shared.logging import bind, get_logger
from shared.ports import PermanentError, PreconditionFailed, TransientError
from shared.usecases.lifecycle import announce_outcome, commit_failure, start_next
from shared.usecases.services import NotReadyYet, Services

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

    Returns the failed deployment (also when the hand-back is left to the watchdog's clean-up,
    Compute being unavailable), or None if it is no longer switching (its switch completed)."""
    bind(deployment_id=deployment_id)
    current = services.store.get_deployment(deployment_id)
    if current is None or current.status is not DeploymentStatus.SWITCHING:
        return None
    env = services.environment_config(current.app, current.environment)
    # Its clean-up is due from the commit on, so the watchdog's sweep finishes the hand-back
    # whatever happens to this call.
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
    detail = f"{reason}; " + (f"{serving} keeps the traffic" if serving else "nothing was live here")
    if failed.triggered_by == AUTOMATIC_ROLLBACK_ACTOR and failed.reason:
        # Its `rolled_back` alert, which would have told of the breach, will not come.
        detail += f" (an automatic rollback: {failed.reason})"
    announce_outcome(services, failed, detail)
    start_next(services, next_deployment)
    try:
        finish_abandoned_switch(services, failed)
    except (TransientError, PermanentError, NotReadyYet) as exc:  # any: the clean-up sweep retries
        log.warning("hand-back left to the watchdog's clean-up: %s", exc)
    return failed


def finish_abandoned_switch(services: Services, failed: Deployment) -> None:
    """Hand the traffic back, for a failed deployment whose switch had begun. Safe to repeat,
    and a no-op for any other failed deployment. Raises `NotReadyYet` while green is what the
    load balancer sees healthy and the live group is not (yet)."""
    if failed.status is not DeploymentStatus.FAILED or failed.switch_started_at is None:
        return
    env = services.environment_config(failed.app, failed.environment)
    hand_traffic_back(services, env, failed)


def green_ready_for_cleanup(services: Services, failed: Deployment, now: datetime) -> bool:
    """For the watchdog's clean-up of an abandoned switch's record: hand the traffic back (again),
    then whether green is off the backend service and drained, so that it may be deleted."""
    try:
        finish_abandoned_switch(services, failed)  # returns once green is off the backend service
    except NotReadyYet as exc:
        log.info("abandoned green not handed back yet: %s", exc)
        return False
    # Read again: a hand-back pushes the due time before it detaches green.
    latest = services.store.get_deployment(failed.deployment_id)
    return latest is not None and latest.cleanup_due_at is not None and latest.cleanup_due_at <= now


def hand_traffic_back(services: Services, env: EnvironmentConfig, failed: Deployment) -> None:
    """Make the load balancer serve the environment's live release, not `failed`'s green.

    The live group goes back only when nothing but green is attached: a late poll's
    `keep_only_group(green)` took it off. When another group is attached beside green, the live
    one is still there, or a newer deployment has since taken the traffic (and its switch, not
    this one, decides what serves). Green stays while it is what the load balancer sees healthy
    and the live group is not (`NotReadyYet`), and never leaves as the last backend while there
    is a live release: if a late poll took the live group off since this looked, the detach
    fails and a retry looks again. Green's clean-up is pushed to a full draining time from now
    before it is detached."""
    green = failed.group_name
    attached = services.compute.attached_groups(env)
    if green not in attached:
        return
    live_group = _live_group(services, failed)
    if live_group is not None and live_group != green and attached == [green]:
        try:
            services.compute.attach_group(env, live_group, only_beside=green)
        except PreconditionFailed as exc:  # a newer release's switch since the read: look again
            raise NotReadyYet(f"the backend service changed while handing back: {exc}") from exc
        log.warning("re-attached the live group %s after a late switch to %s", live_group, green)
        # Green stays at least until a later look: the load balancer has not probed it yet.
        raise NotReadyYet(f"the live group {live_group} is back; green stays until it is seen healthy")
    if (
        live_group in attached
        and not services.compute.serving_healthy(env, live_group)
        and services.compute.serving_healthy(env, green)
    ):
        raise NotReadyYet(f"green serves and the live group {live_group} is not seen healthy yet")
    _drain_from_now(services, env, failed.deployment_id)
    services.compute.detach_group(env, green, leave_empty=live_group is None)


def drain_abandoned_greens(services: Services, env: EnvironmentConfig, groups: list[str]) -> None:
    """After a switch took other groups than blue off the backend service: an abandoned switch's
    green among them (one its hand-back was still holding) drains from now, not from before."""
    for group in groups:
        deployment_id = deployment_id_of_group(group)
        if deployment_id is None:
            continue
        named_after = services.store.get_deployment(deployment_id)
        if named_after is not None and named_after.adopted_by:
            # A rollback's green is the retained group it adopted, still named after its first
            # owner: the clean-up to push back is the rollback's.
            deployment_id = named_after.adopted_by
        _drain_from_now(services, env, deployment_id)


def _drain_from_now(services: Services, env: EnvironmentConfig, deployment_id: str) -> None:
    """Push a deployment's pending clean-up (if any) to a full draining time from now."""
    now = services.clock.now()
    due = cleanup_due(now, env.draining_timeout_seconds, 0)

    def later(current: Deployment) -> Deployment | None:
        waiting = current.cleanup_due_at is not None and current.cleanup_due_at < due
        return current.with_changes(now, cleanup_due_at=due) if waiting else None

    services.store.update_deployment(deployment_id, later)


def _live_group(services: Services, failed: Deployment) -> str | None:
    state = services.store.get_environment(failed.app, failed.environment)
    if state is None or state.live_deployment_id is None:
        return None
    live = services.store.get_deployment(state.live_deployment_id)
    if live is None or live.status is not DeploymentStatus.LIVE:
        return None
    return live.group_name
