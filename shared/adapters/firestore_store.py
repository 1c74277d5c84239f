"""The Store port on Firestore: records as CONTRACT §6 documents, changes in transactions.

Timestamps are written as timezone-aware datetimes, which Firestore stores as timestamps.
Queries are built from the declarations in `shared.queries`, so the declared list (which
the Terraform indexes are checked against) is exactly what runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.query import Query

from shared import queries
from shared.domain.records import (
    Approval,
    Deployment,
    EnvironmentState,
    HistoryEntry,
    Release,
    environment_key,
    release_commit_key,
    release_key,
)
from shared.domain.release_request import ReleaseRequest, RequestKind
from shared.domain.status import DeploymentStatus
from shared.domain.verification import Verification, VerificationState
from shared.domain.versioning import highest_version
from shared.ports import DeadLetteredEvent, RejectedEvent, TransientError

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 10

_RETRYABLE = (
    google_exceptions.Aborted,
    google_exceptions.DeadlineExceeded,
    google_exceptions.ServiceUnavailable,
    google_exceptions.InternalServerError,
    google_exceptions.TooManyRequests,
    google_exceptions.ResourceExhausted,
    google_exceptions.Unknown,
)
TRANSIENT_ERRORS = _RETRYABLE
"""Firestore errors worth retrying: every Firestore adapter raises them as StoreUnavailable."""


class StoreUnavailable(TransientError):
    """Firestore failed or the transaction kept conflicting; the step is retried."""


# ---- documents <-> records -----------------------------------------------------------------


def deployment_to_document(d: Deployment) -> dict[str, Any]:
    document = {
        # CONTRACT §6
        "app": d.app,
        "environment": d.environment,
        "version": d.version,
        "commit": d.commit,
        "build_id": d.build_id,
        "artifact": d.artifact,
        "status": str(d.status),
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "finished_at": d.finished_at,
        "rollback_of": d.rollback_of,
        "triggered_by": d.triggered_by,
        "history": [{"status": str(h.status), "at": h.at, "detail": h.detail} for h in d.history],
        # CONTRACT §6, v2: verified identities only (null for a CI build), every decision.
        "requested_by": d.requested_by,
        "promoted_from": d.promoted_from,
        "approvals": [
            {"by": a.by, "decision": a.decision, "at": a.at, "reason": a.reason} for a in d.approvals
        ],
        "verification": verification_to_document(d.verification),
        # CONTRACT v2 §6
        "artifact_sha256": d.artifact_sha256,
        "committed_at": d.committed_at,
    }
    # Beyond the contract (additions only). Unset ones are left out rather than written as null:
    # the rollback's history query orders by `went_live_at`, and Firestore sorts nulls first.
    extra = {
        "deployment_id": d.deployment_id,
        "reason": d.reason,
        "build_url": d.build_url,
        "branch": d.branch,
        "commit_messages": list(d.commit_messages),
        # Stored as JSON text: unknown fields of the event may hold shapes Firestore cannot
        # (arrays of arrays), and rollback republishes it byte for byte in meaning.
        "event": json.dumps(dict(d.event), sort_keys=True),
        "started_at": d.started_at,
        "not_before": d.not_before,
        "went_live_at": d.went_live_at,
        "retired_at": d.retired_at,
        "replaced_deployment_id": d.replaced_deployment_id,
        "instance_template": d.instance_template,
        "instance_group": d.instance_group,
        "cleanup_due_at": d.cleanup_due_at,
        "resources_deleted_at": d.resources_deleted_at,
        "adopted_by": d.adopted_by,
        "last_kick_at": d.last_kick_at,
        "request_id": d.request_id,
        "is_rollback": d.is_rollback,
    }
    document.update({k: v for k, v in extra.items() if v is not None})
    return document


DEPLOYMENT_OPTIONAL_FIELDS = (
    "reason",
    "build_url",
    "branch",
    "started_at",
    "not_before",
    "went_live_at",
    "retired_at",
    "replaced_deployment_id",
    "instance_template",
    "instance_group",
    "cleanup_due_at",
    "resources_deleted_at",
    "adopted_by",
    "last_kick_at",
    "request_id",
)
"""Written only when set, so a cleared one must be deleted explicitly."""


def deployment_write(d: Deployment) -> dict[str, Any]:
    """The merge-write of a deployment: its fields, deletes for cleared optional ones. Fields
    other components may add to the document are left alone."""
    document = deployment_to_document(d)
    for key in DEPLOYMENT_OPTIONAL_FIELDS:
        document.setdefault(key, firestore.DELETE_FIELD)
    return document


def deployment_from_document(deployment_id: str, doc: Mapping[str, Any]) -> Deployment:
    event_text = doc.get("event") or "{}"
    return Deployment(
        deployment_id=deployment_id,
        app=doc["app"],
        environment=doc["environment"],
        version=doc["version"],
        commit=doc["commit"],
        build_id=doc["build_id"],
        artifact=doc["artifact"],
        status=DeploymentStatus(doc["status"]),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        history=tuple(
            HistoryEntry(DeploymentStatus(h["status"]), h["at"], h.get("detail") or "")
            for h in doc.get("history", [])
        ),
        event=json.loads(event_text) if isinstance(event_text, str) else dict(event_text),
        finished_at=doc.get("finished_at"),
        rollback_of=doc.get("rollback_of"),
        triggered_by=doc.get("triggered_by"),
        reason=doc.get("reason"),
        build_url=doc.get("build_url"),
        branch=doc.get("branch"),
        commit_messages=tuple(doc.get("commit_messages") or ()),
        started_at=doc.get("started_at"),
        not_before=doc.get("not_before"),
        went_live_at=doc.get("went_live_at"),
        retired_at=doc.get("retired_at"),
        replaced_deployment_id=doc.get("replaced_deployment_id"),
        instance_template=doc.get("instance_template"),
        instance_group=doc.get("instance_group"),
        cleanup_due_at=doc.get("cleanup_due_at"),
        resources_deleted_at=doc.get("resources_deleted_at"),
        adopted_by=doc.get("adopted_by"),
        last_kick_at=doc.get("last_kick_at"),
        artifact_sha256=doc.get("artifact_sha256") or "",
        committed_at=doc.get("committed_at"),
        verification=verification_from_document(doc.get("verification")),
        requested_by=doc.get("requested_by"),
        promoted_from=doc.get("promoted_from"),
        approvals=tuple(
            Approval(by=a["by"], decision=a["decision"], at=a["at"], reason=a.get("reason"))
            for a in doc.get("approvals") or []
        ),
        request_id=doc.get("request_id"),
        # Records written before the field existed: then only a replaced deployment told.
        is_rollback=bool(doc.get("is_rollback")) or doc.get("rollback_of") is not None,
    )


def release_request_to_document(r: ReleaseRequest) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "kind": str(r.kind),
        "app": r.app,
        "environment": r.environment,
        "build_id": r.build_id,
        "version": r.version,
        "commit": r.commit,
        "artifact": r.artifact,
        "requested_by": r.requested_by,
        "created_at": r.created_at,
        "reason": r.reason,
        "rollback_of": r.rollback_of,
        "promoted_from": r.promoted_from,
        "source_deployment_id": r.source_deployment_id,
        "artifact_sha256": r.artifact_sha256,
    }


def release_request_from_document(doc: Mapping[str, Any]) -> ReleaseRequest:
    return ReleaseRequest(
        request_id=doc["request_id"],
        kind=RequestKind(doc["kind"]),
        app=doc["app"],
        environment=doc["environment"],
        build_id=doc["build_id"],
        version=doc["version"],
        commit=doc["commit"],
        artifact=doc["artifact"],
        requested_by=doc["requested_by"],
        created_at=doc["created_at"],
        reason=doc.get("reason"),
        rollback_of=doc.get("rollback_of"),
        promoted_from=doc.get("promoted_from"),
        source_deployment_id=doc.get("source_deployment_id"),
        artifact_sha256=doc.get("artifact_sha256") or "",
    )


def verification_to_document(v: Verification | None) -> dict[str, Any] | None:
    """CONTRACT §6: null, or {state, detail, checked_at} plus what was measured."""
    if v is None:
        return None
    return {
        "state": str(v.state),
        "detail": v.detail,
        "checked_at": v.checked_at,
        "ends_at": v.ends_at,
        "requests": v.requests,
        "server_errors": v.server_errors,
        "error_ratio": v.error_ratio,
        "metrics": v.metrics,
    }


def verification_from_document(doc: Any) -> Verification | None:
    if not isinstance(doc, Mapping):
        return None
    return Verification(
        state=VerificationState(doc["state"]),
        detail=doc.get("detail") or "",
        checked_at=doc["checked_at"],
        ends_at=doc.get("ends_at") or doc["checked_at"],
        requests=doc.get("requests"),
        server_errors=doc.get("server_errors"),
        metrics=bool(doc.get("metrics", True)),
    )


def release_to_document(r: Release) -> dict[str, Any]:
    return {
        "app": r.app,
        "version": r.version,
        "commit": r.commit,
        "artifact": r.artifact,
        "commit_messages": list(r.commit_messages),
        "created_at": r.created_at,
        "artifact_sha256": r.artifact_sha256,
    }


def release_from_document(doc: Mapping[str, Any]) -> Release:
    return Release(
        app=doc["app"],
        version=doc["version"],
        commit=doc["commit"],
        artifact=doc["artifact"],
        commit_messages=tuple(doc.get("commit_messages") or ()),
        created_at=doc["created_at"],
        artifact_sha256=doc.get("artifact_sha256") or "",
    )


_ENVIRONMENT_FIELDS = {
    "awaiting_deployment_id",
    "app",
    "environment",
    "live_deployment_id",
    "live_version",
    "active_deployment_id",
    "locked_at",
    "queue",
    "updated_at",
}


def environment_to_document(e: EnvironmentState) -> dict[str, Any]:
    return {
        **dict(e.extra),
        "app": e.app,
        "environment": e.environment,
        "live_deployment_id": e.live_deployment_id,
        "live_version": e.live_version,
        "active_deployment_id": e.active_deployment_id,
        "locked_at": e.locked_at,
        "queue": list(e.queue),
        "updated_at": e.updated_at,
        "awaiting_deployment_id": e.awaiting_deployment_id,
    }


def environment_from_document(doc: Mapping[str, Any]) -> EnvironmentState:
    return EnvironmentState(
        app=doc["app"],
        environment=doc["environment"],
        live_deployment_id=doc.get("live_deployment_id"),
        live_version=doc.get("live_version"),
        active_deployment_id=doc.get("active_deployment_id"),
        locked_at=doc.get("locked_at"),
        queue=tuple(doc.get("queue") or ()),
        updated_at=doc.get("updated_at"),
        awaiting_deployment_id=doc.get("awaiting_deployment_id"),
        # Fields other components add to the document are carried along, never dropped.
        extra={k: v for k, v in doc.items() if k not in _ENVIRONMENT_FIELDS},
    )


def document_id(text: str) -> str:
    """A Firestore-safe document id for an external identifier (message ids, event ids)."""
    safe = text.replace("/", "_")
    if safe in {"", ".", ".."} or (safe.startswith("__") and safe.endswith("__")):
        safe = f"id-{safe}"
    return safe[:1500]


def declared_query(client: firestore.Client, declared: queries.FirestoreQuery, **values: Any) -> Query:
    """Build a query from its declaration in `shared.queries`, with the filter values by field.

    Everything that queries Firestore (the store, releasectl) builds its queries here, so the
    declared list, which the Terraform indexes are checked against, is exactly what runs.
    A range field's operator defaults to `<=`; pass `<field>__op` to choose another.
    """
    query: Any = client.collection(declared.collection)
    for field in declared.equality:
        query = query.where(filter=FieldFilter(field, "==", values[field]))
    for field in declared.membership:
        query = query.where(filter=FieldFilter(field, "in", list(values[field])))
    for field in declared.range:
        query = query.where(filter=FieldFilter(field, values.get(f"{field}__op", "<="), values[field]))
    for field, direction in declared.order_by:
        query = query.order_by(
            field,
            direction=firestore.Query.DESCENDING if direction == "DESCENDING" else firestore.Query.ASCENDING,
        )
    return query


# ---- the store -----------------------------------------------------------------------------


class _Transaction:
    """The Transaction port over a Firestore transaction. Writes are buffered until the end,
    because Firestore refuses reads after writes in a transaction."""

    def __init__(self, store: FirestoreStore, transaction: firestore.Transaction) -> None:
        self._store = store
        self._transaction = transaction
        self._writes: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._highest: dict[str, str | None] = {}

    def _get(self, ref: Any) -> Mapping[str, Any] | None:
        snapshot = next(iter(self._transaction.get(ref)), None)
        return snapshot.to_dict() if snapshot is not None and snapshot.exists else None

    def deployment(self, deployment_id: str) -> Deployment | None:
        doc = self._get(self._store.deployments.document(deployment_id))
        return deployment_from_document(deployment_id, doc) if doc else None

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        doc = self._get(self._store.environments.document(environment_key(app, environment)))
        return environment_from_document(doc) if doc else None

    def release(self, app: str, version: str) -> Release | None:
        doc = self._get(self._store.releases.document(release_key(app, version)))
        return release_from_document(doc) if doc else None

    def release_for_commit(self, app: str, commit: str) -> Release | None:
        # A point read of the commit's index document, existing or not: two admissions of the same
        # new commit both write it, so one re-runs and finds the other's version. A query here
        # would lock a range of `releases` that every app's admission writes into, and the
        # admissions of unrelated apps would wait on each other.
        index = self._get(self._store.release_commits.document(release_commit_key(app, commit)))
        if index is not None and index.get("version"):
            return self.release(app, str(index["version"]))
        # Releases recorded before the index existed; immutable once written, so a read outside
        # the transaction is as good as one inside it, and locks nothing.
        query = self._store.query(queries.RELEASE_BY_COMMIT, app=app, commit=commit).limit(1)
        for snapshot in query.stream():
            return release_from_document(snapshot.to_dict() or {})
        return None

    def highest_version(self, app: str) -> str | None:
        if app not in self._highest:
            # Reading apps/{app} in the transaction, existing or not, makes two builds that
            # both bump from it conflict, so one re-runs and bumps from the other's version.
            doc = self._get(self._store.apps.document(app))
            if doc is not None and doc.get("highest_version"):
                self._highest[app] = doc["highest_version"]
            else:
                # Releases recorded before apps/{app} held the field (or before it existed):
                # derive it from them this once; the release this transaction creates writes it.
                # Outside the transaction (releases never change; the apps/{app} read above is
                # what makes concurrent bumps conflict), so it locks no range of `releases`.
                query = self._store.query(queries.RELEASES_OF_APP, app=app).select(["version"])
                self._highest[app] = highest_version(s.get("version") for s in query.stream())
        return self._highest[app]

    def put_deployment(self, deployment: Deployment) -> None:
        ref = self._store.deployments.document(deployment.deployment_id)
        self._writes[ref.path] = (ref, deployment_write(deployment))

    def put_environment(self, state: EnvironmentState) -> None:
        ref = self._store.environments.document(state.key)
        self._writes[ref.path] = (ref, environment_to_document(state))

    def put_release(self, release: Release) -> None:
        ref = self._store.releases.document(release.key)
        self._writes[ref.path] = (ref, release_to_document(release))
        # Reads are still allowed here (writes are buffered), so the record only ever rises.
        current = self.highest_version(release.app)
        highest = highest_version([release.version, *([current] if current else [])])
        self._highest[release.app] = highest
        commit_ref = self._store.release_commits.document(release_commit_key(release.app, release.commit))
        self._writes[commit_ref.path] = (
            commit_ref,
            {"app": release.app, "commit": release.commit, "version": release.version},
        )
        app_ref = self._store.apps.document(release.app)
        self._writes[app_ref.path] = (
            app_ref,
            {"app": release.app, "highest_version": highest, "updated_at": release.created_at},
        )

    def commit_writes(self) -> None:
        for ref, data in self._writes.values():
            # Merge: whole known fields are replaced (history included); foreign fields stay.
            self._transaction.set(ref, data, merge=True)


class FirestoreStore:
    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self.deployments = client.collection(queries.DEPLOYMENTS)
        self.releases = client.collection(queries.RELEASES)
        self.apps = client.collection(queries.APPS)
        self.release_commits = client.collection(queries.RELEASE_COMMITS)
        self.environments = client.collection(queries.ENVIRONMENTS)
        self.rejected_events = client.collection(queries.REJECTED_EVENTS)
        self.dead_lettered_events = client.collection(queries.DEAD_LETTERED_EVENTS)
        self.release_requests = client.collection(queries.RELEASE_REQUESTS)

    @classmethod
    def from_environment(cls, project: str) -> FirestoreStore:
        # FIRESTORE_EMULATOR_HOST, when set, points the client at the emulator.
        return cls(firestore.Client(project=project))

    @property
    def client(self) -> firestore.Client:
        """For other adapters of the same database (one connection per function instance)."""
        return self._client

    def query(self, declared: queries.FirestoreQuery, **values: Any) -> Query:
        """The declared query with its filter values; the only way this adapter queries."""
        return declared_query(self._client, declared, **values)

    def atomically(self, work: Callable[[Any], T]) -> T:
        @firestore.transactional
        def run(transaction: firestore.Transaction) -> T:
            view = _Transaction(self, transaction)
            result = work(view)
            view.commit_writes()
            return result

        try:
            return run(self._client.transaction(max_attempts=TRANSACTION_ATTEMPTS))
        except _RETRYABLE as exc:  # transient: Firestore outage or contention
            raise StoreUnavailable(f"Firestore transaction failed: {exc}") from exc
        except ValueError as exc:  # transient if contention outlasted the attempts; else not ours to judge
            if isinstance(exc.__cause__, google_exceptions.Aborted):
                raise StoreUnavailable(f"Firestore transaction kept conflicting: {exc}") from exc
            raise

    def _read(self, ref: Any) -> Mapping[str, Any] | None:
        try:
            snapshot = ref.get()
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore read failed: {exc}") from exc
        return snapshot.to_dict() if snapshot.exists else None

    def _stream(self, query: Any) -> list[Any]:
        try:
            return list(query.stream())
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore query failed: {exc}") from exc

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        doc = self._read(self.deployments.document(deployment_id))
        return deployment_from_document(deployment_id, doc) if doc else None

    def get_environment(self, app: str, environment: str) -> EnvironmentState | None:
        doc = self._read(self.environments.document(environment_key(app, environment)))
        return environment_from_document(doc) if doc else None

    def get_release(self, app: str, version: str) -> Release | None:
        doc = self._read(self.releases.document(release_key(app, version)))
        return release_from_document(doc) if doc else None

    def released_versions(self, app: str) -> list[str]:
        query = self.query(queries.RELEASES_OF_APP, app=app).select(["version"])
        return [s.get("version") for s in self._stream(query)]

    def deployments_with_status(self, statuses: Sequence[DeploymentStatus]) -> list[Deployment]:
        query = self.query(queries.DEPLOYMENTS_IN_PROGRESS, status=[str(s) for s in statuses])
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def deployments_due_for_cleanup(self, now: datetime) -> list[Deployment]:
        query = self.query(queries.DEPLOYMENTS_DUE_FOR_CLEANUP, cleanup_due_at=now)
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def live_history(self, app: str, environment: str, limit: int = 50) -> list[Deployment]:
        query = self.query(queries.LIVE_HISTORY, app=app, environment=environment).limit(limit)
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def deployments_of_environment(
        self, app: str, environment: str, statuses: Sequence[DeploymentStatus]
    ) -> list[Deployment]:
        query = self.query(
            queries.ENVIRONMENT_DEPLOYMENTS_WITH_STATUS,
            app=app,
            environment=environment,
            status=[str(s) for s in statuses],
        )
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def create_release_request(self, request: ReleaseRequest) -> None:
        ref = self.release_requests.document(request.request_id)
        try:
            ref.create(release_request_to_document(request))
        except google_exceptions.AlreadyExists as exc:  # permanent: ids are random, so this is a bug
            raise ValueError(f"release request {request.request_id} already exists") from exc
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore write failed: {exc}") from exc

    def get_release_request(self, request_id: str) -> ReleaseRequest | None:
        doc = self._read(self.release_requests.document(request_id))
        return release_request_from_document(doc) if doc else None

    def record_rejected(self, event: RejectedEvent) -> None:
        self._create(
            self.rejected_events.document(document_id(event.event_id)),
            {
                "event_id": event.event_id,
                "topic": event.topic,
                "reason": event.reason,
                "payload": event.payload,
                "attributes": dict(event.attributes),
                "received_at": event.received_at,
            },
        )

    def record_dead_lettered(self, event: DeadLetteredEvent) -> None:
        self._create(
            self.dead_lettered_events.document(document_id(event.message_id)),
            {
                "message_id": event.message_id,
                "topic": event.topic,
                "subscription": event.subscription,
                "delivery_attempts": event.delivery_attempts,
                "payload": event.payload,
                "attributes": dict(event.attributes),
                "received_at": event.received_at,
                **dict(event.extra),
            },
        )

    def _create(self, ref: Any, data: dict[str, Any]) -> None:
        try:
            ref.create(data)
        except google_exceptions.AlreadyExists:  # permanent and expected: a redelivery, already recorded
            return
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore write failed: {exc}") from exc
