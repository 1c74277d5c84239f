import itertools
from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.records import Deployment
from shared.domain.status import (
    ALLOWED_TRANSITIONS,
    DeploymentStatus,
    IllegalTransition,
    can_transition,
    is_terminal,
)
from shared.usecases.lifecycle import FAILABLE

S = DeploymentStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def queued() -> Deployment:
    return Deployment.queued(
        deployment_id="hello-staging-0123456789ab",
        app="hello",
        environment="staging",
        version="1.0.0",
        commit="a" * 40,
        build_id="b1",
        artifact="file:///tmp/a.tar.gz",
        event={},
        at=T0,
    )


def test_statuses_are_exactly_the_contract_ones() -> None:
    assert {s.value for s in S} == {
        "awaiting_approval",
        "queued",
        "provisioning",
        "cooling_down",
        "switching",
        "live",
        "failed",
        "cancelled",
        "retired",
        "rolled_back",
    }


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [S.QUEUED, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING, S.LIVE, S.RETIRED]
    for current, target in itertools.pairwise(path):
        assert can_transition(current, target)


@pytest.mark.parametrize("terminal", [S.FAILED, S.CANCELLED, S.RETIRED, S.ROLLED_BACK])
def test_terminal_statuses_go_nowhere(terminal: DeploymentStatus) -> None:
    assert is_terminal(terminal)
    assert all(not can_transition(terminal, target) for target in S)


def test_only_a_live_deployment_can_be_rolled_back_by_its_bake_window() -> None:
    assert [s for s in S if can_transition(s, S.ROLLED_BACK)] == [S.LIVE]


def test_switching_can_fail_only_by_an_abandon_that_hands_the_traffic_back() -> None:
    """Traffic may already reach green: `fail_deployment` (which deletes green) never takes a
    switching deployment; the watchdog's abandon (shared/usecases/abandon.py) does."""
    assert can_transition(S.SWITCHING, S.FAILED)
    assert S.SWITCHING not in FAILABLE


def test_no_status_can_skip_the_cool_down() -> None:
    assert not can_transition(S.PROVISIONING, S.SWITCHING)
    assert not can_transition(S.PROVISIONING, S.LIVE)
    assert not can_transition(S.QUEUED, S.LIVE)


def test_only_deployments_that_never_started_can_be_cancelled() -> None:
    assert {s for s in S if can_transition(s, S.CANCELLED)} == {S.AWAITING_APPROVAL, S.QUEUED}


def test_awaiting_approval_leads_only_to_the_queue_or_to_cancelled() -> None:
    assert ALLOWED_TRANSITIONS[S.AWAITING_APPROVAL] == {S.QUEUED, S.CANCELLED}
    assert not can_transition(S.AWAITING_APPROVAL, S.PROVISIONING)
    assert not any(can_transition(s, S.AWAITING_APPROVAL) for s in S)


def test_every_status_has_a_rule() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(S)


def test_advancing_appends_history_in_order_and_stamps_times() -> None:
    d = queued()
    d = d.advance(S.PROVISIONING, T0 + timedelta(seconds=1), "lock")
    d = d.advance(S.COOLING_DOWN, T0 + timedelta(seconds=2))
    d = d.advance(S.SWITCHING, T0 + timedelta(seconds=3))
    d = d.advance(S.LIVE, T0 + timedelta(seconds=4))
    assert [h.status for h in d.history] == [S.QUEUED, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING, S.LIVE]
    assert d.started_at == T0 + timedelta(seconds=1)
    assert d.went_live_at == d.finished_at == d.updated_at == T0 + timedelta(seconds=4)
    assert d.history[1].detail == "lock"


def test_an_illegal_transition_is_refused_and_changes_nothing() -> None:
    d = queued()
    with pytest.raises(IllegalTransition):
        d.advance(S.LIVE, T0)
    assert d.status is S.QUEUED and len(d.history) == 1


def test_the_deadline_counts_from_when_the_lock_was_taken() -> None:
    d = queued().advance(S.PROVISIONING, T0 + timedelta(seconds=100))
    assert not d.is_past_deadline(T0 + timedelta(seconds=159), 60)
    assert d.is_past_deadline(T0 + timedelta(seconds=160), 60)


def test_the_final_deadline_is_twice_the_deadline_from_when_the_lock_was_taken() -> None:
    d = queued().advance(S.PROVISIONING, T0 + timedelta(seconds=100))
    assert not d.is_past_final_deadline(T0 + timedelta(seconds=219), 60)
    assert d.is_past_final_deadline(T0 + timedelta(seconds=220), 60)
