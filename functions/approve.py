"""`approve` (HTTP, CONTRACT §4c): approve or reject a deployment awaiting approval.

Answers: 202 `{deployment_id, status}`; 400 malformed body (a rejection needs a reason);
401 no or bad token; 403 not an approver of the deployment's environment, or the identity that
requested it; 404 unknown deployment; 409 not awaiting approval (e.g. decided otherwise,
superseded or expired); 503 when a dependency is briefly unavailable. The same approver sending
the same decision again gets 202 and its notification again (a safe retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework

from functions.http_body import BadRequest, TextField
from functions.http_support import REASON_FIELD, Body, ReleaseControl, caller_matcher, handle_release_control
from shared.adapters.composition_root import approve_audience, services
from shared.domain.approval import Decision
from shared.domain.build_event import DEPLOYMENT_ID_PATTERN
from shared.domain.identity import Caller
from shared.logging import get_logger
from shared.usecases.approval import decide
from shared.usecases.services import Services

log = get_logger("approve")


def _rejection_says_why(body: Body) -> None:
    # A rejection is a message to the requester: it must say why.
    if body["decision"] == Decision.REJECT and not (body["reason"] or "").strip():
        raise BadRequest("reason: required to reject")


def _take_decision(pipeline: Services, body: Body, caller: Caller) -> Mapping[str, Any]:
    taken = decide(
        pipeline,
        deployment_id=str(body["deployment_id"]),
        decision=Decision(str(body["decision"])),
        caller=caller.email,
        caller_matches=caller_matcher(caller),
        reason=body["reason"],
    )
    return {"deployment_id": taken.deployment_id, "status": str(taken.status)}


APPROVE = ReleaseControl(
    name="approve",
    fields=(
        TextField(
            "deployment_id",
            required=True,
            pattern=DEPLOYMENT_ID_PATTERN,
            max_length=80,
            rule="a deployment id such as hello-production-0123456789ab",
        ),
        TextField("decision", required=True, choices=("approve", "reject")),
        REASON_FIELD,
    ),
    check=_rejection_says_why,
    act=_take_decision,
    log_fields=lambda body: {"deployment_id": str(body["deployment_id"])},
)


@functions_framework.http
def approve(request: flask.Request) -> flask.Response:
    return handle_release_control(request, APPROVE, services(), approve_audience(), log)
