"""`approve` (HTTP, CONTRACT §4c): approve or reject a deployment awaiting approval.

Answers: 202 `{deployment_id, status}`; 400 malformed body (a rejection needs a reason);
401 no or bad token; 403 not an approver of the deployment's environment, or the identity that
requested it; 404 unknown deployment; 409 not awaiting approval (e.g. already decided,
superseded or expired); 503 when a dependency is briefly unavailable.
"""

from __future__ import annotations

import flask
import functions_framework

from functions.http_body import BadRequest, TextField, parse_json_body
from functions.http_support import MAX_REASON, answer, authenticate, caller_matcher, request_id
from shared.adapters.composition_root import approve_audience, services
from shared.domain.approval import ApprovalRefused, Decision
from shared.domain.build_event import DEPLOYMENT_ID_PATTERN
from shared.logging import get_logger, log_context
from shared.ports import TransientError
from shared.usecases.approval import decide

log = get_logger("approve")

APPROVE_FIELDS = (
    TextField(
        "deployment_id",
        required=True,
        pattern=DEPLOYMENT_ID_PATTERN,
        max_length=80,
        rule="a deployment id such as hello-production-0123456789ab",
    ),
    TextField("decision", required=True, choices=("approve", "reject")),
    TextField(
        "reason", max_length=MAX_REASON, multiline=True, rule=f"a string of at most {MAX_REASON} characters"
    ),
)


@functions_framework.http
def approve(request: flask.Request) -> flask.Response:
    pipeline = services()
    audience = approve_audience()
    with log_context(event_id=request_id(request, "approve")):
        if request.method != "POST":
            return answer(405, {"error": "use POST"})
        caller = authenticate(request, audience)
        if isinstance(caller, flask.Response):
            log.warning("approval refused: no valid identity token (%s)", caller.status_code)
            return caller
        try:
            fields = parse_json_body(request, APPROVE_FIELDS)
            deployment_id = str(fields["deployment_id"])
            decision = Decision(str(fields["decision"]))
            reason = fields["reason"]
            # A rejection is a message to the requester: it must say why.
            if decision is Decision.REJECT and not (reason or "").strip():
                raise BadRequest("reason: required to reject")
        except BadRequest as exc:  # permanent: the client's body
            return answer(400, {"error": str(exc)})
        with log_context(deployment_id=deployment_id):
            try:
                taken = decide(
                    pipeline,
                    deployment_id=deployment_id,
                    decision=decision,
                    caller=caller.email,
                    caller_matches=caller_matcher(caller),
                    reason=reason,
                )
            except ApprovalRefused as exc:  # permanent: 403, 404 or 409, as the domain decided
                log.warning("%s by %s refused: %s", decision, caller.email, exc)
                return answer(exc.http_status, {"error": str(exc)})
            except TransientError as exc:  # transient: Firestore or Pub/Sub; the client may retry
                log.error("decision could not be recorded: %s", exc)
                return answer(503, {"error": "temporarily unavailable; retry"})
            return answer(202, {"deployment_id": taken.deployment_id, "status": str(taken.status)})
