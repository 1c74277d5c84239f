"""Rollbacks through the service layer, driven through fakes of the pipeline's own ports: the
request and its refusals, releases recorded before digests, and adopting a retained group."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shared import topology
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.rollback import NothingToRollBack, TargetWithoutDigest, UnknownTarget
from shared.domain.status import DeploymentStatus as S
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import (
    COMMIT_A,
    COMMIT_B,
    COMMIT_C,
    build,
    deploy_to_live,
    digest_of,
    recorded_before_digests,
    roll_back,
    rollback_by,
    step,
)


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def test_rollback_republishes_the_previous_release_as_a_new_build(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1", build_url="https://ci/1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()
    accepted, result = roll_back(world, reason="errors")
    assert accepted.version == "1.0.0" and accepted.rollback_of == second
    assert result.deployment_id == accepted.deployment_id and result.version == "1.0.0"
    rolled = world.store.deployments[accepted.deployment_id]
    assert rolled.rollback_of == second and rolled.triggered_by == "lead@example.com"
    assert rolled.reason == "errors" and rolled.build_url == "https://ci/1" and rolled.commit == COMMIT_A
    assert len(world.store.releases) == 2
    assert first != accepted.deployment_id


def test_rollback_refusals(world: FakeWorld) -> None:
    with pytest.raises(UnknownTarget):
        rollback_by(world, app="nope", caller="x@example.com")
    with pytest.raises(NothingToRollBack):
        rollback_by(world, caller="x@example.com")
    deploy_to_live(world, "b1")
    with pytest.raises(NothingToRollBack):
        rollback_by(world, caller="x@example.com")
    with pytest.raises(UnknownTarget):
        rollback_by(world, caller="x@example.com", to_version="9.9.9")
    with pytest.raises(NothingToRollBack):
        rollback_by(world, caller="x@example.com", to_version="1.0.0")


def test_a_rollback_to_a_release_recorded_before_digests_is_refused_up_front(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    recorded_before_digests(world, first)
    world.publisher.messages.clear()

    for to_version in (None, "1.0.0"):
        with pytest.raises(TargetWithoutDigest) as refused:
            rollback_by(world, caller="x@example.com", to_version=to_version)
        assert refused.value.http_status == 409
        assert "1.0.0 was recorded before artifact digests" in str(refused.value)
        assert COMMIT_A[:7] in str(refused.value)
    assert world.publisher.messages == [], "a refused rollback published a build"

    # Once a build of that commit brings its digest (pinned on the release), the rollback goes.
    world.store.releases["hello@1.0.0"] = replace(
        world.store.releases["hello@1.0.0"], artifact_sha256=digest_of(COMMIT_A)
    )
    accepted = rollback_by(world, caller="x@example.com")
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    assert accepted.version == "1.0.0"
    assert json.loads(published.data)["artifact_sha256"] == digest_of(COMMIT_A)


def test_a_feature_after_a_rollback_still_moves_forward(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    roll_back(world, caller="x@example.com")
    assert build(world, "b3", COMMIT_C, messages=["feat: y"]).version == "1.2.0"


def rolled_back(world: FakeWorld) -> str:
    """The deployment of a rollback to the previous release, admitted (earlier messages dropped)."""
    world.publisher.messages.clear()
    accepted, _ = roll_back(world)
    return accepted.deployment_id


def test_a_rollback_within_retention_adopts_the_retained_group_and_switches_without_cool_down(
    world: FakeWorld,
) -> None:
    first = deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.advance(20)
    run_watchdog(world.services)
    world.compute.calls.clear()
    rolled = rolled_back(world)

    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    adopted = world.store.deployments[rolled]
    assert adopted.status is S.COOLING_DOWN and adopted.not_before == world.clock.now()
    assert adopted.instance_group == instance_group_name(first)
    assert adopted.instance_template == instance_template_name(first)
    assert "retained group" in adopted.history[-1].detail
    retained = world.store.deployments[first]
    assert retained.adopted_by == rolled and retained.cleanup_due_at is None
    assert not [c for c in world.compute.calls if c.startswith(("template", "group"))], world.compute.calls

    # No cool-down to wait: the next cool-down step switches at once, and blue retires as usual.
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert world.store.deployments[rolled].status is S.LIVE
    assert world.compute.attached == [instance_group_name(first)]
    assert world.store.deployments[second].status is S.RETIRED

    # The adopted group is never deleted on the first deployment's account...
    world.clock.advance(3600)
    assert first not in run_watchdog(world.services).cleaned
    assert instance_group_name(first) in world.compute.groups
    # ...but under its new owner's record, once that one retires and its retention ends.
    deploy_to_live(world, "b3", COMMIT_C, messages=["feat: y"])
    world.clock.advance(60)
    assert rolled in run_watchdog(world.services).cleaned
    assert instance_group_name(first) not in world.compute.groups
    assert instance_template_name(first) not in world.compute.templates
    assert instance_group_name(rolled) not in world.compute.groups


def test_an_adopted_group_that_is_not_healthy_never_takes_traffic(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    rolled = rolled_back(world)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.groups[instance_group_name(first)].healthy = 1
    with pytest.raises(NotReadyYet):
        complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert world.store.deployments[rolled].status is S.COOLING_DOWN
    assert instance_group_name(first) not in world.compute.attached


def test_a_retained_group_due_for_clean_up_within_the_margin_is_not_adopted(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.advance(55)  # clean-up due in 5 s: the watchdog may be deleting it already
    rolled = rolled_back(world)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    normal = world.store.deployments[rolled]
    assert normal.status is S.COOLING_DOWN and normal.instance_group == instance_group_name(rolled)
    assert normal.not_before is not None and normal.not_before > world.clock.now()
    assert world.store.deployments[first].adopted_by is None
    assert world.store.deployments[first].cleanup_due_at is not None


def test_a_rollback_after_retention_builds_a_new_group(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.advance(60)
    assert run_watchdog(world.services).cleaned == [first]
    rolled = rolled_back(world)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    assert world.store.deployments[rolled].instance_group == instance_group_name(rolled)
    assert instance_group_name(rolled) in world.compute.groups


def test_a_redelivered_start_step_after_adoption_neither_adopts_again_nor_builds(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    rolled = rolled_back(world)
    message = step(world, topology.START_ROLLING_REPLACE)
    start_rolling_replace(world.services, message)
    history = world.store.history_of(rolled)
    world.compute.calls.clear()
    start_rolling_replace(world.services, message)
    assert world.store.history_of(rolled) == history
    assert world.compute.calls == [] and instance_group_name(rolled) not in world.compute.groups
    assert world.store.deployments[rolled].instance_group == instance_group_name(first)
    # The redelivery re-publishes the cool-down step (idempotent), as for any deployment.
    assert len(world.publisher.on(topology.COOL_DOWN_COMPLETE)) == 2


def test_a_group_adopted_after_the_sweep_read_it_is_not_deleted(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.advance(60)
    stale = world.store.deployments[first]
    # A rollback took the group over between the sweep's query and its delete.
    world.store.deployments[first] = stale.with_changes(
        world.clock.now(), cleanup_due_at=None, adopted_by="x"
    )
    world.store.deployments_due_for_cleanup = lambda now: [stale]  # type: ignore[method-assign]
    assert run_watchdog(world.services).cleaned == []
    assert instance_group_name(first) in world.compute.groups
