"""on_cool_down_complete: once green is healthy, the cool-down over and its smoke checks passed,
move traffic to it. With a bake window, green keeps the environment lock after the switch until
the bake step's verdict (shared/usecases/bake.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared import topology
from shared.config import EnvironmentConfig
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.domain.records import Deployment
from shared.domain.retention import cleanup_due
from shared.domain.status import DeploymentStatus
from shared.domain.verification import (
    AUTOMATIC_ROLLBACK_ACTOR,
    Verification,
    VerificationState,
    smoke_check_failure,
)
from shared.logging import get_logger
from shared.ports import PermanentError, PreconditionFailed, Transaction, TransientError
from shared.usecases.abandon import drain_abandoned_greens, finish_abandoned_switch
from shared.usecases.lifecycle import announce_outcome, fail_deployment, hand_over_lock, start_next
from shared.usecases.services import NotReadyYet, Services, notify_status, publish_step

log = get_logger("switch")

POLL_NOTE_SECONDS = 20
"""How often at most a poll notes on its record that the step is still polled. Below the
watchdog's stall time less the longest poll interval (60 s - 10 s), so a polled step never
looks stalled."""
JUST_WAIT_SECONDS = 3.0
"""In the last seconds of a cool-down a poll only waits, without looking at green: the poll at its
end looks anyway, and failing a release that cannot start a second or two sooner is not worth a
Compute call per poll (with a hundred deployments cooling down at once, such polls were most of
the Compute API's work). Earlier in a long cool-down a poll still looks, to fail such a release
at once."""


def complete_cool_down(services: Services, message: StepMessage) -> Deployment | None:
    """Raise `NotReadyYet` until green may take traffic; then switch, retire blue, free the lock."""
    _wait_on_hints(services, message)
    deployment = services.store.get_deployment(message.deployment_id)
    if deployment is None:
        log.error("no such deployment; dropping the message")
        return None
    if deployment.status is DeploymentStatus.LIVE:
        announce_live(services, deployment)  # a redelivery after a lost notification; deduplicated
        return deployment
    if deployment.status is DeploymentStatus.FAILED:
        try:
            finish_abandoned_switch(services, deployment)  # only for a switch the watchdog abandoned
        except (NotReadyYet, TransientError) as exc:  # the watchdog's clean-up sweep retries it
            log.info("hand-back left to the watchdog: %s", exc)
        announce_outcome(services, deployment)  # a redelivery after a lost announcement
        return deployment
    if deployment.status not in (DeploymentStatus.COOLING_DOWN, DeploymentStatus.SWITCHING):
        log.info("deployment is %s; nothing to switch", deployment.status)
        return None

    try:
        return _switch_when_ready(services, deployment)
    except NotReadyYet:
        try:
            _note_polled(services, deployment)
        except TransientError as exc:  # only a note: the poll's own answer stays "not ready yet"
            log.warning("could not note the poll on the record: %s", exc)
        raise


def _switch_when_ready(services: Services, deployment: Deployment) -> Deployment | None:
    """For a cooling-down or switching deployment: its switch, or `NotReadyYet`."""
    env = services.environment_config(deployment.app, deployment.environment)
    group = deployment.group_name
    if deployment.status is DeploymentStatus.COOLING_DOWN:
        verdict = judge_green(services, env, deployment, services.clock.now())
        if verdict.failure is not None:
            return fail_deployment(services, deployment.deployment_id, verdict.failure)
        if verdict.waiting is not None:
            raise NotReadyYet(verdict.waiting)
        smoke_detail = ""
        if env.smoke_checks and not _adopted(deployment):
            failure = _smoke_checks(services, env, group)
            if failure is not None:
                # No user request has reached green: it was attached to the preview only.
                return fail_deployment(services, deployment.deployment_id, failure)
            smoke_detail = f"; {len(env.smoke_checks)} smoke check(s) passed on the preview"
        deployment = _to_switching(services, deployment, smoke_detail)
        if deployment.status is not DeploymentStatus.SWITCHING:
            return deployment
        return switch_traffic(services, env, deployment, group, switched_by_this_call=True)
    return switch_traffic(services, env, deployment, group)


_POLLED = (DeploymentStatus.COOLING_DOWN, DeploymentStatus.SWITCHING)


def _note_polled(services: Services, deployment: Deployment) -> None:
    """Note on the record that its step is still polled, when nothing has shown that for
    `POLL_NOTE_SECONDS`: a poll of a slow green or switch (its message alive) must not look to the
    watchdog like a lost one, to be published again beside it. Most polls note nothing: a release
    that is ready within that time writes no more than before."""
    now = services.clock.now()
    if not deployment.is_quiet_for(now, POLL_NOTE_SECONDS):  # as the poll read it: most stop here
        return

    def noted(current: Deployment) -> Deployment | None:
        # Judged again on the record as it stands: this poll may have moved it to switching, or a
        # duplicate noted it already.
        if current.status in _POLLED and current.is_quiet_for(now, POLL_NOTE_SECONDS):
            return replace(current, last_polled_at=now)
        return None

    services.store.update_deployment(deployment.deployment_id, noted)


@dataclass(frozen=True)
class GreenVerdict:
    """What a cooling-down deployment's green allows now: fail the release (`failure`, the
    reason), wait (`waiting`, why), or, both None, switch traffic to it."""

    failure: str | None = None
    waiting: str | None = None


def judge_green(
    services: Services, env: EnvironmentConfig, deployment: Deployment, now: datetime
) -> GreenVerdict:
    """The one judgement of a cooling-down green, for its cool-down step and for the watchdog.

    Before the deadline green is waited for; past it, a green not ready fails the release and a
    ready one is still switched; past the final deadline the release fails without asking
    Compute, so that an outage cannot hold it (`Deployment.is_past_final_deadline`)."""
    deadline = env.provisioning_deadline_seconds
    if deployment.is_past_final_deadline(now, deadline):
        return GreenVerdict(failure=f"not live within twice the {deadline} s deadline")
    health = services.compute.group_health(env, deployment.group_name)
    if health.errors:
        return GreenVerdict(failure="green cannot start: " + "; ".join(health.errors))
    cooling_until = None if deployment.cool_down_over(now) else deployment.not_before
    if deployment.is_past_deadline(now, deadline) and (cooling_until or not health.all_healthy):
        # A healthy green still cooling down past the deadline: a cool-down longer than the deadline.
        why = "cool-down not over" if health.all_healthy else "green not healthy"
        return GreenVerdict(failure=f"{why} within the {deadline} s deadline")
    if cooling_until is not None:
        return GreenVerdict(
            waiting=f"cool-down ends at {cooling_until.isoformat()} ({health.healthy}/{health.target_size} healthy)"
        )
    if not health.all_healthy:
        return GreenVerdict(waiting=f"green {health.healthy}/{health.target_size} healthy")
    return GreenVerdict()


def _wait_on_hints(services: Services, message: StepMessage) -> None:
    """Raise `NotReadyYet`, reading no record, while the message's hints show the cool-down still
    running and green starting normally: most polls only find that, and a record read each would
    cost more than the rest of the deployment. Otherwise return, and the step reads the record.

    The hints only ever make a poll wait, never act. A cool-down end further away than this
    environment's cool-down cannot be a genuine copy of the record, so it is not believed; a
    group that cannot start or is gone is for the record to judge at once (fail, or nothing to do).
    """
    ends_at, group = message.cool_down_ends_at, message.instance_group
    env = services.config.environment(message.app, message.environment)
    if ends_at is None or group is None or env is None:
        return
    now = services.clock.now()
    remaining = (ends_at - now).total_seconds()
    if not 0 < remaining <= env.cool_down_seconds:
        return
    if remaining <= JUST_WAIT_SECONDS:
        raise NotReadyYet(f"cool-down ends at {ends_at.isoformat()}")
    health = services.compute.group_health(env, group)
    if health.errors or not health.exists:
        return
    raise NotReadyYet(
        f"cool-down ends at {ends_at.isoformat()} ({health.healthy}/{health.target_size} healthy)"
    )


def _adopted(deployment: Deployment) -> bool:
    """A rollback that took over a retained group: it passed its checks and served until lately."""
    return deployment.instance_group not in (None, instance_group_name(deployment.deployment_id))


def _smoke_checks(services: Services, env: EnvironmentConfig, group: str) -> str | None:
    """Run the environment's smoke checks against green through the preview; the first failure."""
    preview = env.preview()
    if preview is None or services.probe is None:
        raise PermanentError(f"{env.key} declares smoke checks but has no preview or no probe wired")
    services.compute.attach_group(preview, group)  # no-op when provisioning attached it already
    if not services.compute.serving_healthy(preview, group):
        raise NotReadyYet("green is healthy; the preview does not route to it yet")
    for check in env.smoke_checks:
        failure = smoke_check_failure(check, services.probe.request(preview.url, check))
        if failure is not None:
            log.warning(failure)
            return failure
    return None


