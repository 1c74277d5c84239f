"""Deploy windows and freezes, enforced by the use cases: a deployment ready to take its
environment outside a window stays queued, says until when, and starts when the window opens.
The tests drive the clock of the fakes, never the wall."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import topology
from shared.config import parse_pipeline_config
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.usecases.admit_build import Outcome, admit_build
from shared.usecases.lifecycle import fail_deployment
from shared.usecases.provision import start_rolling_replace
from shared.usecases.switch import complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import TEST_CONFIG, FakeWorld, fake_world
from tests.unit.pipeline_driving import (
    COMMIT_B,
    COMMIT_C,
    build,
    deploy_to_live,
    notifications,
    roll_back,
    rollback_by,
    step,
)

WORKING_HOURS = {
    "days": ["mon", "tue", "wed", "thu"],
    "start": "09:00",
    "end": "16:00",
    "time_zone": "Europe/London",
}
YEAR_END = {"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "year-end"}

THURSDAY_NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
THURSDAY_EVENING = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
NEXT_MONDAY_OPENING = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
IN_THE_FREEZE = datetime(2026, 12, 22, 10, 0, tzinfo=UTC)


def world_with(at: datetime, **staging: Any) -> FakeWorld:
    """The fake world, with these keys on staging's configuration and the clock at `at`."""
    document = copy.deepcopy(TEST_CONFIG)
    document["apps"]["hello"]["environments"]["staging"].update(staging)
    world = fake_world()
    world.services = replace(world.services, config=parse_pipeline_config(document))
    world.clock.current = at
    return world


@pytest.fixture
def after_hours() -> FakeWorld:
    return world_with(THURSDAY_EVENING, deploy_windows=[WORKING_HOURS])


def deployment(world: FakeWorld, deployment_id: str | None) -> Any:
    return world.store.deployments[deployment_id or ""]


def finish_running(world: FakeWorld, deployment_id: str | None) -> None:
    """Take the deployment holding the lock through its steps until it is live."""
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id or ""))
    world.clock.advance(5)
    complete_cool_down(world.services, message)


def test_a_build_outside_the_windows_waits_queued_and_says_until_when(after_hours: FakeWorld) -> None:
    result = build(after_hours, "b1")

    assert result.outcome is Outcome.QUEUED
    waiting = deployment(after_hours, result.deployment_id)
    assert waiting.status is S.QUEUED
    assert waiting.history[-1].status is S.QUEUED
    assert waiting.history[-1].detail == (
        "outside the deploy windows: waiting until 2026-12-07T09:00:00Z (Mon 2026-12-07 09:00 GMT, Europe/London)"
    )
    assert after_hours.publisher.on(topology.START_ROLLING_REPLACE) == []
    state = after_hours.store.environments["hello@staging"]
    assert state.active_deployment_id is None and state.queue == (result.deployment_id,)


def test_the_watchdog_starts_it_when_the_window_opens_and_not_a_second_before(after_hours: FakeWorld) -> None:
    result = build(after_hours, "b1")
    history = deployment(after_hours, result.deployment_id).history

    after_hours.clock.current = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # Saturday
    assert run_watchdog(after_hours.services).kicked == []
    after_hours.clock.current = datetime(2026, 12, 7, 8, 59, 59, tzinfo=UTC)
    assert run_watchdog(after_hours.services).kicked == []
    # Ticks that change nothing write nothing: the history still says the same.
    assert deployment(after_hours, result.deployment_id).history == history
    assert after_hours.publisher.on(topology.START_ROLLING_REPLACE) == []

    after_hours.clock.current = NEXT_MONDAY_OPENING
    assert run_watchdog(after_hours.services).kicked == [result.deployment_id]
    started = deployment(after_hours, result.deployment_id)
    assert started.status is S.PROVISIONING and started.started_at == NEXT_MONDAY_OPENING
    assert started.history[-1].detail == "deploy window open (watchdog)"
    state = after_hours.store.environments["hello@staging"]
    assert state.active_deployment_id == result.deployment_id and state.queue == ()
    # It goes live like any other deployment.
    finish_running(after_hours, result.deployment_id)
    assert deployment(after_hours, result.deployment_id).status is S.LIVE


def test_newest_wins_while_waiting_for_the_window(after_hours: FakeWorld) -> None:
    older = build(after_hours, "b1")
    newest = build(after_hours, "b2", COMMIT_B)

    assert deployment(after_hours, older.deployment_id).status is S.CANCELLED
    assert deployment(after_hours, newest.deployment_id).status is S.QUEUED
    assert (
        "waiting until 2026-12-07T09:00:00Z"
        in deployment(after_hours, newest.deployment_id).history[-1].detail
    )
    assert after_hours.store.environments["hello@staging"].queue == (newest.deployment_id,)
    assert [n.status for n in notifications(after_hours)] == ["cancelled"]

    after_hours.clock.current = NEXT_MONDAY_OPENING
    assert run_watchdog(after_hours.services).kicked == [newest.deployment_id]


