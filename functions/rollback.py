"""`rollback` (HTTP, CONTRACT §4): roll an environment back by republishing an earlier release.

Answers: 202 accepted; 400 malformed body; 401 no or bad token; 403 caller not allowed for
the environment; 404 unknown app, environment or version; 409 nothing earlier, already live,
or a target release recorded before artifact digests (no instance would start it); 503 when a dependency (keys, Firestore, Pub/Sub) is briefly unavailable. A client's
mistake is never a 500.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import flask
import functions_framework

from functions.http_body import BadRequest, TextField, parse_json_body
from shared.adapters.composition_root import rollback_audience, services
from shared.adapters.identity_tokens import verify_identity_token
from shared.domain.identifiers import NAME_PATTERN
from shared.domain.identity import (
    CertificatesUnavailableError,
    InvalidTokenError,
    bearer_token,
    caller_allowed,
)
from shared.domain.rollback import RollbackRefused
from shared.domain.versioning import is_version
from shared.logging import get_logger, log_context
from shared.ports import TransientError
from shared.usecases.rollback import request_rollback

log = get_logger("rollback")

MAX_REASON = 500
ROLLBACK_FIELDS = (
    TextField(
        "app", required=True, pattern=NAME_PATTERN, max_length=30, rule=f"matching {NAME_PATTERN.pattern}"
    ),
    TextField(
        "environment",
        required=True,
        pattern=NAME_PATTERN,
        max_length=30,
        rule=f"matching {NAME_PATTERN.pattern}",
    ),
    TextField("to_version", max_length=100, valid=is_version, rule="a semantic version such as 1.2.3"),
    TextField(
        "reason", max_length=MAX_REASON, multiline=True, rule=f"a string of at most {MAX_REASON} characters"
    ),
)


def _answer(status: int, body: dict[str, Any]) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return response


def _parse(request: flask.Request) -> tuple[str, str, str | None, str | None]:
    fields = parse_json_body(request, ROLLBACK_FIELDS)
    return str(fields["app"]), str(fields["environment"]), fields["to_version"], fields["reason"]


@functions_framework.http
def rollback(request: flask.Request) -> flask.Response:
    pipeline = services()
    audience = rollback_audience()
    request_id = re.sub(r"[^A-Za-z0-9/;=-]", "", request.headers.get("X-Cloud-Trace-Context", ""))[:100]
    with log_context(event_id=request_id or f"rollback-{uuid.uuid4().hex[:12]}"):
        if request.method != "POST":
            return _answer(405, {"error": "use POST"})
        try:
            caller = verify_identity_token(bearer_token(request.headers.get("Authorization")), audience)
        except InvalidTokenError as exc:  # permanent for this request: the caller's token
            log.warning("rollback refused: %s", exc)
            return _answer(401, {"error": "a valid identity token is required"})
        except CertificatesUnavailableError as exc:  # transient: the key endpoint is down
            log.error("cannot verify tokens: %s", exc)
            return _answer(503, {"error": "cannot verify identity tokens right now; retry"})
        try:
            app, environment, to_version, reason = _parse(request)
        except BadRequest as exc:  # permanent: the client's body
            return _answer(400, {"error": str(exc)})
        with log_context(app=app, environment=environment):
            env = pipeline.config.environment(app, environment)
            if env is None:
                return _answer(404, {"error": f"unknown app or environment {app}/{environment}"})
            if not caller_allowed(caller, env.rollback_callers):
                log.warning("rollback refused: %s may not roll back %s", caller.email, env.key)
                return _answer(403, {"error": f"{caller.email} may not roll back {app}/{environment}"})
            try:
                accepted = request_rollback(
                    pipeline,
                    app=app,
                    environment=environment,
                    caller=caller.email,
                    to_version=to_version,
                    reason=reason,
                )
            except RollbackRefused as exc:  # permanent: 404 or 409, as the domain decided
                return _answer(exc.http_status, {"error": str(exc)})
            except TransientError as exc:  # transient: Firestore or Pub/Sub; the client may retry
                log.error("rollback could not be published: %s", exc)
                return _answer(503, {"error": "temporarily unavailable; retry"})
            return _answer(
                202,
                {
                    "deployment_id": accepted.deployment_id,
                    "version": accepted.version,
                    "rollback_of": accepted.rollback_of,
                },
            )
