"""Status changes of one record are a compare-and-set (`Store.update_deployment`): a write whose
answer is lost is tried again, finds the record changed (by itself) and leaves it.
The step must still carry on from the record as it stands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared import topology
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.usecases.provision import start_rolling_replace
from shared.usecases.switch import complete_cool_down
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import COMMIT_A, build, step


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def lose_the_answer_once(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next update is written, its answer lost, and the retried write finds the record
    changed: the store then answers the record as re-read, left as it was."""
    update = world.store.update_deployment

    def written_then_retried(deployment_id: str, change: Callable[[Any], Any]) -> Any:
        monkeypatch.setattr(world.store, "update_deployment", update)
        update(deployment_id, change)
        return update(deployment_id, change)

    monkeypatch.setattr(world.store, "update_deployment", written_then_retried)


def test_provisioning_whose_write_answer_was_lost_still_starts_the_cool_down(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build(world, "b1", COMMIT_A, messages=["feat: x"])
    assert result.deployment_id is not None
    lose_the_answer_once(world, monkeypatch)

    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))

    assert world.store.deployments[result.deployment_id].status is S.COOLING_DOWN
    assert len(world.publisher.on(topology.COOL_DOWN_COMPLETE)) == 1, "else only the watchdog moves it on"


def test_a_switch_whose_write_answer_was_lost_still_moves_the_traffic(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build(world, "b1", COMMIT_A, messages=["feat: x"])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.clock.advance(5)  # past the cool-down, within the provisioning deadline
    lose_the_answer_once(world, monkeypatch)

    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))

    assert world.store.deployments[result.deployment_id].status is S.LIVE
