"""Approvals (CONTRACT §4c, §8): who may decide on a deployment awaiting approval, and when
an unanswered one expires.

The two-person rule: an approver of the environment, other than the identity that requested
the deployment. A CI build has no verified requester (`requested_by` is None; its
`triggered_by` is only CI's claim), so any approver may approve it: the person who pushed is
not an identity the pipeline has verified, and the approver is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from shared.domain.records import Approval, Deployment
from shared.domain.refusal import RequestRefused
from shared.domain.status import DeploymentStatus


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ApprovalRefused(RequestRefused):
    """The decision cannot be taken; `http_status` is the CONTRACT §4c answer."""


class UnknownDeployment(ApprovalRefused):
    http_status = 404


class NotAnApprover(ApprovalRefused):
    """403: not an approver of the environment, or the identity that requested the deployment."""

    http_status = 403


class NotAwaitingApproval(ApprovalRefused):
    http_status = 409


class AlreadyDecided(NotAwaitingApproval):
    """409 like any decision on a deployment no longer waiting (CONTRACT §4c), for the caller's
    own decision repeated: a retry. Nothing changes; the decision has been announced again."""


def same_identity(left: str | None, right: str | None) -> bool:
    """E-mail identities compare without case and surrounding blanks.

    >>> same_identity("Ada@Example.com ", "ada@example.com")
    True
    >>> same_identity(None, "ada@example.com")
    False
    """
    if not left or not right:
        return False
    return left.strip().lower() == right.strip().lower()


def check_approver(caller: str, deployment: Deployment, approvers: Iterable[str], is_approver: bool) -> None:
    """Raise `NotAnApprover` unless `caller` may decide on `deployment`.

    `is_approver` is whether the caller matches the environment's `approvers` (the matching
    rules live with the identity checks); `approvers` only names them in the refusal.

    >>> from datetime import timezone
    >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> d = Deployment.queued(deployment_id="d", app="a", environment="production", version="1.0.0",
    ...     commit="c" * 40, build_id="b", artifact="gs://b/a.tar.gz", event={}, at=at,
    ...     requested_by="ada@example.com", awaiting_approval=True)
    >>> check_approver("ADA@example.com", d, ["*@example.com"], True)
    Traceback (most recent call last):
    ...
    shared.domain.approval.NotAnApprover: ADA@example.com requested d and cannot approve it too
    """
    if not is_approver:
        names = ", ".join(approvers) or "nobody is configured"
        raise NotAnApprover(
            f"{caller} is not an approver of {deployment.app}/{deployment.environment} (approvers: {names})"
        )
    if same_identity(caller, deployment.requested_by):
        raise NotAnApprover(f"{caller} requested {deployment.deployment_id} and cannot approve it too")


def check_awaiting(deployment: Deployment) -> None:
    if deployment.status is not DeploymentStatus.AWAITING_APPROVAL:
        raise NotAwaitingApproval(f"{deployment.deployment_id} is {deployment.status}, not awaiting approval")


def recorded_decision(deployment: Deployment, caller: str, decision: Decision) -> Approval | None:
    """The caller's own decision, already taken, when `decision` repeats it: a retry of the same
    request (perhaps after a crash between its commit and its announcement). None otherwise, and
    always while the deployment still waits (then the decision is simply taken).

    >>> from datetime import timezone
    >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> d = Deployment.queued(deployment_id="d", app="a", environment="production", version="1.0.0",
    ...     commit="c" * 40, build_id="b", artifact="gs://b/a.tar.gz", event={}, at=at,
    ...     awaiting_approval=True)
    >>> recorded_decision(d, "bo@example.com", Decision.APPROVE) is None
    True
    >>> approved = d.with_approval(Approval("bo@example.com", "approve", at, "ok")).advance(
    ...     DeploymentStatus.QUEUED, at, "approved by bo@example.com")
    >>> recorded_decision(approved, "BO@example.com", Decision.APPROVE).reason
    'ok'
    >>> recorded_decision(approved, "bo@example.com", Decision.REJECT) is None
    True
    >>> recorded_decision(approved, "cy@example.com", Decision.APPROVE) is None
    True
    """
    if deployment.status is DeploymentStatus.AWAITING_APPROVAL:
        return None
    return next(
        (
            approval
            for approval in reversed(deployment.approvals)
            if same_identity(caller, approval.by) and approval.decision == str(decision)
        ),
        None,
    )


def approval_expires_at(deployment: Deployment, timeout_seconds: int) -> datetime:
    """When an unanswered deployment is cancelled: its creation plus the environment's timeout.

    >>> from datetime import timezone
    >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> d = Deployment.queued(deployment_id="d", app="a", environment="production", version="1.0.0",
    ...     commit="c" * 40, build_id="b", artifact="gs://b/a.tar.gz", event={}, at=at,
    ...     awaiting_approval=True)
    >>> approval_expires_at(d, 3600).isoformat()
    '2026-01-01T01:00:00+00:00'
    """
    return deployment.created_at + timedelta(seconds=timeout_seconds)


def awaiting_detail(deployment_id: str, approvers: Iterable[str]) -> str:
    """The history line (and notification) of a deployment that starts waiting.

    >>> awaiting_detail("hello-production-1", ["ops@example.com"])
    'awaiting approval by ops@example.com; approve with: releasectl approve hello-production-1'
    """
    names = ", ".join(approvers) or "an approver (none configured)"
    return f"awaiting approval by {names}; approve with: releasectl approve {deployment_id}"
