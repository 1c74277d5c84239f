"""The release pipeline end to end on the local stack, told in order on app `hello`.

The tests share one stack and run in file order: each leaves `staging` with a live release,
which is what the next one starts from. Bounded polls everywhere; no test sleeps a fixed time.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import semver
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1.base_query import FieldFilter

from devstack.token_issuer import local_identity
from shared.domain.naming import instance_group_name
from tests.e2e.conftest import Load, Pipeline, new_commit, wait_for

CONTRACT_DEPLOYMENT_FIELDS = {
    "app", "environment", "version", "commit", "build_id", "artifact", "status", "created_at",
    "updated_at", "finished_at", "rollback_of", "triggered_by", "history",
}  # fmt: skip
HAPPY_PATH = ["queued", "provisioning", "cooling_down", "switching", "live"]

pytestmark = pytest.mark.stack


def test_first_build_goes_live_then_a_feature_replaces_it_with_zero_failed_requests(
    pipeline: Pipeline,
) -> None:
    first = pipeline.publish_build(
        "staging", new_commit(), "ci-1", messages=["feat: hello world"], triggered_by="ci@hello.local"
    )
    live = pipeline.wait_status(first, "live", "failed")
    assert live["status"] == "live" and live["version"] == "1.0.0"
    wait_for(lambda: pipeline.serving("staging") == "1.0.0", 10, "staging to serve 1.0.0")

    with Load(pipeline.url("staging")) as load:
        second = pipeline.publish_build("staging", new_commit(), "ci-2", messages=["feat: greet by name"])
        cooling = pipeline.wait_status(second, "cooling_down", "switching", "live", "failed", timeout=60)
        assert cooling["status"] == "cooling_down", "the cool-down was skipped"
        during: set[str] = set()
        while (doc := pipeline.deployment(second)) and doc["status"] == "cooling_down":
            served = pipeline.serving("staging")
            # Counted only if still cooling down after the answer: the switch may start between
            # reading the status and the request.
            if (pipeline.deployment(second) or {}).get("status") == "cooling_down":
                during.add(served)
            time.sleep(0.1)
        assert during == {"1.0.0"}, f"served {during} during the cool-down"
        after = pipeline.wait_status(second, "live", "failed")
        assert after["status"] == "live" and after["version"] == "1.1.0"
        served_after = {pipeline.serving("staging") for _ in range(20)}
        assert served_after == {"1.1.0"}, f"served {served_after} after the switch"
    assert load.result.failures == [], f"{len(load.result.failures)} of {load.result.total} requests failed"
    assert load.result.ok > 50 and set(load.result.bodies) == {"1.0.0", "1.1.0"}

    retired = pipeline.deployment(first)
    assert retired is not None and retired["status"] == "retired"
    environment = pipeline.environment("staging")
    assert environment["live_deployment_id"] == second and environment["live_version"] == "1.1.0"

    # CONTRACT §6: field names, Firestore timestamps, ordered history.
    assert set(after) >= CONTRACT_DEPLOYMENT_FIELDS
    assert [h["status"] for h in after["history"]] == HAPPY_PATH
    assert [h["status"] for h in retired["history"]] == [*HAPPY_PATH, "retired"]
    stamps = [h["at"] for h in after["history"]]
    assert stamps == sorted(stamps) and all(isinstance(s, DatetimeWithNanoseconds) for s in stamps)
    for key in ("created_at", "updated_at", "finished_at"):
        assert isinstance(after[key], DatetimeWithNanoseconds), key
    assert retired["triggered_by"] == "ci@hello.local" and retired["rollback_of"] is None
    release = pipeline.document("releases", "hello@1.1.0")
    assert release is not None and release["commit"] == after["commit"]
    assert release["commit_messages"] == ["feat: greet by name"]
    assert isinstance(release["created_at"], DatetimeWithNanoseconds)
    wait_for(
        lambda: (
            {(first, "live"), (second, "live")}
            <= {(n["deployment_id"], n["status"]) for n in pipeline.notifications()}
        ),
        15,
        "a live notification for each release",
    )
    # Blue's group outlives the switch by its retention, not just its draining timeout: detached
    # (only the new version is served) but running, so a rollback can take it back. Its deletion
    # once the retention is over is checked by the rollback test below, which waits for it.
    retention = pipeline.config.apps["hello"].environments["staging"].retain_previous_seconds
    switched_at = next(h["at"] for h in after["history"] if h["status"] == "live")
    assert pipeline.group_exists("staging", instance_group_name(first)), "blue deleted before its retention"
    retired = pipeline.deployment(first) or {}
    assert retired.get("resources_deleted_at") is None
    assert (retired["cleanup_due_at"] - switched_at).total_seconds() >= retention


def test_the_same_build_three_times_is_one_deployment_and_promotion_keeps_the_version(
    pipeline: Pipeline,
) -> None:
    commit = new_commit()
    for _ in range(3):
        staging = pipeline.publish_build("staging", commit, "ci-3", messages=["fix: typo"])
    live = pipeline.wait_status(staging, "live", "failed")
    assert live["status"] == "live" and live["version"] == "1.1.1"
    same_build = list(
        pipeline.db.collection("deployments")
        .where(filter=FieldFilter("environment", "==", "staging"))
        .where(filter=FieldFilter("build_id", "==", "ci-3"))
        .stream()
    )
    assert [d.id for d in same_build] == [staging]
    assert [h["status"] for h in live["history"]] == HAPPY_PATH

    production = pipeline.publish_build("production", commit, "ci-3-production", messages=["fix: typo"])
    # Production is not auto_deploy: the build waits for an approver before it takes the lock.
    pipeline.wait_status(production, "awaiting_approval", timeout=30)
    approval = {"deployment_id": production, "decision": "approve"}
    assert pipeline.call("approve", approval, "approver@hello.local").status_code == 202
    promoted = pipeline.wait_status(production, "live", "failed")
    assert promoted["status"] == "live" and promoted["version"] == "1.1.1"
    releases = list(
        pipeline.db.collection("releases").where(filter=FieldFilter("commit", "==", commit)).stream()
    )
    assert [r.id for r in releases] == ["hello@1.1.1"]
    wait_for(lambda: pipeline.serving("production") == "1.1.1", 10, "production to serve 1.1.1")
    lines = wait_for(
        lambda: [
            n for n in pipeline.notifications() if n["deployment_id"] == staging and n["status"] == "live"
        ],
        15,
        "the live notification",
    )
    assert len(lines) == 1


def test_a_busy_environment_cancels_the_older_queued_build_and_deploys_the_newest_after(
    pipeline: Pipeline,
) -> None:
    running = pipeline.publish_build("staging", new_commit(), "ci-4", messages=["fix: a"])
    pipeline.wait_status(running, "provisioning", "cooling_down", timeout=30)
    older = pipeline.publish_build("staging", new_commit(), "ci-5", messages=["fix: b"])
    pipeline.wait_status(older, "queued", "cancelled", timeout=30)
    newest = pipeline.publish_build("staging", new_commit(), "ci-6", messages=["fix: c"])

    cancelled = pipeline.wait_status(older, "cancelled", timeout=30)
    assert [h["status"] for h in cancelled["history"]] == ["queued", "cancelled"]
    first = pipeline.wait_status(running, "live", "failed")
    last = pipeline.wait_status(newest, "live", "failed")
    assert first["status"] == "live" and last["status"] == "live"
    assert last["version"] == "1.1.4" and cancelled["version"] == "1.1.3"
    # No interleaving: the newest only took the environment once the running one was live.
    first_live_at = next(h["at"] for h in first["history"] if h["status"] == "live")
    last_started_at = next(h["at"] for h in last["history"] if h["status"] == "provisioning")
    assert last_started_at >= first_live_at
    assert [h["status"] for h in last["history"]] == HAPPY_PATH
    assert pipeline.wait_status(running, "retired")["status"] == "retired"
    assert not pipeline.group_exists("staging", instance_group_name(older))
    wait_for(
        lambda: any(
            n["deployment_id"] == older and n["status"] == "cancelled" for n in pipeline.notifications()
        ),
        15,
        "the cancelled notification",
    )
    assert pipeline.serving("staging") == "1.1.4"


def test_a_release_that_never_gets_healthy_fails_at_the_deadline_and_traffic_stays(
    pipeline: Pipeline,
) -> None:
    environment = pipeline.config.apps["hello"].environments["staging"]
    before = pipeline.environment("staging")
    with Load(pipeline.url("staging")) as load:
        broken = pipeline.publish_build(
            "staging", new_commit(), "ci-7", artifact="unhealthy", messages=["feat: broken"]
        )
        green = instance_group_name(broken)
        wait_for(lambda: pipeline.group_exists("staging", green), 30, "green to be created")
        failed = pipeline.wait_status(
            broken, "failed", "live", timeout=environment.provisioning_deadline_seconds + 30
        )
    assert failed["status"] == "failed", "a release that never got healthy went live"
    started = next(h["at"] for h in failed["history"] if h["status"] == "provisioning")
    assert (failed["finished_at"] - started).total_seconds() <= environment.provisioning_deadline_seconds + 15
    # The record says failed before green goes (a late step that switched to it keeps it), so
    # the deletion follows the status by a Compute call.
    wait_for(lambda: not pipeline.group_exists("staging", green), 15, "green to be deleted")
    assert load.result.failures == [], f"{len(load.result.failures)} of {load.result.total} requests failed"
    assert set(load.result.bodies) == {before["live_version"]}
    after = pipeline.environment("staging")
    assert (
        after["live_deployment_id"] == before["live_deployment_id"] and after["active_deployment_id"] is None
    )
    alert = wait_for(
        lambda: [
            n for n in pipeline.notifications() if n["deployment_id"] == broken and n["status"] == "failed"
        ],
        15,
        "the failure alert",
    )
    assert alert[0]["version"] == failed["version"] and alert[0]["text"]

    repaired = pipeline.publish_build("staging", new_commit(), "ci-8", messages=["fix: repair"])
    assert pipeline.wait_status(repaired, "live", "failed")["status"] == "live"
    wait_for(
        lambda: pipeline.serving("staging") == pipeline.environment("staging")["live_version"], 10, "the fix"
    )


def test_a_release_whose_instances_cannot_start_fails_at_once_without_waiting_for_the_deadline(
    pipeline: Pipeline,
) -> None:
    environment = pipeline.config.apps["hello"].environments["staging"]
    before = pipeline.environment("staging")
    missing = pipeline.publish_build(
        "staging", new_commit(), "ci-missing-artifact", artifact="file:///nowhere/hello-missing.tar.gz"
    )
    failed = pipeline.wait_status(
        missing, "failed", "live", timeout=environment.provisioning_deadline_seconds
    )
    assert failed["status"] == "failed"
    started = next(h["at"] for h in failed["history"] if h["status"] == "provisioning")
    assert (failed["finished_at"] - started).total_seconds() < environment.provisioning_deadline_seconds / 2
    assert "cannot start" in failed["history"][-1]["detail"]
    wait_for(
        lambda: not pipeline.group_exists("staging", instance_group_name(missing)), 15, "green to be deleted"
    )
    assert pipeline.environment("staging")["live_deployment_id"] == before["live_deployment_id"]
    assert pipeline.serving("staging") == before["live_version"]


BAD_MESSAGES: dict[str, tuple[bytes, dict[str, str]]] = {
    "non-JSON": (b"{not json", {"app": "hello", "environment": "staging"}),
    "non-object": (b'["hello", "staging"]', {"app": "hello", "environment": "staging"}),
    "oversized": (
        json.dumps({"app": "hello", "environment": "staging", "padding": "x" * 70_000}).encode(),
        {"app": "hello", "environment": "staging"},
    ),
}


def _body(**changes: Any) -> bytes:
    body = {
        "app": "hello",
        "environment": "staging",
        "commit": "0" * 40,
        "build_id": "bad-1",
        "artifact": "file:///nowhere/hello.tar.gz",
        "artifact_sha256": "0" * 64,
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


BAD_MESSAGES.update(
    {
        "missing commit": (_body(commit=None), {"app": "hello", "environment": "staging"}),
        "bad commit": (_body(commit="abc123"), {"app": "hello", "environment": "staging"}),
        "bad artifact": (
            _body(artifact="https://example.com/a.zip"),
            {"app": "hello", "environment": "staging"},
        ),
        "bad bump": (_body(bump="huge"), {"app": "hello", "environment": "staging"}),
        "missing digest": (_body(artifact_sha256=None), {"app": "hello", "environment": "staging"}),
        "foreign origin": (
            _body(artifact="gs://someone-elses-bucket/hello/hello.tar.gz"),
            {"app": "hello", "environment": "staging"},
        ),
        "attribute mismatch": (_body(), {"app": "hello", "environment": "production"}),
        "unknown app": (_body(app="ghost"), {"app": "ghost", "environment": "staging"}),
        "unknown environment": (_body(environment="qa"), {"app": "hello", "environment": "qa"}),
    }
)


def test_every_bad_message_is_recorded_and_announced_and_the_pipeline_carries_on(pipeline: Pipeline) -> None:
    before = pipeline.environment("staging")
    message_ids = {
        kind: pipeline.publish_raw(data, attributes) for kind, (data, attributes) in BAD_MESSAGES.items()
    }
    reasons: dict[str, str] = {}
    for kind, message_id in message_ids.items():

        def recorded(message_id: str = message_id) -> dict[str, Any] | None:
            return pipeline.document("rejected_events", message_id)

        record = wait_for(recorded, 20, f"the {kind} message to be rejected")
        assert isinstance(record["received_at"], DatetimeWithNanoseconds)
        reasons[kind] = record["reason"]
    assert "bytes" in reasons["oversized"] and "not JSON" in reasons["non-JSON"]
    assert "not an object" in reasons["non-object"] and "commit" in reasons["bad commit"]
    assert "does not match" in reasons["attribute mismatch"] and "ghost" in reasons["unknown app"]
    assert "artifact_sha256: required" in reasons["missing digest"]
    assert "artifact prefixes" in reasons["foreign origin"]

    expected = {f"rejected:{m}" for m in message_ids.values()}

    def announced() -> set[str] | None:
        keys = {n["dedupe_key"] for n in pipeline.notifications() if n["status"] == "rejected"} & expected
        return keys if keys == expected else None

    wait_for(announced, 20, "a notification per rejected message")
    after = pipeline.environment("staging")
    assert after["live_deployment_id"] == before["live_deployment_id"] and after["queue"] == []
    good = pipeline.publish_build("staging", new_commit(), "ci-9", messages=["fix: after the noise"])
    assert pipeline.wait_status(good, "live", "failed")["status"] == "live"


def _live_history(pipeline: Pipeline, environment: str) -> list[dict[str, Any]]:
    query = (
        pipeline.db.collection("deployments")
        .where(filter=FieldFilter("app", "==", "hello"))
        .where(filter=FieldFilter("environment", "==", environment))
        .order_by("went_live_at", direction="DESCENDING")
    )
    return [d.to_dict() or {} for d in query.stream()]


def test_rollback_puts_the_previous_release_back_and_then_any_chosen_version(pipeline: Pipeline) -> None:
    current = pipeline.environment("staging")
    previous = next(d for d in _live_history(pipeline, "staging") if d["version"] != current["live_version"])
    releases_before = len(list(pipeline.db.collection("releases").stream()))
    with Load(pipeline.url("staging")) as load:
        answer = pipeline.rollback(
            {"app": "hello", "environment": "staging", "reason": "errors after release"}, pipeline.token()
        )
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        assert set(accepted) == {"deployment_id", "version", "rollback_of"}
        assert accepted["version"] == previous["version"]
        assert accepted["rollback_of"] == current["live_deployment_id"]
        rolled = pipeline.wait_status(accepted["deployment_id"], "live", "failed")
        assert rolled["status"] == "live"
        wait_for(lambda: pipeline.serving("staging") == previous["version"], 10, "the previous version")
    assert load.result.failures == [], f"{len(load.result.failures)} of {load.result.total} requests failed"
    assert rolled["rollback_of"] == current["live_deployment_id"] and rolled["commit"] == previous["commit"]
    assert rolled["triggered_by"] == local_identity() and rolled["reason"] == "errors after release"
    assert rolled["requested_by"] == local_identity()
    assert len(list(pipeline.db.collection("releases").stream())) == releases_before, (
        "a rollback made a release"
    )

    # 1.0.0 was replaced in the first test: once its retention is over the watchdog deletes its
    # group, and a rollback to it is an ordinary deployment with a new group and the cool-down.
    def retained_1_0_0() -> list[str]:
        return [
            d["deployment_id"]
            for d in _live_history(pipeline, "staging")
            if d["version"] == "1.0.0" and not (d.get("resources_deleted_at") or d.get("adopted_by"))
        ]

    wait_for(lambda: not retained_1_0_0(), 120, "1.0.0's group to be deleted after its retention")
    first = next(d for d in _live_history(pipeline, "staging") if d["version"] == "1.0.0")
    assert not pipeline.group_exists("staging", instance_group_name(first["deployment_id"]))
    answer = pipeline.rollback(
        {"app": "hello", "environment": "staging", "to_version": "1.0.0"}, pipeline.token()
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["version"] == "1.0.0"
    rebuilt = pipeline.wait_status(answer.json()["deployment_id"], "live", "failed")
    assert rebuilt["status"] == "live"
    assert rebuilt["instance_group"] == instance_group_name(answer.json()["deployment_id"])
    at = {h["status"]: h["at"] for h in rebuilt["history"]}
    cool_down = pipeline.config.apps["hello"].environments["staging"].cool_down_seconds
    assert (at["switching"] - at["cooling_down"]).total_seconds() >= cool_down, "the cool-down was skipped"
    wait_for(lambda: pipeline.serving("staging") == "1.0.0", 10, "1.0.0 to serve again")

    # Bumps go on from the highest version ever released, not from the rolled-back one.
    highest = max(
        semver.Version.parse((r.to_dict() or {})["version"])
        for r in pipeline.db.collection("releases").stream()
    )
    forward = pipeline.publish_build("staging", new_commit(), "ci-10", messages=["feat: forward again"])
    moved = pipeline.wait_status(forward, "live", "failed")
    assert moved["status"] == "live" and moved["version"] == str(highest.bump_minor())


def test_a_rollback_within_retention_is_a_traffic_switch_to_the_retained_group(
    pipeline: Pipeline,
) -> None:
    retained = pipeline.environment("staging")
    forward = pipeline.publish_build("staging", new_commit(), "ci-11", messages=["feat: short-lived"])
    assert pipeline.wait_status(forward, "live", "failed")["status"] == "live"
    groups_before = set(pipeline.group_names("staging"))
    assert instance_group_name(retained["live_deployment_id"]) in groups_before, "blue was not retained"

    with Load(pipeline.url("staging")) as load:
        answer = pipeline.rollback({"app": "hello", "environment": "staging"}, pipeline.token())
        assert answer.status_code == 202, answer.text
        fast = answer.json()["deployment_id"]
        switched = pipeline.wait_status(fast, "live", "failed", timeout=30)
        assert switched["status"] == "live"
        wait_for(lambda: pipeline.serving("staging") == retained["live_version"], 10, "the retained version")
    assert load.result.failures == [], f"{len(load.result.failures)} of {load.result.total} requests failed"

    # It took the retained group over: no new group, no cool-down wait, the old record disowned it.
    assert switched["instance_group"] == instance_group_name(retained["live_deployment_id"])
    assert not pipeline.group_exists("staging", instance_group_name(fast))
    assert set(pipeline.group_names("staging")) <= groups_before
    history = {h["status"]: h for h in switched["history"]}
    assert "retained group" in history["cooling_down"]["detail"]
    cool_down = pipeline.config.apps["hello"].environments["staging"].cool_down_seconds
    waited = (history["switching"]["at"] - history["cooling_down"]["at"]).total_seconds()
    assert waited < cool_down, f"waited {waited:.1f} s before switching"
    previous = pipeline.deployment(retained["live_deployment_id"]) or {}
    assert previous.get("adopted_by") == fast and previous.get("cleanup_due_at") is None


def test_rollback_refuses_what_it_must_with_the_contract_statuses(pipeline: Pipeline) -> None:
    staging = {"app": "hello", "environment": "staging"}
    token = pipeline.token()
    assert pipeline.rollback(staging, None).status_code == 401
    assert pipeline.rollback(staging, "not-a-token").status_code == 401
    assert pipeline.rollback(staging, pipeline.token(audience="https://elsewhere.example")).status_code == 401
    assert pipeline.rollback(staging, pipeline.token(email="intruder@elsewhere.example")).status_code == 403
    assert pipeline.rollback(b"{not json", token).status_code == 400
    assert pipeline.rollback(staging, token, content_type="text/plain").status_code == 400
    assert pipeline.rollback({"environment": "staging"}, token).status_code == 400
    assert pipeline.rollback({**staging, "to_version": "latest"}, token).status_code == 400
    assert pipeline.rollback({"app": "hello", "environment": "qa"}, token).status_code == 404
    assert pipeline.rollback({"app": "ghost", "environment": "staging"}, token).status_code == 404
    assert pipeline.rollback({**staging, "to_version": "9.9.9"}, token).status_code == 404
    live_version = pipeline.environment("staging")["live_version"]
    conflict = pipeline.rollback({**staging, "to_version": live_version}, token)
    assert conflict.status_code == 409 and "error" in conflict.json()
    # Production has had one release only: nothing earlier to go back to.
    assert pipeline.rollback({"app": "hello", "environment": "production"}, token).status_code == 409
