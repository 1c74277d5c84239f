"""What every handler shares: the app's keys, Google-shaped replies and errors, request parsing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import ApiError, internal, invalid
from .links import check_region, check_zone
from .operations import Operation
from .schema import check_body, parse_json_body
from .state import Emulator

LOG = logging.getLogger(__name__)

OPERATION_WAIT_SECONDS = 120.0
EMULATOR_KEY = web.AppKey("emulator", Emulator)
REPLY_WAIT_KEY = web.AppKey("reply_wait", float)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}/compute/v1/"


def emulator_of(request: web.Request) -> Emulator:
    return request.app[EMULATOR_KEY]


def reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@web.middleware
async def google_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as Google's error JSON; a traceback never reaches a client."""
    try:
        return await handler(request)
    except ApiError as exc:
        return reply(exc.to_json(), exc.code)
    except web.HTTPNotFound:
        LOG.info("unsupported: %s %s", request.method, request.path)
        error = ApiError(404, "notFound", f"The requested URL {request.path} was not found on this server.")
        return reply(error.to_json(), 404)
    except web.HTTPMethodNotAllowed:
        error = ApiError(
            405, "httpMethodNotAllowed", f"Method {request.method} is not allowed for {request.path}."
        )
        return reply(error.to_json(), 405)
    except web.HTTPException:
        raise
    except Exception:
        LOG.exception("%s %s failed", request.method, request.path)
        return reply(internal().to_json(), 500)


def request_id_of(request: web.Request) -> str | None:
    value = request.query.get("requestId")
    if not value:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise invalid(f"Invalid value for field 'requestId': '{value}'. It must be a UUID.") from exc
    if parsed.int == 0:
        raise invalid("Invalid value for field 'requestId': the zero UUID is not allowed.")
    return value


async def json_body(request: web.Request, message: str) -> dict[str, Any]:
    return check_body(parse_json_body(await request.read()), message)


async def operation_reply(request: web.Request, operation: Operation) -> web.Response:
    # Answer once the operation is DONE (normally milliseconds): the client library polls
    # operations through a second client that does not inherit the api_endpoint override, so an
    # operation returned unfinished would send the caller's poll to the real Compute Engine.
    reply_wait = request.app[REPLY_WAIT_KEY]
    if reply_wait > 0:
        await emulator_of(request).operations.wait(operation, reply_wait)
    return reply(operation.to_json(base_url(request)))


async def mutate(request: web.Request, start: Callable[[str | None], Operation]) -> web.Response:
    request_id = request_id_of(request)
    earlier = emulator_of(request).operations.replay(request.match_info["project"], request_id)
    operation = earlier if earlier is not None else start(request_id)
    return await operation_reply(request, operation)


def zone_scope(request: web.Request) -> str:
    if "zone" in request.match_info:
        return "zones/" + check_zone(request.match_info["zone"])
    return "regions/" + check_region(request.match_info["region"])


def list_identity(request: web.Request) -> tuple[str, str]:
    link = base_url(request) + request.path.split("/compute/v1/", 1)[1]
    return request.path.split("/compute/v1/", 1)[1], link
