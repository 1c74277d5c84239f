"""A cool-down step or watchdog sweep that comes after the provisioning deadline: a green that is
ready (healthy, its cool-down over) is switched, not failed; one that is not fails; twice the
deadline ends any release, ready or not."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared import topology
from shared.config import parse_pipeline_config
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.ports import TransientError
from shared.usecases.lifecycle import fail_deployment
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import POLL_NOTE_SECONDS, complete_cool_down, judge_green
from shared.usecases.watchdog import STALL_SECONDS, run_watchdog
from tests.unit.fakes import TEST_CONFIG, FakeWorld, fake_world
from tests.unit.pipeline_driving import build, notifications, step

DEADLINE_SECONDS = 60
"""The fake world's provisioning deadline."""
COOL_DOWN_SECONDS = 5
"""The fake world's staging cool-down."""
POLL_INTERVAL_SECONDS = topology.trigger_of(topology.COOL_DOWN_COMPLETE).max_backoff_seconds
"""The longest wait between two polls of a cool-down step (its retry policy's longest backoff)."""


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def with_deadline(world: FakeWorld, seconds: int) -> FakeWorld:
    """The world with every environment's provisioning deadline set to `seconds`."""
    document = copy.deepcopy(TEST_CONFIG)
    document["apps"]["hello"]["defaults"]["provisioning_deadline_seconds"] = seconds
    world.services = replace(world.services, config=parse_pipeline_config(document))
    return world


def cooling_down(world: FakeWorld) -> str:
    """A first release of hello to staging, its green requested, its cool-down poll published."""
    result = build(world, "b1")
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    assert result.deployment_id is not None
    assert world.store.deployments[result.deployment_id].status is S.COOLING_DOWN
    return str(result.deployment_id)


def test_a_poll_that_comes_after_the_deadline_switches_a_ready_green(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(DEADLINE_SECONDS + 1)  # a busy machine delivered the poll late
    live = complete_cool_down(world.services, message)
    assert live is not None and live.status is S.LIVE, live and live.history[-1].detail
    assert world.store.environments["hello@staging"].live_deployment_id == deployment_id
    assert [n.status for n in notifications(world)] == ["live"]


def test_past_the_deadline_a_healthy_green_still_cooling_down_fails_for_that_reason(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id))
    record = world.store.deployments[deployment_id]
    assert record.not_before is not None
    # A cool-down longer than the deadline: a configuration mistake, failed at the deadline.
    world.store.deployments[deployment_id] = record.with_changes(
        record.updated_at, not_before=record.not_before + timedelta(seconds=DEADLINE_SECONDS)
    )
    world.clock.advance(DEADLINE_SECONDS + 1)
    failed = complete_cool_down(world.services, message)
    assert failed is not None and failed.status is S.FAILED
    assert failed.history[-1].detail == f"cool-down not over within the {DEADLINE_SECONDS} s deadline"


