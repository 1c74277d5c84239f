"""Zones and regions: any well-formed name exists (gcloud looks zones up before some commands)."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from .api_common import base_url, list_identity, reply
from .links import check_region, check_zone, region_of_zone
from .listing import list_body
from .state import default_zones

KNOWN_REGIONS = ("us-central1", "us-east1", "us-west1", "europe-west1", "asia-east1")


def _stable_id(name: str) -> str:
    return str(int(hashlib.sha256(name.encode()).hexdigest()[:15], 16))


def _zone_json(base: str, project: str, zone: str) -> dict[str, Any]:
    return {
        "kind": "compute#zone",
        "id": _stable_id(zone),
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": base + f"projects/{project}/regions/{region_of_zone(zone)}",
        "selfLink": base + f"projects/{project}/zones/{zone}",
    }


def _region_json(base: str, project: str, region: str) -> dict[str, Any]:
    return {
        "kind": "compute#region",
        "id": _stable_id(region),
        "name": region,
        "description": region,
        "status": "UP",
        "zones": [base + f"projects/{project}/zones/{zone}" for zone in default_zones(region)],
        "selfLink": base + f"projects/{project}/regions/{region}",
    }


async def get_zone(request: web.Request) -> web.Response:
    zone = check_zone(request.match_info["zone"])
    return reply(_zone_json(base_url(request), request.match_info["project"], zone))


async def list_zones(request: web.Request) -> web.Response:
    base, project = base_url(request), request.match_info["project"]
    items = [_zone_json(base, project, zone) for region in KNOWN_REGIONS for zone in default_zones(region)]
    list_id, link = list_identity(request)
    return reply(list_body("compute#zoneList", list_id, link, items, request.query))


async def get_region(request: web.Request) -> web.Response:
    region = check_region(request.match_info["region"])
    return reply(_region_json(base_url(request), request.match_info["project"], region))


async def list_regions(request: web.Request) -> web.Response:
    base, project = base_url(request), request.match_info["project"]
    items = [_region_json(base, project, region) for region in KNOWN_REGIONS]
    list_id, link = list_identity(request)
    return reply(list_body("compute#regionList", list_id, link, items, request.query))
