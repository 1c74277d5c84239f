"""Operations: get, wait (bounded), list, aggregated list."""

from __future__ import annotations

from aiohttp import web

from .api_common import OPERATION_WAIT_SECONDS, base_url, emulator_of, list_identity, reply, zone_scope
from .errors import not_found
from .listing import aggregated_body, list_body
from .operations import Operation


def _operation_scope(request: web.Request) -> str:
    if "zone" in request.match_info or "region" in request.match_info:
        return zone_scope(request)
    return "global"


def _existing_operation(request: web.Request) -> Operation:
    project, scope = request.match_info["project"], _operation_scope(request)
    path = f"projects/{project}/{scope}/operations/{request.match_info['name']}"
    operation = emulator_of(request).operations.get(path)
    if operation is None:
        raise not_found(path)
    return operation


async def get_operation(request: web.Request) -> web.Response:
    return reply(_existing_operation(request).to_json(base_url(request)))


async def wait_operation(request: web.Request) -> web.Response:
    operation = _existing_operation(request)
    await emulator_of(request).operations.wait(operation, OPERATION_WAIT_SECONDS)
    return reply(operation.to_json(base_url(request)))


async def list_operations(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], _operation_scope(request)
    base = base_url(request)
    items = [op.to_json(base) for op in emulator_of(request).operations.in_scope(project, scope)]
    list_id, link = list_identity(request)
    return reply(list_body("compute#operationList", list_id, link, items, request.query))


async def aggregated_operations(request: web.Request) -> web.Response:
    base = base_url(request)
    scoped = [
        (op.scope, op.to_json(base))
        for op in emulator_of(request).operations.all_in_project(request.match_info["project"])
    ]
    list_id, link = list_identity(request)
    return reply(
        aggregated_body("compute#operationAggregatedList", list_id, link, "operations", scoped, request.query)
    )