def test_twice_the_deadline_ends_even_a_ready_release(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(2 * DEADLINE_SECONDS)
    failed = complete_cool_down(world.services, message)
    assert failed is not None and failed.status is S.FAILED
    assert failed.history[-1].detail == f"not live within twice the {DEADLINE_SECONDS} s deadline"
    assert instance_group_name(deployment_id) not in world.compute.groups
    assert world.store.environments["hello@staging"].active_deployment_id is None


def test_the_watchdog_publishes_a_late_ready_release_once_instead_of_failing_it(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    world.publisher.take(topology.COOL_DOWN_COMPLETE)  # the poll was lost
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(DEADLINE_SECONDS + 1)
    report = run_watchdog(world.services)
    assert report.failed == [] and report.kicked == [deployment_id]
    world.clock.advance(1)
    assert run_watchdog(world.services).kicked == []  # once: the step it published is on its way
    world.publisher.take(topology.COOL_DOWN_COMPLETE)  # lost as well
    world.clock.advance(20)
    assert run_watchdog(world.services, stall_seconds=20).kicked == [deployment_id]  # stalled again
    live = complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert live is not None and live.status is S.LIVE


def test_the_watchdog_fails_a_late_release_whose_green_is_not_healthy(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    world.clock.advance(DEADLINE_SECONDS + 1)
    assert run_watchdog(world.services).failed == [deployment_id]
    failed = world.store.deployments[deployment_id]
    assert (
        failed.history[-1].detail == f"green not healthy within the {DEADLINE_SECONDS} s deadline (watchdog)"
    )


def test_the_watchdog_fails_a_ready_release_at_twice_the_deadline(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(2 * DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [deployment_id]
    assert world.store.deployments[deployment_id].status is S.FAILED


def test_a_failure_that_loses_the_race_to_a_switch_leaves_green_alone(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog read the record as cooling down; a late cool-down step switched it before the
    watchdog's transaction. Green now serves users and must not be deleted."""
    deployment_id = cooling_down(world)
    store = world.store
    atomically = store.atomically

    def switched_first(work: Any) -> Any:
        current = store.deployments[deployment_id]
        if current.status is S.COOLING_DOWN:
            store.deployments[deployment_id] = current.advance(S.SWITCHING, world.clock.now(), "switching")
        return atomically(work)

    monkeypatch.setattr(store, "atomically", switched_first)
    assert fail_deployment(world.services, deployment_id, "late") is None
    assert instance_group_name(deployment_id) in world.compute.groups
    assert store.deployments[deployment_id].status is S.SWITCHING


@pytest.mark.parametrize(
    ("seconds_later", "healthy", "failure", "waiting"),
    [
        (1, True, None, "cool-down ends at"),
        (10, False, None, "green 0/2 healthy"),
        (10, True, None, None),
        (DEADLINE_SECONDS + 1, False, f"green not healthy within the {DEADLINE_SECONDS} s deadline", None),
        (DEADLINE_SECONDS + 1, True, None, None),
        (2 * DEADLINE_SECONDS, True, f"not live within twice the {DEADLINE_SECONDS} s deadline", None),
    ],
)
def test_green_is_waited_for_until_the_deadline_switched_when_ready_until_twice_the_deadline(
    world: FakeWorld, seconds_later: int, healthy: bool, failure: str | None, waiting: str | None
) -> None:
    deployment_id = cooling_down(world)
    if healthy:
        world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(seconds_later)
    env = world.services.environment_config("hello", "staging")
    verdict = judge_green(world.services, env, world.store.deployments[deployment_id], world.clock.now())
    assert verdict.failure == failure
    assert (verdict.waiting or "").startswith(waiting or ""), verdict.waiting
    assert (verdict.waiting is None) is (waiting is None)


def test_at_twice_the_deadline_a_compute_outage_cannot_hold_the_release(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment_id = cooling_down(world)

    def outage(*_: object) -> None:
        raise TransientError("compute unavailable")

    monkeypatch.setattr(world.compute, "group_health", outage)
    world.clock.advance(2 * DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [deployment_id]


def test_a_kick_before_the_deadline_does_not_stand_for_the_one_at_it(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    world.publisher.take(topology.COOL_DOWN_COMPLETE)  # the poll was lost
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(30)
    assert run_watchdog(world.services, stall_seconds=20).kicked == [deployment_id]  # stalled
    world.publisher.take(topology.COOL_DOWN_COMPLETE)  # lost as well
    world.clock.advance(DEADLINE_SECONDS + 1 - 30)  # 31 s after that kick: not stalled again yet
    assert run_watchdog(world.services).kicked == [deployment_id]  # the deadline's own
    world.clock.advance(1)
    assert run_watchdog(world.services).kicked == []
    assert world.store.deployments[deployment_id].status is S.COOLING_DOWN


def test_a_preview_that_never_routes_to_green_fails_the_release_at_twice_the_deadline(
    world: FakeWorld,
) -> None:
    result = build(world, "b1", environment="verified", messages=["feat: x"])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.compute.lb_healthy = False  # the preview never sees green healthy
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.clock.advance(DEADLINE_SECONDS + 1)
    with pytest.raises(NotReadyYet, match="the preview does not route to it yet"):
        complete_cool_down(world.services, message)
    world.clock.advance(DEADLINE_SECONDS)
    failed = complete_cool_down(world.services, message)
    assert failed is not None and failed.status is S.FAILED
    assert failed.history[-1].detail == f"not live within twice the {DEADLINE_SECONDS} s deadline"
    assert world.compute.attached == [], "no user request ever reached it"


def test_a_switch_that_is_still_polled_is_not_published_again_beside_its_poll(world: FakeWorld) -> None:
    """The load balancer takes minutes to see green healthy (within a production-length deadline):
    its poll goes on every 10 s, and the watchdog must not add a copy of it each minute; once the
    polls stop, it does."""
    world = with_deadline(world, 600)
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.compute.lb_healthy = False
    kicked: list[str] = []
    for _ in range(30):  # five minutes of polls and watchdog ticks
        world.clock.advance(POLL_INTERVAL_SECONDS)
        with pytest.raises(NotReadyYet):
            complete_cool_down(world.services, message)
        kicked += run_watchdog(world.services).kicked
    assert world.store.deployments[deployment_id].status is S.SWITCHING
    assert kicked == []
    world.clock.advance(STALL_SECONDS + POLL_NOTE_SECONDS)  # the poll was lost
    assert run_watchdog(world.services).kicked == [deployment_id]


def test_a_release_ready_within_the_note_interval_notes_no_poll(world: FakeWorld) -> None:
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.clock.advance(COOL_DOWN_SECONDS + 1)  # the cool-down is over; green is not healthy yet
    for _ in range(3):  # polls up to 19 s after the cool-down's end
        with pytest.raises(NotReadyYet, match="healthy"):
            complete_cool_down(world.services, message)
        world.clock.advance(6)
    assert world.store.deployments[deployment_id].last_polled_at is None
    world.compute.make_healthy(instance_group_name(deployment_id))
    live = complete_cool_down(world.services, message)
    assert live is not None and live.status is S.LIVE and live.last_polled_at is None


def test_the_poll_that_starts_the_switch_notes_nothing(world: FakeWorld) -> None:
    """It read the record while cooling down, quiet for long; the record it moved to switching is not."""
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.clock.advance(COOL_DOWN_SECONDS + POLL_NOTE_SECONDS + 1)  # the earlier polls were lost
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.compute.lb_healthy = False
    with pytest.raises(NotReadyYet, match="backend service does not see it healthy"):
        complete_cool_down(world.services, message)
    switching = world.store.deployments[deployment_id]
    assert switching.status is S.SWITCHING and switching.last_polled_at is None


def test_a_note_that_cannot_be_written_leaves_the_poll_not_ready(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment_id = cooling_down(world)
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.clock.advance(COOL_DOWN_SECONDS + POLL_NOTE_SECONDS)

    def unavailable(*_: object) -> None:
        raise TransientError("firestore unavailable")

    monkeypatch.setattr(world.store, "update_deployment", unavailable)
    with pytest.raises(NotReadyYet, match="healthy"):
        complete_cool_down(world.services, message)
    assert world.store.deployments[deployment_id].status is S.COOLING_DOWN


def test_a_polled_step_is_noted_often_enough_never_to_look_stalled() -> None:
    assert POLL_NOTE_SECONDS + POLL_INTERVAL_SECONDS < STALL_SECONDS
