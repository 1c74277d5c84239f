"""Read the release records (CONTRACT §6) into the shapes `releasectl` prints (CONTRACT §5).

Documents become records through the pipeline's own mapping (`shared.adapters.firestore_store`),
so the functions and `releasectl` read every field the same way. Read only: the pipeline's
functions are the only writers. Timestamps are Firestore timestamps in the records and
ISO-8601 UTC strings in the JSON output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from shared import queries
from shared.adapters.firestore_documents import deployment_from_document, environment_from_document
from shared.adapters.firestore_store import declared_query
from shared.config import ENV_PROJECT
from shared.domain.records import Deployment, EnvironmentState, environment_key
from shared.domain.status import AWAITING, IN_PROGRESS, DeploymentStatus
from shared.domain.verification import Verification

RPC_TIMEOUT_SECONDS = 30.0
IN_PROGRESS_STATUSES = tuple(str(status) for status in DeploymentStatus if status in IN_PROGRESS)
"""`status --json`'s `in_progress`, in the order a deployment goes through them."""
AWAITING_STATUSES = tuple(str(status) for status in DeploymentStatus if status in AWAITING)
"""`status --json`'s `awaiting_approval`."""

RecordT = TypeVar("RecordT")


class RecordsUnavailable(RuntimeError):
    """Firestore could not be read (down, no credentials, missing index), or a record could not be
    understood. The operation failed."""


def firestore_client(project: str | None = None) -> firestore.Client:
    """A client for the project in $GOOGLE_CLOUD_PROJECT; honours $FIRESTORE_EMULATOR_HOST."""
    try:
        return firestore.Client(project=project or os.environ.get(ENV_PROJECT) or None)
    except Exception as exc:  # permanent for this run: no project or no credentials configured
        raise RecordsUnavailable(f"cannot create a Firestore client: {exc}") from exc


