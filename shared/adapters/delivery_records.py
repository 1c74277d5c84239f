"""Read-only access to the release records for metrics and the dashboard.

Every query is a declared one (`shared.queries`), bounded by app, environment and a time window,
never a whole collection. Nothing here writes: the pipeline's functions are the only writers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore

from shared import queries
from shared.adapters.firestore_documents import deployment_from_document, environment_from_document
from shared.adapters.firestore_store import StoreUnavailable, declared_query
from shared.domain.records import Deployment, EnvironmentState, environment_key

log = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 30.0
MAX_WINDOW_DEPLOYMENTS = 5000
"""A bound on one window's read; far above what a team deploys in the longest window asked for."""


class FirestoreDeliveryRecords:
    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    @classmethod
    def from_environment(cls, project: str) -> FirestoreDeliveryRecords:
        # FIRESTORE_EMULATOR_HOST, when set, points the client at the emulator.
        return cls(firestore.Client(project=project))

    def deployments_since(
        self, app: str, environment: str | None, since: datetime, limit: int = MAX_WINDOW_DEPLOYMENTS
    ) -> list[Deployment]:
        """The deployments created at or after `since`, newest first (of one environment, or all)."""
        if environment is None:
            query = declared_query(
                self._client, queries.APP_DEPLOYMENTS_SINCE, app=app, created_at=since, created_at__op=">="
            )
        else:
            query = declared_query(
                self._client,
                queries.ENVIRONMENT_DEPLOYMENTS_SINCE,
                app=app,
                environment=environment,
                created_at=since,
                created_at__op=">=",
            )
        return list(_deployments(self._stream(query.limit(limit))))

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        ref = self._client.collection(queries.ENVIRONMENTS).document(environment_key(app, environment))
        try:
            snapshot = ref.get(timeout=RPC_TIMEOUT_SECONDS)
        except google_exceptions.GoogleAPICallError as exc:  # transient: Firestore unavailable
            raise StoreUnavailable(f"cannot read {ref.path}: {exc}") from exc
        return environment_from_document(snapshot.to_dict() or {}) if snapshot.exists else None

    def deployment(self, deployment_id: str) -> Deployment | None:
        ref = self._client.collection(queries.DEPLOYMENTS).document(deployment_id)
        try:
            snapshot = ref.get(timeout=RPC_TIMEOUT_SECONDS)
        except google_exceptions.GoogleAPICallError as exc:  # transient: Firestore unavailable
            raise StoreUnavailable(f"cannot read {ref.path}: {exc}") from exc
        if not snapshot.exists:
            return None
        return next(_deployments([snapshot]), None)

    def _stream(self, query: Any) -> list[Any]:
        try:
            return list(query.stream(timeout=RPC_TIMEOUT_SECONDS))
        except google_exceptions.GoogleAPICallError as exc:  # transient, or a missing index: report it
            raise StoreUnavailable(f"cannot list deployments: {exc}") from exc


def _deployments(snapshots: Iterable[Any]) -> Iterator[Deployment]:
    for snapshot in snapshots:
        try:
            yield deployment_from_document(snapshot.id, snapshot.to_dict() or {})
        except (KeyError, ValueError, TypeError) as exc:  # permanent for this record: shown, not fatal
            # One record this code cannot read (written by a newer version, or damaged) must not
            # hide every other one from the metrics and the dashboard.
            log.warning("skipping deployments/%s, which cannot be read: %r", snapshot.id, exc)
