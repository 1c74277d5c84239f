"""`rollback` (HTTP, CONTRACT §4): roll an environment back by republishing an earlier release.

Answers: 202 accepted; 400 malformed body; 401 no or bad token; 403 caller not allowed for
the environment; 404 unknown app, environment or version; 409 nothing earlier, already live,
or a target release recorded before artifact digests (no instance would start it); 503 when a
dependency (keys, Firestore, Pub/Sub) is briefly unavailable. A client's mistake is never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework

from functions.http_support import (
    REASON_FIELD,
    Body,
    ReleaseControl,
    caller_matcher,
    handle_release_control,
    name_field,
    version_field,
)
from shared.adapters.composition_root import rollback_audience, services
from shared.domain.identity import Caller
from shared.logging import get_logger
from shared.usecases.rollback import request_rollback
from shared.usecases.services import Services

log = get_logger("rollback")


def _accept_rollback(pipeline: Services, body: Body, caller: Caller) -> Mapping[str, Any]:
    accepted = request_rollback(
        pipeline,
        app=str(body["app"]),
        environment=str(body["environment"]),
        caller=caller.email,
        caller_matches=caller_matcher(caller),
        to_version=body["to_version"],
        reason=body["reason"],
    )
    return {
        "deployment_id": accepted.deployment_id,
        "version": accepted.version,
        "rollback_of": accepted.rollback_of,
    }


ROLLBACK = ReleaseControl(
    name="rollback",
    fields=(
        name_field("app"),
        name_field("environment"),
        version_field("to_version"),
        REASON_FIELD,
    ),
    act=_accept_rollback,
    log_fields=lambda body: {"app": str(body["app"]), "environment": str(body["environment"])},
)


@functions_framework.http
def rollback(request: flask.Request) -> flask.Response:
    return handle_release_control(request, ROLLBACK, services(), rollback_audience(), log)
