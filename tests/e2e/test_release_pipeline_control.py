"""Release control end to end on the local stack: production (not `auto_deploy`) only moves with a
second person's approval; promotion carries a staging release as it is; provenance is proved.

Runs after test_release_pipeline.py on the same stack, and on its own: each test publishes what
it needs. Bounded polls everywhere; the one test about time drives a clock, not the wall.
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from devstack.token_issuer import local_identity
from shared.adapters.clock import SystemClock
from shared.adapters.compute_engine import ComputeEngine
from shared.adapters.firestore_store import FirestoreStore
from shared.adapters.pubsub_publisher import PubSubPublisher
from shared.domain.identifiers import deployment_id_for
from shared.domain.naming import instance_group_name
from shared.usecases.services import Services
from shared.usecases.watchdog import run_watchdog
from tests.e2e.conftest import Pipeline, artifact_digest, new_commit, wait_for

pytestmark = pytest.mark.stack

APPROVER = "approver@hello.local"


def build_id(label: str) -> str:
    return f"ci-{label}-{uuid.uuid4().hex[:8]}"


def notified(pipeline: Pipeline, deployment_id: str, status: str) -> dict[str, Any]:
    found = wait_for(
        lambda: [
            n
            for n in pipeline.notifications()
            if n["deployment_id"] == deployment_id and n["status"] == status
        ],
        20,
        f"a {status} notification for {deployment_id}",
    )
    return found[0]


def decide(
    pipeline: Pipeline, deployment_id: str, decision: str, email: str, reason: str | None = None
) -> Any:
    body = {"deployment_id": deployment_id, "decision": decision}
    if reason:
        body["reason"] = reason
    return pipeline.call("approve", body, email)


def staging_release(pipeline: Pipeline, label: str) -> dict[str, Any]:
    deployment_id = pipeline.publish_build(
        "staging", new_commit(), build_id(label), messages=[f"fix: {label}"]
    )
    live = pipeline.wait_status(deployment_id, "live", "failed")
    assert live["status"] == "live"
    return {**live, "deployment_id": deployment_id}


def test_a_ci_build_for_production_waits_for_approval_and_a_newer_one_supersedes_it(
    pipeline: Pipeline,
) -> None:
    older = pipeline.publish_build("production", new_commit(), build_id("prod-a"), messages=["fix: a"])
    waiting = pipeline.wait_status(older, "awaiting_approval", timeout=30)
    assert waiting["requested_by"] is None and waiting["approvals"] == []
    announced = notified(pipeline, older, "awaiting_approval")
    assert f"releasectl approve {older}" in announced["text"]
    # No lock, no queue, no Compute resources while it waits.
    environment = pipeline.environment("production")
    assert environment.get("awaiting_deployment_id") == older
    assert older not in (environment.get("active_deployment_id"), *(environment.get("queue") or []))
    assert not pipeline.group_exists("production", instance_group_name(older))

    newer = pipeline.publish_build("production", new_commit(), build_id("prod-b"), messages=["fix: b"])
    pipeline.wait_status(newer, "awaiting_approval", timeout=30)
    cancelled = pipeline.wait_status(older, "cancelled", timeout=30)
    assert cancelled["history"][-1]["detail"].startswith(f"superseded by {newer}")
    notified(pipeline, older, "cancelled")
    refused = decide(pipeline, older, "approve", APPROVER)
    assert refused.status_code == 409, refused.text

    rejected = decide(pipeline, newer, "reject", APPROVER, "not this one")
    assert rejected.status_code == 202 and rejected.json() == {"deployment_id": newer, "status": "cancelled"}
    record = pipeline.wait_status(newer, "cancelled", timeout=10)
    assert [(a["by"], a["decision"], a["reason"]) for a in record["approvals"]] == [
        (APPROVER, "reject", "not this one")
    ]
    assert f"rejected by {APPROVER}" in notified(pipeline, newer, "cancelled")["text"]
    assert not pipeline.group_exists("production", instance_group_name(newer))


def test_a_ci_build_approved_by_an_approver_goes_live(pipeline: Pipeline) -> None:
    commit = new_commit()
    deployment_id = pipeline.publish_build("production", commit, build_id("prod-c"), messages=["fix: c"])
    pipeline.wait_status(deployment_id, "awaiting_approval", timeout=30)
    assert not pipeline.group_exists("production", instance_group_name(deployment_id))
    stranger = decide(pipeline, deployment_id, "approve", "stranger@elsewhere.example")
    assert stranger.status_code == 403
    accepted = decide(pipeline, deployment_id, "approve", local_identity(), "ok")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] in ("queued", "provisioning")
    live = pipeline.wait_status(deployment_id, "live", "failed")
    assert live["status"] == "live"
    statuses = [h["status"] for h in live["history"]]
    assert statuses[:3] == ["awaiting_approval", "queued", "provisioning"] and statuses[-1] == "live"
    assert [a["by"] for a in live["approvals"]] == [local_identity()]
    wait_for(lambda: pipeline.serving("production") == live["version"], 10, "production to serve it")
    notified(pipeline, deployment_id, "approved")


def test_promotion_waits_for_someone_else_and_goes_live_on_the_same_artifact_and_version(
    pipeline: Pipeline,
) -> None:
    staged = staging_release(pipeline, "promote-me")
    releases_before = len(list(pipeline.db.collection("releases").stream()))
    answer = pipeline.call(
        "promote",
        {"app": "hello", "from_environment": "staging", "to_environment": "production", "reason": "e2e"},
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["version"] == staged["version"] and accepted["status"] == "awaiting_approval"
    promoted = accepted["deployment_id"]
    waiting = pipeline.wait_status(promoted, "awaiting_approval", timeout=30)
    assert waiting["requested_by"] == local_identity() and waiting["promoted_from"] == "staging"
    assert not pipeline.group_exists("production", instance_group_name(promoted))

    again = pipeline.call(
        "promote", {"app": "hello", "from_environment": "staging", "to_environment": "production"}
    )
    assert again.status_code == 409, "the version is already on its way"
    own = decide(pipeline, promoted, "approve", local_identity())
    assert own.status_code == 403 and "cannot approve it too" in own.json()["error"]
    assert decide(pipeline, promoted, "approve", APPROVER, "second pair of eyes").status_code == 202

    live = pipeline.wait_status(promoted, "live", "failed")
    assert live["status"] == "live"
    assert (live["version"], live["commit"], live["artifact"]) == (
        staged["version"],
        staged["commit"],
        staged["artifact"],
    )
    if "artifact_sha256" in staged:
        assert live["artifact_sha256"] == staged["artifact_sha256"]
    assert [(a["by"], a["decision"]) for a in live["approvals"]] == [(APPROVER, "approve")]
    assert live["requested_by"] == local_identity()
    assert len(list(pipeline.db.collection("releases").stream())) == releases_before, "no rebuild, no bump"
    wait_for(lambda: pipeline.serving("production") == staged["version"], 10, "production to serve it")
    request = pipeline.document("release_requests", json.loads(live["event"])["release_request"])
    assert request is not None and request["requested_by"] == local_identity()

    live_again = pipeline.call(
        "promote", {"app": "hello", "from_environment": "staging", "to_environment": "production"}
    )
    assert live_again.status_code == 409, "already live"


def test_promotion_and_rollback_refuse_versions_never_live_where_they_must_have_been(
    pipeline: Pipeline,
) -> None:
    # A version built for staging that fails there was released but never live in staging.
    broken = pipeline.publish_build(
        "staging", new_commit(), build_id("never-live"), artifact="file:///nowhere/hello-missing.tar.gz"
    )
    failed = pipeline.wait_status(broken, "failed", "live", timeout=60)
    assert failed["status"] == "failed"
    body = {"app": "hello", "from_environment": "staging", "to_environment": "production"}
    refused = pipeline.call("promote", {**body, "version": failed["version"]})
    assert refused.status_code == 404 and "never live in staging" in refused.json()["error"]
    assert pipeline.call("promote", body, email="stranger@elsewhere.example").status_code == 403
    assert pipeline.call("promote", {**body, "to_environment": "qa"}).status_code == 404
    assert pipeline.call("promote", b"[" * 50_000 + b"]" * 50_000).status_code == 400
    rollback = pipeline.rollback(
        {"app": "hello", "environment": "production", "to_version": failed["version"]}, pipeline.token()
    )
    assert rollback.status_code == 404, rollback.text


FORGED: dict[str, dict[str, Any]] = {
    "rollback_of": {"rollback_of": "hello-production-a0ab70131e5c", "reason": "on-call said so"},
    "requested_by": {"requested_by": "oncall-lead@hello.local"},
    "promoted_from": {"promoted_from": "staging"},
    "approvals": {"approvals": [{"by": APPROVER, "decision": "approve"}]},
    "release_request": {"release_request": uuid.uuid4().hex},
}


def test_forged_provenance_is_rejected_announced_and_deploys_nothing(pipeline: Pipeline) -> None:
    message_ids = {}
    build_ids = {}
    for kind, fields in FORGED.items():
        build_ids[kind] = build_id(f"forged-{kind.replace('_', '-')}")
        body = {
            "app": "hello",
            "environment": "production",
            "commit": new_commit(),
            "build_id": build_ids[kind],
            "artifact": pipeline.artifacts["hello"],
            "artifact_sha256": artifact_digest(pipeline.artifacts["hello"]),
            **fields,
        }
        message_ids[kind] = pipeline.publish_raw(
            json.dumps(body).encode(), {"app": "hello", "environment": "production"}
        )
    for kind, message_id in message_ids.items():
        record = wait_for(
            functools.partial(pipeline.document, "rejected_events", message_id), 20, f"{kind} rejected"
        )
        assert kind.replace("_", " ") in record["reason"].replace("_", " "), record["reason"]

        def rejection_announced(message_id: str = message_id) -> bool:
            return any(n["dedupe_key"] == f"rejected:{message_id}" for n in pipeline.notifications())

        wait_for(rejection_announced, 20, f"the {kind} rejection to be announced")
        assert pipeline.deployment(deployment_id_for("hello", "production", build_ids[kind])) is None


def in_flight(pipeline: Pipeline) -> list[str]:
    statuses = ["queued", "provisioning", "cooling_down", "switching"]
    query = pipeline.db.collection("deployments").where(filter=FieldFilter("status", "in", statuses))
    return [snapshot.id for snapshot in query.stream()]


@dataclass
class ShiftedClock:
    """The system clock moved forward: the watchdog sees the future without anyone waiting for it."""

    offset: timedelta

    def now(self) -> datetime:
        return SystemClock().now() + self.offset


def test_an_unanswered_deployment_expires_and_is_announced(pipeline: Pipeline) -> None:
    env = pipeline.config.apps["hello"].environments["production"]
    deployment_id = pipeline.publish_build(
        "production", new_commit(), build_id("expire"), messages=["fix: e"]
    )
    pipeline.wait_status(deployment_id, "awaiting_approval", timeout=30)
    wait_for(
        lambda: not in_flight(pipeline),
        120,
        "nothing else in flight (a shifted clock puts it past its deadline)",
    )
    services = Services(
        config=pipeline.config,
        store=FirestoreStore(pipeline.db),
        compute=ComputeEngine(
            pipeline.project, endpoint=f"http://{pipeline.stack.env['COMPUTE_EMULATOR_HOST']}"
        ),
        publisher=PubSubPublisher(pipeline.project),
        clock=ShiftedClock(timedelta(seconds=env.approval_timeout_seconds - 30)),
    )
    assert deployment_id not in run_watchdog(services).expired, "expired before its timeout"
    services = Services(
        config=services.config,
        store=services.store,
        compute=services.compute,
        publisher=services.publisher,
        clock=ShiftedClock(timedelta(seconds=env.approval_timeout_seconds + 1)),
    )
    assert deployment_id in run_watchdog(services).expired
    cancelled = pipeline.wait_status(deployment_id, "cancelled", timeout=10)
    assert "no approval within" in cancelled["history"][-1]["detail"]
    assert "no approval within" in notified(pipeline, deployment_id, "cancelled")["text"]
    assert decide(pipeline, deployment_id, "approve", APPROVER).status_code == 409
