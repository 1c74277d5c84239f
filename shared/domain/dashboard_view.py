"""What the release dashboard shows for one environment, derived purely from its records.

The dashboard's use case reads the records (the environment's state and the deployments of the
metrics window); everything the page or its JSON shows is computed here, so it is tested
without a browser, a server or Firestore.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.metrics import DeliveryMetrics, format_seconds, phase_durations, went_live_at
from shared.domain.records import Deployment
from shared.domain.status import DeploymentStatus

AWAITING_APPROVAL = DeploymentStatus.AWAITING_APPROVAL
IN_FLIGHT_STATUSES = frozenset({"queued", "provisioning", "cooling_down", "switching"})
"""Deployments on their way (one holds the environment, the others queue)."""
FAILED_STATUSES = frozenset({"failed", "cancelled", "rolled_back"})
MAIN_PHASES = ("queued", "provisioning", "cooling_down", "switching", "live")
HISTORY_ROWS = 25
"""How many of the newest deployments the history table lists."""


@dataclass(frozen=True)
class TimelineStep:
    phase: str
    state: str
    """`done`, `current`, `pending` or `failed`."""
    entered_at: datetime | None
    seconds: float | None
    """Time spent in the phase (for the current one: so far)."""

    @property
    def label(self) -> str:
        """
        >>> TimelineStep("cooling_down", "done", None, None).label
        'cooling down'
        """
        return self.phase.replace("_", " ")


@dataclass(frozen=True)
class DeploymentView:
    deployment_id: str
    version: str
    status: str
    commit: str
    created_at: datetime
    finished_at: datetime | None
    went_live_at: datetime | None
    requested_by: str | None
    approved_by: tuple[str, ...]
    changelog: tuple[str, ...]
    rollback_of: str | None
    phase_seconds: Mapping[str, float]
    total_seconds: float | None
    """Creation to live (or to the end, for one that never went live)."""
    timeline: tuple[TimelineStep, ...]
    detail: str
    """The last history entry's detail: why it failed, what it waits for."""

    @property
    def current_phase(self) -> str:
        current = [step.phase for step in self.timeline if step.state in ("current", "failed")]
        return current[-1] if current else self.status


@dataclass(frozen=True)
class EnvironmentView:
    app: str
    environment: str
    url: str
    live: DeploymentView | None
    live_since: datetime | None
    in_flight: tuple[DeploymentView, ...]
    awaiting_approval: tuple[DeploymentView, ...]
    history: tuple[DeploymentView, ...]
    metrics: DeliveryMetrics
    rollback_targets: tuple[str, ...]
    """Versions that were live here before the current one, newest first (for the rollback form)."""

    @property
    def key(self) -> str:
        return f"{self.app}-{self.environment}"


def requested_by(deployment: Deployment) -> str | None:
    """Who asked for it: the verified requester, else the build's own claim (e.g. CI's user)."""
    return deployment.requested_by or deployment.triggered_by


def approvers(deployment: Deployment) -> tuple[str, ...]:
    """Who approved it, in the order they did (rejections are not approvals)."""
    return tuple(a.by for a in deployment.approvals if a.decision == "approve")


def verification_state(deployment: Deployment) -> str | None:
    return str(deployment.verification.state) if deployment.verification is not None else None


def is_baking(deployment: Deployment) -> bool:
    """Live, with its bake window still running (traffic may yet go back)."""
    return deployment.baking


def timeline(deployment: Deployment, now: datetime) -> tuple[TimelineStep, ...]:
    """The deployment's phases in order, each done, current, pending or failed.

    >>> from datetime import UTC, datetime, timedelta
    >>> from shared.domain.records import Deployment
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> d = Deployment.queued(deployment_id="d", app="a", environment="e", version="1.0.0",
    ...     commit="c", build_id="b", artifact="x", event={}, at=t0)
    >>> from shared.domain.status import DeploymentStatus
    >>> d = d.advance(DeploymentStatus.PROVISIONING, t0 + timedelta(seconds=2))
    >>> [(s.phase, s.state, s.seconds) for s in timeline(d, t0 + timedelta(seconds=5))][:3]
    [('queued', 'done', 2.0), ('provisioning', 'current', 3.0), ('cooling_down', 'pending', None)]
    """
    entered: dict[str, datetime] = {}
    for entry in deployment.history:
        entered.setdefault(str(entry.status), entry.at)
    durations = phase_durations(deployment)
    phases = list(MAIN_PHASES)
    if AWAITING_APPROVAL in entered:
        phases.insert(0, AWAITING_APPROVAL)
    if verification_state(deployment) is not None or "rolled_back" in entered:
        phases.append("bake")
    status = str(deployment.status)
    current = "bake" if is_baking(deployment) else status
    steps: list[TimelineStep] = []
    for phase in phases:
        at = entered.get("live") if phase == "bake" else entered.get(phase)
        if phase == current and phase != "live":
            steps.append(TimelineStep(phase, "current", at, _since(at, now)))
        elif at is not None:
            steps.append(TimelineStep(phase, "done", at, durations.get(phase)))
        else:
            steps.append(TimelineStep(phase, "pending", None, None))
    if status in FAILED_STATUSES:
        steps.append(TimelineStep(status, "failed", entered.get(status), None))
    return tuple(steps)