def iso(value: Any) -> str | None:
    """A timestamp as ISO-8601 UTC text.

    >>> iso(datetime(2026, 1, 5, 10, 0, 9, 120000, tzinfo=UTC))
    '2026-01-05T10:00:09.120000+00:00'
    >>> iso(None) is None
    True
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return None


def _document(client: firestore.Client, collection: str, document_id: str) -> dict[str, Any] | None:
    try:
        snapshot = client.collection(collection).document(document_id).get(timeout=RPC_TIMEOUT_SECONDS)
    except api_exceptions.GoogleAPICallError as exc:  # transient or auth: report and fail this run
        raise RecordsUnavailable(f"cannot read {collection}/{document_id}: {exc}") from exc
    return snapshot.to_dict() if snapshot.exists else None


def _record(path: str, read: Callable[[], RecordT]) -> RecordT:
    try:
        return read()
    except (KeyError, ValueError, TypeError) as exc:  # permanent: a record this version cannot read
        raise RecordsUnavailable(f"cannot understand {path}: {exc!r}") from exc


def get_deployment(client: firestore.Client, deployment_id: str) -> dict[str, Any] | None:
    """The raw document, for tools that look at it field by field (the demo, the benchmarks)."""
    return _document(client, queries.DEPLOYMENTS, deployment_id)


def read_deployment(client: firestore.Client, deployment_id: str) -> Deployment | None:
    document = get_deployment(client, deployment_id)
    if document is None:
        return None
    return _record(
        f"{queries.DEPLOYMENTS}/{deployment_id}", lambda: deployment_from_document(deployment_id, document)
    )


def read_environment(client: firestore.Client, app: str, environment: str) -> EnvironmentState | None:
    key = environment_key(app, environment)
    document = _document(client, queries.ENVIRONMENTS, key)
    if document is None:
        return None
    return _record(f"{queries.ENVIRONMENTS}/{key}", lambda: environment_from_document(document))


def _deployments(snapshots: list[Any]) -> list[Deployment]:
    return [_deployment_of(snapshot) for snapshot in snapshots]


def _deployment_of(snapshot: Any) -> Deployment:
    document = snapshot.to_dict() or {}
    return _record(
        f"{queries.DEPLOYMENTS}/{snapshot.id}", lambda: deployment_from_document(snapshot.id, document)
    )


def went_live_at(deployment: Deployment) -> datetime | None:
    """When the deployment went live: its own field, else its history (records from before the
    field existed), else when it finished."""
    if deployment.went_live_at is not None:
        return deployment.went_live_at
    live = [entry.at for entry in deployment.history if entry.status == DeploymentStatus.LIVE]
    return live[-1] if live else deployment.finished_at


def environment_status(
    client: firestore.Client, app: str, environment: str, url: str | None, preview_url: str | None = None
) -> dict[str, Any]:
    """`releasectl status --json`: what is live, what is on its way (with the preview URL that
    reaches it before the switch, while there is one on its way), what awaits approval."""
    state = read_environment(client, app, environment)
    live: dict[str, Any] | None = None
    if state is not None and state.live_deployment_id:
        deployment = read_deployment(client, state.live_deployment_id)
        live = {
            "version": (deployment.version if deployment else None) or state.live_version,
            "deployment_id": state.live_deployment_id,
            "commit": deployment.commit if deployment else None,
            "since": iso(went_live_at(deployment)) if deployment else None,
            "verification": _verification_summary(deployment.verification if deployment else None),
        }
    query = declared_query(
        client,
        queries.ENVIRONMENT_DEPLOYMENTS_WITH_STATUS,
        app=app,
        environment=environment,
        status=(*IN_PROGRESS_STATUSES, *AWAITING_STATUSES),
    )
    try:
        # Equality and `in` filters alone are served by single-field indexes (no ordering in the
        # query, so no composite index); the few rows are sorted here instead.
        snapshots = list(query.stream(timeout=RPC_TIMEOUT_SECONDS))
    except api_exceptions.GoogleAPICallError as exc:  # transient or missing index: fail this run
        raise RecordsUnavailable(f"cannot list deployments in progress: {exc}") from exc
    deployments = sorted(_deployments(snapshots), key=lambda d: d.created_at)
    in_progress = [
        {"deployment_id": d.deployment_id, "version": d.version, "status": str(d.status)}
        for d in deployments
        if d.status in IN_PROGRESS
    ]
    awaiting_approval = [
        {"deployment_id": d.deployment_id, "version": d.version, "requested_by": d.requested_by}
        for d in deployments
        if d.status in AWAITING
    ]
    return {
        "app": app,
        "environment": environment,
        "url": url,
        "live": live,
        "in_progress": in_progress,
        "awaiting_approval": awaiting_approval,
        "preview_url": preview_url if in_progress else None,
    }


def _verification_summary(verification: Verification | None) -> dict[str, Any] | None:
    """The bake window's state and detail (CONTRACT §6 `verification`), timestamps as text."""
    if verification is None:
        return None
    return {
        "state": str(verification.state),
        "detail": verification.detail,
        "checked_at": iso(verification.checked_at),
    }


def release_row(deployment: Deployment) -> dict[str, Any]:
    """One row of `releasectl releases --json`."""
    return {
        "deployment_id": deployment.deployment_id,
        "version": deployment.version,
        "commit": deployment.commit,
        "status": str(deployment.status),
        "created_at": iso(deployment.created_at),
        "finished_at": iso(deployment.finished_at),
        "rollback_of": deployment.rollback_of,
        "triggered_by": deployment.triggered_by,
        "requested_by": deployment.requested_by,
        "promoted_from": deployment.promoted_from,
    }


def environment_releases(
    client: firestore.Client, app: str, environment: str, limit: int
) -> list[dict[str, Any]]:
    """`releasectl releases --json`: the environment's deployments, newest first.

    On GCP this query needs the composite index (app, environment, created_at DESC) that
    Terraform declares for `queries.ENVIRONMENT_DEPLOYMENTS`.
    """
    query = declared_query(client, queries.ENVIRONMENT_DEPLOYMENTS, app=app, environment=environment).limit(
        limit
    )
    try:
        snapshots = list(query.stream(timeout=RPC_TIMEOUT_SECONDS))
    except api_exceptions.GoogleAPICallError as exc:  # transient or missing index: fail this run
        raise RecordsUnavailable(f"cannot list deployments: {exc}") from exc
    return [release_row(deployment) for deployment in _deployments(snapshots)]


def history_json(deployment: Deployment) -> list[Mapping[str, Any]]:
    """The deployment's history as JSON: `[{status, at, detail}]` in order."""
    return [{"status": str(h.status), "at": iso(h.at), "detail": h.detail} for h in deployment.history]
