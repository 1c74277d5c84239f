"""The watchdog collects templates and groups a crash left behind, and nothing anyone needs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from shared import topology
from shared.domain.identifiers import deployment_id_for
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.notify_message import NotifyRequest
from shared.domain.records import Deployment
from shared.domain.status import DeploymentStatus as S
from shared.usecases.provision import start_rolling_replace
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import COMMIT_B, COMMIT_C, build, deploy_to_live, step

GRACE = 60  # the test configuration's provisioning deadline


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def announcements(world: FakeWorld) -> list[NotifyRequest]:
    notes = [NotifyRequest.from_json(m.data) for m in world.publisher.on(topology.NOTIFY)]
    return [note for note in notes if note.kind == "leaks_collected"]


def leave_behind(world: FakeWorld, build_id: str) -> str:
    """Resources of a deployment whose record never mentions them (the step died first)."""
    orphan = deployment_id_for("hello", "staging", build_id)
    env = world.services.environment_config("hello", "staging")
    world.compute.ensure_instance_template(
        env, instance_template_name(orphan), version="9.9.9", artifact="x", artifact_sha256="0" * 64
    )
    world.compute.ensure_instance_group(
        env, instance_group_name(orphan), template=instance_template_name(orphan)
    )
    return orphan


def test_resources_no_record_needs_are_deleted_after_the_grace_and_announced_once(world: FakeWorld) -> None:
    live = deploy_to_live(world, "b1")
    orphan = leave_behind(world, "crashed")
    world.compute.ensure_instance_group(
        world.services.environment_config("hello", "staging"), "someone-elses-group", template="t"
    )

    world.clock.advance(GRACE - 1)  # could still belong to a step that has not recorded it yet
    assert run_watchdog(world.services).collected == []
    assert instance_group_name(orphan) in world.compute.groups

    world.clock.advance(1)
    report = run_watchdog(world.services)
    assert report.collected == [instance_group_name(orphan), instance_template_name(orphan)]
    assert instance_group_name(orphan) not in world.compute.groups
    assert instance_template_name(orphan) not in world.compute.templates
    # What is ours and needed, and what is not ours, stays.
    assert instance_group_name(live) in world.compute.groups and "someone-elses-group" in world.compute.groups
    # Groups go before templates: a template still used by a group cannot be deleted.
    deletions = [call for call in world.compute.calls if call.startswith("delete")]
    assert deletions == [
        f"delete group {instance_group_name(orphan)}",
        f"delete template {instance_template_name(orphan)}",
    ]

    [note] = announcements(world)
    assert (note.app, note.environment, note.status) == ("hello", "staging", "collected")
    assert instance_group_name(orphan) in note.detail and instance_template_name(orphan) in note.detail
    assert run_watchdog(world.services).collected == [] and len(announcements(world)) == 1


def test_in_flight_and_retained_resources_are_never_collected(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B)  # first is retired, retained for a rollback
    in_flight = build(world, "b3", COMMIT_C)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    assert world.store.deployments[str(in_flight.deployment_id)].status is S.COOLING_DOWN
    # Old enough on their own: only the records protect them.
    for name in world.compute.created_at:
        world.compute.created_at[name] = world.clock.now() - timedelta(hours=1)
    report = run_watchdog(world.services)
    assert report.collected == [] and report.failed == []
    for deployment_id in (first, second, str(in_flight.deployment_id)):
        assert instance_group_name(deployment_id) in world.compute.groups


def test_the_group_the_environment_serves_is_kept_whatever_its_record_says(world: FakeWorld) -> None:
    live = deploy_to_live(world, "b1")
    # A record that disagrees with the environment (e.g. written by a newer component).
    world.store.deployments[live] = replace(world.store.deployments[live], status=S.RETIRED)
    world.clock.advance(GRACE + 1)
    assert run_watchdog(world.services).collected == []
    assert instance_group_name(live) in world.compute.groups


def test_a_resource_without_a_creation_time_is_left_alone(world: FakeWorld) -> None:
    orphan = leave_behind(world, "crashed")
    del world.compute.created_at[instance_group_name(orphan)]
    world.clock.advance(GRACE + 1)
    report = run_watchdog(world.services)
    assert report.collected == [instance_template_name(orphan)]
    assert instance_group_name(orphan) in world.compute.groups


def in_flight_record(deployment_id: str, at: datetime) -> Deployment:
    """A deployment record in `cooling_down` that names no resources yet (derived names apply)."""
    return (
        Deployment.queued(
            deployment_id=deployment_id,
            app=deployment_id.rsplit("-", 2)[0],
            environment=deployment_id.rsplit("-", 2)[1],
            version="1.0.0",
            commit="c" * 40,
            build_id="b",
            artifact="file:///a.tar.gz",
            event={},
            at=at,
        )
        .advance(S.PROVISIONING, at)
        .advance(S.COOLING_DOWN, at)
    )


def test_a_group_the_backend_service_still_uses_is_kept_whatever_the_records_say(world: FakeWorld) -> None:
    orphan = leave_behind(world, "crashed")
    world.compute.attached.append(instance_group_name(orphan))  # e.g. traffic switched back to it
    world.clock.advance(GRACE + 1)
    report = run_watchdog(world.services)
    assert report.collected == []  # neither the group nor the template it is made from
    assert instance_group_name(orphan) in world.compute.groups
