"""An outcome the watchdog commits is announced even when the sweep dies between its commit and
its publish: the record keeps `announce_due_at` until the announcement is out, and a later sweep
announces what is still due. A redelivered tick would not: the record has moved on by then."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from shared import topology
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.usecases.lifecycle import ANNOUNCE_GRACE_SECONDS
from shared.usecases.provision import start_rolling_replace
from shared.usecases.switch import complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import COMMIT_B, build, deploy_to_live, notifications, step, stuck_switching

DEADLINE_SECONDS = 60
"""The fake world's provisioning deadline."""


class Killed(BaseException):
    """The function's process dies: nothing in the pipeline catches it."""


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def dies_on_its_next_announcement(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    publish = world.publisher.publish

    def killed_at_the_announcement(topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        if topic == topology.NOTIFY:
            monkeypatch.setattr(world.publisher, "publish", publish)
            raise Killed
        return publish(topic, data, attributes)

    monkeypatch.setattr(world.publisher, "publish", killed_at_the_announcement)


def outcomes(world: FakeWorld, deployment_id: str) -> list[str]:
    return [n.status for n in notifications(world) if n.deployment_id == deployment_id]


def past_its_deadline(world: FakeWorld) -> str:
    """1.0.0 live; 1.0.1's green never gets healthy, and its deadline passes."""
    deploy_to_live(world, "b1")
    late = build(world, "b2", COMMIT_B).deployment_id
    assert late is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.clock.advance(DEADLINE_SECONDS + 1)
    return late


def test_a_failure_whose_announcement_died_with_the_sweep_is_announced_by_a_later_one(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = past_its_deadline(world)
    dies_on_its_next_announcement(world, monkeypatch)
    with pytest.raises(Killed):
        run_watchdog(world.services, look_for_leaks=False)
    failed = world.store.deployments[late]
    assert failed.status is S.FAILED and failed.announce_due_at is not None
    assert outcomes(world, late) == []

    assert run_watchdog(world.services, look_for_leaks=False).announced == [], "the grace first"
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    assert run_watchdog(world.services, look_for_leaks=False).announced == [late]
    [alert] = [n for n in notifications(world) if n.deployment_id == late]
    assert alert.status == "failed" and "deadline" in alert.detail
    assert world.store.deployments[late].announce_due_at is None
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    assert run_watchdog(world.services, look_for_leaks=False).announced == [], "and once only"


def test_an_announced_outcome_is_not_announced_again(world: FakeWorld) -> None:
    late = past_its_deadline(world)
    assert run_watchdog(world.services, look_for_leaks=False).failed == [late]
    assert world.store.deployments[late].announce_due_at is None
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    assert run_watchdog(world.services, look_for_leaks=False).announced == []
    assert outcomes(world, late) == ["failed"]


def test_an_abandoned_switch_whose_announcement_died_is_announced_later(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, green, _ = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    dies_on_its_next_announcement(world, monkeypatch)
    with pytest.raises(Killed):
        run_watchdog(world.services, look_for_leaks=False)
    assert world.store.deployments[green].status is S.FAILED and outcomes(world, green) == []
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    report = run_watchdog(world.services, look_for_leaks=False)
    assert report.announced == [green] and outcomes(world, green) == ["failed"]


def test_the_abandoned_switchs_own_poll_announces_what_the_sweep_could_not(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its cool-down poll, delivered again after the sweep died, announces the failure and marks
    it announced: a later sweep has nothing left to announce."""
    _, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    dies_on_its_next_announcement(world, monkeypatch)
    with pytest.raises(Killed):
        run_watchdog(world.services, look_for_leaks=False)
    complete_cool_down(world.services, poll)
    assert outcomes(world, green) == ["failed"]
    assert world.store.deployments[green].announce_due_at is None
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    assert run_watchdog(world.services, look_for_leaks=False).announced == []


def test_a_failure_announced_by_its_own_step_clears_the_due_time(world: FakeWorld) -> None:
    """Not only the watchdog's: a cool-down poll that fails green announces and clears too."""
    deploy_to_live(world, "b1")
    broken = build(world, "b2", COMMIT_B).deployment_id
    assert broken is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.groups[instance_group_name(broken)].errors = ("artifact has no Procfile",)
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    failed = world.store.deployments[broken]
    assert failed.status is S.FAILED and failed.announce_due_at is None
    assert outcomes(world, broken) == ["failed"]


def test_an_expired_approval_whose_announcement_died_is_announced_later(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    assert waiting is not None
    world.publisher.messages.clear()
    world.clock.advance(3600)  # production's approval timeout
    dies_on_its_next_announcement(world, monkeypatch)
    with pytest.raises(Killed):
        run_watchdog(world.services, look_for_leaks=False)
    assert world.store.deployments[waiting].status is S.CANCELLED and outcomes(world, waiting) == []
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    assert run_watchdog(world.services, look_for_leaks=False).announced == [waiting]
    assert outcomes(world, waiting) == ["cancelled"]
