"""Release control through fakes of the pipeline's own ports: approvals, promotion, provenance,
rollback targets (`production` in the test configuration is not `auto_deploy`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from shared import topology
from shared.config import parse_pipeline_config
from shared.domain.approval import (
    AlreadyDecided,
    Decision,
    NotAnApprover,
    NotAwaitingApproval,
    UnknownDeployment,
)
from shared.domain.identity import Caller, caller_allowed
from shared.domain.naming import instance_group_name
from shared.domain.promotion import AlreadyThere, NotPromoter, SourceWithoutDigest, UnknownPromotion
from shared.domain.records import Deployment
from shared.domain.rollback import NotAllowedToRollBack, UnknownTarget
from shared.domain.status import DeploymentStatus as S
from shared.usecases.admit_build import Outcome, admit_build
from shared.usecases.approval import decide
from shared.usecases.promote import request_promotion
from shared.usecases.provision import start_rolling_replace
from shared.usecases.rollback import request_rollback
from shared.usecases.switch import _bakes, complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import TEST_CONFIG, FakeWorld, fake_world, verified_caller_check
from tests.unit.pipeline_driving import (
    COMMIT_A,
    COMMIT_B,
    COMMIT_C,
    build,
    deploy_to_live,
    digest_of,
    notifications,
    recorded_before_digests,
    rollback_by,
    step,
)

APPROVER = "lead@example.com"
SECOND_APPROVER = "ops@approvers.example.com"


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def approve(world: FakeWorld, deployment_id: str, caller: str = APPROVER, reason: str | None = None) -> Any:
    return decide(
        world.services,
        deployment_id=deployment_id,
        decision=Decision.APPROVE,
        caller=caller,
        caller_matches=verified_caller_check(caller),
        reason=reason,
    )


def reject(world: FakeWorld, deployment_id: str, caller: str = APPROVER, reason: str = "not today") -> Any:
    return decide(
        world.services,
        deployment_id=deployment_id,
        decision=Decision.REJECT,
        caller=caller,
        caller_matches=verified_caller_check(caller),
        reason=reason,
    )


def promote(
    world: FakeWorld, caller: str = APPROVER, version: str | None = None, reason: str | None = "ship it"
) -> Any:
    return request_promotion(
        world.services,
        app="hello",
        from_environment="staging",
        to_environment="production",
        caller=caller,
        caller_matches=verified_caller_check(caller),
        version=version,
        reason=reason,
    )


def admit_published(world: FakeWorld) -> Any:
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    return admit_build(
        world.services, published.data, published.attributes, f"event-{len(world.store.deployments)}"
    )


def finish(world: FakeWorld, deployment_id: str) -> None:
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, message)


def statuses(world: FakeWorld) -> Sequence[tuple[str | None, str]]:
    return [(n.deployment_id, n.status) for n in notifications(world)]


# ---- CI builds for an environment that is not auto_deploy -----------------------------------


def test_a_ci_build_for_production_waits_for_approval_without_lock_or_resources(world: FakeWorld) -> None:
    result = build(world, "b1-prod", environment="production")
    assert result.outcome is Outcome.AWAITING_APPROVAL
    deployment = world.store.deployments[result.deployment_id]
    assert deployment.status is S.AWAITING_APPROVAL and deployment.requested_by is None
    assert f"releasectl approve {result.deployment_id}" in deployment.history[-1].detail
    state = world.store.environments["hello@production"]
    assert state.active_deployment_id is None and state.queue == ()
    assert state.awaiting_deployment_id == result.deployment_id
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == [] and world.compute.calls == []
    (announced,) = notifications(world)
    assert announced.status == "awaiting_approval" and "releasectl approve" in announced.detail
    # A redelivery records nothing twice.
    assert build(world, "b1-prod", environment="production").outcome is Outcome.DUPLICATE


def test_an_approval_takes_it_through_the_queue_to_live(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    taken = approve(world, waiting, reason="looks good")
    assert taken.status is S.PROVISIONING
    deployment = world.store.deployments[waiting]
    assert [(a.by, a.decision, a.reason) for a in deployment.approvals] == [
        (APPROVER, "approve", "looks good")
    ]
    assert world.store.history_of(waiting) == ["awaiting_approval", "queued", "provisioning"]
    assert world.store.environments["hello@production"].awaiting_deployment_id is None
    finish(world, waiting)
    assert world.store.deployments[waiting].status is S.LIVE
    assert [s for d, s in statuses(world) if d == waiting] == ["awaiting_approval", "approved", "live"]


def test_an_approved_deployment_queues_behind_the_running_one(world: FakeWorld) -> None:
    running = build(world, "b1-prod", environment="production").deployment_id
    approve(world, running)
    waiting = build(world, "b2-prod", COMMIT_B, environment="production").deployment_id
    assert approve(world, waiting).status is S.QUEUED
    assert world.store.environments["hello@production"].queue == (waiting,)
    finish(world, running)
    assert world.store.deployments[waiting].status is S.PROVISIONING


def test_a_rejection_cancels_it_and_records_who(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    assert reject(world, waiting, SECOND_APPROVER, "freeze").status is S.CANCELLED
    deployment = world.store.deployments[waiting]
    assert deployment.history[-1].detail == f"rejected by {SECOND_APPROVER}: freeze"
    assert [(a.by, a.decision) for a in deployment.approvals] == [(SECOND_APPROVER, "reject")]
    assert world.store.environments["hello@production"].awaiting_deployment_id is None
    assert statuses(world)[-1] == (waiting, "cancelled")
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == []


def test_a_second_decision_is_409_and_changes_nothing(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    approve(world, waiting)
    history = world.store.history_of(waiting)
    with pytest.raises(NotAwaitingApproval) as caught:
        reject(world, waiting, SECOND_APPROVER)
    assert caught.value.http_status == 409 and world.store.history_of(waiting) == history
    assert len(world.store.deployments[waiting].approvals) == 1


class CrashBeforePublishing(Exception):
    """The function's process dying right after its Firestore commit."""


