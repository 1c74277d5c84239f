"""Artifact integrity and origin at admission: the digest is required and kept per release, and an
artifact must come from one of its app's configured prefixes (CONTRACT §3, issue 7 pt 4)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import topology
from shared.domain.identifiers import deployment_id_for
from shared.domain.notify_message import NotifyRequest
from shared.usecases.admit_build import AdmitResult, Outcome, admit_build
from tests.unit.fakes import FakeWorld, fake_world, pipeline_config

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
DIGEST_A = "1" * 64
DIGEST_B = "2" * 64


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def body(build_id: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app": "hello",
        "environment": "staging",
        "commit": COMMIT_A,
        "build_id": build_id,
        "artifact": "gs://hello-artifacts/hello/hello-a.tar.gz",
        "artifact_sha256": DIGEST_A,
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def admit(world: FakeWorld, payload: dict[str, Any], event_id: str = "evt-1") -> AdmitResult:
    attributes = {"app": payload["app"], "environment": payload["environment"]}
    return admit_build(world.services, json.dumps(payload).encode(), attributes, event_id)


def rejection_notices(world: FakeWorld) -> list[NotifyRequest]:
    return [
        notice
        for notice in (NotifyRequest.from_json(m.data) for m in world.publisher.on(topology.NOTIFY))
        if notice.kind == "rejected"
    ]


def assert_rejected_and_announced(world: FakeWorld, result: AdmitResult, reason_part: str) -> None:
    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None and reason_part in result.reason
    assert world.store.rejected["evt-1"].reason == result.reason
    (notice,) = rejection_notices(world)
    assert reason_part in notice.detail
    assert world.store.deployments == {} and world.store.releases == {}
    assert world.publisher.on(topology.START_ROLLING_REPLACE) == []


def test_the_digest_and_commit_time_are_recorded_on_the_deployment_and_the_release(world: FakeWorld) -> None:
    result = admit(world, body("b1", committed_at="2026-01-05T10:00:09+01:00"))

    deployment = world.store.deployments[deployment_id_for("hello", "staging", "b1")]
    assert result.outcome is Outcome.STARTED
    assert deployment.artifact_sha256 == DIGEST_A
    assert deployment.committed_at == datetime(2026, 1, 5, 9, 0, 9, tzinfo=UTC)
    assert world.store.releases["hello@1.0.0"].artifact_sha256 == DIGEST_A


def test_a_message_without_a_digest_is_rejected_and_announced_and_makes_no_deployment(
    world: FakeWorld,
) -> None:
    result = admit(world, body("b1", artifact_sha256=None))
    assert_rejected_and_announced(world, result, "artifact_sha256: required")


@pytest.mark.parametrize(
    "artifact",
    [
        "gs://someone-elses-bucket/hello/hello-a.tar.gz",
        "gs://hello-artifacts/other-app/hello-a.tar.gz",
        "gs://hello-artifacts/hello-evil/hello-a.tar.gz",
        "gs://hello-artifacts/hello/../other-app/hello-a.tar.gz",
        "gs://hello-artifacts/hello/%2e%2e/other-app/hello-a.tar.gz",
    ],
)
def test_an_artifact_from_a_foreign_origin_is_rejected_and_announced_and_makes_no_deployment(
    world: FakeWorld, artifact: str
) -> None:
    result = admit(world, body("b1", artifact=artifact))
    assert_rejected_and_announced(world, result, "artifact:")


def test_a_redeployed_release_keeps_its_digest_in_every_environment(world: FakeWorld) -> None:
    admit(world, body("b1"))
    again = admit(world, body("b1-production", environment="production"), "evt-2")

    # Production is not auto_deploy in the test configuration: recorded, waiting for approval.
    assert again.outcome is Outcome.AWAITING_APPROVAL and again.version == "1.0.0"
    production = world.store.deployments[deployment_id_for("hello", "production", "b1-production")]
    assert production.artifact_sha256 == DIGEST_A


def test_a_build_of_a_released_commit_with_another_digest_is_rejected_saying_so(world: FakeWorld) -> None:
    admit(world, body("b1"), "evt-0")
    world.publisher.messages.clear()

    result = admit(world, body("b2", environment="production", artifact_sha256=DIGEST_B))

    assert result.outcome is Outcome.REJECTED
    assert result.reason is not None
    assert "different artifact" in result.reason and DIGEST_A in result.reason and DIGEST_B in result.reason
    assert world.store.rejected["evt-1"].reason == result.reason
    (notice,) = rejection_notices(world)
    assert "different artifact" in notice.detail
    assert set(world.store.deployments) == {deployment_id_for("hello", "staging", "b1")}
    assert world.store.releases["hello@1.0.0"].artifact_sha256 == DIGEST_A


def test_another_commit_may_bring_its_own_digest(world: FakeWorld) -> None:
    admit(world, body("b1"), "evt-0")
    result = admit(world, body("b2", commit=COMMIT_B, artifact_sha256=DIGEST_B))
    assert result.outcome is Outcome.QUEUED
    assert world.store.deployments[deployment_id_for("hello", "staging", "b2")].artifact_sha256 == DIGEST_B


def test_an_app_that_lists_no_artifact_prefixes_accepts_no_build() -> None:
    config = pipeline_config()
    world = fake_world()
    without_prefixes = replace(config, apps={"hello": replace(config.apps["hello"], artifact_prefixes=())})
    world.services = replace(world.services, config=without_prefixes)
    result = admit(world, body("b1"))
    assert_rejected_and_announced(world, result, "no artifact_prefixes")


def test_a_release_recorded_before_digests_is_pinned_by_the_first_build_that_brings_one(
    world: FakeWorld,
) -> None:
    admit(world, body("b1"), "evt-0")
    legacy = world.store.releases["hello@1.0.0"]
    world.store.releases["hello@1.0.0"] = replace(legacy, artifact_sha256="")

    pinned = admit(world, body("b2", environment="production", artifact_sha256=DIGEST_B), "evt-2")
    refused = admit(world, body("b3", environment="production", artifact_sha256=DIGEST_A), "evt-3")

    # Production is not auto_deploy in the test configuration: recorded, waiting for approval.
    assert pinned.outcome is Outcome.AWAITING_APPROVAL and pinned.version == "1.0.0"
    assert world.store.releases["hello@1.0.0"].artifact_sha256 == DIGEST_B
    assert refused.outcome is Outcome.REJECTED and refused.reason is not None
    assert "different artifact" in refused.reason
