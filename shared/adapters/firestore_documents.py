"""Records as CONTRACT §6 documents and back: the one mapping between the domain's records and
Firestore, used by the store, the other Firestore adapters and `releasectl`.

Timestamps are written as timezone-aware datetimes, which Firestore stores as timestamps. Fields
other components add to a document are carried along, never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.cloud import firestore

from shared.domain.records import (
    Approval,
    Deployment,
    EnvironmentState,
    HistoryEntry,
    Release,
)
from shared.domain.release_request import ReleaseRequest, RequestKind
from shared.domain.status import DeploymentStatus
from shared.domain.verification import Verification, VerificationState


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
        "last_polled_at": d.last_polled_at,
        "announce_due_at": d.announce_due_at,
        "request_id": d.request_id,
        "is_rollback": d.is_rollback,
        "superseded": list(d.superseded) or None,
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
    "last_polled_at",
    "announce_due_at",
    "request_id",
    "superseded",
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
        last_polled_at=doc.get("last_polled_at"),
        announce_due_at=doc.get("announce_due_at"),
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
        superseded=tuple(doc.get("superseded") or ()),
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