def _to_switching(services: Services, deployment: Deployment, detail: str = "") -> Deployment:
    now = services.clock.now()

    def to_switching(current: Deployment) -> Deployment | None:
        if current.status is not DeploymentStatus.COOLING_DOWN:
            return None
        return current.advance(DeploymentStatus.SWITCHING, now, f"green healthy{detail}; switching traffic")

    return services.store.update_deployment(deployment.deployment_id, to_switching) or deployment


def switch_traffic(
    services: Services,
    env: EnvironmentConfig,
    deployment: Deployment,
    group: str,
    *,
    switched_by_this_call: bool = False,
) -> Deployment | None:
    """Move the environment's traffic to `group` for a deployment in `switching`, and record it.

    The one traffic switch: after a cool-down, for a warm rollback and for the automatic
    rollback of a release that failed its bake window. Safe to repeat. `switched_by_this_call`:
    the caller's own compare-and-set made the record `switching` a moment ago, so attaching green
    need not read it again first (a stale poll, the case that read is for, is not this call).
    """

    def still_switching() -> bool:
        current = services.store.get_deployment(deployment.deployment_id)
        return current is not None and current.status is DeploymentStatus.SWITCHING

    # Attach green first; only once the load balancer sees it healthy does blue leave, so
    # there is never a moment without a healthy backend. Both writes ask first whether the
    # record is still switching: a poll stale from before the watchdog abandoned the switch
    # must neither put green back beside the live release nor take the live release off.
    try:
        services.compute.attach_group(
            env, group, only_while=None if switched_by_this_call else still_switching
        )
        if not services.compute.serving_healthy(env, group):
            raise NotReadyYet("green attached; the backend service does not see it healthy yet")
        removed = services.compute.keep_only_group(env, group, only_while=still_switching)
    except PreconditionFailed:  # abandoned by the watchdog (or completed by another poll) meanwhile
        return _after_the_switch_moved_on(services, deployment)
    preview = env.preview()
    if preview is not None:
        # Users reach it now; the preview is for the next release (and a group must leave every
        # backend service before it can be deleted).
        services.compute.detach_group(preview, group)
    now = services.clock.now()

    def work(tx: Transaction) -> tuple[Deployment, Deployment | None, Deployment | None] | None:
        tx.read_ahead(
            deployments=[deployment.deployment_id],
            environments=[(deployment.app, deployment.environment)],
        )
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
        baking = _bakes(env, current)
        # A release under verification keeps the lock: the next one waits for the verdict.
        handover = (
            hand_over_lock(tx, state, current.deployment_id, now, policy=env.deploy_policy)
            if state is not None and not baking
            else None
        )
        live = current.advance(
            DeploymentStatus.LIVE,
            now,
            f"serving {current.version}"
            + (f"; drained {', '.join(removed)}" if removed else "")
            + (f"; bake window of {env.bake_seconds} s" if baking else ""),
            replaced_deployment_id=blue.deployment_id if blue else None,
            verification=_pending_verification(env, now) if baking else None,
        )
        if blue is not None and blue.status is DeploymentStatus.LIVE:
            _replace_blue(tx, env, blue, current, now)
        next_deployment = handover.next_deployment if handover else None
        if state is not None:
            base = handover.state if handover is not None else replace(state, updated_at=now)
            tx.put_environment(
                replace(base, live_deployment_id=current.deployment_id, live_version=current.version)
            )
        if next_deployment is not None:
            tx.put_deployment(next_deployment)
        tx.put_deployment(live)
        return live, next_deployment, blue

    result = services.store.atomically(work)
    if result is None:
        return _after_the_switch_moved_on(services, deployment)
    live, next_deployment, blue = result
    log.info("live: %s", live.version)
    announce_live(services, live)
    start_next(services, next_deployment)
    drain_abandoned_greens(services, env, [g for g in removed if blue is None or g != blue.group_name])
    return live


