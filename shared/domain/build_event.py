"""The `build-succeeded` message (CONTRACT §3): parsing and validation.

A message that breaks a rule is permanent bad input: the caller records it as rejected and
acknowledges it. `rollback_of` and `reason` are internal fields that only the rollback
function sets when it republishes a release's event. Every pattern must match the whole
string (`fullmatch`): with `match` and `$`, a value with a trailing newline would pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared.domain.identifiers import NAME_PATTERN
from shared.domain.versioning import Bump

MAX_MESSAGE_BYTES = 64 * 1024
# Used with `fullmatch` only: the whole value must match, a trailing newline included.
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
ARTIFACT_PATTERN = re.compile(r"(?:gs://[a-z0-9][a-z0-9._-]{1,221}/|file:///)\S+\.(?:tar\.gz|tgz)")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
DEPLOYMENT_ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,79}")
RFC3339_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
MAX_BUILD_ID = 128
MAX_TEXT = 2048
MAX_COMMIT_MESSAGES = 500
_KNOWN_FIELDS = (
    "app",
    "environment",
    "commit",
    "build_id",
    "artifact",
    "artifact_sha256",
    "committed_at",
    "branch",
    "commit_messages",
    "bump",
    "build_url",
    "triggered_by",
    "rollback_of",
    "reason",
)


class InvalidBuildEvent(ValueError):
    """The message breaks a CONTRACT §3 rule. `reason` says which, for the rejected record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BuildSucceeded:
    app: str
    environment: str
    commit: str
    build_id: str
    artifact: str
    artifact_sha256: str
    """SHA-256 of the artifact file, 64 lowercase hex: what the instance checks before unpacking."""
    branch: str | None = None
    commit_messages: tuple[str, ...] = ()
    bump: Bump | None = None
    build_url: str | None = None
    triggered_by: str | None = None
    rollback_of: str | None = None
    reason: str | None = None
    committed_at: datetime | None = None
    """When the commit was made (timezone-aware), as CI reports it: the start of the lead time."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Unknown fields: kept (so a republished event carries them) but ignored."""

    def to_payload(self) -> dict[str, Any]:
        """The JSON object this event is published as; parsing it gives the same event back."""
        payload: dict[str, Any] = dict(self.extra)
        payload.update(
            app=self.app,
            environment=self.environment,
            commit=self.commit,
            build_id=self.build_id,
            artifact=self.artifact,
            artifact_sha256=self.artifact_sha256,
        )
        optional: dict[str, Any] = {
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "branch": self.branch,
            "commit_messages": list(self.commit_messages) if self.commit_messages else None,
            "bump": str(self.bump) if self.bump else None,
            "build_url": self.build_url,
            "triggered_by": self.triggered_by,
            "rollback_of": self.rollback_of,
            "reason": self.reason,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        return payload

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        """Data and attributes, ready to publish on `build-succeeded`."""
        data = json.dumps(self.to_payload(), sort_keys=True, separators=(",", ":")).encode()
        return data, {"app": self.app, "environment": self.environment}

    def as_rollback(
        self, *, build_id: str, rollback_of: str, triggered_by: str, reason: str | None
    ) -> BuildSucceeded:
        """The same release, republished as a rollback: new build id, marked, attributed."""
        return replace(
            self,
            build_id=build_id,
            rollback_of=rollback_of,
            triggered_by=triggered_by,
            reason=reason,
            bump=None,
        )


def parse_build_succeeded(data: bytes, attributes: Mapping[str, str]) -> BuildSucceeded:
    """Validate a `build-succeeded` message, or raise `InvalidBuildEvent` saying why."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidBuildEvent(f"message is {len(data)} bytes, more than the {MAX_MESSAGE_BYTES} allowed")
    try:
        raw: Any = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:  # permanent: bad input
        raise InvalidBuildEvent(f"message is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:  # permanent: bad input
        raise InvalidBuildEvent(f"message is not JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(raw, dict):
        raise InvalidBuildEvent(f"message is a JSON {type(raw).__name__}, not an object")
    return parse_build_payload(raw, attributes)


def parse_build_payload(
    raw: Mapping[str, Any], attributes: Mapping[str, str] | None = None
) -> BuildSucceeded:
    """Validate an already decoded payload (e.g. a stored one); attributes are checked if given."""
    app = _name(raw, "app")
    environment = _name(raw, "environment")
    if attributes is not None:
        for key, value in (("app", app), ("environment", environment)):
            if key not in attributes:
                raise InvalidBuildEvent(f"attribute {key!r} is missing (it must mirror the body)")
            if attributes[key] != value:
                raise InvalidBuildEvent(
                    f"attribute {key}={attributes[key]!r} does not match the body's {key}={value!r}"
                )
    commit = _string(raw, "commit", required=True)
    if not COMMIT_PATTERN.fullmatch(commit):
        raise InvalidBuildEvent("commit: must be 40 lowercase hex characters")
    build_id = _string(raw, "build_id", required=True)
    if not 1 <= len(build_id) <= MAX_BUILD_ID:
        raise InvalidBuildEvent(f"build_id: must be 1-{MAX_BUILD_ID} characters")
    artifact = _string(raw, "artifact", required=True)
    if not ARTIFACT_PATTERN.fullmatch(artifact):
        raise InvalidBuildEvent("artifact: must be a gs://bucket/… or file:///… URL of a .tar.gz")
    artifact_sha256 = _string(raw, "artifact_sha256", required=True)
    if not SHA256_PATTERN.fullmatch(artifact_sha256):
        raise InvalidBuildEvent(
            "artifact_sha256: must be 64 lowercase hex characters (the artifact's SHA-256)"
        )
    bump_text = _optional_string(raw, "bump")
    bump: Bump | None = None
    if bump_text is not None:
        try:
            bump = Bump(bump_text)
        except ValueError as exc:  # permanent: bad input
            raise InvalidBuildEvent("bump: must be major, minor or patch") from exc
    rollback_of = _optional_string(raw, "rollback_of")
    if rollback_of is not None and not DEPLOYMENT_ID_PATTERN.fullmatch(rollback_of):
        raise InvalidBuildEvent("rollback_of: not a deployment id")
    return BuildSucceeded(
        app=app,
        environment=environment,
        commit=commit,
        build_id=build_id,
        artifact=artifact,
        artifact_sha256=artifact_sha256,
        branch=_optional_string(raw, "branch"),
        commit_messages=_messages(raw),
        bump=bump,
        build_url=_optional_string(raw, "build_url"),
        triggered_by=_optional_string(raw, "triggered_by"),
        rollback_of=rollback_of,
        reason=_optional_string(raw, "reason"),
        committed_at=_committed_at(raw),
        extra={k: v for k, v in raw.items() if k not in _KNOWN_FIELDS},
    )


def _string(raw: Mapping[str, Any], key: str, *, required: bool) -> str:
    if key not in raw or raw[key] is None:
        if required:
            raise InvalidBuildEvent(f"{key}: required")
        return ""
    value = raw[key]
    if not isinstance(value, str):
        raise InvalidBuildEvent(f"{key}: must be a string, got {type(value).__name__}")
    return value


def _optional_string(raw: Mapping[str, Any], key: str) -> str | None:
    value = _string(raw, key, required=False)
    if len(value) > MAX_TEXT:
        raise InvalidBuildEvent(f"{key}: longer than {MAX_TEXT} characters")
    return value or None


def _name(raw: Mapping[str, Any], key: str) -> str:
    value = _string(raw, key, required=True)
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidBuildEvent(f"{key}: {value!r} must match {NAME_PATTERN.pattern}")
    return value


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time with its offset, as an aware datetime; ValueError for anything else.

    >>> parse_rfc3339("2026-01-05T10:00:09+01:00").isoformat()
    '2026-01-05T10:00:09+01:00'
    >>> parse_rfc3339("2026-01-05T09:00:09.5Z").utcoffset()
    datetime.timedelta(0)
    >>> parse_rfc3339("2026-01-05T10:00:09")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 time with a timezone: '2026-01-05T10:00:09'
    """
    if not RFC3339_PATTERN.fullmatch(text):
        raise ValueError(f"not an RFC 3339 time with a timezone: {text!r}")
    normalised = text.upper().replace("Z", "+00:00")
    whole, _, rest = normalised.partition(".")
    if rest:
        # Python parses at most microseconds: keep six digits of the fraction, then the offset.
        digits = rest[: len(rest) - 6]
        normalised = f"{whole}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
    return datetime.fromisoformat(normalised)


def _committed_at(raw: Mapping[str, Any]) -> datetime | None:
    text = _optional_string(raw, "committed_at")
    if text is None:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError as exc:  # permanent: bad input (also an impossible date such as 02-30)
        raise InvalidBuildEvent(
            f"committed_at: must be an RFC 3339 time with a timezone, got {text!r}"
        ) from exc


def _messages(raw: Mapping[str, Any]) -> tuple[str, ...]:
    value = raw.get("commit_messages")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise InvalidBuildEvent("commit_messages: must be a list of strings")
    if len(value) > MAX_COMMIT_MESSAGES:
        raise InvalidBuildEvent(f"commit_messages: more than {MAX_COMMIT_MESSAGES} messages")
    return tuple(value)
