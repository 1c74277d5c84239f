"""An environment taken out of the pipeline file while deployments of it are unfinished: the
watchdog ends them (a switch included), frees the lock and says so, and leaves Compute alone,
since without the environment's configuration nothing is known of its load balancer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared import topology
from shared.domain.status import DeploymentStatus as S
from shared.usecases.lifecycle import UNCONFIGURED
from shared.usecases.provision import start_rolling_replace
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import (
    COMMIT_B,
    COMMIT_C,
    build,
    deploy_to_live,
    notifications,
    step,
    stuck_switching,
)


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def without_staging(world: FakeWorld) -> None:
    config = world.services.config
    hello = config.apps["hello"]
    environments = {name: env for name, env in hello.environments.items() if name != "staging"}
    apps = {**config.apps, "hello": replace(hello, environments=environments)}
    world.services = replace(world.services, config=replace(config, apps=apps))


def failure_alerts(world: FakeWorld, deployment_id: str) -> list[str]:
    return [
        n.detail for n in notifications(world) if n.deployment_id == deployment_id and n.status == "failed"
    ]


def test_a_switch_whose_environment_was_removed_ends_and_frees_the_lock(world: FakeWorld) -> None:
    blue, green, _ = stuck_switching(world)
    attached = list(world.compute.attached)
    without_staging(world)
    world.compute.calls.clear()

    report = run_watchdog(world.services, look_for_leaks=False)
    assert report.failed == [green] and report.errors == []
    failed = world.store.deployments[green]
    assert failed.status is S.FAILED and failed.history[-1].detail == UNCONFIGURED
    assert failed.resources_deleted_at is None and failed.cleanup_due_at is None, "nothing was deleted"
    assert world.store.environments["hello@staging"].active_deployment_id is None
    assert world.store.environments["hello@staging"].live_deployment_id == blue
    assert failure_alerts(world, green) == [UNCONFIGURED]
    assert world.compute.calls == [] and world.compute.attached == attached
    assert run_watchdog(world.services, look_for_leaks=False).failed == [], "and once only"


def test_a_running_and_a_queued_deployment_of_a_removed_environment_both_end(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    running = build(world, "b2", COMMIT_B).deployment_id
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    queued = build(world, "b3", COMMIT_C).deployment_id
    assert world.store.deployments[queued].status is S.QUEUED
    without_staging(world)

    report = run_watchdog(world.services, look_for_leaks=False)
    assert sorted(report.failed) == sorted([running, queued]) and report.errors == []
    assert world.store.deployments[running].status is S.FAILED
    assert world.store.deployments[queued].status is S.FAILED
    state = world.store.environments["hello@staging"]
    assert state.active_deployment_id is None and not state.queue
    assert failure_alerts(world, running) == [UNCONFIGURED] and failure_alerts(world, queued) == [
        UNCONFIGURED
    ]
