"""What the release-control HTTP functions (`rollback`, `promote`, `approve`) share: one flow
around their use case, as `functions.step_event` is for the Pub/Sub steps.

The flow, the same for every one: POST only (405); the caller's identity token is verified
before the body is read, so an anonymous caller learns nothing about the body's rules (401, or
503 while the keys cannot be fetched); the body is parsed by `functions.http_body`, so every
malformed body is a 400, never a 500; then the use case decides. A refusal answers the status
the domain gave it (403, 404, 409); a transient Firestore or Pub/Sub error answers 503 (the
client may retry); an accepted request answers 202.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flask

from functions.http_body import BadRequest, TextField, parse_json_body
from shared.adapters.identity_tokens import verify_identity_token
from shared.domain.identifiers import NAME_PATTERN
from shared.domain.identity import (
    Caller,
    CallerCheck,
    CertificatesUnavailableError,
    InvalidTokenError,
    bearer_token,
    caller_allowed,
)
from shared.domain.refusal import RequestRefused
from shared.domain.versioning import is_version
from shared.logging import log_context
from shared.ports import TransientError
from shared.usecases.services import Services

MAX_REASON = 500
REASON_FIELD = TextField(
    "reason", max_length=MAX_REASON, multiline=True, rule=f"a string of at most {MAX_REASON} characters"
)

Body = Mapping[str, str | None]
"""A parsed body: each declared field's value, None when an optional one is absent."""


def name_field(name: str) -> TextField:
    """A required app or environment name field."""
    return TextField(
        name, required=True, pattern=NAME_PATTERN, max_length=30, rule=f"matching {NAME_PATTERN.pattern}"
    )


def version_field(name: str) -> TextField:
    """An optional semantic version field."""
    return TextField(name, max_length=100, valid=is_version, rule="a semantic version such as 1.2.3")


def _no_further_rules(body: Body) -> None:
    """For a function whose fields say everything a body must hold."""


@dataclass(frozen=True)
class ReleaseControl:
    """One release-control function, as data: its body and what it does with it."""

    name: str
    """Names the function in log lines and in the request id made when the trace header is absent."""
    fields: tuple[TextField, ...]
    act: Callable[[Services, Body, Caller], Mapping[str, Any]]
    """Calls the use case for the verified caller; returns the 202 answer's body. Raises a
    `RequestRefused` (its status) or a `TransientError` (503)."""
    log_fields: Callable[[Body], Mapping[str, str]]
    """What the log lines about this request carry (app and environment, or the deployment)."""
    check: Callable[[Body], None] = _no_further_rules
    """Rules between fields (raise BadRequest), checked with the body before the use case runs."""


def answer(status: int, body: dict[str, Any]) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return response


def request_id(request: flask.Request, prefix: str) -> str:
    """The request's trace id for the logs (sanitised), or a fresh one."""
    trace = re.sub(r"[^A-Za-z0-9/;=-]", "", request.headers.get("X-Cloud-Trace-Context", ""))[:100]
    return trace or f"{prefix}-{uuid.uuid4().hex[:12]}"


def caller_matcher(caller: Caller) -> CallerCheck:
    """Whether the verified caller matches one of a list of patterns (e-mails, or `*@domain` for a
    Workspace domain proved by the token's `hd` claim)."""
    return lambda patterns: caller_allowed(caller, patterns)


def handle_release_control(
    request: flask.Request,
    control: ReleaseControl,
    pipeline: Services,
    audience: Sequence[str],
    log: logging.Logger,
) -> flask.Response:
    """Answer `request` for `control`. The caller passes its own `services()` and audience, so
    each entry point keeps its own (and tests can replace them per module)."""
    with log_context(event_id=request_id(request, control.name)):
        if request.method != "POST":
            return answer(405, {"error": "use POST"})
        try:
            caller = verify_identity_token(bearer_token(request.headers.get("Authorization")), audience)
        except InvalidTokenError as exc:  # permanent for this request: the caller's token
            log.warning("%s refused: no valid identity token (%s)", control.name, exc)
            return answer(401, {"error": "a valid identity token is required"})
        except (
            CertificatesUnavailableError
        ) as exc:  # transient: the key endpoint is down; the caller may retry
            log.error("cannot verify identity tokens: %s", exc)
            return answer(503, {"error": "cannot verify identity tokens right now; retry"})
        try:
            body = parse_json_body(request, control.fields)
            control.check(body)
        except BadRequest as exc:  # permanent: the client's body
            return answer(400, {"error": str(exc)})
        with log_context(**control.log_fields(body)):
            try:
                accepted = control.act(pipeline, body, caller)
            except RequestRefused as exc:  # permanent: 403, 404 or 409, as the domain decided
                log.warning("%s refused for %s: %s", control.name, caller.email, exc)
                return answer(exc.http_status, {"error": str(exc)})
            except TransientError as exc:  # transient: Firestore or Pub/Sub; the client may retry
                log.error("%s could not be recorded or published: %s", control.name, exc)
                return answer(503, {"error": "temporarily unavailable; retry"})
            return answer(202, dict(accepted))
