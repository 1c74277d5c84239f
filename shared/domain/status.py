"""The deployment state machine (CONTRACT §6 statuses) with checked transitions.

    [awaiting_approval →] queued → provisioning → cooling_down → switching → live → retired
    awaiting_approval → cancelled (rejected, expired, or a newer deployment superseded it)
    queued → cancelled (a newer build superseded it)
    queued | provisioning | cooling_down → failed
    switching → failed (an overdue switch the watchdog abandons; traffic back on the live release)
    live → rolled_back (failed its bake window; traffic went back to the previous release)

`awaiting_approval` is where every deployment but a rollback starts in an environment that is
not `auto_deploy`; it holds no lock and owns no Compute resources, so leaving it never needs a
clean-up. Approval moves it to `queued`, from where it runs like any other deployment.

`switching` is retried until it completes, not abandoned half-way: traffic may already reach
green. It fails only when its switch is overdue (the load balancer has not seen green healthy
within the provisioning deadline counted from the switch's start, and still does not, or twice
that has passed): then the watchdog commits `failed` first, so that a late switch's own
transaction changes nothing, hands the traffic back to the live release and lets green drain
before its clean-up (shared/usecases/abandon.py). Only the watchdog fails a `switching` deployment;
`fail_deployment` never does. A failing smoke check
fails a deployment in `cooling_down`, before any user request reaches it; a breach of the bake
window happens after the switch, so it is not a failure of the switch but a return of traffic:
`rolled_back`.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    COOLING_DOWN = "cooling_down"
    SWITCHING = "switching"
    LIVE = "live"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"


S = DeploymentStatus

ALLOWED_TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.PROVISIONING, S.CANCELLED, S.FAILED}),
    S.PROVISIONING: frozenset({S.COOLING_DOWN, S.FAILED}),
    S.COOLING_DOWN: frozenset({S.SWITCHING, S.FAILED}),
    S.SWITCHING: frozenset({S.LIVE, S.FAILED}),
    S.LIVE: frozenset({S.RETIRED, S.ROLLED_BACK}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.RETIRED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}

IN_PROGRESS: frozenset[DeploymentStatus] = frozenset({S.QUEUED, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING})
"""On their way (approved, or never needing approval): the watchdog looks at these."""

AWAITING: frozenset[DeploymentStatus] = frozenset({S.AWAITING_APPROVAL})
"""Recorded, waiting for an approver; the watchdog expires them."""

UNFINISHED: frozenset[DeploymentStatus] = IN_PROGRESS | AWAITING
"""Everything that has not ended: what a newer deployment or a promotion must look at."""

HOLDS_LOCK: frozenset[DeploymentStatus] = frozenset({S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING})
"""Statuses of the one deployment that owns its environment."""

FINISHED: frozenset[DeploymentStatus] = frozenset({S.LIVE, S.FAILED, S.CANCELLED})
"""Statuses that end a deployment's run (`finished_at` is set on entering them)."""


class IllegalTransition(ValueError):
    """A status change the state machine does not allow (e.g. a late or duplicate event)."""

    def __init__(self, current: DeploymentStatus, target: DeploymentStatus) -> None:
        super().__init__(f"cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: DeploymentStatus, target: DeploymentStatus) -> bool:
    """
    >>> can_transition(DeploymentStatus.QUEUED, DeploymentStatus.PROVISIONING)
    True
    >>> can_transition(DeploymentStatus.LIVE, DeploymentStatus.FAILED)
    False
    """
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(current: DeploymentStatus, target: DeploymentStatus) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


def is_terminal(status: DeploymentStatus) -> bool:
    return not ALLOWED_TRANSITIONS[status]
