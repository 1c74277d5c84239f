"""on_bake_check: watch a live release through its bake window; roll it back on a breach.

Event-driven like the cool-down: `bake-check` is published when green goes live, and this step
raises `NotReadyYet` while the window is open and green looks fine, so Pub/Sub's redelivery is
the poll. No function sleeps. The release keeps the environment lock until the verdict, so the
next release waits for it and the previous release's retained group stays the one to go back to.

- Passed: `verification.state = passed` with the measured numbers, the lock goes to the next
  queued deployment, and the team is told.
- Breach (green unhealthy at the load balancer, or a 5xx ratio above `max_error_ratio` over at
  least `min_requests`): one transaction records the verdict, hands the lock to a rollback
  deployment of the previous release that adopts its retained group, and the traffic switch runs
  at once (the same switch as a warm rollback). The bad release ends `rolled_back`; one alert says
  what was seen. With the previous group gone, the rollback deployment is an ordinary one (new
  group, cool-down) and the alert says so.

A redelivered or duplicated message finds the verdict recorded and only resumes what it started:
the rollback deployment's id derives from the bad deployment's, so there is never a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared import topology
from shared.config import EnvironmentConfig
from shared.domain.identifiers import deployment_id_for
from shared.domain.messages import StepMessage
from shared.domain.records import Deployment
from shared.domain.retention import is_adoptable
from shared.domain.status import DeploymentStatus
from shared.domain.verification import (
    AUTOMATIC_ROLLBACK_ACTOR,
    BakeVerdict,
    Measurement,
    Verification,
    VerificationState,
    judge_bake,
)
from shared.logging import get_logger
from shared.ports import MetricsUnavailable, Transaction
from shared.usecases.lifecycle import free_lock, start_next
from shared.usecases.services import (
    NotReadyYet,
    Services,
    notify_deployment,
    notify_status,
    publish_step,
)
from shared.usecases.switch import switch_traffic

log = get_logger("bake")


def automatic_rollback_id(bad: Deployment) -> str:
    """The one rollback deployment a failed bake window may start: derived, so never two."""
    return deployment_id_for(bad.app, bad.environment, f"auto-rollback-{bad.deployment_id}")


@dataclass(frozen=True)
class _HintedVerdict:
    """A verdict reached on the message's hints, before any record was read."""

    env: EnvironmentConfig
    group: str
    went_live_at: datetime
    measured: Measurement
    verdict: BakeVerdict
    now: datetime


def check_bake(services: Services, message: StepMessage) -> Deployment | None:
    hinted = _judge_on_hints(services, message)
    if hinted is not None:
        recorded = _record_pass(
            services,
            hinted.env,
            message.deployment_id,
            hinted.verdict,
            hinted.measured,
            hinted.now,
            hints=(hinted.group, hinted.went_live_at),
        )
        if recorded is not None:
            return _after_pass(services, *recorded)
        # Not this record's window any more (or the hints were not its own): the record decides.
    deployment = services.store.get_deployment(message.deployment_id)
    if deployment is None:
        log.error("no such deployment; dropping the message")
        return None
    if deployment.status is DeploymentStatus.ROLLED_BACK:
        notify_status(services, deployment)  # a redelivery after a lost alert; deduplicated
        return deployment
    verification = deployment.verification
    if deployment.status is not DeploymentStatus.LIVE or verification is None:
        log.info("deployment is %s with no bake window open; nothing to verify", deployment.status)
        return None
    if verification.state is VerificationState.PASSED:
        _announce_passed(services, deployment)
        return deployment
    env = services.environment_config(deployment.app, deployment.environment)
    if verification.state is VerificationState.FAILED:
        return _resume_rollback(services, env, deployment)

    now = services.clock.now()
    group = deployment.group_name
    measured, verdict = _judge_window(
        services, env, group, deployment.went_live_at or now, verification.ends_at, now
    )
    if verdict.state is VerificationState.PASSED:
        recorded = _record_pass(services, env, deployment.deployment_id, verdict, measured, now)
        if recorded is None:
            latest = services.store.get_deployment(deployment.deployment_id)
            if (
                latest is not None
                and latest.verification
                and latest.verification.state is VerificationState.PASSED
            ):
                _announce_passed(services, latest)
            return latest
        return _after_pass(services, *recorded)
    log.warning("bake window failed: %s", verdict.detail)
    concluded = verification.concluded(verdict.state, verdict.detail, now, measured)
    return _roll_back(services, env, deployment, concluded, now)