def _since(at: datetime | None, now: datetime) -> float | None:
    return max(0.0, (now - at).total_seconds()) if at is not None else None


def deployment_view(deployment: Deployment, now: datetime) -> DeploymentView:
    live = went_live_at(deployment)
    end = live or deployment.finished_at
    return DeploymentView(
        deployment_id=deployment.deployment_id,
        version=deployment.version,
        status=str(deployment.status),
        commit=deployment.commit,
        created_at=deployment.created_at,
        finished_at=deployment.finished_at,
        went_live_at=live,
        requested_by=requested_by(deployment),
        approved_by=approvers(deployment),
        changelog=tuple(deployment.commit_messages),
        rollback_of=deployment.rollback_of,
        phase_seconds=phase_durations(deployment),
        total_seconds=(end - deployment.created_at).total_seconds() if end is not None else None,
        timeline=timeline(deployment, now),
        detail=deployment.history[-1].detail if deployment.history else "",
    )


def environment_view(
    *,
    app: str,
    environment: str,
    url: str,
    live_deployment: Deployment | None,
    window: Sequence[Deployment],
    metrics: DeliveryMetrics,
    now: datetime,
) -> EnvironmentView:
    """Everything the page shows for one environment. `window` is newest first."""
    ordered = sorted(window, key=lambda d: d.created_at, reverse=True)
    in_flight = [d for d in reversed(ordered) if str(d.status) in IN_FLIGHT_STATUSES or is_baking(d)]
    waiting = [d for d in reversed(ordered) if d.status is AWAITING_APPROVAL]
    live_version = live_deployment.version if live_deployment else None
    targets = _unique(
        d.version
        for d in sorted(
            (d for d in ordered if went_live_at(d) is not None),
            key=lambda d: went_live_at(d) or d.created_at,
            reverse=True,
        )
        if d.version != live_version and str(d.status) != "rolled_back"
    )
    return EnvironmentView(
        app=app,
        environment=environment,
        url=url,
        live=deployment_view(live_deployment, now) if live_deployment else None,
        live_since=went_live_at(live_deployment) if live_deployment else None,
        in_flight=tuple(deployment_view(d, now) for d in in_flight),
        awaiting_approval=tuple(deployment_view(d, now) for d in waiting),
        history=tuple(deployment_view(d, now) for d in ordered[:HISTORY_ROWS]),
        metrics=metrics,
        rollback_targets=targets,
    )


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def durations_text(view: DeploymentView) -> str:
    """The phases a deployment went through, with their durations, in one line.

    >>> from datetime import UTC, datetime
    >>> view = DeploymentView("d", "1.0.0", "live", "c", datetime(2026, 1, 1, tzinfo=UTC), None, None,
    ...     None, (), (), None, {"queued": 1.0, "cooling_down": 65.0}, 70.0, (), "")
    >>> durations_text(view)
    'queued 1 s · cooling down 1 min 5 s'
    """
    order = ("awaiting_approval", *MAIN_PHASES, "bake")
    parts = [
        f"{phase.replace('_', ' ')} {format_seconds(view.phase_seconds[phase])}"
        for phase in order
        if phase in view.phase_seconds
    ]
    return " · ".join(parts)


def to_json(view: EnvironmentView) -> dict[str, Any]:
    """The dashboard's JSON for one environment (what the page shows, for scripts)."""

    def deployment(d: DeploymentView) -> dict[str, Any]:
        return {
            "deployment_id": d.deployment_id,
            "version": d.version,
            "status": d.status,
            "phase": d.current_phase,
            "commit": d.commit,
            "created_at": d.created_at.isoformat(),
            "went_live_at": d.went_live_at.isoformat() if d.went_live_at else None,
            "requested_by": d.requested_by,
            "approved_by": list(d.approved_by),
            "changelog": list(d.changelog),
            "rollback_of": d.rollback_of,
            "phases_seconds": dict(d.phase_seconds),
            "timeline": [
                {
                    "phase": s.phase,
                    "state": s.state,
                    "seconds": s.seconds,
                    "at": s.entered_at.isoformat() if s.entered_at else None,
                }
                for s in d.timeline
            ],
        }

    metrics = view.metrics
    return {
        "app": view.app,
        "environment": view.environment,
        "url": view.url or None,
        "live": None
        if view.live is None
        else {
            "version": view.live.version,
            "deployment_id": view.live.deployment_id,
            "since": view.live_since.isoformat() if view.live_since else None,
        },
        "in_flight": [deployment(d) for d in view.in_flight],
        "awaiting_approval": [deployment(d) for d in view.awaiting_approval],
        "history": [deployment(d) for d in view.history],
        "metrics": {
            **metrics.to_json(),
            "bands": {k: (str(v) if v else None) for k, v in metrics.bands.items()},
        },
        "deployments_per_day": [
            {"day": day.isoformat(), "live": count} for day, count in metrics.live_per_day
        ],
        "rollback_targets": list(view.rollback_targets),
    }
