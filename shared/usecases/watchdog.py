"""watchdog: the safety net run on every scheduler tick.

- fails deployments past their provisioning deadline (green deleted, lock freed, next started),
  except one whose green is ready, which it sends to its switch, up to twice the deadline;
- abandons a switch still not complete a deadline after it began (traffic handed back to the
  live release; shared/usecases/abandon.py), unless the load balancer sees green healthy by then,
  up to twice that;
- re-publishes the pending step of a deployment that stalled (a publish lost after a commit);
- re-publishes the bake step of a live release whose bake window stalled;
- starts a queued deployment whose environment is free once its deploy window is open;
- deletes retired blue groups once their connections have drained and their retention is over;
- collects what a crash left behind: templates and groups named by the pipeline that no record
  needs (see shared/domain/leaks.py), and announces them in one notification per sweep.
- cancels deployments still awaiting approval after their environment's approval timeout;
- announces an outcome whose own announcement was lost (a crash between its commit and its
  publish: `announce_due_at`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from shared import topology
from shared.domain.approval import approval_expires_at
from shared.domain.leaks import ListedResource, Owner, leaked, names_needed_by, with_their_templates
from shared.domain.notify_message import NotifyRequest
from shared.domain.records import Deployment
from shared.domain.status import HOLDS_LOCK, IN_PROGRESS, UNFINISHED, DeploymentStatus
from shared.domain.windows import may_start_now
from shared.logging import get_logger, log_context
from shared.ports import PermanentError, Transaction, TransientError
from shared.usecases.abandon import abandon_switch, green_ready_for_cleanup, judge_switch
from shared.usecases.lifecycle import (
    announce_due,
    announce_outcome,
    delete_green,
    deploy_policy,
    fail_deployment,
    fail_unconfigured,
    held_for_window,
)
from shared.usecases.services import Services, publish_notify, publish_step
from shared.usecases.switch import judge_green

log = get_logger("watchdog")

STALL_SECONDS = 60
"""A step that has not moved for this long gets its message published again."""


@dataclass
class WatchdogReport:
    failed: list[str] = field(default_factory=list)
    kicked: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    """Outcomes the call that committed them did not announce (it died first)."""
    collected: list[str] = field(default_factory=list)
    """Leaked templates and groups deleted in this sweep."""
    errors: list[str] = field(default_factory=list)


def run_watchdog(
    services: Services, stall_seconds: int = STALL_SECONDS, *, look_for_leaks: bool = True
) -> WatchdogReport:
    """One sweep. `look_for_leaks=False` skips the leak collection, the sweep's costliest part (it
    lists every group and template and reads every deployment that needs one)."""
    report = WatchdogReport()
    now = services.clock.now()
    for deployment in services.store.deployments_with_status(sorted(UNFINISHED)):
        with log_context(
            app=deployment.app, environment=deployment.environment, deployment_id=deployment.deployment_id
        ):
            try:
                _check(services, deployment, now, report, stall_seconds)
            except (TransientError, PermanentError) as exc:  # either: the next tick looks again
                # One stuck deployment must not block the sweep of the others.
                log.warning("watchdog could not handle deployment: %s", exc)
                report.errors.append(f"{deployment.deployment_id}: {exc}")
    for deployment in services.store.baking_deployments():
        if not (deployment.baking and deployment.is_quiet_for(now, stall_seconds)):
            continue
        with log_context(
            app=deployment.app, environment=deployment.environment, deployment_id=deployment.deployment_id
        ):
            try:
                _kick(services, deployment, now, report)
            except (TransientError, PermanentError) as exc:  # either kind: the next tick looks again
                log.warning("could not resume the bake window: %s", exc)
                report.errors.append(f"{deployment.deployment_id}: {exc}")
    for deployment in services.store.deployments_due_for_announcement(now):
        with log_context(
            app=deployment.app, environment=deployment.environment, deployment_id=deployment.deployment_id
        ):
            try:
                announce_outcome(services, deployment)
                report.announced.append(deployment.deployment_id)
            except (TransientError, PermanentError) as exc:  # either kind: the next tick tries again
                log.warning("could not announce the outcome: %s", exc)
                report.errors.append(f"{deployment.deployment_id}: {exc}")
    for deployment in services.store.deployments_due_for_cleanup(now):
        with log_context(
            app=deployment.app, environment=deployment.environment, deployment_id=deployment.deployment_id
        ):
            try:
                if _clean_up(services, deployment, now):
                    report.cleaned.append(deployment.deployment_id)
            except (TransientError, PermanentError) as exc:  # either kind: retried on the next tick
                log.warning("could not delete drained resources: %s", exc)
                report.errors.append(f"{deployment.deployment_id}: {exc}")
    if not look_for_leaks:
        return report
    try:
        collect_leaks(services, report)
    except (TransientError, PermanentError) as exc:  # either kind: the next tick lists again
        log.warning("could not look for leaked resources: %s", exc)
        report.errors.append(f"leak collection: {exc}")
    return report


def _check(
    services: Services, deployment: Deployment, now: datetime, report: WatchdogReport, stall_seconds: int
) -> None:
    env = services.config.environment(deployment.app, deployment.environment)
    if deployment.status is DeploymentStatus.AWAITING_APPROVAL:
        if env is None:
            reason = "environment no longer configured"
        elif now >= approval_expires_at(deployment, env.approval_timeout_seconds):
            reason = f"no approval within {env.approval_timeout_seconds} s (watchdog)"
        else:
            return
        if _cancel_waiting(services, deployment, now, reason):
            report.expired.append(deployment.deployment_id)
        return
    if env is None:
        if fail_unconfigured(services, deployment.deployment_id):
            report.failed.append(deployment.deployment_id)
        return
    status = deployment.status
    deadline = env.provisioning_deadline_seconds
    if status is DeploymentStatus.PROVISIONING and deployment.is_past_deadline(now, deadline):
        if fail_deployment(
            services, deployment.deployment_id, f"not live within the {deadline} s deadline (watchdog)"
        ):
            report.failed.append(deployment.deployment_id)
        return
    if status is DeploymentStatus.COOLING_DOWN and deployment.is_past_deadline(now, deadline):
        verdict = judge_green(services, env, deployment, now)
        if verdict.failure is not None:
            if fail_deployment(services, deployment.deployment_id, f"{verdict.failure} (watchdog)"):
                report.failed.append(deployment.deployment_id)
            return
        # Late, not failed: green is ready, and its cool-down step switches it.
        if _kicked_once_since(services, deployment, deployment.deadline_at(deadline), now, report):
            return
    switch_due = deployment.switch_deadline_at(deadline) if status is DeploymentStatus.SWITCHING else None
    if switch_due is not None and now >= switch_due:
        why_abandon = judge_switch(services, env, deployment, now)
        if why_abandon is not None:
            if abandon_switch(services, deployment.deployment_id, f"{why_abandon} (watchdog)"):
                report.failed.append(deployment.deployment_id)
            return
        # Late, not stuck: the load balancer sees green healthy, and its step switches it.
        if _kicked_once_since(services, deployment, switch_due, now, report):
            return
    if status is DeploymentStatus.QUEUED:
        _start_if_orphaned(services, deployment, report)
        return
    if deployment.is_quiet_for(now, stall_seconds):
        _kick(services, deployment, now, report)


def _cancel_waiting(services: Services, deployment: Deployment, now: datetime, reason: str) -> bool:
    """Cancel a deployment still awaiting approval and announce it; False if it moved on."""

    def work(tx: Transaction) -> Deployment | None:
        current = tx.deployment(deployment.deployment_id)
        if current is None or current.status is not DeploymentStatus.AWAITING_APPROVAL:
            return None
        state = tx.environment(current.app, current.environment)
        if state is not None and state.awaiting_deployment_id == current.deployment_id:
            tx.put_environment(replace(state, awaiting_deployment_id=None, updated_at=now))
        cancelled = current.advance(
            DeploymentStatus.CANCELLED, now, reason, announce_due_at=announce_due(now)
        )
        tx.put_deployment(cancelled)
        return cancelled

    cancelled = services.store.atomically(work)
    if cancelled is None:
        return False
    log.info("cancelled a deployment awaiting approval: %s", reason)
    announce_outcome(services, cancelled)
    return True


def _kicked_once_since(
    services: Services, deployment: Deployment, since: datetime, now: datetime, report: WatchdogReport
) -> bool:
    """For a late step: publish it once more at `since` (a deadline), in case its own message is
    what went missing; after that, as for any step, only when it stalls. Whether it published."""
    if deployment.last_kick_at is not None and deployment.last_kick_at >= since:
        return False
    _kick(services, deployment, now, report)
    return True


def _kick(services: Services, deployment: Deployment, now: datetime, report: WatchdogReport) -> None:
    """Publish the deployment's pending step again, noting when (so it is not re-published on
    every tick while the step runs)."""

    def kicked(current: Deployment) -> Deployment | None:
        return replace(current, last_kick_at=now) if current.status is deployment.status else None

    services.store.update_deployment(deployment.deployment_id, kicked)
    if deployment.baking:
        topic = topology.BAKE_CHECK
    elif deployment.status is DeploymentStatus.PROVISIONING:
        topic = topology.START_ROLLING_REPLACE
    else:  # cooling down or switching
        topic = topology.COOL_DOWN_COMPLETE
    publish_step(services, topic, deployment)
    log.info("re-published %s", topic)
    report.kicked.append(deployment.deployment_id)


def _start_if_orphaned(services: Services, deployment: Deployment, report: WatchdogReport) -> None:
    """A queued deployment whose environment is free, or held by a deployment that has ended
    (a hand-over that was lost), takes the lock, if the environment's deploy windows let it
    start now. This is also what starts a deployment that waited for its window to open."""
    now = services.clock.now()
    policy = deploy_policy(services, deployment.app, deployment.environment)
    may_start = may_start_now(policy, now, rollback=deployment.is_rollback)
    if not may_start and held_for_window(deployment, policy, now) is None:
        return  # Still waiting, and its history already says until when: nothing to write.

    def work(tx: Transaction) -> Deployment | None:
        current = tx.deployment(deployment.deployment_id)
        state = tx.environment(deployment.app, deployment.environment)
        if current is None or current.status is not DeploymentStatus.QUEUED or state is None:
            return None
        if state.active_deployment_id is not None:
            holder = tx.deployment(state.active_deployment_id)
            # A lock held by a deployment that has ended (its hand-over was lost) is free.
            # A release in its bake window keeps the lock until the verdict.
            if holder is not None and (holder.status in HOLDS_LOCK or holder.baking):
                return None
        if not may_start:
            held = held_for_window(current, policy, now)
            if held is not None:
                tx.put_deployment(held)
            return None
        started = current.advance(
            DeploymentStatus.PROVISIONING,
            now,
            "deploy window open (watchdog)" if policy.restricts else "environment free (watchdog)",
        )
        tx.put_environment(
            replace(
                state,
                active_deployment_id=current.deployment_id,
                locked_at=now,
                queue=tuple(d for d in state.queue if d != current.deployment_id),
                updated_at=now,
            )
        )
        tx.put_deployment(started)
        return started

    started = services.store.atomically(work)
    if started is not None:
        publish_step(services, topology.START_ROLLING_REPLACE, started)
        report.kicked.append(started.deployment_id)


def _clean_up(services: Services, deployment: Deployment, now: datetime) -> bool:
    """Delete a group whose draining (and retention) are over: a retired release's, or an
    abandoned switch's green once it is handed back. False if it is not to go yet (adopted by a
    rollback, still attached, its draining pushed back)."""
    # Read again: a rollback may have adopted the group since the sweep's query. Adoption
    # refuses groups due within its margin, so past this point the group is no longer claimable.
    current = services.store.get_deployment(deployment.deployment_id)
    if current is None or current.cleanup_due_at is None or current.cleanup_due_at > now:
        return False
    if current.status is DeploymentStatus.FAILED and not green_ready_for_cleanup(services, current, now):
        return False
    delete_green(services, current)

    def work(tx: Transaction) -> None:
        latest = tx.deployment(deployment.deployment_id)
        if latest is not None and latest.cleanup_due_at is not None:
            tx.put_deployment(replace(latest, cleanup_due_at=None, resources_deleted_at=now))

    services.store.atomically(work)
    log.info("deleted drained group %s", current.group_name)
    return True


NEEDS_RESOURCES: frozenset[DeploymentStatus] = IN_PROGRESS | {DeploymentStatus.LIVE}
"""Deployments whose template and group are in use or may be being created right now."""
RETAINED_HORIZON = datetime(9999, 1, 1, tzinfo=UTC)
"""Any clean-up due before this: every retired group still kept (for a rollback) or draining."""


def collect_leaks(services: Services, report: WatchdogReport) -> list[ListedResource]:
    """Delete the pipeline's templates and groups that no record needs; announce them once.

    The resources are listed before the records are read, so whatever a listing shows was created
    before the read: a deployment that made it is in the records by then, and the grace period
    (the environment's provisioning deadline) covers a step that has not recorded it yet.
    """
    environments = services.config.all_environments()
    if not environments:
        return []
    owners = [
        Owner(env.app, env.name, env.region, timedelta(seconds=env.provisioning_deadline_seconds))
        for env in environments
    ]
    resources: list[ListedResource] = []
    for region in sorted({env.region for env in environments}):
        resources.extend(services.compute.list_instance_groups(region))
    resources.extend(services.compute.list_instance_templates())

    users = services.store.deployments_with_status(sorted(NEEDS_RESOURCES))
    users += services.store.deployments_due_for_cleanup(RETAINED_HORIZON)
    needed = names_needed_by(
        (d.deployment_id for d in users),
        [name for d in users for name in (d.instance_group, d.instance_template)],
    )
    candidates = leaked(resources, needed, owners, services.clock.now())
    if not candidates:
        return []
    # Only now (rarely), belts to the statuses' braces: whatever an environment points at as live
    # stays, and so does any group its backend service still sends (or drains) traffic to,
    # whatever the records' statuses say.
    for owner in {owner for _, owner in candidates}:
        state = services.store.get_environment(owner.app, owner.environment)
        live = (
            services.store.get_deployment(state.live_deployment_id)
            if state and state.live_deployment_id
            else None
        )
        if live is not None:
            needed = needed | names_needed_by(
                [live.deployment_id], [live.instance_group, live.instance_template]
            )
        env = services.config.environment(owner.app, owner.environment)
        assert env is not None  # owners come from the configuration
        needed = needed | frozenset(services.compute.attached_groups(env))
    needed = with_their_templates(needed)
    removed: list[ListedResource] = []
    for resource, owner in candidates:
        if resource.name in needed:
            continue
        env = services.config.environment(owner.app, owner.environment)
        assert env is not None  # owners come from the configuration
        try:
            if resource.kind == "instance_group":
                services.compute.delete_instance_group(env, resource.name)
            else:
                services.compute.delete_instance_template(env, resource.name)
        except (TransientError, PermanentError) as exc:  # either kind: the next sweep finds it again
            log.warning("could not delete leaked %s %s: %s", resource.kind, resource.name, exc)
            report.errors.append(f"{resource.name}: {exc}")
            continue
        log.warning("deleted leaked %s %s (no deployment needs it)", resource.kind, resource.name)
        removed.append(resource)
        report.collected.append(resource.name)
    if removed:
        _announce_collected(
            services, removed, [owner for resource, owner in candidates if resource in removed]
        )
    return removed


def _announce_collected(services: Services, removed: list[ListedResource], owners: list[Owner]) -> None:
    names = sorted(resource.name for resource in removed)
    where = {(owner.app, owner.environment) for owner in owners}
    apps = {app for app, _ in where}
    # One environment: its channels; one app: the app's; several: the operations channels only
    # (they get every leaks_collected notification anyway).
    app = next(iter(apps)) if len(apps) == 1 else None
    environment = next(iter(where))[1] if len(where) == 1 else None
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    publish_notify(
        services,
        NotifyRequest(
            kind="leaks_collected",
            app=app,
            environment=environment,
            status="collected",
            detail=f"{len(names)} left behind by a crash: {', '.join(names)}",
            dedupe_key=f"leaks:{digest}",
        ),
    )
