"""The service layer, driven through fakes of the pipeline's own ports: builds, the deployment's
steps, the watchdog, bad and dead-lettered messages (rollbacks: test_rollback_usecases.py)."""

from __future__ import annotations

import json

import pytest

from shared import topology
from shared.domain.identifiers import deployment_id_for
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.ports import TransientError
from shared.usecases.admit_build import Outcome, admit_build
from shared.usecases.dead_letter import record_dead_letter
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
    notifications,
    step,
)


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def test_a_first_build_takes_the_free_environment_as_the_first_version(world: FakeWorld) -> None:
    result = build(world, "b1", messages=["feat: hello"])
    assert result.outcome is Outcome.STARTED and result.version == "1.0.0"
    deployment = world.store.deployments[deployment_id_for("hello", "staging", "b1")]
    assert deployment.status is S.PROVISIONING
    assert world.store.history_of(deployment.deployment_id) == ["queued", "provisioning"]
    assert world.store.environments["hello@staging"].active_deployment_id == deployment.deployment_id
    assert world.store.releases["hello@1.0.0"].commit == COMMIT_A
    assert len(world.publisher.on(topology.START_ROLLING_REPLACE)) == 1


def test_the_same_build_three_times_makes_one_deployment(world: FakeWorld) -> None:
    results = [build(world, "b1") for _ in range(3)]
    assert [r.outcome for r in results] == [Outcome.STARTED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert len(world.store.deployments) == 1 and len(world.store.releases) == 1


def test_the_same_commit_in_another_environment_keeps_its_version(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    build(world, "b2", COMMIT_B, messages=["feat: more"])
    promoted = build(world, "b2-prod", COMMIT_B, environment="production")
    assert promoted.version == "1.1.0" and len(world.store.releases) == 2


def test_the_next_version_bumps_from_the_apps_highest_version_not_from_its_release_history(
    world: FakeWorld,
) -> None:
    # The per-app record alone decides; no release document says 2.3.0 was ever released.
    world.store.highest_versions["hello"] = "2.3.0"
    assert build(world, "b1", messages=["feat: hello"]).version == "2.4.0"
    assert world.store.highest_versions["hello"] == "2.4.0"


def test_a_promoted_commit_keeps_the_apps_highest_version(world: FakeWorld) -> None:
    build(world, "b1", COMMIT_A)
    build(world, "b2", COMMIT_B, messages=["feat: more"])
    assert world.store.highest_versions["hello"] == "1.1.0"
    assert build(world, "b1-prod", COMMIT_A, environment="production").version == "1.0.0"
    assert world.store.highest_versions["hello"] == "1.1.0"


def test_a_full_deployment_goes_live_and_retires_the_previous_one(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    assert world.store.deployments[first].status is S.LIVE
    second = build(world, "b2", COMMIT_B, messages=["feat: more"])
    assert second.version == "1.1.0"
    cooling = start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    assert cooling is not None and cooling.status is S.COOLING_DOWN
    # During the cool-down green exists but takes no traffic.
    assert world.compute.attached == [instance_group_name(first)]
    message = step(world, topology.COOL_DOWN_COMPLETE)
    assert message.deployment_id == cooling.deployment_id and cooling.not_before is not None
    with pytest.raises(NotReadyYet):
        complete_cool_down(world.services, message)
    world.compute.make_healthy(instance_group_name(second.deployment_id or ""))
    with pytest.raises(NotReadyYet):  # healthy, but the cool-down is not over
        complete_cool_down(world.services, message)
    world.clock.advance(5)
    live = complete_cool_down(world.services, message)
    assert live is not None and live.status is S.LIVE
    assert world.compute.attached == [instance_group_name(second.deployment_id or "")]
    blue = world.store.deployments[first]
    assert blue.status is S.RETIRED and blue.cleanup_due_at is not None
    state = world.store.environments["hello@staging"]
    assert (state.live_deployment_id, state.live_version, state.active_deployment_id) == (
        second.deployment_id,
        "1.1.0",
        None,
    )
    assert world.store.history_of(live.deployment_id) == [
        "queued",
        "provisioning",
        "cooling_down",
        "switching",
        "live",
    ]
    assert [(n.status, n.version) for n in notifications(world)] == [("live", "1.0.0"), ("live", "1.1.0")]


def test_blue_is_deleted_only_after_draining_and_retention(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B)
    run_watchdog(world.services)
    world.clock.advance(10)  # drained, but still retained for a rollback
    assert run_watchdog(world.services).cleaned == []
    assert instance_group_name(first) in world.compute.groups
    assert instance_group_name(first) not in world.compute.attached
    world.clock.advance(50)
    report = run_watchdog(world.services)
    assert report.cleaned == [first] and instance_group_name(first) not in world.compute.groups
    assert world.store.deployments[first].resources_deleted_at is not None
    assert run_watchdog(world.services).cleaned == []


def test_a_late_duplicate_cool_down_message_is_a_no_op(world: FakeWorld) -> None:
    build(world, "b1")
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(message.deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, message)
    history = world.store.history_of(message.deployment_id)
    complete_cool_down(world.services, message)
    assert world.store.history_of(message.deployment_id) == history
    # The repeated live notification carries the same dedupe key, so it is sent once.
    assert {n.dedupe_key for n in notifications(world)} == {f"{message.deployment_id}:live"}


def test_newest_head_wins_in_a_busy_environment(world: FakeWorld) -> None:
    running = build(world, "b1")
    older = build(world, "b2", COMMIT_B)
    newest = build(world, "b3", COMMIT_C)
    assert older.outcome is Outcome.QUEUED and newest.outcome is Outcome.QUEUED
    assert world.store.deployments[older.deployment_id or ""].status is S.CANCELLED
    assert world.store.environments["hello@staging"].queue == (newest.deployment_id,)
    assert [n.status for n in notifications(world)] == ["cancelled"]
    # The running one finishes; only then does the newest start.
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    assert world.store.deployments[newest.deployment_id or ""].status is S.QUEUED
    world.compute.make_healthy(instance_group_name(running.deployment_id or ""))
    world.clock.advance(5)
    complete_cool_down(world.services, message)
    assert world.store.deployments[newest.deployment_id or ""].status is S.PROVISIONING
    assert step(world, topology.START_ROLLING_REPLACE).deployment_id == newest.deployment_id
    assert world.store.environments["hello@staging"].active_deployment_id == newest.deployment_id


def test_green_that_never_gets_healthy_fails_at_the_deadline(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    bad = build(world, "b2", COMMIT_B)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.clock.advance(30)
    with pytest.raises(NotReadyYet):
        complete_cool_down(world.services, message)
    world.clock.advance(31)
    failed = complete_cool_down(world.services, message)
    assert failed is not None and failed.status is S.FAILED
    assert instance_group_name(bad.deployment_id or "") not in world.compute.groups
    assert world.compute.attached == [instance_group_name(first)]
    state = world.store.environments["hello@staging"]
    assert state.active_deployment_id is None and state.live_deployment_id == first
    assert notifications(world)[-1].status == "failed"
    # The next build deploys normally.
    assert build(world, "b3", COMMIT_C).outcome is Outcome.STARTED


def test_green_that_cannot_start_fails_without_waiting_for_the_deadline(world: FakeWorld) -> None:
    result = build(world, "b1")
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.groups[instance_group_name(result.deployment_id or "")].errors = (
        "artifact has no Procfile",
    )
    failed = complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert failed is not None and failed.status is S.FAILED
    assert "Procfile" in failed.history[-1].detail


def test_a_configuration_error_from_compute_fails_the_deployment(world: FakeWorld) -> None:
    world.compute.refuse_templates = "base template hello-staging-base not found"
    build(world, "b1")
    assert start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE)) is None
    deployment = next(iter(world.store.deployments.values()))
    assert deployment.status is S.FAILED and "base template" in deployment.history[-1].detail


def test_a_crash_after_compute_and_before_the_status_write_finishes_once(world: FakeWorld) -> None:
    build(world, "b1")
    message = step(world, topology.START_ROLLING_REPLACE)
    world.store.fail_next_commit = TransientError("firestore unavailable")
    with pytest.raises(TransientError):
        start_rolling_replace(world.services, message)
    start_rolling_replace(world.services, message)  # the redelivery
    assert len(world.compute.groups) == 1
    assert world.store.history_of(message.deployment_id).count("cooling_down") == 1


def test_a_crash_after_commit_and_before_publish_is_resumed_by_the_redelivery(world: FakeWorld) -> None:
    build(world, "b1")
    world.publisher.take(topology.START_ROLLING_REPLACE)  # as if the publish was lost
    again = build(world, "b1")
    assert again.outcome is Outcome.DUPLICATE
    assert len(world.publisher.on(topology.START_ROLLING_REPLACE)) == 1


def test_the_watchdog_fails_a_stuck_deployment_and_starts_the_next(world: FakeWorld) -> None:
    stuck = build(world, "b1")
    waiting = build(world, "b2", COMMIT_B)
    world.publisher.take(topology.START_ROLLING_REPLACE)
    world.clock.advance(61)
    report = run_watchdog(world.services)
    assert report.failed == [stuck.deployment_id]
    assert world.store.deployments[waiting.deployment_id or ""].status is S.PROVISIONING
    assert step(world, topology.START_ROLLING_REPLACE).deployment_id == waiting.deployment_id


def test_the_watchdog_frees_a_lock_left_by_a_deployment_that_ended(world: FakeWorld) -> None:
    holder = build(world, "b1")
    waiting = build(world, "b2", COMMIT_B)
    # Simulate a lost hand-over: the holder ended but the environment still names it.
    ended = world.store.deployments[holder.deployment_id or ""]
    world.store.deployments[ended.deployment_id] = ended.advance(S.FAILED, world.clock.now(), "lost")
    assert run_watchdog(world.services).kicked == [waiting.deployment_id]
    assert world.store.deployments[waiting.deployment_id or ""].status is S.PROVISIONING
    assert world.store.environments["hello@staging"].active_deployment_id == waiting.deployment_id


def test_the_watchdog_republishes_a_stalled_step_once_per_stall(world: FakeWorld) -> None:
    result = build(world, "b1")
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.publisher.take(topology.COOL_DOWN_COMPLETE)  # as if the publish was lost
    world.clock.advance(20)
    assert run_watchdog(world.services, stall_seconds=20).kicked == []
    world.clock.advance(5)
    assert run_watchdog(world.services, stall_seconds=20).kicked == [result.deployment_id]
    assert step(world, topology.COOL_DOWN_COMPLETE).deployment_id == result.deployment_id
    world.clock.advance(5)
    assert run_watchdog(world.services, stall_seconds=20).kicked == []


@pytest.mark.parametrize(
    ("data", "attributes"),
    [
        (b"{not json", {"app": "hello", "environment": "staging"}),
        (b"[]", {}),
        (b"x" * (64 * 1024 + 1), {}),
        (
            json.dumps(
                {
                    "app": "ghost",
                    "environment": "staging",
                    "commit": COMMIT_A,
                    "build_id": "1",
                    "artifact": "file:///a.tar.gz",
                    "artifact_sha256": "0" * 64,
                }
            ).encode(),
            {"app": "ghost", "environment": "staging"},
        ),
    ],
)
def test_bad_messages_are_recorded_and_announced_not_raised(
    world: FakeWorld, data: bytes, attributes: dict[str, str]
) -> None:
    result = admit_build(world.services, data, attributes, "evt-1")
    assert result.outcome is Outcome.REJECTED
    assert world.store.rejected["evt-1"].reason == result.reason
    (notice,) = notifications(world)
    assert notice.kind == "rejected" and notice.dedupe_key == "rejected:evt-1"
    assert world.store.deployments == {}


def test_dead_lettered_events_are_recorded_and_announced(world: FakeWorld) -> None:
    record_dead_letter(
        world.services,
        message_id="m-1",
        topic="cool-down-complete-dead-letter",
        data=b'{"deployment_id": "x"}',
        attributes={
            "app": "hello",
            "environment": "staging",
            "CloudPubSubDeadLetterSourceDeliveryCount": "100",
        },
    )
    assert world.store.dead_lettered["m-1"].delivery_attempts == 100
    (notice,) = notifications(world)
    assert notice.kind == "dead_letter" and notice.dedupe_key == "dead-letter:m-1"
