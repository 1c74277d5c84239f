"""approve: an approver's decision on a deployment awaiting approval (CONTRACT §4c, §8).

Approve: the decision is recorded, the deployment goes `queued` and joins the environment's
queue like any other (it takes the lock if it is free; newest wins). Reject: recorded, and the
deployment is `cancelled`. One transaction each, checking the status first, so a racing
decision changes nothing twice: the loser gets 409. The same approver repeating the same decision
(a retry after a timeout, or after a crash between the commit and the announcement) changes
nothing either and gets 409 like any call on a deployment no longer waiting (CONTRACT §4c), but
the decision, and the deployments it superseded, are announced again first, so a crash can never
leave them unsaid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared import topology
from shared.domain.approval import (
    AlreadyDecided,
    Decision,
    UnknownDeployment,
    check_approver,
    check_awaiting,
    recorded_decision,
)
from shared.domain.identity import CallerCheck
from shared.domain.notify_message import NotifyRequest
from shared.domain.records import Approval, Deployment, EnvironmentState
from shared.domain.status import DeploymentStatus
from shared.logging import bind, get_logger
from shared.ports import Transaction
from shared.usecases.admit_build import join_queue, still_superseded
from shared.usecases.notify import facts_of
from shared.usecases.services import Services, notify_status, publish_notify, publish_step

log = get_logger("approval")


@dataclass(frozen=True)
class DecisionTaken:
    deployment_id: str
    status: DeploymentStatus


@dataclass(frozen=True)
class _Outcome:
    deployment: Deployment
    superseded: tuple[Deployment, ...] = ()
    repeated: bool = False
    """The caller's same decision was already recorded: nothing changed this time."""


def decide(
    services: Services,
    *,
    deployment_id: str,
    decision: Decision,
    caller: str,
    caller_matches: CallerCheck,
    reason: str | None = None,
) -> DecisionTaken:
    """Take `caller`'s decision; raises `ApprovalRefused` subclasses (403, 404, 409)."""
    bind(deployment_id=deployment_id)
    deployment = services.store.get_deployment(deployment_id)
    env = services.config.environment(deployment.app, deployment.environment) if deployment else None
    if deployment is None or env is None:
        raise UnknownDeployment(f"no deployment {deployment_id} in a configured environment")
    check_approver(caller, deployment, env.approvers, caller_matches(env.approvers))
    if recorded_decision(deployment, caller, decision) is not None:
        superseded = still_superseded(services.store.get_deployment, deployment)
        _announce(services, _Outcome(deployment, superseded, repeated=True), decision)
        raise _already_decided(deployment, caller, decision)
    check_awaiting(deployment)
    now = services.clock.now()
    approval = Approval(by=caller, decision=str(decision), at=now, reason=reason)

    def work(tx: Transaction) -> _Outcome:
        current = tx.deployment(deployment_id)
        if current is None:
            raise UnknownDeployment(f"no deployment {deployment_id}")
        if recorded_decision(current, caller, decision) is not None:
            # A racing copy of this request won (or an earlier try died before announcing).
            return _Outcome(current, still_superseded(tx.deployment, current), repeated=True)
        check_awaiting(current)  # again, inside the transaction: a racing decision may have won
        state = tx.environment(current.app, current.environment) or EnvironmentState(
            current.app, current.environment
        )
        if state.awaiting_deployment_id == deployment_id:
            state = replace(state, awaiting_deployment_id=None, updated_at=now)
        said = f": {reason}" if reason else ""
        if decision is Decision.REJECT:
            rejected = current.with_approval(approval).advance(
                DeploymentStatus.CANCELLED, now, f"rejected by {caller}{said}"
            )
            tx.put_deployment(rejected)
            tx.put_environment(state)
            return _Outcome(rejected)
        approved = current.with_approval(approval).advance(
            DeploymentStatus.QUEUED, now, f"approved by {caller}{said}"
        )
        # An approved deployment is never a rollback (rollbacks do not wait for approval), so the
        # deploy windows apply: outside them it stays queued until the watchdog starts it.
        approved, state, superseded = join_queue(
            tx, state, approved, now, policy=env.deploy_policy, rollback=False
        )
        for cancelled in superseded:
            tx.put_deployment(cancelled)
        approved = replace(
            approved, superseded=(*approved.superseded, *(c.deployment_id for c in superseded))
        )
        tx.put_deployment(approved)
        tx.put_environment(state)
        return _Outcome(approved, tuple(superseded))

    outcome = services.store.atomically(work)
    taken = _announce(services, outcome, decision)
    if outcome.repeated:
        raise _already_decided(outcome.deployment, caller, decision)
    log.info("%s by %s", decision, caller, extra={"fields": {"status": str(outcome.deployment.status)}})
    return taken


def _already_decided(deployment: Deployment, caller: str, decision: Decision) -> AlreadyDecided:
    log.info("%s by %s repeated; announced again", decision, caller)
    return AlreadyDecided(
        f"{deployment.deployment_id} is {deployment.status}: {caller} already took this decision "
        "(announced again)"
    )


def _announce(services: Services, outcome: _Outcome, decision: Decision) -> DecisionTaken:
    """Announce a decision recorded just now, or again for a repeated request: the first one may
    have crashed after its commit and before these publishes. Notifications are deduplicated per
    (deployment, status) downstream and the first step is idempotent, so announcing twice is safe."""
    decided = outcome.deployment
    if decision is Decision.APPROVE:
        approval = next(a for a in reversed(decided.approvals) if a.decision == str(Decision.APPROVE))
        publish_notify(
            services,
            NotifyRequest.for_deployment(
                app=decided.app,
                environment=decided.environment,
                deployment_id=decided.deployment_id,
                version=decided.version,
                status="approved",
                detail=f"approved by {approval.by}" + (f": {approval.reason}" if approval.reason else ""),
                facts=facts_of(decided, "approved", services.clock.now()),
            ),
        )
    elif decided.status is DeploymentStatus.CANCELLED:
        notify_status(services, decided)
    for cancelled in outcome.superseded:
        notify_status(services, cancelled)
    if decided.status is DeploymentStatus.PROVISIONING:
        # If this publish is lost, the watchdog finds it stalled and publishes it again.
        publish_step(services, topology.START_ROLLING_REPLACE, decided)
    return DecisionTaken(deployment_id=decided.deployment_id, status=decided.status)
