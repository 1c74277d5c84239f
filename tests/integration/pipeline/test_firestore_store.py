"""The Firestore store: CONTRACT §6 documents, transactions, idempotency, lock and queue."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore

from shared import topology
from shared.adapters.firestore_documents import release_to_document
from shared.adapters.firestore_store import FirestoreStore, StoreUnavailable
from shared.domain.naming import instance_group_name
from shared.domain.records import Deployment, Release
from shared.domain.status import DeploymentStatus as S
from shared.domain.verification import Verification, VerificationState
from shared.ports import RejectedEvent, Transaction
from shared.usecases.admit_build import Outcome, admit_build
from shared.usecases.lifecycle import ANNOUNCE_GRACE_SECONDS, FAILABLE, announce_outcome, commit_failure
from shared.usecases.provision import start_rolling_replace
from tests.unit.fakes import FakeWorld
from tests.unit.pipeline_driving import build, deploy_to_live, roll_back, step

COMMITS = [f"{i:x}" * 40 for i in range(1, 8)]


REDELIVERIES = 10
"""How often a concurrent test redelivers a step that lost to contention."""


REDELIVERY_BACKOFF_SECONDS = 1.0
"""Up to this long before a redelivery: Pub/Sub never redelivers all duplicates at one instant."""


def _put_deployment(deployment: Deployment, tx: Transaction) -> None:
    tx.put_deployment(deployment)


def redelivered(handle: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Like Pub/Sub: a delivery that failed transiently (contention outlasted the transaction's
    own attempts, as it can on a loaded machine) is delivered again after a backoff; every
    attempt is bounded. Concurrent transactions on the same documents can all time out on the
    emulator's locks at once; redelivered at once, they would collide again."""
    for _ in range(REDELIVERIES - 1):
        try:
            return handle(*args, **kwargs)
        except StoreUnavailable:  # transient: the step is retried, as Pub/Sub would
            time.sleep(random.uniform(0, REDELIVERY_BACKOFF_SECONDS))
    return handle(*args, **kwargs)


def deliver_build(world: FakeWorld, build_id: str, commit: str, **extra: Any) -> Any:
    return redelivered(build, world, build_id, commit, **extra)


CONCURRENT_BOUND_SECONDS = 180
"""Bound on concurrent deliveries: each redelivery may first wait out the emulator's lock timeout."""


def run_concurrently(threads: list[threading.Thread]) -> None:
    """Start the deliveries together and wait until every one has ended, within the bound."""
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + CONCURRENT_BOUND_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a delivery was still running at the bound"


def raw(client: firestore.Client, collection: str, doc_id: str) -> dict[str, Any]:
    snapshot = client.collection(collection).document(doc_id).get()
    assert snapshot.exists, f"{collection}/{doc_id} missing"
    return snapshot.to_dict() or {}


