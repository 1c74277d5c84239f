"""What the release-control HTTP functions (`promote`, `approve`) share: verifying the caller's
identity token, and answering. Bodies are parsed by `functions.http_body`, as rollback's are:
every malformed body is a 400, never a 500. The token is checked before the body is read, so an
anonymous caller learns nothing about the body's rules (401 first).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flask

from shared.adapters.identity_tokens import verify_identity_token
from shared.domain.identity import (
    Caller,
    CertificatesUnavailableError,
    InvalidTokenError,
    bearer_token,
    caller_allowed,
)

MAX_REASON = 500


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
    """Whether the verified caller matches one of a list of patterns (e-mails, or `*@domain` for a
    Workspace domain proved by the token's `hd` claim)."""
    return lambda patterns: caller_allowed(caller, patterns)