def _judge_on_hints(services: Services, message: StepMessage) -> _HintedVerdict | None:
    """Judge the bake window from the message's hints (green's group, when it went live), reading
    no record: raise `NotReadyYet` while it is pending, which is what nearly every poll finds.

    Returns a pass for the caller to record (its transaction checks the hints against the
    record), or None when the record must decide: no or implausible hints, or a breach, which
    is judged again on the record before anything is rolled back.
    """
    group, went_live_at = message.instance_group, message.went_live_at
    env = services.config.environment(message.app, message.environment)
    if group is None or went_live_at is None or env is None or env.bake_seconds <= 0:
        return None
    now = services.clock.now()
    if went_live_at > now:
        return None  # not a copy of a record: nothing goes live in the future
    ends_at = went_live_at + timedelta(seconds=env.bake_seconds)
    measured, verdict = _judge_window(services, env, group, went_live_at, ends_at, now)
    if verdict.state is VerificationState.PASSED:
        return _HintedVerdict(env, group, went_live_at, measured, verdict, now)
    return None


def _judge_window(
    services: Services,
    env: EnvironmentConfig,
    group: str,
    went_live_at: datetime,
    ends_at: datetime,
    now: datetime,
) -> tuple[Measurement, BakeVerdict]:
    """Measure green since it went live and judge it; raise `NotReadyYet` while the verdict is
    pending, so the redelivery is the next look. Returns a pass or a breach."""
    measured = _measure(services, env, group, went_live_at, now)
    verdict = judge_bake(env.bake_rules, measured)
    if verdict.state is VerificationState.PENDING:
        raise NotReadyYet(f"{verdict.detail}; window ends {ends_at.isoformat()}")
    return measured, verdict


def _measure(
    services: Services, env: EnvironmentConfig, group: str, started: datetime, now: datetime
) -> Measurement:
    elapsed = (now - started).total_seconds()
    healthy = services.compute.serving_healthy(env, group)
    health_detail = "" if healthy else f"not every instance of {group} is healthy"
    if services.metrics is None:
        return Measurement(elapsed, healthy, health_detail, metrics_reason="no metrics source")
    try:
        sample = services.metrics.traffic(env, group, started, now)
    except MetricsUnavailable as exc:  # permanent for this source: judge on health alone, say so
        log.warning("metrics unavailable; verifying by health alone: %s", exc)
        return Measurement(elapsed, healthy, health_detail, metrics_reason=f"metrics unavailable: {exc}")
    return Measurement(elapsed, healthy, health_detail, sample.requests, sample.server_errors)


def _record_pass(
    services: Services,
    env: EnvironmentConfig,
    deployment_id: str,
    verdict: BakeVerdict,
    measured: Measurement,
    now: datetime,
    *,
    hints: tuple[str, datetime] | None = None,
) -> tuple[Deployment, Deployment | None] | None:
    """Record the pass and hand the lock on, if the deployment is still baking (and, for a verdict
    reached on hints, the hints are its group and go-live time). None when it is not."""

    def work(tx: Transaction) -> tuple[Deployment, Deployment | None] | None:
        current = tx.deployment(deployment_id)
        if current is None or not current.baking or current.verification is None:
            return None
        if hints is not None and hints != (current.instance_group, current.went_live_at):
            return None
        concluded = current.verification.concluded(verdict.state, verdict.detail, now, measured)
        passed = current.with_changes(now, verification=concluded)
        state = tx.environment(current.app, current.environment)
        next_deployment = free_lock(tx, state, current.deployment_id, now, policy=env.deploy_policy)
        tx.put_deployment(passed)
        return passed, next_deployment

    return services.store.atomically(work)


def _after_pass(services: Services, passed: Deployment, next_deployment: Deployment | None) -> Deployment:
    log.info("bake window passed: %s", passed.verification.detail if passed.verification else "")
    _announce_passed(services, passed)
    start_next(services, next_deployment)
    return passed


def _announce_passed(services: Services, deployment: Deployment) -> None:
    detail = deployment.verification.detail if deployment.verification else ""
    notify_deployment(services, deployment, "verified", detail)


