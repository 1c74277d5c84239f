"""Read the release records (CONTRACT §6) into the shapes `releasectl` prints (CONTRACT §5).

Read only: the pipeline's functions are the only writers. Timestamps are Firestore timestamps in
the records and ISO-8601 UTC strings in the JSON output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.cloud import firestore

from shared import queries
from shared.adapters.firestore_store import declared_query
from shared.config import ENV_PROJECT

DEPLOYMENTS = queries.DEPLOYMENTS
ENVIRONMENTS = queries.ENVIRONMENTS
IN_PROGRESS_STATUSES = ("queued", "provisioning", "cooling_down", "switching")
TERMINAL_STATUSES = ("live", "failed", "cancelled", "retired")
RPC_TIMEOUT_SECONDS = 30.0


class RecordsUnavailable(RuntimeError):
    """Firestore could not be read (down, no credentials, missing index). The operation failed."""


def firestore_client(project: str | None = None) -> firestore.Client:
    """A client for the project in $GOOGLE_CLOUD_PROJECT; honours $FIRESTORE_EMULATOR_HOST."""
    try:
        return firestore.Client(project=project or os.environ.get(ENV_PROJECT) or None)
    except Exception as exc:  # permanent for this run: no project or no credentials configured
        raise RecordsUnavailable(f"cannot create a Firestore client: {exc}") from exc


def iso(value: Any) -> str | None:
    """A Firestore timestamp as ISO-8601 UTC text (`2026-01-05T10:00:09.120000+00:00`)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return None


def get_deployment(client: firestore.Client, deployment_id: str) -> dict[str, Any] | None:
    try:
        snapshot = client.collection(DEPLOYMENTS).document(deployment_id).get(timeout=RPC_TIMEOUT_SECONDS)
    except api_exceptions.GoogleAPICallError as exc:  # transient or auth: report and fail this run
        raise RecordsUnavailable(f"cannot read {DEPLOYMENTS}/{deployment_id}: {exc}") from exc
    return snapshot.to_dict() if snapshot.exists else None


def _environment(client: firestore.Client, app: str, environment: str) -> dict[str, Any] | None:
    try:
        snapshot = (
            client.collection(ENVIRONMENTS).document(f"{app}@{environment}").get(timeout=RPC_TIMEOUT_SECONDS)
        )
    except api_exceptions.GoogleAPICallError as exc:  # transient or auth: report and fail this run
        raise RecordsUnavailable(f"cannot read {ENVIRONMENTS}/{app}@{environment}: {exc}") from exc
    return snapshot.to_dict() if snapshot.exists else None


def _went_live_at(deployment: Mapping[str, Any]) -> Any:
    if isinstance(deployment.get("went_live_at"), datetime):
        return deployment["went_live_at"]
    for entry in reversed(deployment.get("history") or []):
        if isinstance(entry, Mapping) and entry.get("status") == "live":
            return entry.get("at")
    return deployment.get("finished_at")


def environment_status(
    client: firestore.Client, app: str, environment: str, url: str | None, preview_url: str | None = None
) -> dict[str, Any]:
    """`releasectl status --json`: what is live, and what is on its way (with the preview URL that
    reaches it before the switch, while there is one on its way)."""
    env_record = _environment(client, app, environment) or {}
    live: dict[str, Any] | None = None
    live_id = env_record.get("live_deployment_id")
    if live_id:
        deployment = get_deployment(client, live_id) or {}
        live = {
            "version": deployment.get("version") or env_record.get("live_version"),
            "deployment_id": live_id,
            "commit": deployment.get("commit"),
            "since": iso(_went_live_at(deployment)),
            "verification": _verification_summary(deployment.get("verification")),
        }
    query = declared_query(
        client,
        queries.ENVIRONMENT_DEPLOYMENTS_WITH_STATUS,
        app=app,
        environment=environment,
        status=IN_PROGRESS_STATUSES,
    )
    try:
        # Equality and `in` filters alone are served by single-field indexes (no ordering in the
        # query, so no composite index); the few rows are sorted here instead.
        snapshots = list(query.stream(timeout=RPC_TIMEOUT_SECONDS))
    except api_exceptions.GoogleAPICallError as exc:  # transient or missing index: fail this run
        raise RecordsUnavailable(f"cannot list deployments in progress: {exc}") from exc
    rows = [(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]
    rows.sort(key=lambda row: row[1].get("created_at") or datetime.min.replace(tzinfo=UTC))
    in_progress = [
        {"deployment_id": deployment_id, "version": doc.get("version"), "status": doc.get("status")}
        for deployment_id, doc in rows
    ]
    return {
        "app": app,
        "environment": environment,
        "url": url,
        "live": live,
        "in_progress": in_progress,
        "preview_url": preview_url if in_progress else None,
    }


def _verification_summary(verification: Any) -> dict[str, Any] | None:
    """The bake window's state and detail (CONTRACT §6 `verification`), timestamps as text."""
    if not isinstance(verification, Mapping):
        return None
    return {
        "state": verification.get("state"),
        "detail": verification.get("detail"),
        "checked_at": iso(verification.get("checked_at")),
    }


RELEASE_FIELDS = (
    "deployment_id",
    "version",
    "commit",
    "status",
    "created_at",
    "finished_at",
    "rollback_of",
    "triggered_by",
)


def release_row(deployment_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id,
        "version": doc.get("version"),
        "commit": doc.get("commit"),
        "status": doc.get("status"),
        "created_at": iso(doc.get("created_at")),
        "finished_at": iso(doc.get("finished_at")),
        "rollback_of": doc.get("rollback_of"),
        "triggered_by": doc.get("triggered_by"),
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
    return [release_row(snapshot.id, snapshot.to_dict() or {}) for snapshot in snapshots]


def history_entries(deployment: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [entry for entry in deployment.get("history") or [] if isinstance(entry, Mapping)]