def test_a_build_arriving_once_the_window_is_open_takes_the_lock_from_one_still_waiting(
    after_hours: FakeWorld,
) -> None:
    waiting = build(after_hours, "b1")
    after_hours.clock.current = NEXT_MONDAY_OPENING  # before any watchdog tick
    newest = build(after_hours, "b2", COMMIT_B)

    assert newest.outcome is Outcome.STARTED
    assert deployment(after_hours, waiting.deployment_id).status is S.CANCELLED
    state = after_hours.store.environments["hello@staging"]
    assert state.active_deployment_id == newest.deployment_id and state.queue == ()


def test_inside_a_window_a_build_starts_at_once() -> None:
    world = world_with(THURSDAY_NOON, deploy_windows=[WORKING_HOURS])
    assert build(world, "b1").outcome is Outcome.STARTED


def test_one_queued_behind_a_deployment_that_ends_after_the_window_closed_waits_for_the_next() -> None:
    world = world_with(datetime(2026, 12, 3, 15, 59, 57, tzinfo=UTC), deploy_windows=[WORKING_HOURS])
    running = build(world, "b1")
    queued = build(world, "b2", COMMIT_B)
    # The running one goes live at 16:00:02, after the window closed: it finishes (windows gate
    # starts only), and the next one stays queued with the lock free.
    finish_running(world, running.deployment_id)

    assert deployment(world, running.deployment_id).status is S.LIVE
    held = deployment(world, queued.deployment_id)
    assert held.status is S.QUEUED
    assert held.history[-1].detail.startswith(
        "outside the deploy windows: waiting until 2026-12-07T09:00:00Z"
    )
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == []
    state = world.store.environments["hello@staging"]
    assert state.active_deployment_id is None and state.queue == (queued.deployment_id,)

    world.clock.current = NEXT_MONDAY_OPENING
    assert run_watchdog(world.services).kicked == [queued.deployment_id]
    assert deployment(world, queued.deployment_id).status is S.PROVISIONING


def test_a_deployment_that_fails_outside_the_window_leaves_the_next_one_waiting() -> None:
    world = world_with(datetime(2026, 12, 3, 15, 59, 0, tzinfo=UTC), deploy_windows=[WORKING_HOURS])
    running = build(world, "b1")
    queued = build(world, "b2", COMMIT_B)
    world.publisher.take(topology.START_ROLLING_REPLACE)  # the running one's
    world.clock.advance(120)
    fail_deployment(world.services, running.deployment_id or "", "broken")

    assert deployment(world, running.deployment_id).status is S.FAILED
    assert deployment(world, queued.deployment_id).status is S.QUEUED
    assert "waiting until 2026-12-07T09:00:00Z" in deployment(world, queued.deployment_id).history[-1].detail
    assert world.store.environments["hello@staging"].active_deployment_id is None
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == []


def test_a_freeze_inside_a_window_holds_a_build_until_it_ends() -> None:
    review = {"start": "2026-12-03T11:00:00Z", "end": "2026-12-03T13:30:00Z", "reason": "incident review"}
    world = world_with(THURSDAY_NOON, deploy_windows=[WORKING_HOURS], freezes=[review])
    result = build(world, "b1")

    assert result.outcome is Outcome.QUEUED
    assert deployment(world, result.deployment_id).history[-1].detail == (
        "deploy freeze (incident review): waiting until 2026-12-03T13:30:00Z (Thu 2026-12-03 13:30 GMT, Europe/London)"
    )
    world.clock.current = datetime(2026, 12, 3, 13, 30, tzinfo=UTC)
    assert run_watchdog(world.services).kicked == [result.deployment_id]


def test_the_waiting_line_is_rewritten_only_when_what_it_says_changes() -> None:
    # A freeze ending at night: first "freeze, until Monday 09:00", then "outside the windows,
    # until Monday 09:00"; each once, however many ticks.
    freeze = {"start": "2026-12-04T00:00:00Z", "end": "2026-12-05T00:00:00Z", "reason": "release party"}
    world = world_with(
        datetime(2026, 12, 4, 10, 0, tzinfo=UTC), deploy_windows=[WORKING_HOURS], freezes=[freeze]
    )
    result = build(world, "b1")
    for _ in range(20):  # every three hours until Sunday night
        world.clock.advance(3 * 3600)
        assert run_watchdog(world.services).kicked == []
    details = [entry.detail for entry in deployment(world, result.deployment_id).history]
    assert details[0] == "build b1"
    assert details[1].startswith("deploy freeze (release party): waiting until 2026-12-07T09:00:00Z")
    assert details[2].startswith("outside the deploy windows: waiting until 2026-12-07T09:00:00Z")
    assert len(details) == 3


