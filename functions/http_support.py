"""What the release-control HTTP functions (`promote`, `approve`) share: reading a bounded JSON
body, verifying the caller's identity token, and answering.

Every malformed body is a 400, never a 500: too large, not UTF-8, not JSON, nested too deep for
the parser, not an object, unknown or mistyped fields. The token is checked before the body is
read, so an anonymous caller learns nothing about the body's rules (401 first).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flask

from shared.auth import (
    Caller,
    CertificatesUnavailableError,
    InvalidTokenError,
    bearer_token,
    caller_allowed,
    verify_identity_token,
)
from shared.domain.versioning import is_version

MAX_BODY_BYTES = 16 * 1024
"""Far more than any documented body needs; anything larger is refused unread."""
MAX_REASON = 500


class BadRequest(ValueError):
    """The body or one of its fields is malformed (400)."""


def answer(status: int, body: dict[str, Any]) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return response


def request_id(request: flask.Request, prefix: str) -> str:
    """The request's trace id for the logs (sanitised), or a fresh one."""
    trace = re.sub(r"[^A-Za-z0-9/;=-]", "", request.headers.get("X-Cloud-Trace-Context", ""))[:100]
    return trace or f"{prefix}-{uuid.uuid4().hex[:12]}"


def authenticate(request: flask.Request, audience: Sequence[str]) -> Caller | flask.Response:
    """The verified caller, or the 401/503 answer to send instead."""
    try:
        return verify_identity_token(bearer_token(request.headers.get("Authorization")), audience)
    except InvalidTokenError:  # permanent for this request: the caller's token
        return answer(401, {"error": "a valid identity token is required"})
    except CertificatesUnavailableError:  # transient: the key endpoint is down; the caller may retry
        return answer(503, {"error": "cannot verify identity tokens right now; retry"})


def caller_matcher(caller: Caller) -> Callable[[Iterable[str]], bool]:
    """Whether the verified caller matches one of a list of patterns (e-mails or `*@domain`)."""
    return lambda patterns: caller_allowed(caller.email, patterns)


def read_json_object(request: flask.Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The body as a JSON object with no field outside `allowed`, or `BadRequest`."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:  # permanent: the client's body
        raise BadRequest("the body is not UTF-8") from exc
    except RecursionError as exc:  # permanent: nested deeper than the parser goes
        raise BadRequest("the body is nested too deeply") from exc
    except ValueError as exc:  # permanent: not JSON
        raise BadRequest("the body must be a JSON object sent with Content-Type: application/json") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - set(allowed)
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}")
    return body


def required_string(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadRequest(f"{name}: required, matching {pattern.pattern}")
    return value


def optional_version(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not is_version(value)):
        raise BadRequest(f"{name}: must be a semantic version such as 1.2.3")
    return value


def optional_reason(body: dict[str, Any], *, required: bool = False) -> str | None:
    reason = body.get("reason")
    if reason is None and not required:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise BadRequest(f"reason: {'required, ' if required else ''}a string of 1-{MAX_REASON} characters")
    return reason
