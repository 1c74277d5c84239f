"""The notification ledger's claim rules on the Firestore emulator, with a controlled clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from shared.adapters.notification_ledger import FirestoreNotificationLedger, ledger_document_id
from shared.notifications.delivery import ClaimOutcome
from shared.notifications.model import Notification

FAILED = Notification(
    kind="deployment",
    dedupe_key="hello-staging-abc:failed",
    status="failed",
    app="hello",
    environment="staging",
    version="1.2.0",
    deployment_id="hello-staging-abc",
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(emulator_env: dict[str, str], clean_firestore: str, clock: Clock) -> FirestoreNotificationLedger:
    return FirestoreNotificationLedger(firestore.Client(), clock=clock)


def record() -> dict[str, object]:
    snapshot = firestore.Client().collection("notifications").document(FAILED.dedupe_key).get()
    return snapshot.to_dict() or {}


def test_the_first_claim_creates_the_record_with_the_outcome_it_announces(
    ledger: FirestoreNotificationLedger,
) -> None:
    assert ledger.claim(FAILED, "slack_URL", "delivery-a", 60) is ClaimOutcome.CLAIMED

    document = record()
    assert {k: document[k] for k in ("dedupe_key", "kind", "deployment_id", "version", "status")} == {
        "dedupe_key": "hello-staging-abc:failed",
        "kind": "deployment",
        "deployment_id": "hello-staging-abc",
        "version": "1.2.0",
        "status": "failed",
    }
    assert document["channels"] == {
        "slack_URL": {
            "state": "sending",
            "owner": "delivery-a",
            "lease_until": datetime(2026, 1, 5, 10, 1, tzinfo=UTC),
            "attempts": 1,
        }
    }


def test_a_held_claim_keeps_others_off_until_its_lease_runs_out(
    ledger: FirestoreNotificationLedger, clock: Clock
) -> None:
    ledger.claim(FAILED, "slack_URL", "crashed-delivery", 60)

    assert ledger.claim(FAILED, "slack_URL", "redelivery", 60) is ClaimOutcome.HELD_ELSEWHERE
    clock.advance(61)
    assert ledger.claim(FAILED, "slack_URL", "redelivery", 60) is ClaimOutcome.CLAIMED
    assert record()["channels"]["slack_URL"]["attempts"] == 2  # type: ignore[index]


def test_delivered_and_given_up_channels_are_never_claimed_again(ledger: FirestoreNotificationLedger) -> None:
    ledger.claim(FAILED, "slack_URL", "a", 60)
    ledger.mark_delivered(FAILED.dedupe_key, "slack_URL", "a")
    ledger.claim(FAILED, "chat_URL", "a", 60)
    ledger.give_up(FAILED.dedupe_key, "chat_URL", "a", "HTTP 404 no such space")

    assert ledger.claim(FAILED, "slack_URL", "b", 60) is ClaimOutcome.ALREADY_DELIVERED
    assert ledger.claim(FAILED, "chat_URL", "b", 60) is ClaimOutcome.GIVEN_UP
    channels = record()["channels"]
    assert channels["slack_URL"]["state"] == "delivered"  # type: ignore[index]
    assert channels["chat_URL"]["last_error"] == "HTTP 404 no such space"  # type: ignore[index]


def test_a_released_channel_is_claimed_again_by_the_next_delivery(
    ledger: FirestoreNotificationLedger,
) -> None:
    ledger.claim(FAILED, "slack_URL", "a", 60)
    ledger.release(FAILED.dedupe_key, "slack_URL", "a", "HTTP 503")

    assert record()["channels"]["slack_URL"]["state"] == "failed"  # type: ignore[index]
    assert ledger.claim(FAILED, "slack_URL", "b", 60) is ClaimOutcome.CLAIMED


def test_a_late_failure_never_overwrites_another_deliverys_claim_or_a_delivery(
    ledger: FirestoreNotificationLedger, clock: Clock
) -> None:
    ledger.claim(FAILED, "slack_URL", "slow", 60)
    clock.advance(61)
    ledger.claim(FAILED, "slack_URL", "fast", 60)

    ledger.release(FAILED.dedupe_key, "slack_URL", "slow", "timed out")
    assert record()["channels"]["slack_URL"]["owner"] == "fast"  # type: ignore[index]

    ledger.mark_delivered(FAILED.dedupe_key, "slack_URL", "fast")
    ledger.release(FAILED.dedupe_key, "slack_URL", "fast", "too late")
    assert record()["channels"]["slack_URL"]["state"] == "delivered"  # type: ignore[index]


def test_keys_with_slashes_get_a_valid_document_id(ledger: FirestoreNotificationLedger) -> None:
    odd = Notification(
        kind="dead_letter", dedupe_key="dead-letter:projects/p/subscriptions/s:42", status="dead_lettered"
    )

    assert ledger.claim(odd, "notifications_file", "a", 60) is ClaimOutcome.CLAIMED
    snapshot = (
        firestore.Client().collection("notifications").document(ledger_document_id(odd.dedupe_key)).get()
    )
    assert snapshot.to_dict()["dedupe_key"] == odd.dedupe_key  # type: ignore[index]


def test_a_ledger_deciding_on_the_record_it_last_wrote_still_sees_another_deliverys_write(
    ledger: FirestoreNotificationLedger, clock: Clock
) -> None:
    other = FirestoreNotificationLedger(firestore.Client(), clock=clock)
    assert ledger.claim(FAILED, "slack_URL", "a", 60) is ClaimOutcome.CLAIMED
    assert other.claim(FAILED, "chat_URL", "b", 60) is ClaimOutcome.CLAIMED

    # `ledger` remembers the record from before b's claim: its precondition fails, it reads again.
    assert ledger.claim(FAILED, "chat_URL", "a", 60, delivered="slack_URL") is ClaimOutcome.HELD_ELSEWHERE

    channels = record()["channels"]
    assert channels["slack_URL"]["state"] == "delivered"  # type: ignore[index]
    assert channels["chat_URL"]["owner"] == "b"  # type: ignore[index]


def test_one_delivery_changes_the_record_without_reading_it_again(
    ledger: FirestoreNotificationLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    read = ledger._read

    def counted_read(ref: str) -> Any:
        reads.append(ref)
        return read(ref)

    monkeypatch.setattr(ledger, "_read", counted_read)

    ledger.claim(FAILED, "slack_URL", "a", 60)
    ledger.claim(FAILED, "chat_URL", "a", 60, delivered="slack_URL")
    ledger.mark_delivered(FAILED.dedupe_key, "chat_URL", "a")

    assert reads == [ledger_document_id(FAILED.dedupe_key)], "only the first claim reads"
    assert {c: s["state"] for c, s in record()["channels"].items()} == {  # type: ignore[attr-defined]
        "slack_URL": "delivered",
        "chat_URL": "delivered",
    }


def test_an_outcome_that_writes_nothing_is_never_decided_on_a_remembered_record(
    ledger: FirestoreNotificationLedger, clock: Clock
) -> None:
    other = FirestoreNotificationLedger(firestore.Client(), clock=clock)
    assert ledger.claim(FAILED, "slack_URL", "a", 60) is ClaimOutcome.CLAIMED
    other.mark_delivered(FAILED.dedupe_key, "slack_URL", "a")

    # `ledger` remembers slack held by a; a no-write answer ("held elsewhere") is not checked by
    # any precondition, so it reads the record again and sees the delivery.
    assert ledger.claim(FAILED, "slack_URL", "b", 60) is ClaimOutcome.ALREADY_DELIVERED


def test_a_late_remember_never_replaces_a_newer_remembered_record(
    ledger: FirestoreNotificationLedger, clock: Clock
) -> None:
    ledger.claim(FAILED, "slack_URL", "a", 60)
    stale_record, stale_time, _ = ledger._current(ledger._ref(FAILED.dedupe_key))
    assert stale_record is not None and stale_time is not None
    ledger.mark_delivered(FAILED.dedupe_key, "slack_URL", "a")

    # Two deliveries in one instance finish their writes in one order and remember them in the
    # other: the older record must not win.
    ledger._remember(ledger._ref(FAILED.dedupe_key), stale_record, stale_time)

    remembered, _, _ = ledger._current(ledger._ref(FAILED.dedupe_key))
    assert remembered is not None
    assert remembered["channels"]["slack_URL"]["state"] == "delivered"
