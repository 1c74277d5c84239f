"""`dashboard` (HTTP, CONTRACT §10): the release dashboard, one path for everything.

    GET  /                       the page (HTML, readable without JavaScript); `?app=A`, `?days=N`
    GET  /?format=json           what the page shows, as JSON (also with `Accept: application/json`)
    GET  /?local_token_for=E     local stack only: tokens for E from the local issuer, one per action
    POST /                       an action (approve, reject, roll back), forwarded with the
                                 caller's identity token to the function `releasectl` calls

The dashboard reads records and never writes them: every action is decided by the pipeline's
authenticated HTTP function, which verifies the forwarded token. The caller's token comes from
`Authorization: Bearer` (the page's script) or a `token` form field (without JavaScript).
A malformed request is a 400, never a 500.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import flask
import functions_framework

from functions.http_body import MAX_BODY_BYTES, BadRequest, decode_json_object, read_body
from functions.http_support import MAX_REASON
from shared.adapters.composition_root import dashboard_services
from shared.dashboard.render import PageContext, content_security_policy, render_page
from shared.domain.dashboard_view import to_json
from shared.domain.identifiers import NAME_PATTERN
from shared.domain.identity import InvalidTokenError, bearer_token
from shared.domain.versioning import is_version
from shared.logging import get_logger, log_context
from shared.ports import TransientError
from shared.usecases.dashboard import (
    ActionUnavailable,
    DashboardServices,
    ForwardedAnswer,
    forward_decision,
    forward_rollback,
    load_dashboard,
    local_tokens,
)
from shared.usecases.delivery import DEFAULT_WINDOW_DAYS

log = get_logger("dashboard")

MAX_WINDOW_DAYS = 365
DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
LOCAL_IDENTITY_DEFAULT = "developer@hello.local"
_FIELDS = {
    "decide": {"action", "token", "deployment_id", "decision", "reason"},
    "rollback": {"action", "token", "app", "environment", "to_version", "reason"},
}


def _wants_json(request: flask.Request) -> bool:
    if request.args.get("format") == "json":
        return True
    accepted = request.accept_mimetypes
    return accepted.best_match(["text/html", "application/json"]) == "application/json"


def _secure(response: flask.Response, nonce: str = "") -> flask.Response:
    response.headers["Content-Security-Policy"] = content_security_policy(nonce or secrets.token_urlsafe(16))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _json(status: int, body: dict[str, Any]) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    return _secure(response)


def _window_days(request: flask.Request) -> int:
    text = request.args.get("days", str(DEFAULT_WINDOW_DAYS))
    if not text.isdigit() or not 1 <= int(text) <= MAX_WINDOW_DAYS:
        raise BadRequest(f"days: a whole number from 1 to {MAX_WINDOW_DAYS}")
    return int(text)


def _app(request: flask.Request, services: DashboardServices) -> str | None:
    app = request.args.get("app")
    if app is None or app == "":
        return None
    if not NAME_PATTERN.fullmatch(app) or app not in services.config.apps:
        raise BadRequest(f"app: not an app of this pipeline: {app[:40]!r}")
    return app


def _page(
    request: flask.Request,
    services: DashboardServices,
    *,
    status: int = 200,
    message: str = "",
    message_is_error: bool = False,
) -> flask.Response:
    app = _app(request, services)
    days = _window_days(request)
    now = datetime.now(UTC)
    views = load_dashboard(services, app=app, now=now, window_days=days)
    if _wants_json(request) and request.method == "GET":
        return _json(status, {"generated_at": now.isoformat(), "environments": [to_json(v) for v in views]})
    nonce = secrets.token_urlsafe(16)
    context = PageContext(
        now=now,
        window_days=days,
        nonce=nonce,
        local_sign_in=bool(services.local_token_url),
        default_email=LOCAL_IDENTITY_DEFAULT,
        message=message,
        message_is_error=message_is_error,
        app=app,
    )
    response = flask.Response(render_page(views, context), status=status, mimetype="text/html")
    return _secure(response, nonce)


def _local_token(request: flask.Request, services: DashboardServices) -> flask.Response:
    if not services.local_token_url:
        return _json(404, {"error": "local sign-in exists only on the local stack"})
    email = request.args.get("local_token_for", "")
    if not EMAIL.fullmatch(email):
        raise BadRequest("local_token_for: an e-mail address")
    tokens = local_tokens(services, email)
    if _wants_json(request):
        return _json(200, {"email": email, "tokens": tokens})
    listed = "; ".join(f"for {kind}: {token}" for kind, token in tokens.items())
    return _page(request, services, message=f"Local tokens for {email} (paste one into a form) {listed}")


def _body(request: flask.Request) -> dict[str, str]:
    """The action's fields, from a form or a JSON object of strings, within the body limits."""
    raw = read_body(request)
    if request.mimetype == "application/json":
        parsed = decode_json_object(raw)
        if not all(isinstance(value, str) for value in parsed.values()):
            raise BadRequest("the body must be a JSON object of strings")
        return parsed
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if request.mimetype in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:  # permanent: the client's body
            raise BadRequest("the form is malformed") from exc
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name in fields:
                raise BadRequest(f"{name[:40]}: given twice")
            fields[name] = value
        return fields
    raise BadRequest("send a form (application/x-www-form-urlencoded) or a JSON object")


