"""The store's generated-client path on the Firestore emulator: values, writes, transactions.

What the library's objects did for the store must still hold: every value the records use comes
back as it went in, a write leaves fields it does not name alone, concurrent transactions on one
document both take effect (one retried after Firestore aborted it), and a transaction whose work
fails releases what it read at once instead of holding it until Firestore times it out. A
single-record update is a compare-and-set that runs again on a record written under it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from shared.adapters.firestore_rpc import FirestoreRpc, TransactionReads, field_path
from shared.adapters.firestore_store import FirestoreStore
from shared.ports import Transaction
from shared.usecases.watchdog import run_watchdog
from tests.conftest import TEST_PROJECT
from tests.integration.pipeline.test_firestore_store import COMMITS, raw
from tests.unit.fakes import FakeWorld
from tests.unit.pipeline_driving import deploy_to_live

COLLECTION = "rpc_test"


@pytest.fixture
def rpc(firestore_client: firestore.Client) -> FirestoreRpc:
    return FirestoreRpc.for_project(TEST_PROJECT)


def write(rpc: FirestoreRpc, path: str, data: dict[str, Any]) -> None:
    rpc.run_transaction(lambda reads: (None, {path: data}), attempts=1)


def test_every_value_the_records_use_reads_back_as_written(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "values")
    at = datetime(2026, 12, 2, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    data = {
        "text": "héllo <b>",
        "count": 7,
        "ratio": 1.5,
        "flag": True,
        "nothing": None,
        "raw": b"\x00\x01",
        "at": at,
        "history": [{"status": "live", "at": at}, "note"],
        "nested": {"inner": {"n": 1}},
        "empty_map": {},
        "empty_list": [],
    }
    write(rpc, path, data)
    stored = rpc.read(path)
    assert stored == {**data, "at": at.astimezone(UTC), "history": [{"status": "live", "at": at}, "note"]}
    assert stored is not None
    # `==` alone would take True for 1 and 7.0 for 7: the types must come back too.
    assert {key: type(value) for key, value in stored.items()} == {
        key: type(value) for key, value in data.items()
    }
    assert stored["at"].tzinfo == UTC and stored["history"][0]["at"].tzinfo == UTC


def test_a_missing_document_reads_as_none(rpc: FirestoreRpc) -> None:
    assert rpc.read(rpc.document_path(COLLECTION, "never-written")) is None


def test_a_write_replaces_the_fields_it_names_whole_and_leaves_the_others(
    rpc: FirestoreRpc, firestore_client: firestore.Client
) -> None:
    path = rpc.document_path(COLLECTION, "merge")
    firestore_client.collection(COLLECTION).document("merge").set(
        {"foreign": "kept", "verification": {"state": "pending", "ends_at": "soon"}, "reason": "old"}
    )
    write(rpc, path, {"verification": {"state": "passed"}, "reason": firestore.DELETE_FIELD, "added": 1})
    assert rpc.read(path) == {"foreign": "kept", "verification": {"state": "passed"}, "added": 1}


def test_field_names_that_need_quoting_are_written(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "quoted")
    names = {"hello@staging": 1, "a.b": 2, "9lives": 3, "café": 4, "back`tick": 5}
    write(rpc, path, names)
    assert rpc.read(path) == names


def test_concurrent_transactions_on_one_document_both_take_effect(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "counter")
    write(rpc, path, {"n": 0})
    both_read = threading.Barrier(2, timeout=10)
    attempts: list[int] = []
    errors: list[BaseException] = []

    def increment(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
        attempts.append(1)
        current = reads.get(path) or {}
        if len(attempts) <= 2:
            both_read.wait()  # both first attempts hold their read before either commits
        return None, {path: {"n": int(current["n"]) + 1}}

    def run() -> None:
        try:
            rpc.run_transaction(increment, attempts=5)
        except BaseException as exc:  # reported below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert rpc.read(path) == {"n": 2}
    assert len(attempts) >= 3, "one of the two must have run again after its commit was aborted"


def test_contention_that_outlasts_the_attempts_raises_aborted(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "contended")
    write(rpc, path, {"n": 0})
    holder_read = threading.Event()
    other_done = threading.Event()
    outcomes: dict[str, str] = {}

    def hold(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
        reads.get(path)
        holder_read.set()
        assert other_done.wait(timeout=30)  # keeps its read until the other transaction gave up
        return None, {path: {"n": 1}}

    def holder() -> None:
        rpc.run_transaction(hold, attempts=1)
        outcomes["holder"] = "committed"

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holder_read.wait(timeout=30)

        def overwrite(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
            reads.get(path)
            return None, {path: {"n": 2}}

        # Its commit waits for the holder's lock until Firestore aborts it; one attempt in all.
        with pytest.raises(google_exceptions.Aborted):
            rpc.run_transaction(overwrite, attempts=1)
    finally:
        other_done.set()
        thread.join(timeout=60)
    assert outcomes == {"holder": "committed"}
    assert rpc.read(path) == {"n": 1}


def test_work_that_fails_releases_its_reads_at_once(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "released")
    write(rpc, path, {"n": 0})

    def fail(reads: TransactionReads) -> tuple[None, dict[str, Any]]:
        reads.get(path)
        raise RuntimeError("the step's own failure")

    with pytest.raises(RuntimeError, match="own failure"):
        rpc.run_transaction(fail, attempts=3)
    # Unreleased, the read would hold the document until the emulator expires the idle
    # transaction (a minute): this write would wait for its lock for 2 s and be aborted.
    write(rpc, path, {"n": 1})
    assert rpc.read(path) == {"n": 1}


def test_a_conditional_write_holds_only_on_the_version_it_names(rpc: FirestoreRpc) -> None:
    path = rpc.document_path(COLLECTION, "conditional")
    created = rpc.write(
        path, {"channels": {"slack": {"state": "sending"}}, "kind": "deployment"}, exists=False
    )
    with pytest.raises(google_exceptions.AlreadyExists):
        rpc.write(path, {"kind": "other"}, exists=False)

    nested = field_path("channels", "chat:#releases")
    updated = rpc.write(
        path,
        {"channels": {"chat:#releases": {"state": "delivered"}}},
        field_paths=[nested],
        last_update=created,
    )
    assert updated > created
    with pytest.raises(google_exceptions.FailedPrecondition):
        rpc.write(path, {"kind": "stale"}, field_paths=["kind"], last_update=created)

    document, version = rpc.read_versioned(path)
    assert version == updated
    assert document == {
        "channels": {"slack": {"state": "sending"}, "chat:#releases": {"state": "delivered"}},
        "kind": "deployment",
    }


def test_a_batch_read_answers_each_document_found_or_missing(rpc: FirestoreRpc) -> None:
    present = rpc.document_path(COLLECTION, "hello@staging")
    absent = rpc.document_path(COLLECTION, "nobody@nowhere")
    write(rpc, present, {"n": 1})

    def read_both(reads: TransactionReads) -> tuple[dict[str, Any], dict[str, Any]]:
        return reads.get_all([absent, present]), {}

    assert rpc.run_transaction(read_both, attempts=1) == {absent: None, present: {"n": 1}}


def test_records_read_ahead_take_one_round_trip_and_read_the_same(
    world: FakeWorld, store: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = deploy_to_live(world, "v1", COMMITS[0])
    batches: list[list[str]] = []
    batch_get = store.rpc.batch_get

    def counted(request: Any) -> Any:
        batches.append(list(request.documents))
        return batch_get(request)

    monkeypatch.setattr(store.rpc, "batch_get", counted)

    def read(tx: Transaction) -> tuple[object, ...]:
        return (
            tx.deployment(live),
            tx.environment("hello", "staging"),
            tx.release_for_commit("hello", COMMITS[0]),
            tx.highest_version("hello"),
        )

    def read_ahead_then_read(tx: Transaction) -> tuple[object, ...]:
        tx.read_ahead(
            deployments=[live], environments=[("hello", "staging")], commits=[("hello", COMMITS[0])]
        )
        return read(tx)

    one_by_one = store.atomically(read)
    assert len(batches) == 5  # deployment, environment, commit index, release, app
    batches.clear()

    assert store.atomically(read_ahead_then_read) == one_by_one
    assert [len(batch) for batch in batches] == [4, 1], "four records at once, then the release"
    assert one_by_one[0] is not None and one_by_one[2] is not None and one_by_one[3] == "1.0.0"


def test_a_single_record_update_runs_again_on_a_record_written_since_its_read(
    world: FakeWorld, store: FirestoreStore
) -> None:
    live = deploy_to_live(world, "v1", COMMITS[0])
    path = store.document_path("deployments", live)
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert store.update_deployment("hello-staging-nobody", lambda current: current) is None

    # A change that leaves the record writes nothing.
    before = store.rpc.read_versioned(path)[1]
    assert store.update_deployment(live, lambda current: None) == store.get_deployment(live)
    assert store.rpc.read_versioned(path)[1] == before

    # Another writer between this update's read and its write: the update reads again and
    # changes the newer record; written blindly, it would have put back the field it cleared.
    seen: list[datetime | None] = []

    def adopt(current: Any) -> Any:
        seen.append(current.cleanup_due_at)
        if len(seen) == 1:
            store.atomically(lambda tx: tx.put_deployment(current.with_changes(at, cleanup_due_at=at)))
        return current.with_changes(at, adopted_by="hello-staging-rollback")

    record = store.update_deployment(live, adopt)
    assert seen == [None, at]
    stored = store.get_deployment(live)
    assert stored == record
    assert stored is not None and (stored.cleanup_due_at, stored.adopted_by) == (at, "hello-staging-rollback")


class CountingRpc(FirestoreRpc):
    """The store's connection, counting its point reads."""

    reads = 0

    def read_versioned(self, path: str) -> Any:
        self.reads += 1
        return super().read_versioned(path)


