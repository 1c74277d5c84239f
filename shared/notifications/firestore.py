"""Firestore side of notifications: the delivery ledger and the release facts that enrich a message.

Ledger: `notifications/{dedupe key}` with `dedupe_key`, `kind`, `app`, `environment`,
`deployment_id`, `status`, `created_at`, `updated_at`, and `channels.{channel id}` =
`{state: sending|delivered|given_up|failed, owner, lease_until, attempts, delivered_at, last_error}`.
An auditor reads there which channel got which outcome and when.

Facts are read from the records of CONTRACT §6 (`deployments/{id}`, `releases/{app}@{version}`),
never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from shared.config import PipelineConfig
from shared.logging import get_logger
from shared.notifications.delivery import ClaimOutcome
from shared.notifications.model import Notification
from shared.notify_message import NotifyRequest

log = get_logger("notifications.firestore")

LEDGER_COLLECTION = "notifications"
TRANSACTION_ATTEMPTS = 20
"""Channels of one message share a document, so racing deliveries contend; retry generously."""
DEPLOYMENTS = "deployments"
RELEASES = "releases"


def ledger_document_id(dedupe_key: str) -> str:
    """A Firestore document id for a dedupe key: `/` is not allowed in ids, so it is escaped.

    >>> ledger_document_id("rejected:projects/p/topics/t:42")
    'rejected:projects%2Fp%2Ftopics%2Ft:42'
    """
    escaped = dedupe_key.replace("%", "%25").replace("/", "%2F")
    if escaped in (".", "..") or (escaped.startswith("__") and escaped.endswith("__")):
        escaped = f"key-{escaped}"
    return escaped


class FirestoreNotificationLedger:
    """The NotificationLedger port on Firestore; every method is one transaction."""

    def __init__(self, client: firestore.Client, clock: Any = None) -> None:
        self._client = client
        self._now = clock or (lambda: datetime.now(UTC))

    def _ref(self, dedupe_key: str) -> firestore.DocumentReference:
        return self._client.collection(LEDGER_COLLECTION).document(ledger_document_id(dedupe_key))

    def claim(
        self, notification: Notification, channel_id: str, owner: str, lease_seconds: float
    ) -> ClaimOutcome:
        ref = self._ref(notification.dedupe_key)

        @firestore.transactional
        def claim_in(transaction: firestore.Transaction) -> ClaimOutcome:
            snapshot = ref.get(transaction=transaction)
            now = self._now()
            document = (snapshot.to_dict() or {}) if snapshot.exists else {}
            channel = (document.get("channels") or {}).get(channel_id) or {}
            state = channel.get("state")
            if state == "delivered":
                return ClaimOutcome.ALREADY_DELIVERED
            if state == "given_up":
                return ClaimOutcome.GIVEN_UP
            lease_until = channel.get("lease_until")
            if state == "sending" and channel.get("owner") != owner and lease_until and lease_until > now:
                return ClaimOutcome.HELD_ELSEWHERE
            update: dict[str, Any] = {
                "updated_at": now,
                "channels": {
                    channel_id: {
                        "state": "sending",
                        "owner": owner,
                        "lease_until": now + timedelta(seconds=lease_seconds),
                        "attempts": int(channel.get("attempts") or 0) + 1,
                    }
                },
            }
            if not snapshot.exists:
                update.update(
                    {
                        "dedupe_key": notification.dedupe_key,
                        "kind": notification.kind,
                        "app": notification.app,
                        "environment": notification.environment,
                        "deployment_id": notification.deployment_id,
                        "version": notification.version,
                        "status": notification.status,
                        "created_at": now,
                    }
                )
            transaction.set(ref, update, merge=True)
            return ClaimOutcome.CLAIMED

        return claim_in(self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS))

    def mark_delivered(self, dedupe_key: str, channel_id: str, owner: str) -> None:
        self._finish(dedupe_key, channel_id, owner, {"state": "delivered", "delivered_at": self._now()})

    def release(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self._finish(dedupe_key, channel_id, owner, {"state": "failed", "last_error": error[:1000]})

    def give_up(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self._finish(dedupe_key, channel_id, owner, {"state": "given_up", "last_error": error[:1000]})

    def _finish(self, dedupe_key: str, channel_id: str, owner: str, fields: dict[str, Any]) -> None:
        ref = self._ref(dedupe_key)

        @firestore.transactional
        def finish_in(transaction: firestore.Transaction) -> None:
            snapshot = ref.get(transaction=transaction)
            channel = ((snapshot.to_dict() or {}).get("channels") or {}).get(channel_id) or {}
            if channel.get("state") == "delivered":
                return  # Someone already recorded delivery; never downgrade it.
            if channel.get("owner") not in (None, owner):
                # Our lease ran out and another delivery took over; its outcome is the record.
                log.warning(
                    "notification claim lost to another delivery", extra={"fields": {"channel": channel_id}}
                )
            transaction.set(
                ref,
                {
                    "updated_at": self._now(),
                    "channels": {channel_id: {**fields, "owner": owner, "lease_until": None}},
                },
                merge=True,
            )

        finish_in(self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS))


class FirestoreNotificationFacts:
    """Enriches a notify event from the deployment and release records (read only)."""

    def __init__(self, client: firestore.Client, config: PipelineConfig, clock: Any = None) -> None:
        self._client = client
        self._config = config
        self._now = clock or (lambda: datetime.now(UTC))

    def notification_for(self, request: NotifyRequest) -> Notification:
        environment = (
            self._config.environment(request.app, request.environment)
            if request.app and request.environment
            else None
        )
        base = Notification(
            kind=request.kind,
            dedupe_key=request.dedupe_key,
            status=request.status,
            app=request.app,
            environment=request.environment,
            version=request.version,
            deployment_id=request.deployment_id,
            detail=request.detail,
            url=environment.url if environment and environment.url else None,
        )
        if request.kind != "deployment" or not request.deployment_id:
            return base
        deployment = self._read(DEPLOYMENTS, request.deployment_id)
        if deployment is None:
            # Transient-looking but not worth a retry loop: announce with what the event carries.
            log.warning("deployment record not found; notifying without enrichment")
            return base
        version = request.version or _text(deployment.get("version"))
        changelog = deployment.get("commit_messages")
        if not changelog and base.app and version:
            release = self._read(RELEASES, f"{base.app}@{version}") or {}
            changelog = release.get("commit_messages")
        return Notification(
            kind=base.kind,
            dedupe_key=base.dedupe_key,
            status=base.status,
            app=base.app or _text(deployment.get("app")),
            environment=base.environment or _text(deployment.get("environment")),
            version=version,
            deployment_id=base.deployment_id,
            detail=base.detail,
            commit=_text(deployment.get("commit")),
            changelog=tuple(str(message) for message in (changelog or []) if message),
            duration_seconds=self._duration(deployment, request.status),
            build_url=_text(deployment.get("build_url")),
            triggered_by=_text(deployment.get("triggered_by")),
            rollback_of=_text(deployment.get("rollback_of")),
            url=base.url,
        )

    def _read(self, collection: str, document_id: str) -> dict[str, Any] | None:
        try:
            snapshot = self._client.collection(collection).document(document_id).get()
        except api_exceptions.GoogleAPICallError as exc:
            # Transient (Firestore unavailable): raise so Pub/Sub redelivers the event.
            raise RuntimeError(f"cannot read {collection}/{document_id}: {exc}") from exc
        return snapshot.to_dict() if snapshot.exists else None

    def _duration(self, deployment: Mapping[str, Any], status: str) -> float | None:
        created = deployment.get("created_at")
        if not isinstance(created, datetime):
            return None
        ended: Any = None
        for entry in deployment.get("history") or []:
            if isinstance(entry, Mapping) and entry.get("status") == status:
                ended = entry.get("at")
        if not isinstance(ended, datetime):
            ended = deployment.get("finished_at")
        if not isinstance(ended, datetime):
            ended = self._now()
        return max(0.0, (ended - created).total_seconds())


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
