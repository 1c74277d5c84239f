"""The Store port on Firestore: records as CONTRACT §6 documents, changes in transactions.

Timestamps are written as timezone-aware datetimes, which Firestore stores as timestamps.
Queries are built from the declarations in `shared.queries`, so the declared list (which
the Terraform indexes are checked against) is exactly what runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.query import Query

from shared import queries
from shared.adapters.firestore_documents import (
    deployment_from_document,
    deployment_write,
    environment_from_document,
    environment_to_document,
    release_from_document,
    release_request_from_document,
    release_request_to_document,
    release_to_document,
)
from shared.adapters.firestore_rpc import FirestoreRpc, TransactionReads, UpdateTime, top_level_paths
from shared.domain.records import (
    Deployment,
    EnvironmentState,
    Release,
    environment_key,
    release_commit_key,
    release_key,
)
from shared.domain.release_request import ReleaseRequest
from shared.domain.status import DeploymentStatus
from shared.domain.verification import VerificationState
from shared.domain.versioning import highest_version
from shared.ports import DeadLetteredEvent, RejectedEvent, TransientError

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 10
REMEMBERED_READS = 256
"""Deployment records whose latest read this store keeps, with its update time, so that an update
right after a read (provisioning, the switch: read, call Compute, then change the record) writes
without reading the record again. Only a starting point: the write still requires that update
time, so a record changed since is read again. A few hundred cover every deployment a function
instance has in hand at once."""

COMMITS_INDEXED = "commits_indexed"
"""apps/{app}: true once every release of the app has its `release_commits` document (an app
whose first release was recorded by this version), so admitting a new commit needs no query of
`releases` for ones recorded before that index existed. Absent or false: the query still runs."""

_RETRYABLE = (
    google_exceptions.Aborted,
    google_exceptions.DeadlineExceeded,
    google_exceptions.ServiceUnavailable,
    google_exceptions.InternalServerError,
    google_exceptions.TooManyRequests,
    google_exceptions.ResourceExhausted,
    google_exceptions.Unknown,
    # The generated client's own retries gave up (UNAVAILABLE and the like for their deadline).
    google_exceptions.RetryError,
)
TRANSIENT_ERRORS = _RETRYABLE
"""Firestore errors worth retrying: every Firestore adapter raises them as StoreUnavailable."""


class StoreUnavailable(TransientError):
    """Firestore failed or the transaction kept conflicting; the step is retried."""


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
    """The Transaction port over a Firestore read-write transaction. Writes are buffered until the
    end, because Firestore refuses reads after writes in a transaction."""

    def __init__(self, store: FirestoreStore, reads: TransactionReads) -> None:
        self._store = store
        self._reads = reads
        self.writes: dict[str, Mapping[str, Any]] = {}
        """Document path → the top-level fields to set (each replaced whole; others stay)."""
        self._highest: dict[str, str | None] = {}
        self._indexed: dict[str, bool] = {}
        self._fetched: dict[str, Mapping[str, Any] | None] = {}
        """Every document this attempt has read or read ahead (path → fields, None if missing).
        Firestore holds each until the transaction ends, so none can have changed since."""

    def _get(self, collection: str, document_id: str) -> Mapping[str, Any] | None:
        path = self._store.document_path(collection, document_id)
        if path not in self._fetched:
            self._fetched[path] = self._reads.get(path)
        return self._fetched[path]

    def read_ahead(
        self,
        *,
        deployments: Sequence[str] = (),
        environments: Sequence[tuple[str, str]] = (),
        commits: Sequence[tuple[str, str]] = (),
    ) -> None:
        paths = [self._store.document_path(queries.DEPLOYMENTS, d) for d in deployments]
        paths += [self._store.document_path(queries.ENVIRONMENTS, environment_key(*e)) for e in environments]
        for app, commit in commits:
            # What release_for_commit and highest_version read first: the commit's index, the app.
            paths.append(self._store.document_path(queries.RELEASE_COMMITS, release_commit_key(app, commit)))
            paths.append(self._store.document_path(queries.APPS, app))
        wanted = [path for path in dict.fromkeys(paths) if path not in self._fetched]
        if wanted:
            self._fetched.update(self._reads.get_all(wanted))

    def _put(self, collection: str, document_id: str, data: Mapping[str, Any]) -> None:
        self.writes[self._store.document_path(collection, document_id)] = data

    def deployment(self, deployment_id: str) -> Deployment | None:
        doc = self._get(queries.DEPLOYMENTS, deployment_id)
        return deployment_from_document(deployment_id, doc) if doc else None

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        doc = self._get(queries.ENVIRONMENTS, environment_key(app, environment))
        return environment_from_document(doc) if doc else None

    def release(self, app: str, version: str) -> Release | None:
        doc = self._get(queries.RELEASES, release_key(app, version))
        return release_from_document(doc) if doc else None

    def release_for_commit(self, app: str, commit: str) -> Release | None:
        # A point read of the commit's index document, existing or not: two admissions of the same
        # new commit both write it, so one re-runs and finds the other's version. A query here
        # would lock a range of `releases` that every app's admission writes into, and the
        # admissions of unrelated apps would wait on each other.
        index = self._get(queries.RELEASE_COMMITS, release_commit_key(app, commit))
        if index is not None and index.get("version"):
            return self.release(app, str(index["version"]))
        if self._app(app).get(COMMITS_INDEXED) is True:
            return None  # every release of the app has its index document: this commit is new
        # Releases recorded before the index existed; immutable once written, so a read outside
        # the transaction is as good as one inside it, and locks nothing.
        query = self._store.query(queries.RELEASE_BY_COMMIT, app=app, commit=commit).limit(1)
        for snapshot in query.stream():
            return release_from_document(snapshot.to_dict() or {})
        return None

    def _app(self, app: str) -> Mapping[str, Any]:
        """apps/{app}, read once per transaction attempt ({} when it does not exist). Reading it in
        the transaction, existing or not, makes two builds that both bump from it conflict, so
        one re-runs and bumps from the other's version."""
        return self._get(queries.APPS, app) or {}

    def highest_version(self, app: str) -> str | None:
        if app not in self._highest:
            doc = self._app(app)
            if doc.get("highest_version"):
                self._highest[app] = doc["highest_version"]
                self._indexed[app] = doc.get(COMMITS_INDEXED) is True
            else:
                # Releases recorded before apps/{app} held the field (or before it existed):
                # derive it from them this once; the release this transaction creates writes it.
                # Outside the transaction (releases never change; the apps/{app} read above is
                # what makes concurrent bumps conflict), so it locks no range of `releases`.
                query = self._store.query(queries.RELEASES_OF_APP, app=app).select(["version"])
                self._highest[app] = highest_version(s.get("version") for s in query.stream())
                # An app with no release at all starts with every release indexed by commit.
                self._indexed[app] = not doc and self._highest[app] is None
        return self._highest[app]

    def put_deployment(self, deployment: Deployment) -> None:
        self._put(queries.DEPLOYMENTS, deployment.deployment_id, deployment_write(deployment))

    def put_environment(self, state: EnvironmentState) -> None:
        self._put(queries.ENVIRONMENTS, state.key, environment_to_document(state))

    def put_release(self, release: Release) -> None:
        self._put(queries.RELEASES, release.key, release_to_document(release))
        # Reads are still allowed here (writes are buffered), so the record only ever rises.
        current = self.highest_version(release.app)
        highest = highest_version([release.version, *([current] if current else [])])
        self._highest[release.app] = highest
        self._put(
            queries.RELEASE_COMMITS,
            release_commit_key(release.app, release.commit),
            {"app": release.app, "commit": release.commit, "version": release.version},
        )
        self._put(
            queries.APPS,
            release.app,
            {
                "app": release.app,
                "highest_version": highest,
                COMMITS_INDEXED: self._indexed.get(release.app, False),
                "updated_at": release.created_at,
            },
        )