def test_an_update_right_after_a_read_writes_without_reading_again_unless_the_record_changed(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    live = deploy_to_live(world, "v1", COMMITS[0])
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    counting = CountingRpc.for_project(TEST_PROJECT)
    assert isinstance(counting, CountingRpc)
    reader = FirestoreStore(firestore_client, counting)

    read = reader.get_deployment(live)
    assert read is not None and counting.reads == 1
    updated = reader.update_deployment(live, lambda current: current.with_changes(at, adopted_by="r1"))
    assert counting.reads == 1, "the update started from the read just made"
    assert updated is not None and store.get_deployment(live) == updated

    # The remembered read served that update: the next one reads.
    reader.update_deployment(live, lambda current: current.with_changes(at, adopted_by="r2"))
    assert counting.reads == 2

    # Changed by another writer since this store's read: the write is refused and the update
    # applies to the newer record, keeping the other writer's change.
    reader.get_deployment(live)
    store.update_deployment(live, lambda current: current.with_changes(at, cleanup_due_at=at))
    seen: list[tuple[datetime | None, str | None]] = []

    def adopt(current: Any) -> Any:
        seen.append((current.cleanup_due_at, current.adopted_by))
        return current.with_changes(at, adopted_by="r3")

    reader.update_deployment(live, adopt)
    assert seen == [(None, "r2"), (at, "r2")]
    stored = store.get_deployment(live)
    assert stored is not None and (stored.cleanup_due_at, stored.adopted_by) == (at, "r3")


def test_an_update_that_changes_nothing_answers_the_record_as_it_stands_not_the_remembered_read(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    live = deploy_to_live(world, "v1", COMMITS[0])
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    reader = FirestoreStore(firestore_client)
    remembered = reader.get_deployment(live)
    written = store.update_deployment(live, lambda current: current.with_changes(at, adopted_by="other"))

    answer = reader.update_deployment(live, lambda current: None)
    assert answer == written != remembered


def test_writes_keep_fields_other_components_add_and_delete_cleared_ones(
    world: FakeWorld, store: FirestoreStore, firestore_client: firestore.Client
) -> None:
    first = deploy_to_live(world, "b1", COMMITS[0])
    firestore_client.collection("deployments").document(first).update({"audit_note": "checked"})
    firestore_client.collection("environments").document("hello@staging").update({"url_checked": True})
    deploy_to_live(world, "b2", COMMITS[1])
    world.clock.advance(60)  # drained and past its retention
    assert run_watchdog(world.services).cleaned == [first]
    retired = raw(firestore_client, "deployments", first)
    assert retired["audit_note"] == "checked" and retired["status"] == "retired"
    assert "cleanup_due_at" not in retired and "resources_deleted_at" in retired
    assert raw(firestore_client, "environments", "hello@staging")["url_checked"] is True