def _reason(fields: dict[str, str]) -> str:
    reason = fields.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"reason: at most {MAX_REASON} characters")
    return reason


def _token(request: flask.Request, fields: dict[str, str]) -> str:
    if request.headers.get("Authorization"):
        try:
            return bearer_token(request.headers.get("Authorization"))
        except InvalidTokenError as exc:  # permanent for this request: the caller's header
            raise BadRequest(str(exc)) from exc
    return fields.get("token", "").strip()


def _action(request: flask.Request, services: DashboardServices) -> tuple[ForwardedAnswer, str]:
    fields = _body(request)
    action = fields.get("action", "")
    if action not in _FIELDS:
        raise BadRequest("action: one of " + ", ".join(sorted(_FIELDS)))
    unknown = set(fields) - _FIELDS[action]
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0][:40]!r}")
    token = _token(request, fields)
    if not token:
        return ForwardedAnswer(401, {"error": "an identity token is required (see Your identity)"}), action
    reason = _reason(fields)
    if action == "decide":
        deployment_id = fields.get("deployment_id", "")
        decision = fields.get("decision", "")
        if not DEPLOYMENT_ID.fullmatch(deployment_id):
            raise BadRequest("deployment_id: required")
        if decision not in ("approve", "reject"):
            raise BadRequest("decision: approve or reject")
        if decision == "reject" and not reason:
            raise BadRequest("reason: say why you reject it")
        answer = forward_decision(
            services, token=token, deployment_id=deployment_id, decision=decision, reason=reason
        )
        return answer, decision
    app, environment = fields.get("app", ""), fields.get("environment", "")
    if not NAME_PATTERN.fullmatch(app) or not NAME_PATTERN.fullmatch(environment):
        raise BadRequest("app and environment: required")
    to_version = fields.get("to_version", "").strip() or None
    if to_version is not None and not is_version(to_version):
        raise BadRequest("to_version: a semantic version such as 1.2.3, or empty")
    answer = forward_rollback(
        services, token=token, app=app, environment=environment, to_version=to_version, reason=reason or None
    )
    return answer, action


def describe(answer: ForwardedAnswer, action: str) -> str:
    """One sentence on the outcome, for the page's status line.

    >>> describe(ForwardedAnswer(202, {"deployment_id": "d1", "status": "queued"}), "approve")
    'Approved: d1 is now queued.'
    >>> describe(ForwardedAnswer(403, {"error": "not an approver"}), "reject")
    'Reject refused (HTTP 403): not an approver'
    """
    body = answer.body
    if answer.status == 202:
        if action == "rollback":
            return f"Rollback accepted: {body.get('version')} is on its way ({body.get('deployment_id')})."
        verb = "Approved" if action == "approve" else "Rejected"
        return f"{verb}: {body.get('deployment_id')} is now {str(body.get('status', '')).replace('_', ' ')}."
    return f"{action.capitalize()} refused (HTTP {answer.status}): {body.get('error') or 'no reason given'}"


@functions_framework.http
def dashboard(request: flask.Request) -> flask.Response:
    services = dashboard_services()
    request_id = re.sub(r"[^A-Za-z0-9/;=-]", "", request.headers.get("X-Cloud-Trace-Context", ""))[:100]
    with log_context(event_id=request_id or f"dashboard-{uuid.uuid4().hex[:12]}"):
        try:
            if request.method == "GET":
                if "local_token_for" in request.args:
                    return _local_token(request, services)
                return _page(request, services)
            if request.method != "POST":
                return _json(405, {"error": "use GET or POST"})
            answer, action = _action(request, services)
            message = describe(answer, action)
            log.info("dashboard action %s answered %s", action, answer.status)
            if _wants_json(request):
                return _json(
                    answer.status, {"status": answer.status, "message": message, "answer": dict(answer.body)}
                )
            return _page(
                request,
                services,
                status=answer.status,
                message=message,
                message_is_error=answer.status != 202,
            )
        except BadRequest as exc:  # permanent: the client's request
            if request.method == "POST" and not _wants_json(request):
                return _page_or_json(request, services, 400, f"Bad request: {exc}")
            return _json(400, {"error": str(exc)})
        except ActionUnavailable as exc:  # transient: the function or issuer is unreachable
            log.error("dashboard action unavailable: %s", exc)
            return _json(503, {"error": str(exc), "message": f"Unavailable: {exc}"})
        except TransientError as exc:  # transient: Firestore unavailable; the page may be reloaded
            log.error("dashboard cannot read the records: %s", exc)
            return _json(503, {"error": "the records cannot be read right now; retry"})


def _page_or_json(
    request: flask.Request, services: DashboardServices, status: int, message: str
) -> flask.Response:
    try:
        return _page(request, services, status=status, message=message, message_is_error=True)
    except BadRequest:  # permanent: the query string is bad too; answer plainly
        return _json(status, {"error": message})
