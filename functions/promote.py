"""`promote` (HTTP, CONTRACT §4b): deploy a release that is or was live in one environment to another.

Answers: 202 `{deployment_id, version, status}` (status `awaiting_approval` where the target
needs an approval); 400 malformed body; 401 no or bad token; 403 not a promoter of the target;
404 unknown app or environment, or a version never live in the source; 409 that version is
already live in the target or on its way, or was recorded before artifact digests; 503 when a dependency is briefly unavailable.
"""

from __future__ import annotations

import flask
import functions_framework

from functions.http_body import BadRequest, TextField, parse_json_body
from functions.http_support import MAX_REASON, answer, authenticate, caller_matcher, request_id
from shared.adapters.composition_root import promote_audience, services
from shared.config import NAME_PATTERN
from shared.domain.promotion import PromotionRefused
from shared.domain.versioning import is_version
from shared.logging import get_logger, log_context
from shared.ports import TransientError
from shared.usecases.promote import request_promotion

log = get_logger("promote")

_NAME_RULE = f"matching {NAME_PATTERN.pattern}"
PROMOTE_FIELDS = (
    TextField("app", required=True, pattern=NAME_PATTERN, max_length=30, rule=_NAME_RULE),
    TextField("from_environment", required=True, pattern=NAME_PATTERN, max_length=30, rule=_NAME_RULE),
    TextField("to_environment", required=True, pattern=NAME_PATTERN, max_length=30, rule=_NAME_RULE),
    TextField("version", max_length=100, valid=is_version, rule="a semantic version such as 1.2.3"),
    TextField(
        "reason", max_length=MAX_REASON, multiline=True, rule=f"a string of at most {MAX_REASON} characters"
    ),
)


@functions_framework.http
def promote(request: flask.Request) -> flask.Response:
    pipeline = services()
    audience = promote_audience()
    with log_context(event_id=request_id(request, "promote")):
        if request.method != "POST":
            return answer(405, {"error": "use POST"})
        caller = authenticate(request, audience)
        if isinstance(caller, flask.Response):
            log.warning("promotion refused: no valid identity token (%s)", caller.status_code)
            return caller
        try:
            fields = parse_json_body(request, PROMOTE_FIELDS)
            app = str(fields["app"])
            from_environment = str(fields["from_environment"])
            to_environment = str(fields["to_environment"])
            version, reason = fields["version"], fields["reason"]
            if from_environment == to_environment:
                raise BadRequest("from_environment and to_environment must differ")
        except BadRequest as exc:  # permanent: the client's body
            return answer(400, {"error": str(exc)})
        with log_context(app=app, environment=to_environment):
            try:
                accepted = request_promotion(
                    pipeline,
                    app=app,
                    from_environment=from_environment,
                    to_environment=to_environment,
                    caller=caller.email,
                    caller_matches=caller_matcher(caller),
                    version=version,
                    reason=reason,
                )
            except PromotionRefused as exc:  # permanent: 403, 404 or 409, as the domain decided
                log.warning("promotion refused for %s: %s", caller.email, exc)
                return answer(exc.http_status, {"error": str(exc)})
            except TransientError as exc:  # transient: Firestore or Pub/Sub; the client may retry
                log.error("promotion could not be recorded or published: %s", exc)
                return answer(503, {"error": "temporarily unavailable; retry"})
            return answer(
                202,
                {
                    "deployment_id": accepted.deployment_id,
                    "version": accepted.version,
                    "status": str(accepted.status),
                },
            )
