"""`promote` (HTTP, CONTRACT §4b): deploy a release that is or was live in one environment to another.

Answers: 202 `{deployment_id, version, status}` (status `awaiting_approval` where the target
needs an approval); 400 malformed body; 401 no or bad token; 403 not a promoter of the target;
404 unknown app or environment, or a version never live in the source; 409 that version is
already live in the target or on its way, or was recorded before artifact digests; 503 when a dependency is briefly unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flask
import functions_framework

from functions.http_body import BadRequest
from functions.http_support import (
    REASON_FIELD,
    Body,
    ReleaseControl,
    caller_matcher,
    handle_release_control,
    name_field,
    version_field,
)
from shared.adapters.composition_root import promote_audience, services
from shared.domain.identity import Caller
from shared.logging import get_logger
from shared.usecases.promote import request_promotion
from shared.usecases.services import Services

log = get_logger("promote")


def _different_environments(body: Body) -> None:
    if body["from_environment"] == body["to_environment"]:
        raise BadRequest("from_environment and to_environment must differ")


def _accept_promotion(pipeline: Services, body: Body, caller: Caller) -> Mapping[str, Any]:
    accepted = request_promotion(
        pipeline,
        app=str(body["app"]),
        from_environment=str(body["from_environment"]),
        to_environment=str(body["to_environment"]),
        caller=caller.email,
        caller_matches=caller_matcher(caller),
        version=body["version"],
        reason=body["reason"],
    )
    return {
        "deployment_id": accepted.deployment_id,
        "version": accepted.version,
        "status": str(accepted.status),
    }


PROMOTE = ReleaseControl(
    name="promote",
    fields=(
        name_field("app"),
        name_field("from_environment"),
        name_field("to_environment"),
        version_field("version"),
        REASON_FIELD,
    ),
    check=_different_environments,
    act=_accept_promotion,
    log_fields=lambda body: {"app": str(body["app"]), "environment": str(body["to_environment"])},
)


@functions_framework.http
def promote(request: flask.Request) -> flask.Response:
    return handle_release_control(request, PROMOTE, services(), promote_audience(), log)