class FirestoreStore:
    def __init__(self, client: firestore.Client, rpc: FirestoreRpc | None = None) -> None:
        self._client = client
        # Point reads and transactions, the pipeline's hot path, go through the generated client;
        # queries and one-off creates through the library (shared/adapters/firestore_rpc.py).
        # Both find the database the same way: the emulator at FIRESTORE_EMULATOR_HOST, else
        # Firestore's (default) database with the application's default credentials.
        self._rpc = rpc if rpc is not None else FirestoreRpc.for_project(str(client.project))
        self._remembered: OrderedDict[str, tuple[Deployment, UpdateTime]] = OrderedDict()
        self._remembered_lock = threading.Lock()
        self.rejected_events = client.collection(queries.REJECTED_EVENTS)
        self.dead_lettered_events = client.collection(queries.DEAD_LETTERED_EVENTS)
        self.release_requests = client.collection(queries.RELEASE_REQUESTS)

    @classmethod
    def from_environment(cls, project: str) -> FirestoreStore:
        # FIRESTORE_EMULATOR_HOST, when set, points the client at the emulator.
        return cls(firestore.Client(project=project))

    @property
    def client(self) -> firestore.Client:
        """For other adapters of the same database (the library's connection, one per function
        instance beside the generated client's)."""
        return self._client

    @property
    def rpc(self) -> FirestoreRpc:
        """The generated client's connection, for other adapters of the same database."""
        return self._rpc

    def query(self, declared: queries.FirestoreQuery, **values: Any) -> Query:
        """The declared query with its filter values; the only way this adapter queries."""
        return declared_query(self._client, declared, **values)

    def document_path(self, collection: str, document_id: str) -> str:
        return self._rpc.document_path(collection, document_id)

    def atomically(self, work: Callable[[Any], T]) -> T:
        def attempt(reads: TransactionReads) -> tuple[T, Mapping[str, Mapping[str, Any]]]:
            view = _Transaction(self, reads)
            result = work(view)
            return result, view.writes

        try:
            return self._rpc.run_transaction(attempt, TRANSACTION_ATTEMPTS)
        except google_exceptions.Aborted as exc:  # transient: contention outlasted the attempts
            raise StoreUnavailable(f"Firestore transaction kept conflicting: {exc}") from exc
        except _RETRYABLE as exc:  # transient: Firestore outage or contention
            raise StoreUnavailable(f"Firestore transaction failed: {exc}") from exc

    def update_deployment(
        self, deployment_id: str, change: Callable[[Deployment], Deployment | None]
    ) -> Deployment | None:
        # A compare-and-set on the record's update time: one read and one write (the write alone
        # after this store's own read of the record), where a transaction takes three calls and
        # holds its lock until it ends (on the emulator for a minute when its function is killed
        # in between).
        path = self.document_path(queries.DEPLOYMENTS, deployment_id)
        found, fresh = self._recall(deployment_id), False
        for _attempt in range(TRANSACTION_ATTEMPTS):
            if found is None:
                found, fresh = self._read_deployment(deployment_id), True
                if found is None:
                    return None
            (current, update_time), found = found, None
            changed = change(current)
            if changed is None:
                if fresh:
                    return current
                continue  # nothing to write on what may be an older copy: answer a fresh read
            data = deployment_write(changed)
            try:
                self._rpc.write(path, data, field_paths=top_level_paths(data), last_update=update_time)
            except google_exceptions.FailedPrecondition:  # written since it was read: read it again
                continue
            except _RETRYABLE as exc:  # transient
                raise StoreUnavailable(f"Firestore write failed: {exc}") from exc
            return changed
        raise StoreUnavailable(f"deployment {deployment_id} kept changing while being updated")

    def _read(self, collection: str, document_id: str) -> Mapping[str, Any] | None:
        return self._read_versioned(collection, document_id)[0]

    def _read_versioned(
        self, collection: str, document_id: str
    ) -> tuple[Mapping[str, Any] | None, UpdateTime | None]:
        try:
            return self._rpc.read_versioned(self.document_path(collection, document_id))
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore read failed: {exc}") from exc

    def _stream(self, query: Any) -> list[Any]:
        try:
            return list(query.stream())
        except _RETRYABLE as exc:  # transient
            raise StoreUnavailable(f"Firestore query failed: {exc}") from exc

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        found = self._read_deployment(deployment_id)
        if found is None:
            return None
        with self._remembered_lock:
            self._remembered[deployment_id] = found
            self._remembered.move_to_end(deployment_id)
            while len(self._remembered) > REMEMBERED_READS:
                self._remembered.popitem(last=False)
        return found[0]

    def _read_deployment(self, deployment_id: str) -> tuple[Deployment, UpdateTime] | None:
        """The record and its update time, or None if it does not exist."""
        fields, update_time = self._read_versioned(queries.DEPLOYMENTS, deployment_id)
        if fields is None or update_time is None:
            return None
        return deployment_from_document(deployment_id, fields), update_time

    def _recall(self, deployment_id: str) -> tuple[Deployment, UpdateTime] | None:
        """The remembered read of a record, taken: it serves one update at most."""
        with self._remembered_lock:
            return self._remembered.pop(deployment_id, None)

    def get_environment(self, app: str, environment: str) -> EnvironmentState | None:
        doc = self._read(queries.ENVIRONMENTS, environment_key(app, environment))
        return environment_from_document(doc) if doc else None

    def get_release(self, app: str, version: str) -> Release | None:
        doc = self._read(queries.RELEASES, release_key(app, version))
        return release_from_document(doc) if doc else None

    def released_versions(self, app: str) -> list[str]:
        query = self.query(queries.RELEASES_OF_APP, app=app).select(["version"])
        return [s.get("version") for s in self._stream(query)]

    def deployments_with_status(self, statuses: Sequence[DeploymentStatus]) -> list[Deployment]:
        query = self.query(queries.DEPLOYMENTS_IN_PROGRESS, status=[str(s) for s in statuses])
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def baking_deployments(self) -> list[Deployment]:
        query = self.query(
            queries.BAKING_DEPLOYMENTS,
            status=str(DeploymentStatus.LIVE),
            **{"verification.state": str(VerificationState.PENDING)},
        )
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def deployments_due_for_cleanup(self, now: datetime) -> list[Deployment]:
        query = self.query(queries.DEPLOYMENTS_DUE_FOR_CLEANUP, cleanup_due_at=now)
        return [deployment_from_document(s.id, s.to_dict()) for s in self._stream(query)]

    def deployments_due_for_announcement(self, now: datetime) -> list[Deployment]:
        query = self.query(queries.DEPLOYMENTS_DUE_FOR_ANNOUNCEMENT, announce_due_at=now)
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
        doc = self._read(queries.RELEASE_REQUESTS, request_id)
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