@contextmanager
def dying_before_publishing(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the block as a function whose process dies at its first publish, after its commit."""
    publish = world.publisher.publish

    def crash(topic: str, data: bytes, attributes: Any) -> str:
        raise CrashBeforePublishing(topic)

    monkeypatch.setattr(world.publisher, "publish", crash)
    with pytest.raises(CrashBeforePublishing):
        yield
    monkeypatch.setattr(world.publisher, "publish", publish)


def test_a_retried_approval_announces_what_a_crash_after_the_commit_left_unsaid(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    with dying_before_publishing(world, monkeypatch):
        approve(world, waiting, reason="looks good")
    assert world.store.deployments[waiting].status is S.PROVISIONING, "the decision was committed"
    assert (waiting, "approved") not in statuses(world)

    with pytest.raises(AlreadyDecided) as retried:
        approve(world, waiting, reason="looks good")

    assert retried.value.http_status == 409, "CONTRACT §4c: no longer awaiting approval"
    assert world.store.deployments[waiting].status is S.PROVISIONING
    (announced,) = [n for n in notifications(world) if n.deployment_id == waiting and n.status == "approved"]
    assert announced.detail == f"approved by {APPROVER}: looks good"
    assert step(world, topology.START_ROLLING_REPLACE).deployment_id == waiting, "its first step resumed"
    assert len(world.store.deployments[waiting].approvals) == 1, "recorded once"
    history = world.store.history_of(waiting)
    with pytest.raises(AlreadyDecided):
        approve(world, waiting)
    assert world.store.history_of(waiting) == history, "a repeat changes nothing"


def test_a_retried_rejection_announces_the_cancellation_again(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    reject(world, waiting)
    world.publisher.take(topology.NOTIFY)

    with pytest.raises(AlreadyDecided):
        reject(world, waiting)
    assert world.store.deployments[waiting].status is S.CANCELLED
    assert statuses(world) == [(waiting, "cancelled")], "announced again, once"
    with pytest.raises(NotAwaitingApproval):
        approve(world, waiting)  # the same approver deciding otherwise is refused


def test_a_retried_approval_announces_the_queued_deployment_it_superseded(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = build(world, "b1-prod", environment="production").deployment_id
    approve(world, running)
    queued = build(world, "b2-prod", COMMIT_B, environment="production").deployment_id
    assert approve(world, queued).status is S.QUEUED
    newer = build(world, "b3-prod", COMMIT_C, environment="production").deployment_id
    with dying_before_publishing(world, monkeypatch):
        approve(world, newer)
    assert world.store.deployments[queued].status is S.CANCELLED, "the approval was committed"
    assert (queued, "cancelled") not in statuses(world)

    with pytest.raises(AlreadyDecided):
        approve(world, newer)

    assert statuses(world).count((queued, "cancelled")) == 1, "announced by the retry"
    assert world.store.deployments[newer].superseded == (queued,)


def test_a_duplicate_build_announces_the_deployment_it_superseded_when_the_first_try_died(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    with dying_before_publishing(world, monkeypatch):
        build(world, "b2-prod", COMMIT_B, environment="production")
    assert world.store.deployments[waiting].status is S.CANCELLED, "the admission was committed"
    assert (waiting, "cancelled") not in statuses(world)

    assert build(world, "b2-prod", COMMIT_B, environment="production").outcome is Outcome.DUPLICATE

    assert statuses(world).count((waiting, "cancelled")) == 1, "announced by the redelivery"
    newer = world.store.deployments[deployment_of(world, "b2-prod")]
    assert newer.superseded == (waiting,) and newer.status is S.AWAITING_APPROVAL


def deployment_of(world: FakeWorld, build_id: str) -> str:
    (found,) = [d for d, deployment in world.store.deployments.items() if deployment.build_id == build_id]
    return found


def test_only_an_approver_may_decide_and_unknown_deployments_are_404(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    with pytest.raises(NotAnApprover) as caught:
        approve(world, waiting, "mallory@example.com")
    assert caught.value.http_status == 403
    # A `*@domain` approver entry needs the token's `hd` claim: a consumer account will not do.
    consumer = Caller(email=SECOND_APPROVER, subject="2", issuer="test")
    with pytest.raises(NotAnApprover):
        decide(
            world.services,
            deployment_id=waiting,
            decision=Decision.APPROVE,
            caller=SECOND_APPROVER,
            caller_matches=lambda patterns: caller_allowed(consumer, patterns),
        )
    with pytest.raises(UnknownDeployment) as unknown:
        approve(world, "hello-production-000000000000")
    assert unknown.value.http_status == 404
    assert world.store.deployments[waiting].status is S.AWAITING_APPROVAL


def test_only_the_rollback_callers_may_roll_back(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()
    # `*@example.com` needs the token's `hd` claim: a consumer account with that e-mail will not do.
    consumer = Caller(email="dev@example.com", subject="3", issuer="test")
    for caller, check in (
        ("stranger@elsewhere.example", verified_caller_check("stranger@elsewhere.example")),
        ("dev@example.com", lambda patterns: caller_allowed(consumer, patterns)),
    ):
        with pytest.raises(NotAllowedToRollBack) as refused:
            request_rollback(
                world.services, app="hello", environment="staging", caller=caller, caller_matches=check
            )
        assert refused.value.http_status == 403
    assert world.publisher.messages == [] and world.store.release_requests == {}


def test_a_newer_deployment_cancels_the_one_still_waiting(world: FakeWorld) -> None:
    older = build(world, "b1-prod", environment="production").deployment_id
    newer = build(world, "b2-prod", COMMIT_B, environment="production").deployment_id
    assert world.store.deployments[older].status is S.CANCELLED
    assert world.store.deployments[older].history[-1].detail.startswith(f"superseded by {newer}")
    assert world.store.environments["hello@production"].awaiting_deployment_id == newer
    assert (older, "cancelled") in statuses(world)
    with pytest.raises(NotAwaitingApproval):
        approve(world, older)


def test_the_watchdog_cancels_and_announces_one_unanswered_past_the_timeout(world: FakeWorld) -> None:
    waiting = build(world, "b1-prod", environment="production").deployment_id
    world.clock.advance(3599)
    assert run_watchdog(world.services).expired == []
    world.clock.advance(1)
    assert run_watchdog(world.services).expired == [waiting]
    deployment = world.store.deployments[waiting]
    assert deployment.status is S.CANCELLED and "no approval within 3600 s" in deployment.history[-1].detail
    assert statuses(world)[-1] == (waiting, "cancelled")
    assert world.store.environments["hello@production"].awaiting_deployment_id is None
    assert run_watchdog(world.services).expired == []


def test_staging_is_auto_deploy_and_never_waits(world: FakeWorld) -> None:
    assert build(world, "b1").outcome is Outcome.STARTED


# ---- promotion --------------------------------------------------------------------------------


def test_promotion_deploys_the_same_release_and_waits_for_someone_else(world: FakeWorld) -> None:
    staged = deploy_to_live(world, "b1", messages=["feat: hello"], build_url="https://ci/1")
    world.publisher.messages.clear()
    accepted = promote(world, SECOND_APPROVER)
    assert (accepted.version, accepted.status) == ("1.0.0", S.AWAITING_APPROVAL)
    result = admit_published(world)
    assert result.deployment_id == accepted.deployment_id and result.version == "1.0.0"
    promoted = world.store.deployments[accepted.deployment_id]
    source = world.store.deployments[staged]
    assert (promoted.commit, promoted.artifact, promoted.version) == (source.commit, source.artifact, "1.0.0")
    assert promoted.promoted_from == "staging" and promoted.requested_by == SECOND_APPROVER
    assert promoted.reason == "ship it" and promoted.status is S.AWAITING_APPROVAL
    assert len(world.store.releases) == 1, "no rebuild, no new version"
    with pytest.raises(NotAnApprover, match="cannot approve it too"):
        approve(world, promoted.deployment_id, SECOND_APPROVER.upper())
    assert approve(world, promoted.deployment_id, APPROVER).status is S.PROVISIONING


def test_promotion_of_a_version_never_live_in_the_source_is_404(world: FakeWorld) -> None:
    with pytest.raises(UnknownPromotion) as nothing_live:
        promote(world)
    assert nothing_live.value.http_status == 404
    deploy_to_live(world, "b1")
    build(world, "b2", COMMIT_B, messages=["feat: x"])  # released as 1.1.0, not live in staging
    with pytest.raises(UnknownPromotion, match="never live in staging"):
        promote(world, version="1.1.0")
    assert world.publisher.on(topology.BUILD_SUCCEEDED) == []


def test_a_version_that_was_live_once_can_still_be_promoted(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    assert promote(world, version="1.0.0").version == "1.0.0"


def test_promotion_is_409_when_the_version_is_live_or_on_its_way(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    world.publisher.messages.clear()
    promote(world)
    admit_published(world)
    with pytest.raises(AlreadyThere) as on_its_way:
        promote(world)
    assert on_its_way.value.http_status == 409


def test_promotion_of_a_release_recorded_before_digests_is_refused_up_front(world: FakeWorld) -> None:
    recorded_before_digests(world, deploy_to_live(world, "b1"))
    world.publisher.messages.clear()
    with pytest.raises(SourceWithoutDigest) as refused:
        promote(world)
    assert refused.value.http_status == 409
    assert "1.0.0 was recorded before artifact digests" in str(refused.value)
    assert COMMIT_A[:7] in str(refused.value), "the reason names the commit to rebuild"
    assert world.publisher.messages == [], "a refused promotion published a build"
    assert world.store.release_requests == {}, "a refused promotion recorded a request"

    # Once a build of that commit brings its digest (pinned on the release), the promotion goes.
    world.store.releases["hello@1.0.0"] = replace(
        world.store.releases["hello@1.0.0"], artifact_sha256=digest_of(COMMIT_A)
    )
    assert promote(world).version == "1.0.0"
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    assert json.loads(published.data)["artifact_sha256"] == digest_of(COMMIT_A)


def test_only_promoters_of_the_target_may_promote(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    with pytest.raises(NotPromoter) as caught:
        promote(world, "dev@example.com")
    assert caught.value.http_status == 403


def test_promotion_into_an_auto_deploy_environment_queues(world: FakeWorld) -> None:
    world.services = replace(world.services, config=parse_pipeline_config(_config_with_qa()))
    deploy_to_live(world, "b1")
    accepted = request_promotion(
        world.services,
        app="hello",
        from_environment="staging",
        to_environment="qa",
        caller="dev@example.com",
        caller_matches=verified_caller_check("dev@example.com"),
    )
    assert accepted.status is S.QUEUED
    world.publisher.messages = [m for m in world.publisher.messages if m.topic == topology.BUILD_SUCCEEDED]
    assert admit_published(world).outcome is Outcome.STARTED


def _config_with_qa() -> dict[str, Any]:
    config = json.loads(json.dumps(TEST_CONFIG))
    config["apps"]["hello"]["environments"]["qa"] = {
        "auto_deploy": True,
        "promoters": ["dev@example.com"],
        "base_instance_template": "hello-qa-base",
        "health_check": "hello-qa-hc",
        "backend_service": "hello-qa-backend",
    }
    return config


# ---- provenance -------------------------------------------------------------------------------


def test_a_message_naming_an_unknown_release_request_is_rejected_and_announced(world: FakeWorld) -> None:
    result = build(world, "forged", environment="production", release_request="f" * 32)
    assert result.outcome is Outcome.REJECTED and "does not exist" in (result.reason or "")
    assert world.store.deployments == {}
    assert [n.status for n in notifications(world)] == ["rejected"]
    assert "event-forged" in world.store.rejected


def test_a_message_claiming_provenance_fields_is_rejected_and_makes_no_deployment(world: FakeWorld) -> None:
    result = build(
        world,
        "forged",
        environment="production",
        rollback_of="hello-production-a0ab70131e5c",
        requested_by="oncall-lead@example.com",
    )
    assert result.outcome is Outcome.REJECTED and "only the pipeline's own HTTP functions" in (
        result.reason or ""
    )
    assert world.store.deployments == {} and [n.status for n in notifications(world)] == ["rejected"]


def test_a_real_request_cannot_be_replayed_for_another_build_or_environment(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()
    rollback_by(
        world,
        app="hello",
        environment="staging",
        caller=APPROVER,
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    body = json.loads(published.data)
    for changes in ({"environment": "production"}, {"build_id": "ci-99"}, {"commit": COMMIT_C}):
        forged = {**body, **changes}
        attributes = {"app": "hello", "environment": forged["environment"]}
        result = admit_build(world.services, json.dumps(forged).encode(), attributes, f"replay-{changes}")
        assert result.outcome is Outcome.REJECTED, changes
        assert "release request" in (result.reason or "")
    assert {d.environment for d in world.store.deployments.values()} == {"staging"}


def test_triggered_by_from_ci_is_kept_as_a_claim_and_never_as_the_requester(world: FakeWorld) -> None:
    result = build(world, "b1-prod", environment="production", triggered_by="lead@example.com")
    deployment = world.store.deployments[result.deployment_id]
    assert deployment.triggered_by == "lead@example.com" and deployment.requested_by is None
    # CI's claim is no identity: the claimed person may still approve (nobody verified is the requester).
    assert approve(world, deployment.deployment_id, APPROVER).status is S.PROVISIONING


# ---- rollback ---------------------------------------------------------------------------------


def test_a_rollback_in_production_never_waits_for_approval(world: FakeWorld) -> None:
    first = build(world, "b1-prod", environment="production").deployment_id
    approve(world, first)
    finish(world, first)
    second = build(world, "b2-prod", COMMIT_B, environment="production", messages=["feat: x"]).deployment_id
    approve(world, second)
    finish(world, second)
    world.publisher.messages.clear()
    accepted = rollback_by(
        world,
        app="hello",
        environment="production",
        caller=APPROVER,
        reason="errors",
    )
    result = admit_published(world)
    assert result.outcome is Outcome.STARTED
    rolled = world.store.deployments[accepted.deployment_id]
    assert (rolled.rollback_of, rolled.requested_by, rolled.reason) == (second, APPROVER, "errors")
    assert rolled.history[0].detail == f"rollback of {second} requested by {APPROVER}"


def test_a_rollback_that_replaces_nothing_never_waits_for_approval(world: FakeWorld) -> None:
    first = build(world, "b1-prod", environment="production").deployment_id
    approve(world, first)
    finish(world, first)
    # Nothing live any more (say production's release was taken down): a rollback to 1.0.0
    # replaces no deployment, and is a rollback all the same.
    key = "hello@production"
    world.store.environments[key] = replace(
        world.store.environments[key], live_deployment_id=None, live_version=None
    )
    world.publisher.messages.clear()
    accepted = rollback_by(
        world,
        app="hello",
        environment="production",
        caller=APPROVER,
        to_version="1.0.0",
    )
    assert accepted.rollback_of is None
    assert admit_published(world).outcome is Outcome.STARTED
    rolled = world.store.deployments[accepted.deployment_id]
    assert rolled.is_rollback and rolled.rollback_of is None and rolled.status is S.PROVISIONING


def test_a_rollback_that_replaces_nothing_is_not_judged_by_a_bake_window(world: FakeWorld) -> None:
    verified = world.services.config.environment("hello", "verified")
    assert verified is not None and verified.bake_seconds > 0
    new: dict[str, Any] = dict(
        deployment_id="d",
        app="hello",
        environment="verified",
        version="1.0.0",
        commit=COMMIT_A,
        build_id="b",
        artifact="file:///a.tar.gz",
        event={},
        at=world.clock.now(),
    )
    assert _bakes(verified, Deployment.queued(**new))
    assert not _bakes(verified, Deployment.queued(**new, is_rollback=True))


def test_a_build_message_cannot_make_itself_a_rollback(world: FakeWorld) -> None:
    build(world, "b1-prod", environment="production", is_rollback=True)
    (only,) = world.store.deployments.values()
    assert not only.is_rollback and only.status is S.AWAITING_APPROVAL


def test_a_rollback_target_must_have_been_live_in_that_environment(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    # 1.0.0 is released and was live in staging; production only ever ran 1.1.0.
    waiting = build(world, "b2-prod", COMMIT_B, environment="production").deployment_id
    approve(world, waiting)
    finish(world, waiting)
    with pytest.raises(UnknownTarget) as caught:
        rollback_by(
            world,
            app="hello",
            environment="production",
            caller=APPROVER,
            to_version="1.0.0",
        )
    assert caught.value.http_status == 404


def test_an_approval_during_a_freeze_queues_until_the_freeze_ends(world: FakeWorld) -> None:
    config = json.loads(json.dumps(TEST_CONFIG))
    config["apps"]["hello"]["environments"]["production"]["freezes"] = [
        {"start": "2025-12-31T00:00:00Z", "end": "2026-01-01T13:00:00Z", "reason": "new year"}
    ]
    world.services = replace(world.services, config=parse_pipeline_config(config))
    waiting = build(world, "b1-prod", environment="production").deployment_id
    assert approve(world, waiting).status is S.QUEUED, "approved, but the freeze holds it"
    deployment = world.store.deployments[waiting]
    assert world.store.history_of(waiting) == ["awaiting_approval", "queued", "queued"]
    assert "2026-01-01" in deployment.history[-1].detail
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == []
    world.clock.advance(3600)  # the freeze is over: the watchdog starts it
    run_watchdog(world.services)
    assert world.store.deployments[waiting].status is S.PROVISIONING