def test_documents_have_the_contract_fields_with_firestore_timestamps_and_ordered_history(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    first = deploy_to_live(world, "b1", COMMITS[0], triggered_by="ci@example.com", build_url="https://ci/1")
    second = deploy_to_live(
        world, "b2", COMMITS[1], commit_messages=["feat: more"], committed_at="2026-01-05T10:00:09+01:00"
    )

    deployment = raw(firestore_client, "deployments", second)
    contract = {
        "app", "environment", "version", "commit", "build_id", "artifact", "status", "created_at",
        "updated_at", "finished_at", "rollback_of", "triggered_by", "history", "artifact_sha256",
        "committed_at",
    }  # fmt: skip
    assert contract <= set(deployment)
    assert deployment["artifact_sha256"] == hashlib.sha256(COMMITS[1].encode()).hexdigest()
    assert isinstance(deployment["committed_at"], DatetimeWithNanoseconds)
    assert deployment["committed_at"] == datetime(2026, 1, 5, 9, 0, 9, tzinfo=UTC)
    assert deployment["status"] == "live" and deployment["version"] == "1.1.0"
    for key in ("created_at", "updated_at", "finished_at"):
        assert isinstance(deployment[key], DatetimeWithNanoseconds), key
        assert deployment[key].tzinfo is not None
    statuses = [h["status"] for h in deployment["history"]]
    assert statuses == ["queued", "provisioning", "cooling_down", "switching", "live"]
    times = [h["at"] for h in deployment["history"]]
    assert all(isinstance(t, DatetimeWithNanoseconds) for t in times) and times == sorted(times)
    assert deployment["commit_messages"] == ["feat: more"]

    retired = raw(firestore_client, "deployments", first)
    assert retired["status"] == "retired" and retired["triggered_by"] == "ci@example.com"
    assert retired["build_url"] == "https://ci/1" and retired["rollback_of"] is None
    assert json.loads(retired["event"])["build_id"] == "b1"

    release = raw(firestore_client, "releases", "hello@1.1.0")
    assert set(release) >= {
        "app",
        "version",
        "commit",
        "artifact",
        "commit_messages",
        "created_at",
        "artifact_sha256",
    }
    assert release["artifact_sha256"] == deployment["artifact_sha256"]
    assert isinstance(release["created_at"], DatetimeWithNanoseconds)
    assert release["commit"] == COMMITS[1] and release["commit_messages"] == ["feat: more"]

    environment = raw(firestore_client, "environments", "hello@staging")
    assert environment["live_deployment_id"] == second and environment["live_version"] == "1.1.0"
    assert environment["app"] == "hello" and environment["environment"] == "staging"
    assert environment["active_deployment_id"] is None and environment["queue"] == []


def test_the_same_build_delivered_three_times_makes_one_deployment(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    outcomes = [build(world, "b1", COMMITS[0]).outcome for _ in range(3)]
    assert outcomes == [Outcome.STARTED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert len(list(firestore_client.collection("deployments").stream())) == 1
    assert len(list(firestore_client.collection("releases").stream())) == 1


def test_concurrent_deliveries_of_one_build_make_one_deployment(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(deliver_build(world, "b1", COMMITS[0]).outcome))
        for _ in range(4)
    ]
    run_concurrently(threads)
    assert sorted(outcomes) == sorted([Outcome.STARTED] + [Outcome.DUPLICATE] * 3)
    assert len(list(firestore_client.collection("deployments").stream())) == 1


def test_concurrent_builds_of_different_commits_get_distinct_versions_and_one_lock_holder(
    world: FakeWorld, store: FirestoreStore
) -> None:
    deploy_to_live(world, "b0", COMMITS[0])
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                deliver_build(world, f"c{i}", COMMITS[i], commit_messages=["fix: x"])
            )
        )
        for i in range(1, 4)
    ]
    run_concurrently(threads)
    versions = sorted(r.version for r in results)
    assert versions == ["1.0.1", "1.0.2", "1.0.3"]
    assert sum(r.outcome is Outcome.STARTED for r in results) == 1
    state = store.get_environment("hello", "staging")
    assert state is not None and state.active_deployment_id is not None and len(state.queue) == 1


