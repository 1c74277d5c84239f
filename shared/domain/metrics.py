"""Delivery metrics ("four keys") and phase durations, computed from deployment records.

Pure: the caller reads the deployments of a window (created at or after `since`) and passes
them in with the window's bounds. Definitions (the README states them for readers):

- **Deployment frequency**: deployments that went live in the window (rollbacks included, they
  are deployments too), divided by the window's length in days.
- **Lead time for changes**: commit → live, for each deployment that went live in the window and
  whose build carried `committed_at`, rollbacks excepted (they bring back an old commit, not a
  change). p50 and p90.
- **Change failure rate**: of the deployments that went live in the window, the share that were
  later rolled back: by hand (a later deployment's `rollback_of` names it) or automatically
  (it ended `rolled_back` after failing its bake window). A build that failed before it got
  traffic is not a change failure: the pipeline kept it away from users.
- **Time to restore**: for each such failure, from the bad deployment going live to service
  being restored: the moment the deployment that replaced it went live (a rollback by hand),
  or the moment traffic returned to the previous release (`rolled_back`). p50 and p90.
- **Phase durations**: from each deployment's `history`, the time from entering a phase to the
  next entry (awaiting approval, queued, provisioning, cooling down, switching), and the bake
  window (live → verification verdict, or live → rolled back). p50 and p90.

Every figure is None where there is no data. Percentiles interpolate linearly between the two
nearest ranks (as spreadsheets' PERCENTILE and numpy's default do), so p50 is the median.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any

from shared.domain.records import Deployment
from shared.domain.verification import VerificationState

ROLLED_BACK = "rolled_back"
"""The status of a deployment whose bake window failed and whose traffic went back (CONTRACT §6)."""
LIVE = "live"

PHASES: tuple[str, ...] = ("awaiting_approval", "queued", "provisioning", "cooling_down", "switching", "bake")
"""The phases whose durations are reported, in the order a deployment goes through them."""
_HISTORY_PHASES = frozenset(PHASES) - {"bake"}

SECONDS_PER_DAY = 86_400.0


class Band(StrEnum):
    """DORA performance bands, as the Four Keys dashboard shows them."""

    ELITE = "elite"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p90: float | None

    def to_json(self) -> dict[str, float | None]:
        return {"p50": _rounded(self.p50), "p90": _rounded(self.p90)}


NO_DATA = Percentiles(None, None)


@dataclass(frozen=True)
class DeliveryMetrics:
    app: str
    environment: str | None
    """None: every environment of the app."""
    since: datetime
    until: datetime
    deployments: int
    """Deployments that went live in the window (the frequency's count, the failure rate's base)."""
    deployment_frequency_per_day: float | None
    lead_time_seconds: Percentiles
    change_failures: int
    change_failure_rate: float | None
    time_to_restore_seconds: Percentiles
    phases: Mapping[str, Percentiles]
    live_per_day: tuple[tuple[date, int], ...]
    """Deployments that went live on each UTC day of the window, oldest first (for a chart)."""

    @property
    def bands(self) -> dict[str, Band | None]:
        """The DORA band of each key (None where the key has no data)."""
        return {
            "deployment_frequency": frequency_band(self.deployment_frequency_per_day),
            "lead_time": lead_time_band(self.lead_time_seconds.p50),
            "change_failure_rate": change_failure_band(self.change_failure_rate),
            "time_to_restore": time_to_restore_band(self.time_to_restore_seconds.p50),
        }

    def to_json(self) -> dict[str, Any]:
        """The CONTRACT §5 `releasectl metrics --json` document."""
        return {
            "app": self.app,
            "environment": self.environment,
            "since": self.since.astimezone(UTC).isoformat(),
            "deployment_frequency_per_day": _rounded(self.deployment_frequency_per_day),
            "lead_time_seconds": self.lead_time_seconds.to_json(),
            "change_failure_rate": _rounded(self.change_failure_rate),
            "time_to_restore_seconds": self.time_to_restore_seconds.to_json(),
            "deployments": self.deployments,
            "phases": {phase: self.phases[phase].to_json() for phase in PHASES},
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` percentile (0..1) with linear interpolation between closest ranks.

    >>> percentile([10, 20], 0.5)
    15.0
    >>> percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9)
    9.1
    >>> percentile([42], 0.9)
    42.0
    >>> percentile([], 0.5) is None
    True
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    below = math.floor(position)
    above = math.ceil(position)
    share = position - below
    return float(ordered[below] + (ordered[above] - ordered[below]) * share)


def percentiles(values: Sequence[float]) -> Percentiles:
    """
    >>> percentiles([600.0, 1200.0, 1800.0])
    Percentiles(p50=1200.0, p90=1680.0)
    """
    return Percentiles(percentile(values, 0.5), percentile(values, 0.9)) if values else NO_DATA


# ---- DORA bands --------------------------------------------------------------------------------


def frequency_band(per_day: float | None) -> Band | None:
    """Elite: on demand (daily or more); high: weekly to daily; medium: monthly to weekly.

    >>> frequency_band(3.0), frequency_band(0.2), frequency_band(0.05), frequency_band(0.01)
    (<Band.ELITE: 'elite'>, <Band.HIGH: 'high'>, <Band.MEDIUM: 'medium'>, <Band.LOW: 'low'>)
    >>> frequency_band(None) is None
    True
    """
    if per_day is None:
        return None
    if per_day >= 1.0:
        return Band.ELITE
    if per_day >= 1.0 / 7:
        return Band.HIGH
    if per_day >= 1.0 / 30:
        return Band.MEDIUM
    return Band.LOW


def lead_time_band(seconds: float | None) -> Band | None:
    """Elite: under a day; high: under a week; medium: under a month.

    >>> lead_time_band(600.0), lead_time_band(2 * 86400.0), lead_time_band(10 * 86400.0)
    (<Band.ELITE: 'elite'>, <Band.HIGH: 'high'>, <Band.MEDIUM: 'medium'>)
    """
    return _duration_band(seconds, (SECONDS_PER_DAY, 7 * SECONDS_PER_DAY, 30 * SECONDS_PER_DAY))


def time_to_restore_band(seconds: float | None) -> Band | None:
    """Elite: under an hour; high: under a day; medium: under a week.

    >>> time_to_restore_band(300.0), time_to_restore_band(7200.0), time_to_restore_band(30 * 86400.0)
    (<Band.ELITE: 'elite'>, <Band.HIGH: 'high'>, <Band.LOW: 'low'>)
    """
    return _duration_band(seconds, (3600.0, SECONDS_PER_DAY, 7 * SECONDS_PER_DAY))


def change_failure_band(rate: float | None) -> Band | None:
    """Elite: up to 15 %; high: up to 30 %; medium: up to 45 %.

    >>> change_failure_band(0.0), change_failure_band(0.25), change_failure_band(0.4), change_failure_band(0.5)
    (<Band.ELITE: 'elite'>, <Band.HIGH: 'high'>, <Band.MEDIUM: 'medium'>, <Band.LOW: 'low'>)
    """
    if rate is None:
        return None
    for limit, band in ((0.15, Band.ELITE), (0.30, Band.HIGH), (0.45, Band.MEDIUM)):
        if rate <= limit:
            return band
    return Band.LOW


def _duration_band(seconds: float | None, limits: tuple[float, float, float]) -> Band | None:
    if seconds is None:
        return None
    for limit, band in zip(limits, (Band.ELITE, Band.HIGH, Band.MEDIUM), strict=True):
        if seconds < limit:
            return band
    return Band.LOW


# ---- facts read from one record ----------------------------------------------------------------


def went_live_at(deployment: Deployment) -> datetime | None:
    """When the deployment went live: the record's field, else its `live` history entry."""
    if deployment.went_live_at is not None:
        return deployment.went_live_at
    return _entered(deployment, LIVE)


