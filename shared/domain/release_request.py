"""Release requests: the proof behind the fields only the pipeline's HTTP functions may set.

Anyone allowed to publish `build-succeeded` (CI) can put anything in a message, so the message
itself proves nothing about who asked for a rollback or a promotion. The HTTP functions verify
the caller's identity token, then write a release request record (Firestore) holding the
verified identity, the target and the release; the message they publish names that record by
id. Admission reads the record and takes every authority field (`requested_by`, `rollback_of`,
`promoted_from`, `reason`) from it, never from the message. The publisher of `build-succeeded`
cannot write records, and cannot guess an id (128 random bits), so it cannot forge one; a
message that carries authority fields itself is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

REQUEST_ID_PATTERN = re.compile(r"^[0-9a-f]{32}\Z")
"""A request id: 32 lowercase hex characters (a random UUID without dashes)."""


class RequestKind(StrEnum):
    ROLLBACK = "rollback"
    PROMOTION = "promotion"


class ProvenanceRefused(ValueError):
    """A message's claim of provenance does not hold. Permanent: the message is rejected."""


@dataclass(frozen=True)
class ReleaseRequest:
    """What an HTTP function verified and asked for; written once, never changed."""

    request_id: str
    kind: RequestKind
    app: str
    environment: str
    build_id: str
    """The build id of the message it publishes, so the request makes exactly one deployment."""
    version: str
    commit: str
    artifact: str
    requested_by: str
    """The verified e-mail of the identity token's holder."""
    created_at: datetime
    reason: str | None = None
    rollback_of: str | None = None
    promoted_from: str | None = None
    source_deployment_id: str | None = None
    """The deployment whose release this request deploys again."""
    artifact_sha256: str = ""
    """The release's digest: the message must carry the same one (empty for a release recorded
    before digests existed)."""

    @property
    def is_rollback(self) -> bool:
        return self.kind is RequestKind.ROLLBACK


def build_id_for(kind: RequestKind, request_id: str) -> str:
    """The build id a request's message carries: readable, and unique per request.

    >>> build_id_for(RequestKind.PROMOTION, "0" * 32)
    'promotion-00000000000000000000000000000000'
    """
    return f"{kind}-{request_id}"


def check_request_matches(
    request: ReleaseRequest,
    *,
    app: str,
    environment: str,
    build_id: str,
    commit: str,
    artifact: str,
    artifact_sha256: str = "",
) -> None:
    """Raise `ProvenanceRefused` unless the message is the one the request's function published.

    >>> from datetime import timezone
    >>> request = ReleaseRequest("0" * 32, RequestKind.ROLLBACK, "hello", "staging",
    ...     "rollback-" + "0" * 32, "1.0.0", "a" * 40, "gs://b/a.tar.gz", "ada@example.com",
    ...     datetime(2026, 1, 1, tzinfo=timezone.utc))
    >>> check_request_matches(request, app="hello", environment="production",
    ...     build_id=request.build_id, commit="a" * 40, artifact="gs://b/a.tar.gz")
    Traceback (most recent call last):
    ...
    shared.domain.release_request.ProvenanceRefused: release request 00000000000000000000000000000000 is for hello/staging, not hello/production
    """
    if (request.app, request.environment) != (app, environment):
        raise ProvenanceRefused(
            f"release request {request.request_id} is for {request.app}/{request.environment},"
            f" not {app}/{environment}"
        )
    mismatched = [
        name
        for name, expected, actual in (
            ("build_id", request.build_id, build_id),
            ("commit", request.commit, commit),
            ("artifact", request.artifact, artifact),
            ("artifact_sha256", request.artifact_sha256 or artifact_sha256, artifact_sha256),
        )
        if expected != actual
    ]
    if mismatched:
        raise ProvenanceRefused(
            f"release request {request.request_id} does not match the message's {', '.join(mismatched)}"
        )