def test_each_new_release_raises_the_apps_highest_version_in_the_same_transaction(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    deploy_to_live(world, "b1", COMMITS[0])
    build(world, "b2", COMMITS[1], commit_messages=["feat: x"])
    app = raw(firestore_client, "apps", "hello")
    assert app["highest_version"] == "1.1.0" and app["app"] == "hello"
    # Promotion reuses the version and leaves the record alone.
    build(world, "b1", COMMITS[0], environment="production")
    assert raw(firestore_client, "apps", "hello")["highest_version"] == "1.1.0"


def test_the_next_version_is_bumped_from_the_apps_record_not_from_the_release_history(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    deploy_to_live(world, "b1", COMMITS[0])
    # Only the record says 3.4.0; the release history holds 1.0.0 alone.
    firestore_client.collection("apps").document("hello").set({"highest_version": "3.4.0"}, merge=True)
    assert build(world, "b2", COMMITS[1], commit_messages=["fix: y"]).version == "3.4.1"
    assert raw(firestore_client, "apps", "hello")["highest_version"] == "3.4.1"


def test_releases_recorded_before_the_apps_record_existed_seed_it(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    for version in ("1.2.0", "1.10.0", "1.9.3"):
        release = Release("hello", version, "f" * 40, "file:///old.tar.gz", (), world.clock.now())
        firestore_client.collection("releases").document(release.key).set(release_to_document(release))
    # A record some other component created without the field is no reason to start over.
    firestore_client.collection("apps").document("hello").set({"owner": "team-hello"})
    assert build(world, "b1", COMMITS[0], commit_messages=["feat: z"]).version == "1.11.0"
    app = raw(firestore_client, "apps", "hello")
    assert app["highest_version"] == "1.11.0" and app["owner"] == "team-hello"


def test_the_same_commit_in_production_reuses_the_version(world: FakeWorld) -> None:
    deploy_to_live(world, "b1", COMMITS[0])
    staging = build(world, "b2", COMMITS[1], commit_messages=["feat: x"])
    production = build(world, "b2", COMMITS[1], environment="production", commit_messages=["feat: x"])
    assert staging.version == production.version == "1.1.0"
    assert staging.deployment_id != production.deployment_id


def test_a_commit_maps_to_its_version_by_document_and_legacy_releases_are_still_found(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    # A release recorded before the commit index existed: found by its commit all the same.
    legacy = Release("hello", "1.5.0", COMMITS[1], "file:///old.tar.gz", (), world.clock.now())
    firestore_client.collection("releases").document(legacy.key).set(release_to_document(legacy))
    deploy_to_live(world, "b1", COMMITS[0])
    assert raw(firestore_client, "release_commits", f"hello@{COMMITS[0]}")["version"] == "1.5.1"
    assert raw(firestore_client, "apps", "hello")["commits_indexed"] is False, "an unindexed release exists"
    assert build(world, "b2", COMMITS[1], environment="production").version == "1.5.0"


def test_an_app_whose_first_release_is_indexed_is_marked_so_and_new_commits_still_bump(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    deploy_to_live(world, "b1", COMMITS[0])
    assert raw(firestore_client, "apps", "hello")["commits_indexed"] is True
    assert build(world, "b2", COMMITS[1], commit_messages=["feat: x"]).version == "1.1.0"
    assert build(world, "b3", COMMITS[0], environment="production").version == "1.0.0"
    assert raw(firestore_client, "apps", "hello")["commits_indexed"] is True


def test_the_same_new_commit_admitted_concurrently_in_two_environments_gets_one_version(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    deploy_to_live(world, "b0", COMMITS[0])
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda environment=environment: results.append(
                deliver_build(world, "b1", COMMITS[1], environment=environment, commit_messages=["feat: x"])
            )
        )
        for environment in ("staging", "production")
    ]
    run_concurrently(threads)
    assert sorted(r.version for r in results) == ["1.1.0", "1.1.0"]
    releases = [s.to_dict() or {} for s in firestore_client.collection("releases").stream()]
    assert sorted(r["version"] for r in releases) == ["1.0.0", "1.1.0"]


def test_a_busy_environment_queues_the_newest_and_cancels_the_older(
    world: FakeWorld, store: FirestoreStore
) -> None:
    running = build(world, "b1", COMMITS[0])
    older = build(world, "b2", COMMITS[1])
    newest = build(world, "b3", COMMITS[2])
    cancelled = store.get_deployment(older.deployment_id)
    assert cancelled is not None and cancelled.status is S.CANCELLED and cancelled.finished_at is not None
    state = store.get_environment("hello", "staging")
    assert state is not None
    assert state.active_deployment_id == running.deployment_id and state.queue == (newest.deployment_id,)
    recorded = store.get_deployment(newest.deployment_id)
    assert recorded is not None and recorded.superseded == (older.deployment_id,), "kept, to announce again"


def test_the_baking_query_finds_only_live_deployments_in_their_bake_window(
    world: FakeWorld, store: FirestoreStore
) -> None:
    baked = deploy_to_live(world, "b1", COMMITS[0])
    baking = deploy_to_live(world, "b2", COMMITS[1])
    now = world.clock.now()
    for deployment_id, state in ((baked, VerificationState.PASSED), (baking, VerificationState.PENDING)):
        record = store.get_deployment(deployment_id)
        assert record is not None
        verification = Verification(state, str(state), now, ends_at=now)
        store.atomically(functools.partial(_put_deployment, replace(record, verification=verification)))
    assert [d.deployment_id for d in store.baking_deployments()] == [baking]


def test_a_status_change_from_the_wrong_status_changes_nothing(
    world: FakeWorld, store: FirestoreStore
) -> None:
    result = build(world, "b1", COMMITS[0])
    message = step(world, topology.START_ROLLING_REPLACE)
    start_rolling_replace(world.services, message)
    before = store.get_deployment(result.deployment_id)
    start_rolling_replace(world.services, message)  # duplicate delivery
    after = store.get_deployment(result.deployment_id)
    assert before is not None and after is not None
    assert after.history == before.history and after.status is S.COOLING_DOWN


def test_queries_find_in_progress_live_history_and_cleanup(world: FakeWorld, store: FirestoreStore) -> None:
    first = deploy_to_live(world, "b1", COMMITS[0])
    second = deploy_to_live(world, "b2", COMMITS[1])
    third = build(world, "b3", COMMITS[2]).deployment_id
    assert [d.deployment_id for d in store.deployments_with_status([S.PROVISIONING])] == [third]
    assert [d.deployment_id for d in store.live_history("hello", "staging")] == [second, first]
    assert store.deployments_due_for_cleanup(world.clock.now()) == []
    world.clock.advance(10)  # drained, still retained
    assert store.deployments_due_for_cleanup(world.clock.now()) == []
    world.clock.advance(50)
    assert [d.deployment_id for d in store.deployments_due_for_cleanup(world.clock.now())] == [first]
    assert sorted(store.released_versions("hello")) == ["1.0.0", "1.0.1", "1.0.2"]


def test_an_unannounced_outcome_is_found_once_due_and_unmarked_once_announced(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    deploy_to_live(world, "b1", COMMITS[0])
    late = build(world, "b2", COMMITS[1]).deployment_id
    assert late is not None
    committed = commit_failure(world.services, late, "not live within the deadline", FAILABLE)
    assert committed is not None  # and its call dies here, before announcing it
    failed, _ = committed
    assert isinstance(raw(firestore_client, "deployments", late)["announce_due_at"], DatetimeWithNanoseconds)
    assert store.deployments_due_for_announcement(world.clock.now()) == []
    world.clock.advance(ANNOUNCE_GRACE_SECONDS)
    due = store.deployments_due_for_announcement(world.clock.now())
    assert [d.deployment_id for d in due] == [late] and due[0].announce_due_at == failed.announce_due_at
    announce_outcome(world.services, due[0])
    assert "announce_due_at" not in raw(firestore_client, "deployments", late)
    assert store.deployments_due_for_announcement(world.clock.now()) == []


def test_rejected_events_are_recorded_once(store: FirestoreStore, firestore_client: firestore.Client) -> None:
    event = RejectedEvent(
        event_id="123",
        reason="commit: must be 40 lowercase hex characters",
        payload='{"commit": "x"}',
        attributes={"app": "hello"},
        received_at=datetime.now().astimezone(),
        topic=topology.BUILD_SUCCEEDED,
    )
    store.record_rejected(event)
    store.record_rejected(event)
    doc = raw(firestore_client, "rejected_events", "123")
    assert doc["reason"].startswith("commit:") and isinstance(doc["received_at"], DatetimeWithNanoseconds)
    assert doc["attributes"] == {"app": "hello"} and doc["payload"] == '{"commit": "x"}'


def test_a_rollback_adopts_the_retained_group_in_one_transaction(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    first = deploy_to_live(world, "b1", COMMITS[0])
    deploy_to_live(world, "b2", COMMITS[1])
    world.publisher.messages.clear()
    accepted, _ = roll_back(world, caller="x@example.com")
    message = step(world, topology.START_ROLLING_REPLACE)
    start_rolling_replace(world.services, message)
    start_rolling_replace(world.services, message)  # duplicate delivery: adopts once

    retained = raw(firestore_client, "deployments", first)
    assert retained["adopted_by"] == accepted.deployment_id and "cleanup_due_at" not in retained
    rolled = raw(firestore_client, "deployments", accepted.deployment_id)
    assert rolled["status"] == "cooling_down" and rolled["instance_group"] == instance_group_name(first)
    assert [h["status"] for h in rolled["history"]].count("cooling_down") == 1
    later = world.clock.now() + timedelta(hours=2)
    assert first not in [d.deployment_id for d in store.deployments_due_for_cleanup(later)]


def test_promotion_approval_and_provenance_records_round_trip_in_firestore(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    from shared.domain.approval import Decision
    from shared.domain.identity import Caller, caller_allowed
    from shared.usecases.approval import decide
    from shared.usecases.promote import request_promotion

    deploy_to_live(world, "b1", COMMITS[0])
    world.publisher.messages.clear()
    accepted = request_promotion(
        world.services,
        app="hello",
        from_environment="staging",
        to_environment="production",
        caller="ops@approvers.example.com",
        caller_matches=lambda patterns: caller_allowed(
            Caller("ops@approvers.example.com", "1", "test", hosted_domain="approvers.example.com"), patterns
        ),
        reason="ship",
    )
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    request_id = json.loads(published.data)["release_request"]
    request = raw(firestore_client, "release_requests", request_id)
    assert request["requested_by"] == "ops@approvers.example.com" and request["promoted_from"] == "staging"
    assert isinstance(request["created_at"], DatetimeWithNanoseconds)
    assert store.get_release_request(request_id) is not None

    result = admit_build(world.services, published.data, published.attributes, "evt-promotion")
    assert result.outcome is Outcome.AWAITING_APPROVAL
    waiting = raw(firestore_client, "deployments", accepted.deployment_id)
    assert waiting["status"] == "awaiting_approval" and waiting["approvals"] == []
    assert waiting["requested_by"] == "ops@approvers.example.com" and waiting["promoted_from"] == "staging"
    assert raw(firestore_client, "environments", "hello@production")["awaiting_deployment_id"] == (
        accepted.deployment_id
    )
    unfinished = store.deployments_of_environment("hello", "production", [S.AWAITING_APPROVAL, S.QUEUED])
    assert [d.deployment_id for d in unfinished] == [accepted.deployment_id]

    decide(
        world.services,
        deployment_id=accepted.deployment_id,
        decision=Decision.APPROVE,
        caller="lead@example.com",
        caller_matches=lambda patterns: caller_allowed("lead@example.com", patterns),
        reason="ok",
    )
    approved = raw(firestore_client, "deployments", accepted.deployment_id)
    assert approved["status"] == "provisioning"
    (approval,) = approved["approvals"]
    assert (approval["by"], approval["decision"], approval["reason"]) == ("lead@example.com", "approve", "ok")
    assert isinstance(approval["at"], DatetimeWithNanoseconds)
    record = store.get_deployment(accepted.deployment_id)
    assert record is not None and record.approvals[0].by == "lead@example.com"
    assert raw(firestore_client, "environments", "hello@production")["awaiting_deployment_id"] is None


def test_a_bake_window_breach_is_recorded_once_with_its_numbers_and_a_rollback_record(
    world: FakeWorld, firestore_client: firestore.Client
) -> None:
    from shared.ports import TrafficSample
    from shared.usecases.bake import automatic_rollback_id, check_bake

    first = deploy_to_live(world, "v1", COMMITS[0], environment="verified")
    world.metrics.traffic_by_group[instance_group_name(first)] = TrafficSample(400, 0)
    world.clock.advance(31)
    check_bake(world.services, step(world, topology.BAKE_CHECK))
    passed = raw(firestore_client, "deployments", first)["verification"]
    assert passed["state"] == "passed" and passed["requests"] == 400
    assert isinstance(passed["checked_at"], DatetimeWithNanoseconds)

    bad = deploy_to_live(world, "v2", COMMITS[1], environment="verified")
    pending = raw(firestore_client, "deployments", bad)
    assert pending["status"] == "live" and pending["verification"]["state"] == "pending"
    assert raw(firestore_client, "environments", "hello@verified")["active_deployment_id"] == bad
    world.metrics.traffic_by_group[instance_group_name(bad)] = TrafficSample(200, 90)
    world.clock.advance(2)
    message = step(world, topology.BAKE_CHECK)
    threads = [
        threading.Thread(target=redelivered, args=(check_bake, world.services, message)) for _ in range(3)
    ]
    run_concurrently(threads)

    document = raw(firestore_client, "deployments", bad)
    assert document["status"] == "rolled_back"
    assert document["verification"]["state"] == "failed"
    assert (document["verification"]["requests"], document["verification"]["server_errors"]) == (200, 90)
    assert document["verification"]["error_ratio"] == 0.45
    rollback_id = automatic_rollback_id(world.store.get_deployment(bad))  # type: ignore[arg-type]
    rollback = raw(firestore_client, "deployments", rollback_id)
    assert rollback["status"] == "live" and rollback["rollback_of"] == bad
    all_rollbacks = (
        firestore_client.collection("deployments")
        .where(filter=firestore.FieldFilter("rollback_of", "==", bad))
        .get()
    )
    assert len(all_rollbacks) == 1, "three concurrent deliveries, one rollback"
    state = raw(firestore_client, "environments", "hello@verified")
    assert state["live_deployment_id"] == rollback_id and state["active_deployment_id"] is None


def test_a_poll_noted_on_a_slow_switch_is_stored_and_read_back(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    from shared.usecases.services import NotReadyYet
    from shared.usecases.switch import POLL_NOTE_SECONDS, complete_cool_down

    result = build(world, "b1", COMMITS[0])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.compute.lb_healthy = False  # the load balancer does not see green healthy yet
    world.clock.advance(5)  # the cool-down: this poll starts the switch, and waits
    with pytest.raises(NotReadyYet):
        complete_cool_down(world.services, message)
    world.clock.advance(POLL_NOTE_SECONDS)  # still waiting: this poll notes itself
    with pytest.raises(NotReadyYet):
        complete_cool_down(world.services, message)
    stored = raw(firestore_client, "deployments", result.deployment_id)
    assert stored["status"] == "switching" and isinstance(stored["last_polled_at"], DatetimeWithNanoseconds)
    deployment = store.get_deployment(result.deployment_id)
    assert deployment is not None and deployment.last_polled_at == world.clock.now()