def test_a_rollback_during_a_freeze_goes_through() -> None:
    world = world_with(datetime(2026, 12, 18, 10, 0, tzinfo=UTC), freezes=[YEAR_END])
    deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.current = IN_THE_FREEZE
    assert build(world, "b3", COMMIT_C).outcome is Outcome.QUEUED  # an ordinary build waits

    accepted, result = roll_back(world)

    assert result.outcome is Outcome.STARTED and result.deployment_id == accepted.deployment_id
    rolled = deployment(world, accepted.deployment_id)
    assert rolled.rollback_of == second and rolled.status is S.PROVISIONING
    state = world.store.environments["hello@staging"]
    assert state.active_deployment_id == accepted.deployment_id


def test_a_rollback_queued_behind_a_running_deployment_starts_in_a_freeze_when_it_ends() -> None:
    world = world_with(datetime(2026, 12, 19, 23, 58, tzinfo=UTC), freezes=[YEAR_END])
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    running = build(world, "b3", COMMIT_C, messages=["fix: y"])
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="lead@example.com",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, "rollback-event")
    world.clock.current = IN_THE_FREEZE
    fail_deployment(world.services, running.deployment_id or "", "broken")

    assert deployment(world, accepted.deployment_id).status is S.PROVISIONING
    assert world.store.environments["hello@staging"].active_deployment_id == accepted.deployment_id
    assert step(world, topology.START_ROLLING_REPLACE).deployment_id == accepted.deployment_id


def test_an_environment_without_windows_behaves_as_before() -> None:
    world = world_with(THURSDAY_EVENING)
    assert build(world, "b1").outcome is Outcome.STARTED
    assert build(world, "b2", COMMIT_B).outcome is Outcome.QUEUED


def test_a_redelivered_build_that_waits_for_its_window_stays_waiting(after_hours: FakeWorld) -> None:
    first = build(after_hours, "b1")
    history = deployment(after_hours, first.deployment_id).history
    again = build(after_hours, "b1")

    assert again.outcome is Outcome.DUPLICATE and again.deployment_id == first.deployment_id
    assert deployment(after_hours, first.deployment_id).history == history
    assert after_hours.publisher.on(topology.START_ROLLING_REPLACE) == []


def nothing_live_any_more(world: FakeWorld) -> None:
    """The environment's state says nothing is live (say its live release was taken down), while
    its history still names releases that were: a rollback to one of them replaces nothing."""
    key = "hello@staging"
    world.store.environments[key] = replace(
        world.store.environments[key], live_deployment_id=None, live_version=None
    )


def test_a_rollback_while_nothing_is_live_is_still_a_rollback_and_starts_in_a_freeze() -> None:
    world = world_with(datetime(2026, 12, 19, 23, 58, tzinfo=UTC), freezes=[YEAR_END])
    deploy_to_live(world, "b1")
    nothing_live_any_more(world)
    running = build(world, "b2", COMMIT_B, messages=["feat: x"])
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="lead@example.com",
        to_version="1.0.0",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    assert admit_build(world.services, published.data, published.attributes, "rollback-event").outcome is (
        Outcome.QUEUED
    )
    queued = deployment(world, accepted.deployment_id)
    assert queued.rollback_of is None and queued.is_rollback, "the request says rollback, not rollback_of"

    # The freeze begins while the running deployment holds the lock; its end hands over.
    world.clock.current = IN_THE_FREEZE
    fail_deployment(world.services, running.deployment_id or "", "broken")

    assert deployment(world, accepted.deployment_id).status is S.PROVISIONING
    assert world.store.environments["hello@staging"].active_deployment_id == accepted.deployment_id


def test_the_watchdog_starts_a_rollback_that_replaces_nothing_in_a_freeze() -> None:
    world = world_with(datetime(2026, 12, 19, 23, 58, tzinfo=UTC), freezes=[YEAR_END])
    deploy_to_live(world, "b1")
    nothing_live_any_more(world)
    running = build(world, "b2", COMMIT_B, messages=["feat: x"])
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="lead@example.com",
        to_version="1.0.0",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, "rollback-event")
    # The hand-over is lost: the running one ends in the freeze, but nothing starts what queued.
    key = "hello@staging"
    world.store.environments[key] = replace(
        world.store.environments[key], active_deployment_id=None, queue=()
    )
    world.store.deployments[running.deployment_id or ""] = deployment(world, running.deployment_id).advance(
        S.FAILED, IN_THE_FREEZE, "broken"
    )
    world.clock.current = IN_THE_FREEZE

    run_watchdog(world.services)

    assert deployment(world, accepted.deployment_id).status is S.PROVISIONING
    assert world.store.environments[key].active_deployment_id == accepted.deployment_id
