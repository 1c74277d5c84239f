"""Step messages carry hints (green's group, the cool-down's end, when a release went live) so a
poll that only has to wait reads no record; the record still decides everything that acts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from shared import topology
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.domain.verification import VerificationState
from shared.ports import TrafficSample
from shared.usecases.bake import check_bake
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import COMMIT_A, build, notifications, step

BAKED = "verified"


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


@pytest.fixture
def record_reads(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every record read the use cases make: direct reads, transactions and single-record updates."""
    reads: list[str] = []
    store = world.store
    get_deployment, atomically, update_deployment = (
        store.get_deployment,
        store.atomically,
        store.update_deployment,
    )

    def counting_get(deployment_id: str) -> Any:
        reads.append(f"get {deployment_id}")
        return get_deployment(deployment_id)

    def counting_atomically(work: Callable[[Any], Any]) -> Any:
        reads.append("transaction")
        return atomically(work)

    def counting_update(deployment_id: str, change: Callable[[Any], Any]) -> Any:
        reads.append(f"update {deployment_id}")
        return update_deployment(deployment_id, change)

    monkeypatch.setattr(store, "get_deployment", counting_get)
    monkeypatch.setattr(store, "atomically", counting_atomically)
    monkeypatch.setattr(store, "update_deployment", counting_update)
    return reads


def provisioned(world: FakeWorld, environment: str = "staging") -> tuple[str, StepMessage]:
    result = build(world, "b1", COMMIT_A, environment=environment, messages=["feat: x"])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    return result.deployment_id, step(world, topology.COOL_DOWN_COMPLETE)


def test_the_cool_down_message_carries_the_records_group_and_cool_down_end(world: FakeWorld) -> None:
    deployment_id, message = provisioned(world)
    record = world.store.deployments[deployment_id]
    assert message.instance_group == record.instance_group == instance_group_name(deployment_id)
    assert message.cool_down_ends_at == record.not_before
    assert message.went_live_at is None


def test_a_cool_down_poll_that_only_has_to_wait_reads_no_record(
    world: FakeWorld, record_reads: list[str]
) -> None:
    deployment_id, message = provisioned(world)
    record_reads.clear()
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(2)

    with pytest.raises(NotReadyYet, match="cool-down ends at"):
        complete_cool_down(world.services, message)
    assert record_reads == []

    world.clock.advance(3)
    complete_cool_down(world.services, message)
    assert world.store.deployments[deployment_id].status is S.LIVE
    assert record_reads[0] == f"get {deployment_id}", "the poll that acts reads the record first"


def test_a_poll_in_the_last_seconds_of_a_cool_down_only_waits(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment_id, message = provisioned(world)
    group = instance_group_name(deployment_id)
    world.compute.groups[group].errors = ("artifact digest mismatch",)
    calls: list[str] = []
    group_health = world.compute.group_health

    def counting_group_health(env: Any, name: str) -> Any:
        calls.append(name)
        return group_health(env, name)

    monkeypatch.setattr(world.compute, "group_health", counting_group_health)
    world.clock.advance(2.5)  # 2.5 s of the 5 s cool-down left

    with pytest.raises(NotReadyYet, match="cool-down ends at"):
        complete_cool_down(world.services, message)
    assert calls == [], "no Compute call"

    world.clock.advance(2.5)
    complete_cool_down(world.services, message)
    assert world.store.deployments[deployment_id].status is S.FAILED, "the poll at the end looks at green"


def test_a_cool_down_end_further_away_than_a_cool_down_is_not_believed(world: FakeWorld) -> None:
    deployment_id, message = provisioned(world)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(5)
    forged = dataclasses.replace(message, cool_down_ends_at=world.clock.now() + timedelta(days=1))

    complete_cool_down(world.services, forged)

    assert world.store.deployments[deployment_id].status is S.LIVE, "the record's cool-down was over"


def test_green_that_cannot_start_fails_at_once_whatever_the_hints_say(world: FakeWorld) -> None:
    deployment_id, message = provisioned(world)
    world.compute.groups[instance_group_name(deployment_id)].errors = ("artifact digest mismatch",)
    world.clock.advance(1)

    complete_cool_down(world.services, message)

    failed = world.store.deployments[deployment_id]
    assert failed.status is S.FAILED and "artifact digest mismatch" in failed.history[-1].detail


def test_a_poll_for_a_deployment_that_failed_meanwhile_reads_the_record_once_green_is_gone(
    world: FakeWorld,
) -> None:
    deployment_id, message = provisioned(world)
    world.compute.groups.pop(instance_group_name(deployment_id))
    world.store.deployments[deployment_id] = world.store.deployments[deployment_id].advance(
        S.FAILED, world.clock.now(), "failed by the watchdog"
    )

    assert complete_cool_down(world.services, message) is not None, "answered from the record, no wait"


def baking(world: FakeWorld) -> tuple[str, StepMessage]:
    deployment_id, message = provisioned(world, BAKED)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, message)
    assert world.store.deployments[deployment_id].baking
    world.metrics.traffic_by_group[instance_group_name(deployment_id)] = TrafficSample(500, 2)
    return deployment_id, step(world, topology.BAKE_CHECK)


def test_the_bake_message_carries_the_records_group_and_go_live_time(world: FakeWorld) -> None:
    deployment_id, message = baking(world)
    record = world.store.deployments[deployment_id]
    assert (message.instance_group, message.went_live_at) == (record.instance_group, record.went_live_at)


def test_a_bake_poll_that_finds_the_window_open_reads_no_record_and_the_pass_reads_once(
    world: FakeWorld, record_reads: list[str]
) -> None:
    deployment_id, message = baking(world)
    record_reads.clear()

    for _ in range(3):
        world.clock.advance(5)
        with pytest.raises(NotReadyYet, match="window ends"):
            check_bake(world.services, message)
    assert record_reads == []

    world.clock.advance(16)
    check_bake(world.services, message)

    assert record_reads == ["transaction"], "the pass is recorded by its transaction alone"
    verification = world.store.deployments[deployment_id].verification
    assert verification is not None and verification.state is VerificationState.PASSED
    assert (verification.requests, verification.server_errors) == (500, 2)
    assert [n.status for n in notifications(world)].count("verified") == 1


def test_a_pass_judged_on_hints_that_are_not_the_records_is_judged_again_on_the_record(
    world: FakeWorld,
) -> None:
    deployment_id, message = baking(world)
    world.clock.advance(5)
    forged = dataclasses.replace(message, went_live_at=world.clock.now() - timedelta(hours=1))

    with pytest.raises(NotReadyYet):
        check_bake(world.services, forged)

    assert world.store.deployments[deployment_id].baking, "the record's window is still open"


def test_a_bake_poll_repeated_after_the_verdict_announces_it_again_and_stops(world: FakeWorld) -> None:
    deployment_id, message = baking(world)
    world.clock.advance(31)
    check_bake(world.services, message)
    passed = world.store.deployments[deployment_id]

    assert check_bake(world.services, message) == passed
    assert world.store.deployments[deployment_id] == passed, "nothing recorded twice"
    assert [n.status for n in notifications(world)].count("verified") == 2, "re-sent; deduplicated downstream"


def test_a_breach_seen_on_hints_is_judged_on_the_record_before_traffic_goes_back(world: FakeWorld) -> None:
    deployment_id, message = baking(world)
    world.metrics.traffic_by_group[instance_group_name(deployment_id)] = TrafficSample(500, 400)
    world.clock.advance(3)

    check_bake(world.services, message)

    verification = world.store.deployments[deployment_id].verification
    assert verification is not None and verification.state is VerificationState.FAILED
