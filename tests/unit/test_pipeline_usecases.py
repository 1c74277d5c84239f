"""The service layer, driven through fakes of the pipeline's own ports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from shared import topology
from shared.domain.identifiers import deployment_id_for
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.notify_message import NotifyRequest
from shared.domain.rollback import NothingToRollBack, TargetWithoutDigest, UnknownTarget
from shared.domain.status import DeploymentStatus as S
from shared.ports import TransientError
from shared.usecases.admit_build import Outcome, admit_build
from shared.usecases.dead_letter import record_dead_letter
from shared.usecases.provision import start_rolling_replace
from shared.usecases.rollback import RollbackAccepted, request_rollback
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world, verified_caller_check

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
COMMIT_C = "c" * 40


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def build(
    world: FakeWorld,
    build_id: str,
    commit: str = COMMIT_A,
    environment: str = "staging",
    messages: list[str] | None = None,
    **extra: Any,
) -> Any:
    body = {
        "app": "hello",
        "environment": environment,
        "commit": commit,
        "build_id": build_id,
        "artifact": f"file:///artifacts/{commit[:6]}.tar.gz",
        "artifact_sha256": digest_of(commit),
        "commit_messages": messages or [],
        **extra,
    }
    return admit_build(
        world.services,
        json.dumps(body).encode(),
        {"app": "hello", "environment": environment},
        f"event-{build_id}",
    )


def digest_of(commit: str) -> str:
    """A stand-in artifact digest, one per commit (the build of a commit is one artifact)."""
    return hashlib.sha256(commit.encode()).hexdigest()


def step(world: FakeWorld, topic: str) -> StepMessage:
    messages = world.publisher.take(topic)
    assert messages, f"nothing published on {topic}"
    return StepMessage.from_message(messages[-1].data)


def notifications(world: FakeWorld) -> list[NotifyRequest]:
    return [NotifyRequest.from_json(m.data) for m in world.publisher.on(topology.NOTIFY)]


def rollback_by(
    world: FakeWorld, *, app: str = "hello", environment: str = "staging", caller: str, **options: Any
) -> RollbackAccepted:
    """A rollback asked by `caller`, a verified Workspace account (see `verified_caller_check`)."""
    return request_rollback(
        world.services,
        app=app,
        environment=environment,
        caller=caller,
        caller_matches=verified_caller_check(caller),
        **options,
    )


def deploy_to_live(world: FakeWorld, build_id: str, commit: str = COMMIT_A, **kwargs: Any) -> str:
    result = build(world, build_id, commit, **kwargs)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    assert result.deployment_id is not None
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, message)
    return result.deployment_id


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


def test_rollback_republishes_the_previous_release_as_a_new_build(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1", build_url="https://ci/1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="lead@example.com",
        reason="errors",
    )
    assert accepted.version == "1.0.0" and accepted.rollback_of == second
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    result = admit_build(world.services, published.data, published.attributes, "rollback-event")
    assert result.deployment_id == accepted.deployment_id and result.version == "1.0.0"
    rolled = world.store.deployments[accepted.deployment_id]
    assert rolled.rollback_of == second and rolled.triggered_by == "lead@example.com"
    assert rolled.reason == "errors" and rolled.build_url == "https://ci/1" and rolled.commit == COMMIT_A
    assert len(world.store.releases) == 2
    assert first != accepted.deployment_id


def test_rollback_refusals(world: FakeWorld) -> None:
    with pytest.raises(UnknownTarget):
        rollback_by(
            world,
            app="nope",
            environment="staging",
            caller="x@example.com",
        )
    with pytest.raises(NothingToRollBack):
        rollback_by(
            world,
            app="hello",
            environment="staging",
            caller="x@example.com",
        )
    deploy_to_live(world, "b1")
    with pytest.raises(NothingToRollBack):
        rollback_by(
            world,
            app="hello",
            environment="staging",
            caller="x@example.com",
        )
    with pytest.raises(UnknownTarget):
        rollback_by(
            world,
            app="hello",
            environment="staging",
            caller="x@example.com",
            to_version="9.9.9",
        )
    with pytest.raises(NothingToRollBack):
        rollback_by(
            world,
            app="hello",
            environment="staging",
            caller="x@example.com",
            to_version="1.0.0",
        )


def recorded_before_digests(world: FakeWorld, deployment_id: str) -> None:
    """Make a deployment and its release look as CONTRACT v1 recorded them: no digest anywhere."""
    deployment = world.store.deployments[deployment_id]
    event = {key: value for key, value in deployment.event.items() if key != "artifact_sha256"}
    world.store.deployments[deployment_id] = replace(deployment, event=event, artifact_sha256="")
    key = f"{deployment.app}@{deployment.version}"
    world.store.releases[key] = replace(world.store.releases[key], artifact_sha256="")


def test_a_rollback_to_a_release_recorded_before_digests_is_refused_up_front(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    recorded_before_digests(world, first)
    world.publisher.messages.clear()

    for to_version in (None, "1.0.0"):
        with pytest.raises(TargetWithoutDigest) as refused:
            rollback_by(
                world,
                app="hello",
                environment="staging",
                caller="x@example.com",
                to_version=to_version,
            )
        assert refused.value.http_status == 409
        assert "1.0.0 was recorded before artifact digests" in str(refused.value)
        assert COMMIT_A[:7] in str(refused.value)
    assert world.publisher.messages == [], "a refused rollback published a build"

    # Once a build of that commit brings its digest (pinned on the release), the rollback goes.
    world.store.releases["hello@1.0.0"] = replace(
        world.store.releases["hello@1.0.0"], artifact_sha256=digest_of(COMMIT_A)
    )
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="x@example.com",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    assert accepted.version == "1.0.0"
    assert json.loads(published.data)["artifact_sha256"] == digest_of(COMMIT_A)


def test_a_feature_after_a_rollback_still_moves_forward(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="x@example.com",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, "e")
    assert build(world, "b3", COMMIT_C, messages=["feat: y"]).version == "1.2.0"


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


def roll_back(world: FakeWorld, **kwargs: Any) -> str:
    """Request a rollback and admit its republished event; returns the new deployment's id."""
    world.publisher.messages.clear()
    accepted = rollback_by(
        world,
        app="hello",
        environment="staging",
        caller="lead@example.com",
        **kwargs,
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, f"event-{accepted.deployment_id}")
    return accepted.deployment_id


def test_a_rollback_within_retention_adopts_the_retained_group_and_switches_without_cool_down(
    world: FakeWorld,
) -> None:
    first = deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.clock.advance(20)
    run_watchdog(world.services)
    world.compute.calls.clear()
    rolled = roll_back(world)

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
    rolled = roll_back(world)
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
    rolled = roll_back(world)
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
    rolled = roll_back(world)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    assert world.store.deployments[rolled].instance_group == instance_group_name(rolled)
    assert instance_group_name(rolled) in world.compute.groups


def test_a_redelivered_start_step_after_adoption_neither_adopts_again_nor_builds(world: FakeWorld) -> None:
    first = deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    rolled = roll_back(world)
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