def _roll_back(
    services: Services, env: EnvironmentConfig, bad: Deployment, concluded: Verification, now: datetime
) -> Deployment | None:
    rollback_id = automatic_rollback_id(bad)
    previous = (
        services.store.get_deployment(bad.replaced_deployment_id) if bad.replaced_deployment_id else None
    )

    def work(tx: Transaction) -> Deployment | None:
        current = tx.deployment(bad.deployment_id)
        if current is None or not current.baking:
            return None  # another delivery decided first
        failed = current.with_changes(now, verification=concluded)
        retained = tx.deployment(previous.deployment_id) if previous is not None else None
        state = tx.environment(current.app, current.environment)
        if retained is None or state is None:
            # Nothing earlier to go back to: record the verdict, free the environment, alert.
            tx.put_deployment(failed)
            free_lock(tx, state, current.deployment_id, now, policy=env.deploy_policy)
            return None
        going_back = _rollback_record(rollback_id, failed, retained, now)
        if _retained_group_usable(retained, going_back, now):
            tx.put_deployment(retained.with_changes(now, cleanup_due_at=None, adopted_by=rollback_id))
            going_back = (
                going_back.advance(
                    DeploymentStatus.PROVISIONING, now, f"environment lock kept from {bad.deployment_id}"
                )
                .advance(
                    DeploymentStatus.COOLING_DOWN,
                    now,
                    f"traffic switch to the retained group {retained.instance_group} of"
                    f" {retained.deployment_id} ({retained.version}) at once",
                    instance_template=retained.instance_template,
                    instance_group=retained.instance_group,
                    not_before=now,
                )
                .advance(DeploymentStatus.SWITCHING, now, "switching traffic back")
            )
        else:
            going_back = going_back.advance(
                DeploymentStatus.PROVISIONING,
                now,
                f"environment lock kept from {bad.deployment_id}; the previous group is gone:"
                " redeploying the previous release",
            )
        tx.put_environment(replace(state, active_deployment_id=rollback_id, locked_at=now, updated_at=now))
        tx.put_deployment(failed)
        tx.put_deployment(going_back)
        return going_back

    going_back = services.store.atomically(work)
    latest = services.store.get_deployment(bad.deployment_id)
    if going_back is None:
        failed = (
            latest is not None
            and latest.status is DeploymentStatus.LIVE
            and latest.verification is not None
            and latest.verification.state is VerificationState.FAILED
        )
        if failed and latest is not None:
            # Either nothing earlier to go back to, or another delivery started the rollback.
            return _resume_rollback(services, env, latest)
        return latest
    return _continue_rollback(services, env, going_back, latest or bad)


def _rollback_record(rollback_id: str, bad: Deployment, previous: Deployment, now: datetime) -> Deployment:
    """A deployment of the previous release, started by the pipeline itself (no request to prove)."""
    build_id = f"auto-rollback-{bad.deployment_id}"
    reason = _breach(bad)
    return Deployment.queued(
        deployment_id=rollback_id,
        app=previous.app,
        environment=previous.environment,
        version=previous.version,
        commit=previous.commit,
        build_id=build_id,
        artifact=previous.artifact,
        artifact_sha256=previous.artifact_sha256,
        committed_at=previous.committed_at,
        event={**previous.event, "build_id": build_id},
        at=now,
        rollback_of=bad.deployment_id,
        triggered_by=AUTOMATIC_ROLLBACK_ACTOR,
        reason=f"{bad.version} failed its bake window: {reason}",
        branch=previous.branch,
        commit_messages=previous.commit_messages,
        detail=f"automatic rollback of {bad.deployment_id} ({bad.version}): {reason}",
    )


def _retained_group_usable(retained: Deployment, going_back: Deployment, now: datetime) -> bool:
    return is_adoptable(retained, going_back, now)


def _resume_rollback(services: Services, env: EnvironmentConfig, bad: Deployment) -> Deployment | None:
    """A later delivery for a release whose breach is recorded: carry on with its rollback."""
    going_back = services.store.get_deployment(automatic_rollback_id(bad))
    if going_back is None:
        _announce_failed(services, bad, "nothing earlier was live here to roll back to")
        return bad
    return _continue_rollback(services, env, going_back, bad)


def _continue_rollback(
    services: Services, env: EnvironmentConfig, going_back: Deployment, bad: Deployment
) -> Deployment | None:
    if going_back.status is DeploymentStatus.SWITCHING and going_back.instance_group:
        return switch_traffic(services, env, going_back, going_back.instance_group)
    if going_back.status is DeploymentStatus.PROVISIONING:
        # The previous group is gone: the rollback runs as an ordinary deployment. Say so now;
        # its switch later ends the bad release `rolled_back` with the usual alert.
        _announce_failed(
            services,
            bad,
            f"the previous release's group is gone, so {going_back.version} is being"
            f" redeployed ({going_back.deployment_id})",
        )
        publish_step(services, topology.START_ROLLING_REPLACE, going_back)
        return going_back
    if going_back.status is DeploymentStatus.LIVE:
        latest = services.store.get_deployment(bad.deployment_id)
        if latest is not None and latest.status is DeploymentStatus.ROLLED_BACK:
            notify_status(services, latest)  # a redelivery after a lost alert; deduplicated
    return going_back


def _announce_failed(services: Services, bad: Deployment, what_follows: str) -> None:
    """The one `verification_failed` alert for a breach the `rolled_back` alert will not tell
    (nothing to go back to, or the previous release being redeployed first)."""
    notify_deployment(services, bad, "verification_failed", f"{_breach(bad)}; {what_follows}")


def _breach(bad: Deployment) -> str:
    """What the failed bake window saw, as recorded with its verdict."""
    return bad.verification.detail if bad.verification else "bake window failed"
