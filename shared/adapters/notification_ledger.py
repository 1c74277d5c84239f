"""The NotificationLedger port on Firestore: which channel got which notification, and when.

`notifications/{dedupe key}` with `dedupe_key`, `kind`, `app`, `environment`,
`deployment_id`, `version`, `status`, `created_at`, `updated_at`, and `channels.{channel id}` =
`{state: sending|delivered|given_up|failed, owner, lease_until, attempts, delivered_at, last_error}`.
An auditor reads there which channel got which outcome and when.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from shared import queries
from shared.adapters.firestore_rpc import FirestoreRpc, UpdateTime, field_path
from shared.adapters.firestore_store import TRANSIENT_ERRORS, StoreUnavailable
from shared.notifications.delivery import ClaimOutcome
from shared.notifications.model import Notification
from shared.ports import TransientError

LEDGER_COLLECTION = queries.NOTIFICATIONS
COMPARE_AND_SET_ATTEMPTS = 30
"""Tries per change when deliveries race on one record (each lost race means another one won)."""


def ledger_document_id(dedupe_key: str) -> str:
    """A Firestore document id for a dedupe key: `/` is not allowed in ids, so it is escaped.

    >>> ledger_document_id("rejected:projects/p/topics/t:42")
    'rejected:projects%2Fp%2Ftopics%2Ft:42'
    """
    escaped = dedupe_key.replace("%", "%25").replace("/", "%2F")
    if escaped in (".", "..") or (escaped.startswith("__") and escaped.endswith("__")):
        escaped = f"key-{escaped}"
    return escaped


class LedgerContentionError(TransientError):
    """Too many deliveries raced on one record. Transient: raise so Pub/Sub redelivers later."""


_Decision = tuple[ClaimOutcome | None, dict[str, Any] | None]


class FirestoreNotificationLedger:
    """The NotificationLedger port on Firestore.

    Every change is an atomic compare-and-set on the one record: read it, decide, and write with
    a precondition on the update time it was read at (or `create` when it did not exist yet). A
    racing delivery that wrote first makes the write fail, and the decision is taken again on
    what it wrote. This is Firestore's optimistic form of a single-document transaction: it takes
    no locks, so many deliveries racing on one message do not abort each other into a retry storm.

    A delivery changes its record several times in a row (claim, mark delivered, the next
    channel...). After each write the ledger remembers the record as it wrote it, with the
    update time Firestore gave it, and decides the next change on that instead of reading it
    again: the precondition is the same, so if anyone else wrote in between, the write fails
    and the record is read as usual.
    """

    KNOWN_RECORDS = 64
    """Records remembered after our own writes (the deliveries this instance serves at once)."""

    def __init__(
        self,
        client: firestore.Client,
        clock: Any = None,
        sleep: Any = time.sleep,
        rpc: FirestoreRpc | None = None,
    ) -> None:
        # Reads and writes go through the generated client, as the store's do
        # (shared/adapters/firestore_rpc.py): a delivery changes its record several times.
        self._rpc = rpc if rpc is not None else FirestoreRpc.for_project(str(client.project))
        self._now = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self._known: OrderedDict[str, tuple[dict[str, Any], UpdateTime]] = OrderedDict()
        self._known_lock = threading.Lock()

    def _ref(self, dedupe_key: str) -> str:
        """The record's document id."""
        return ledger_document_id(dedupe_key)

    def claim(
        self,
        notification: Notification,
        channel_id: str,
        owner: str,
        lease_seconds: float,
        delivered: str | None = None,
    ) -> ClaimOutcome:
        def decide(channel: dict[str, Any], now: datetime) -> _Decision:
            state = channel.get("state")
            if state == "delivered":
                return ClaimOutcome.ALREADY_DELIVERED, None
            if state == "given_up":
                return ClaimOutcome.GIVEN_UP, None
            lease_until = channel.get("lease_until")
            if state == "sending" and channel.get("owner") != owner and lease_until and lease_until > now:
                return ClaimOutcome.HELD_ELSEWHERE, None
            claimed = {
                **channel,
                "state": "sending",
                "owner": owner,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "attempts": int(channel.get("attempts") or 0) + 1,
            }
            return ClaimOutcome.CLAIMED, claimed

        def summary(now: datetime) -> dict[str, Any]:
            return {
                "dedupe_key": notification.dedupe_key,
                "kind": notification.kind,
                "app": notification.app,
                "environment": notification.environment,
                "deployment_id": notification.deployment_id,
                "version": notification.version,
                "status": notification.status,
                "created_at": now,
            }

        if delivered == channel_id:
            raise ValueError(f"{channel_id}: cannot be claimed and marked delivered at once")
        decisions: dict[str, Callable[[dict[str, Any], datetime], _Decision]] = {channel_id: decide}
        if delivered is not None:
            decisions[delivered] = _delivered_by(owner)
        outcome = self._compare_and_set(notification.dedupe_key, decisions, summary)[channel_id]
        assert outcome is not None
        return outcome

    def mark_delivered(self, dedupe_key: str, channel_id: str, owner: str) -> None:
        self._compare_and_set(
            dedupe_key,
            {channel_id: _delivered_by(owner)},
            lambda now: {"dedupe_key": dedupe_key, "created_at": now},
        )

    def release(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self._settle(dedupe_key, channel_id, owner, "failed", error)

    def give_up(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self._settle(dedupe_key, channel_id, owner, "given_up", error)

    def channel_states(self, dedupe_key: str) -> dict[str, str]:
        document, _ = self._read(self._ref(dedupe_key))
        channels = (document or {}).get("channels")
        return {
            str(channel): str(state.get("state"))
            for channel, state in (channels or {}).items()
            if isinstance(state, Mapping)
        }

    def _settle(self, dedupe_key: str, channel_id: str, owner: str, state: str, error: str) -> None:
        def decide(channel: dict[str, Any], now: datetime) -> _Decision:
            if channel.get("state") == "delivered" or channel.get("owner") not in (None, owner):
                # Delivered meanwhile, or our lease ran out and another delivery holds the channel:
                # its outcome is the record, never overwritten by ours.
                return None, None
            settled = {
                **channel,
                "state": state,
                "last_error": error[:1000],
                "owner": owner,
                "lease_until": None,
            }
            return None, settled

        self._compare_and_set(
            dedupe_key, {channel_id: decide}, lambda now: {"dedupe_key": dedupe_key, "created_at": now}
        )

    def _path(self, ref: str) -> str:
        return self._rpc.document_path(LEDGER_COLLECTION, ref)

    def _read(self, ref: str) -> tuple[dict[str, Any] | None, UpdateTime | None]:
        try:
            return self._rpc.read_versioned(self._path(ref))
        except TRANSIENT_ERRORS as exc:  # transient: Firestore unavailable, Pub/Sub redelivers
            raise StoreUnavailable(f"cannot read {LEDGER_COLLECTION}/{ref}: {exc}") from exc

    def _current(self, ref: str) -> tuple[dict[str, Any] | None, UpdateTime | None, bool]:
        """The record, its update time, and whether it came from memory: as we last wrote it if
        we remember that, else read. None for a missing record."""
        with self._known_lock:
            known = self._known.get(ref)
        if known is not None:
            return (*known, True)
        document, update_time = self._read(ref)
        return document, update_time, False

    def _forget(self, ref: str) -> None:
        """Drop the remembered record: the next decision reads the ledger afresh."""
        with self._known_lock:
            self._known.pop(ref, None)

    def _remember(self, ref: str, document: dict[str, Any], update_time: UpdateTime) -> None:
        with self._known_lock:
            known = self._known.get(ref)
            if known is not None and known[1] > update_time:
                # Two deliveries in this instance wrote in one order and got here in the other.
                return
            self._known[ref] = (document, update_time)
            self._known.move_to_end(ref)
            while len(self._known) > self.KNOWN_RECORDS:
                self._known.popitem(last=False)

    def _compare_and_set(
        self,
        dedupe_key: str,
        decisions: Mapping[str, Callable[[dict[str, Any], datetime], _Decision]],
        new_document: Callable[[datetime], dict[str, Any]],
    ) -> dict[str, ClaimOutcome | None]:
        """Apply each channel's decision to the record in one atomic change; each one's outcome."""
        ref = self._ref(dedupe_key)
        for attempt in range(COMPARE_AND_SET_ATTEMPTS):
            document, update_time, remembered = self._current(ref)
            channels = dict((document or {}).get("channels") or {})
            now = self._now()
            outcomes: dict[str, ClaimOutcome | None] = {}
            changes: dict[str, dict[str, Any]] = {}
            for channel_id, decide in decisions.items():
                outcomes[channel_id], changed = decide(dict(channels.get(channel_id) or {}), now)
                if changed is not None:
                    changes[channel_id] = changed
            if not changes:
                if remembered:
                    # A write's precondition proves the remembered record current; an answer
                    # that writes nothing has no such proof, so it is decided on a fresh read.
                    self._forget(ref)
                    continue
                return outcomes
            try:
                if document is not None:
                    written_at = self._rpc.write(
                        self._path(ref),
                        {"channels": changes, "updated_at": now},
                        field_paths=[*(field_path("channels", c) for c in changes), "updated_at"],
                        last_update=update_time,
                    )
                    written = {**document, "channels": {**channels, **changes}, "updated_at": now}
                else:
                    written = {**new_document(now), "channels": changes, "updated_at": now}
                    written_at = self._rpc.write(self._path(ref), written, exists=False)
                self._remember(ref, written, written_at)
                return outcomes
            except (api_exceptions.FailedPrecondition, api_exceptions.Conflict):
                # Transient: another delivery wrote the record after we read it; decide again on
                # what it wrote.
                self._forget(ref)
                self._sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
            except TRANSIENT_ERRORS as exc:  # transient: Firestore unavailable, Pub/Sub redelivers
                self._forget(ref)
                raise StoreUnavailable(f"cannot write {LEDGER_COLLECTION}/{ref}: {exc}") from exc
        raise LedgerContentionError(
            f"{LEDGER_COLLECTION}/{ref}: still contended after {COMPARE_AND_SET_ATTEMPTS} tries"
        )


def _delivered_by(owner: str) -> Callable[[dict[str, Any], datetime], _Decision]:
    """The decision that records a channel as delivered by `owner` (nothing if it is already)."""

    def decide(channel: dict[str, Any], now: datetime) -> _Decision:
        if channel.get("state") == "delivered":
            return None, None  # Already recorded (by us or a delivery that took over).
        return None, {
            **channel,
            "state": "delivered",
            "delivered_at": now,
            "owner": owner,
            "lease_until": None,
        }

    return decide