def committed_at(deployment: Deployment) -> datetime | None:
    """The commit time its build carried (optional in `build-succeeded`)."""
    return deployment.committed_at


def rolled_back_at(deployment: Deployment) -> datetime | None:
    """When traffic went back to the previous release after a failed bake window, if it did."""
    return _entered(deployment, ROLLED_BACK)


def _entered(deployment: Deployment, status: str) -> datetime | None:
    for entry in deployment.history:
        if str(entry.status) == status:
            return entry.at
    return None


def phase_durations(deployment: Deployment) -> dict[str, float]:
    """Seconds spent in each phase this deployment went through (the first time it entered it).

    A phase lasts from its history entry to the next one; the phase it is in now has no
    duration yet. The bake window lasts from `live` to the verification's verdict, or to the
    moment traffic went back (`rolled_back`).
    """
    durations: dict[str, float] = {}
    for current, following in pairwise(deployment.history):
        phase = str(current.status)
        if phase in _HISTORY_PHASES and phase not in durations:
            durations[phase] = max(0.0, (following.at - current.at).total_seconds())
    live = _entered(deployment, LIVE)
    bake_end = rolled_back_at(deployment) or _verdict_at(deployment)
    if live is not None and bake_end is not None and bake_end >= live:
        durations["bake"] = (bake_end - live).total_seconds()
    return durations


