"""The four keys and phase durations, checked against figures worked out by hand below."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from shared.domain.metrics import PHASES, Band, delivery_metrics, phase_durations
from shared.domain.records import Deployment, HistoryEntry
from shared.domain.status import DeploymentStatus
from shared.domain.verification import Verification, VerificationState

S = DeploymentStatus
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = datetime(2026, 1, 11, tzinfo=UTC)  # a 10-day window
# Statuses other branches add to the state machine, spelled as the records store them.
ROLLED_BACK = S.ROLLED_BACK
AWAITING_APPROVAL = cast(DeploymentStatus, "awaiting_approval")


def deployment(
    deployment_id: str,
    created: datetime,
    steps: list[tuple[DeploymentStatus, float]],
    *,
    committed_before: float | None = None,
    **fields: object,
) -> Deployment:
    """A record whose history enters each status `seconds` after the previous entry."""
    history = [HistoryEntry(S.QUEUED, created)]
    at = created
    for status, seconds in steps:
        at += timedelta(seconds=seconds)
        history.append(HistoryEntry(status, at))
    live = next((h.at for h in history if h.status == S.LIVE), None)
    record = Deployment(
        deployment_id=deployment_id,
        app="hello",
        environment="staging",
        version="1.0.0",
        commit="a" * 40,
        build_id=deployment_id,
        artifact="file:///a.tar.gz",
        status=history[-1].status,
        created_at=created,
        updated_at=at,
        history=tuple(history),
        event={},
        went_live_at=live,
    )
    if committed_before is not None:
        fields["committed_at"] = created - timedelta(seconds=committed_before)
    return replace(record, **fields)  # type: ignore[arg-type]


def path(
    queued: float, provisioning: float, cooling: float, switching: float
) -> list[tuple[DeploymentStatus, float]]:
    return [
        (S.PROVISIONING, queued),
        (S.COOLING_DOWN, provisioning),
        (S.SWITCHING, cooling),
        (S.LIVE, switching),
    ]


JAN = datetime(2026, 1, 1, tzinfo=UTC)
# d1: live 400 s after creation, commit 600 s before: lead time 1000 s.
D1 = deployment(
    "d1",
    JAN + timedelta(days=1, hours=10),
    [*path(30, 60, 300, 10), (S.RETIRED, 86400)],
    committed_before=600,
)
# d2: live 150 s after creation, commit 3600 s before: lead time 3750 s. Rolled back by hand by d4.
D2 = deployment(
    "d2",
    JAN + timedelta(days=2, hours=10),
    [*path(10, 20, 100, 20), (S.RETIRED, 3480)],
    committed_before=3600,
    replaced_deployment_id="d1",
)
# d4: the rollback of d2, created at 11:00, live at 11:00:30, i.e. 3480 s after d2 went live (10:02:30).
D4 = deployment(
    "d4",
    JAN + timedelta(days=2, hours=11),
    path(5, 5, 10, 10),
    committed_before=99999,  # a rollback's old commit: not a lead time
    rollback_of="d2",
    replaced_deployment_id="d2",
)
# d3: a failing build that never got traffic: not a change failure.
D3 = deployment("d3", JAN + timedelta(days=3), [(S.PROVISIONING, 5), (S.COOLING_DOWN, 15), (S.FAILED, 45)])
# d5: live 85 s after creation, commit 1800 s before (lead time 1885 s); its bake window failed
# 300 s after it went live and traffic went back automatically: restore 300 s, bake 300 s.
D5 = deployment(
    "d5",
    JAN + timedelta(days=4, hours=10),
    [*path(10, 20, 50, 5), (ROLLED_BACK, 300)],
    committed_before=1800,
    replaced_deployment_id="d4",
)
# Went live before the window: ignored by every key.
OLD = deployment("old", JAN - timedelta(days=5), path(1, 1, 1, 1), committed_before=60)

RECORDS = [D1, D2, D3, D4, D5, OLD]


def test_the_four_keys_match_the_hand_computation() -> None:
    metrics = delivery_metrics(RECORDS, app="hello", environment="staging", since=SINCE, until=UNTIL)
    # Live in the window: d1, d2, d4, d5 over 10 days.
    assert metrics.deployments == 4
    assert metrics.deployment_frequency_per_day == pytest.approx(0.4)
    # Lead times 1000, 1885, 3750: p50 1885; p90 at rank 1.8: 1885 + 0.8 * (3750 - 1885) = 3377.
    assert metrics.lead_time_seconds.p50 == pytest.approx(1885)
    assert metrics.lead_time_seconds.p90 == pytest.approx(3377)
    # d2 (rolled back by hand) and d5 (rolled back automatically) out of 4.
    assert metrics.change_failure_rate == pytest.approx(0.5)
    # Restore 3480 (d2 → d4 live) and 300 (d5): p50 1890; p90 300 + 0.9 * 3180 = 3162.
    assert metrics.time_to_restore_seconds.p50 == pytest.approx(1890)
    assert metrics.time_to_restore_seconds.p90 == pytest.approx(3162)


def test_phase_durations_match_the_hand_computation() -> None:
    phases = delivery_metrics(RECORDS, app="hello", environment="staging", since=SINCE, until=UNTIL).phases
    # Deployments created in the window only (not "old"). queued [5, 5, 10, 10, 30]: p50 10;
    # p90 at rank 3.6: 10 + 0.6 * (30 - 10) = 22.
    assert (phases["queued"].p50, phases["queued"].p90) == pytest.approx((10.0, 22.0))
    # cooling_down [10, 45 (d3, until it failed), 50, 100, 300]: p50 50; p90 100 + 0.6 * 200 = 220.
    assert (phases["cooling_down"].p50, phases["cooling_down"].p90) == pytest.approx((50.0, 220.0))
    # switching [5, 10, 10, 20]: p50 10; p90 at rank 2.7: 10 + 0.7 * 10 = 17.
    assert (phases["switching"].p50, phases["switching"].p90) == pytest.approx((10.0, 17.0))
    assert (phases["bake"].p50, phases["bake"].p90) == (300.0, 300.0)
    assert (phases["awaiting_approval"].p50, phases["awaiting_approval"].p90) == (None, None)


def test_the_bands_follow_dora() -> None:
    metrics = delivery_metrics(RECORDS, app="hello", environment="staging", since=SINCE, until=UNTIL)
    assert metrics.bands == {
        "deployment_frequency": Band.HIGH,  # 0.4 a day: between weekly and daily
        "lead_time": Band.ELITE,  # under a day
        "change_failure_rate": Band.LOW,  # 50 %
        "time_to_restore": Band.ELITE,  # p50 under an hour
    }


def test_no_records_is_null_everywhere_not_zero() -> None:
    metrics = delivery_metrics([], app="hello", environment=None, since=SINCE, until=UNTIL)
    document = metrics.to_json()
    assert document["deployment_frequency_per_day"] is None
    assert document["change_failure_rate"] is None
    assert document["lead_time_seconds"] == {"p50": None, "p90": None}
    assert document["time_to_restore_seconds"] == {"p50": None, "p90": None}
    assert document["deployments"] == 0
    assert set(document["phases"]) == set(PHASES)
    assert all(value == {"p50": None, "p90": None} for value in document["phases"].values())
    assert set(metrics.bands.values()) == {None}


def test_only_failed_builds_give_a_frequency_of_zero_and_no_failure_rate() -> None:
    metrics = delivery_metrics([D3], app="hello", environment="staging", since=SINCE, until=UNTIL)
    assert metrics.deployment_frequency_per_day == 0.0
    assert metrics.change_failure_rate is None


def test_the_json_document_has_the_contract_shape() -> None:
    document = delivery_metrics(
        RECORDS, app="hello", environment="staging", since=SINCE, until=UNTIL
    ).to_json()
    assert list(document) == [
        "app",
        "environment",
        "since",
        "deployment_frequency_per_day",
        "lead_time_seconds",
        "change_failure_rate",
        "time_to_restore_seconds",
        "deployments",
        "phases",
    ]
    assert document["since"] == "2026-01-01T00:00:00+00:00"


def test_other_environments_are_left_out_unless_all_are_asked_for() -> None:
    production = replace(D1, deployment_id="p1", environment="production")
    only_staging = delivery_metrics(
        [D1, production], app="hello", environment="staging", since=SINCE, until=UNTIL
    )
    every = delivery_metrics([D1, production], app="hello", environment=None, since=SINCE, until=UNTIL)
    assert (only_staging.deployments, every.deployments) == (1, 2)


def test_deployments_per_day_feed_the_chart() -> None:
    per_day = dict(
        delivery_metrics(RECORDS, app="hello", environment=None, since=SINCE, until=UNTIL).live_per_day
    )
    assert D1.went_live_at is not None and D2.went_live_at is not None
    assert per_day[D1.went_live_at.date()] == 1
    assert per_day[D2.went_live_at.date()] == 2  # d2 and its rollback d4
    assert sum(per_day.values()) == 4
    assert len(per_day) == 11


def test_an_approval_wait_is_a_phase() -> None:
    created = JAN + timedelta(days=1)
    waiting = deployment("w", created, [(S.QUEUED, 120), (S.PROVISIONING, 3)])
    waiting = replace(waiting, history=(HistoryEntry(AWAITING_APPROVAL, created), *waiting.history[1:]))
    assert phase_durations(waiting) == {"awaiting_approval": 120.0, "queued": 3.0}


def test_a_verdict_ends_the_bake_window() -> None:
    live = deployment("v", JAN, path(1, 1, 1, 1))
    assert live.went_live_at is not None
    verdict_at = live.went_live_at + timedelta(seconds=15)
    verified = replace(
        live, verification=Verification(VerificationState.PASSED, "ok", verdict_at, ends_at=verdict_at)
    )
    baking = replace(
        live, verification=Verification(VerificationState.PENDING, "", verdict_at, ends_at=verdict_at)
    )
    assert phase_durations(verified)["bake"] == 15.0
    assert "bake" not in phase_durations(live)
    assert "bake" not in phase_durations(baking)