def _after_the_switch_moved_on(services: Services, deployment: Deployment) -> Deployment | None:
    """For a switch whose record left `switching` while this call ran: announce it live, or, if
    the watchdog abandoned it, hand back the traffic this call may have moved to green
    (shared/usecases/abandon.py)."""
    latest = services.store.get_deployment(deployment.deployment_id)
    if latest is not None and latest.status is DeploymentStatus.LIVE:
        announce_live(services, latest)
    elif latest is not None and latest.status is DeploymentStatus.FAILED:
        finish_abandoned_switch(services, latest)
    return latest


def _bakes(env: EnvironmentConfig, deployment: Deployment) -> bool:
    """Whether a deployment going live is watched by a bake window. Rollbacks are not: going back
    is the remedy, and judging it could only bounce traffic between two releases."""
    return env.bake_seconds > 0 and not deployment.is_rollback


def _pending_verification(env: EnvironmentConfig, now: datetime) -> Verification:
    ends_at = now + timedelta(seconds=env.bake_seconds)
    return Verification(
        state=VerificationState.PENDING,
        detail=f"baking until {ends_at.isoformat()}",
        checked_at=now,
        ends_at=ends_at,
    )


def _replace_blue(
    tx: Transaction, env: EnvironmentConfig, blue: Deployment, current: Deployment, now: datetime
) -> None:
    """Record what became of the deployment that was live: retired, or rolled back if its bake
    window failed."""
    verification = blue.verification
    if verification is not None and verification.state is VerificationState.FAILED:
        # A bad release is not worth retaining: its group goes once its connections drained.
        rolled_back = blue.advance(
            DeploymentStatus.ROLLED_BACK,
            now,
            f"traffic back on {current.version} ({current.deployment_id}): {verification.detail}",
            cleanup_due_at=cleanup_due(now, env.draining_timeout_seconds, 0),
        )
        tx.put_deployment(rolled_back)
        return
    # Blue's group is deleted (watchdog sweep) only once its connections have drained and
    # its retention is over: until then a rollback to it is a traffic switch.
    due = cleanup_due(now, env.draining_timeout_seconds, env.retain_previous_seconds)
    tx.put_deployment(
        blue.advance(
            DeploymentStatus.RETIRED,
            now,
            f"replaced by {current.version} ({current.deployment_id}); group retained until {due.isoformat()}",
            cleanup_due_at=due,
        )
    )
    return None


def announce_live(services: Services, live: Deployment) -> None:
    """Tell the team a deployment is live, once; resume its bake window if it has one.

    The automatic rollback of a release that failed its bake window is announced by that
    release's `rolled_back` alert alone: one alert for one incident.
    """
    if live.baking:
        # Also on a redelivery: if the switch committed but crashed before publishing, this resumes it.
        publish_step(services, topology.BAKE_CHECK, live)
    if live.triggered_by == AUTOMATIC_ROLLBACK_ACTOR and live.rollback_of is not None:
        rolled_back = services.store.get_deployment(live.rollback_of)
        if rolled_back is not None and rolled_back.status is DeploymentStatus.ROLLED_BACK:
            notify_status(services, rolled_back)
            return
    notify_status(services, live)