def _verdict_at(deployment: Deployment) -> datetime | None:
    """When the bake window's verdict (passed or failed) was reached, if it was."""
    verification = deployment.verification
    if verification is None or verification.state is VerificationState.PENDING:
        return None
    return verification.checked_at


# ---- the window --------------------------------------------------------------------------------


def delivery_metrics(
    deployments: Iterable[Deployment],
    *,
    app: str,
    environment: str | None,
    since: datetime,
    until: datetime,
) -> DeliveryMetrics:
    """The four keys and phase durations of the deployments that went live in [since, until].

    `deployments` are the records of the window (any status); a deployment that went live in it
    is counted, and its rollback, if one is among the records, tells whether it failed.
    """
    records = [
        d for d in deployments if d.app == app and (environment is None or d.environment == environment)
    ]
    days = max((until - since).total_seconds(), 1.0) / SECONDS_PER_DAY

    went_live = [d for d in records if (live := went_live_at(d)) is not None and since <= live <= until]
    restored_by: dict[str, datetime] = {}
    rolled_back_by_hand: set[str] = set()
    for d in records:
        live = went_live_at(d)
        if d.rollback_of:
            rolled_back_by_hand.add(d.rollback_of)
        # The deployment that replaced a bad one restored service when it went live.
        if d.replaced_deployment_id and live is not None:
            earlier = restored_by.get(d.replaced_deployment_id)
            restored_by[d.replaced_deployment_id] = live if earlier is None else min(earlier, live)

    lead_times: list[float] = []
    for d in went_live:
        if d.rollback_of:
            continue  # an old commit coming back is not a change being delivered
        commit, live = committed_at(d), went_live_at(d)
        # A commit time after the deployment went live is a wrong claim, not a lead time.
        if commit is not None and live is not None and commit <= live:
            lead_times.append((live - commit).total_seconds())
    failures = [
        d for d in went_live if str(d.status) == ROLLED_BACK or d.deployment_id in rolled_back_by_hand
    ]
    restore_times: list[float] = []
    for d in failures:
        live = went_live_at(d)
        restored = rolled_back_at(d) or restored_by.get(d.deployment_id) or d.retired_at
        if live is not None and restored is not None and restored >= live:
            restore_times.append((restored - live).total_seconds())

    phase_samples: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for d in records:
        if not since <= d.created_at <= until:
            continue
        for phase, seconds in phase_durations(d).items():
            phase_samples[phase].append(seconds)

    return DeliveryMetrics(
        app=app,
        environment=environment,
        since=since,
        until=until,
        deployments=len(went_live),
        # No record at all is no data; records none of which went live is a frequency of 0.
        deployment_frequency_per_day=len(went_live) / days if records else None,
        lead_time_seconds=percentiles(lead_times),
        change_failures=len(failures),
        change_failure_rate=len(failures) / len(went_live) if went_live else None,
        time_to_restore_seconds=percentiles(restore_times),
        phases={phase: percentiles(samples) for phase, samples in phase_samples.items()},
        live_per_day=live_per_day(went_live, since, until),
    )


def live_per_day(
    deployments: Iterable[Deployment], since: datetime, until: datetime
) -> tuple[tuple[date, int], ...]:
    """How many of `deployments` went live on each UTC day from `since` to `until`.

    >>> from datetime import timedelta
    >>> start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    >>> live_per_day([], start, start + timedelta(days=2))
    ((datetime.date(2026, 1, 1), 0), (datetime.date(2026, 1, 2), 0), (datetime.date(2026, 1, 3), 0))
    """
    first = since.astimezone(UTC).date()
    last = until.astimezone(UTC).date()
    counts = {first + timedelta(days=offset): 0 for offset in range((last - first).days + 1)}
    for d in deployments:
        live = went_live_at(d)
        if live is not None:
            day = live.astimezone(UTC).date()
            if day in counts:
                counts[day] += 1
    return tuple(counts.items())


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it, to the second up to an hour, then coarser.

    >>> format_seconds(42.4), format_seconds(3377), format_seconds(90000), format_seconds(None)
    ('42 s', '56 min 17 s', '1 d 1 h', '-')
    >>> format_seconds(7260)
    '2 h 1 min'
    """
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"
