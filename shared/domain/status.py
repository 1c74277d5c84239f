"""The deployment state machine (CONTRACT §6 statuses) with checked transitions.

    queued → provisioning → cooling_down → switching → live → retired
    queued → cancelled (a newer build superseded it)
    queued | provisioning | cooling_down → failed
    live → rolled_back (failed its bake window; traffic went back to the previous release)

`switching` cannot fail: by then traffic may already reach green, so the switch is retried
until it completes rather than abandoned half-way. A failing smoke check fails a deployment
in `cooling_down`, before any user request reaches it; a breach of the bake window happens
after the switch, so it is not a failure of the switch but a return of traffic: `rolled_back`.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
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
    S.QUEUED: frozenset({S.PROVISIONING, S.CANCELLED, S.FAILED}),
    S.PROVISIONING: frozenset({S.COOLING_DOWN, S.FAILED}),
    S.COOLING_DOWN: frozenset({S.SWITCHING, S.FAILED}),
    S.SWITCHING: frozenset({S.LIVE}),
    S.LIVE: frozenset({S.RETIRED, S.ROLLED_BACK}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.RETIRED: frozenset(),
    S.ROLLED_BACK: frozenset(),
}

IN_PROGRESS: frozenset[DeploymentStatus] = frozenset({S.QUEUED, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING})
"""Not finished yet: the watchdog looks at these."""

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
