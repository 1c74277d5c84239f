"""The HTTP surface: the Compute Engine v1 REST subset, the emulator's side API and /healthz."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .api_common import (
    EMULATOR_KEY,
    REPLY_WAIT_KEY,
    base_url,
    emulator_of,
    google_errors,
    json_body,
    list_identity,
    mutate,
    reply,
    zone_scope,
)
from .api_locations import get_region, get_zone, list_regions, list_zones
from .api_operations import aggregated_operations, get_operation, list_operations, wait_operation
from .errors import invalid, not_found
from .links import check_zone, parse_reference
from .listing import aggregated_body, list_body
from .monitoring import add_routes as add_monitoring_routes
from .operations import Operation
from .state import Emulator

# -- instance templates and health checks ---------------------------------------------------


@dataclass(frozen=True)
class StoredGlobalCollection:
    """A global resource the emulator keeps as its JSON (instance templates, health checks).

    Both answer the same five methods and differ only in names and in the emulator calls that
    insert and delete, so one set of handlers serves each.
    """

    segment: str  # the URL collection, e.g. "instanceTemplates"
    kind: str  # e.g. "compute#instanceTemplate"
    aggregated_kind: str  # Google spells these irregularly ("healthChecksAggregatedList")
    message: str  # the request body's message, for validation
    stored: Callable[[Emulator], dict[str, dict[str, Any]]]
    insert: Callable[[Emulator, str, dict[str, Any], str | None], Operation]
    delete: Callable[[Emulator, str, str, str | None], Operation]

    def add_routes(self, router: web.UrlDispatcher, projects: str) -> None:
        collection = f"{projects}/global/{self.segment}"
        router.add_get(collection, self.list)
        router.add_post(collection, self.insert_handler)
        router.add_get(collection + "/{name}", self.get)
        router.add_delete(collection + "/{name}", self.delete_handler)
        router.add_get(f"{projects}/aggregated/{self.segment}", self.aggregated)

    def _json(self, base: str, path: str, resource: dict[str, Any]) -> dict[str, Any]:
        return {"kind": self.kind, **resource, "selfLink": base + path}

    def _items(self, request: web.Request) -> list[dict[str, Any]]:
        prefix = f"projects/{request.match_info['project']}/global/{self.segment}/"
        base = base_url(request)
        return [
            self._json(base, path, resource)
            for path, resource in self.stored(emulator_of(request)).items()
            if path.startswith(prefix)
        ]

    async def insert_handler(self, request: web.Request) -> web.Response:
        project = request.match_info["project"]
        body = await json_body(request, self.message)
        return await mutate(request, lambda rid: self.insert(emulator_of(request), project, body, rid))

    async def get(self, request: web.Request) -> web.Response:
        project, name = request.match_info["project"], request.match_info["name"]
        path = f"projects/{project}/global/{self.segment}/{name}"
        resource = self.stored(emulator_of(request)).get(path)
        if resource is None:
            raise not_found(path)
        return reply(self._json(base_url(request), path, resource))

    async def delete_handler(self, request: web.Request) -> web.Response:
        project, name = request.match_info["project"], request.match_info["name"]
        return await mutate(request, lambda rid: self.delete(emulator_of(request), project, name, rid))

    async def list(self, request: web.Request) -> web.Response:
        list_id, link = list_identity(request)
        return reply(list_body(f"{self.kind}List", list_id, link, self._items(request), request.query))

    async def aggregated(self, request: web.Request) -> web.Response:
        list_id, link = list_identity(request)
        scoped = [("global", item) for item in self._items(request)]
        return reply(
            aggregated_body(self.aggregated_kind, list_id, link, self.segment, scoped, request.query)
        )


INSTANCE_TEMPLATES = StoredGlobalCollection(
    segment="instanceTemplates",
    kind="compute#instanceTemplate",
    aggregated_kind="compute#instanceTemplateAggregatedList",
    message="InstanceTemplate",
    stored=lambda emulator: emulator.templates,
    insert=lambda emulator, project, body, rid: emulator.insert_template(project, body, rid),
    delete=lambda emulator, project, name, rid: emulator.delete_template(project, name, rid),
)
HEALTH_CHECKS = StoredGlobalCollection(
    segment="healthChecks",
    kind="compute#healthCheck",
    aggregated_kind="compute#healthChecksAggregatedList",
    message="HealthCheck",
    stored=lambda emulator: emulator.health_checks,
    insert=lambda emulator, project, body, rid: emulator.insert_health_check(project, body, rid),
    delete=lambda emulator, project, name, rid: emulator.delete_health_check(project, name, rid),
)


# -- instance group managers (zonal and regional) -------------------------------------------


async def insert_group(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], zone_scope(request)
    body = await json_body(request, "InstanceGroupManager")
    return await mutate(request, lambda rid: emulator_of(request).insert_group(project, scope, body, rid))


async def get_group(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], zone_scope(request)
    group = emulator_of(request).existing_group(project, scope, request.match_info["name"])
    return reply(group.to_json(base_url(request)))


async def delete_group(request: web.Request) -> web.Response:
    project, scope, name = request.match_info["project"], zone_scope(request), request.match_info["name"]
    return await mutate(request, lambda rid: emulator_of(request).delete_group(project, scope, name, rid))


async def resize_group(request: web.Request) -> web.Response:
    project, scope, name = request.match_info["project"], zone_scope(request), request.match_info["name"]
    size = request.query.get("size")
    return await mutate(
        request, lambda rid: emulator_of(request).resize_group(project, scope, name, size, rid)
    )


async def list_groups(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], zone_scope(request)
    base = base_url(request)
    items = [
        g.to_json(base)
        for g in emulator_of(request).groups.values()
        if g.project == project and g.scope == scope
    ]
    kind = (
        "compute#instanceGroupManagerList"
        if scope.startswith("zones/")
        else "compute#regionInstanceGroupManagerList"
    )
    list_id, link = list_identity(request)
    return reply(list_body(kind, list_id, link, items, request.query))


async def aggregated_groups(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    base = base_url(request)
    scoped = [
        (g.scope, g.to_json(base)) for g in emulator_of(request).groups.values() if g.project == project
    ]
    list_id, link = list_identity(request)
    return reply(
        aggregated_body(
            "compute#instanceGroupManagerAggregatedList",
            list_id,
            link,
            "instanceGroupManagers",
            scoped,
            request.query,
        )
    )


async def list_managed_instances(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], zone_scope(request)
    group = emulator_of(request).existing_group(project, scope, request.match_info["name"])
    list_id, link = list_identity(request)
    page = list_body("", list_id, link, group.managed_instances_json(base_url(request)), request.query)
    body: dict[str, Any] = {"managedInstances": page["items"]}
    if "nextPageToken" in page:
        body["nextPageToken"] = page["nextPageToken"]
    return reply(body)


async def get_instance_group(request: web.Request) -> web.Response:
    project, scope, name = request.match_info["project"], zone_scope(request), request.match_info["name"]
    group = emulator_of(request).group(f"projects/{project}/{scope}/instanceGroups/{name}")
    if group is None:
        raise not_found(f"projects/{project}/{scope}/instanceGroups/{name}")
    return reply(group.instance_group_json(base_url(request)))


async def list_instance_groups(request: web.Request) -> web.Response:
    project, scope = request.match_info["project"], zone_scope(request)
    base = base_url(request)
    emulator = emulator_of(request)
    items = [
        g.instance_group_json(base)
        for g in emulator.groups.values()
        if g.project == project and g.scope == scope
    ]
    kind = "compute#instanceGroupList" if scope.startswith("zones/") else "compute#regionInstanceGroupList"
    list_id, link = list_identity(request)
    return reply(list_body(kind, list_id, link, items, request.query))


async def aggregated_instance_groups(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    base = base_url(request)
    scoped = [
        (g.scope, g.instance_group_json(base))
        for g in emulator_of(request).groups.values()
        if g.project == project
    ]
    list_id, link = list_identity(request)
    return reply(
        aggregated_body(
            "compute#instanceGroupAggregatedList", list_id, link, "instanceGroups", scoped, request.query
        )
    )


# -- instances: guest attributes, what a guest reports about itself --------------------------


async def get_guest_attributes(request: web.Request) -> web.Response:
    """`instances.getGuestAttributes`: one attribute (`variableKey`), or those under `queryPath`
    (`namespace/` or `namespace/key`; all of them without either). None found is a 404, as on
    Compute Engine, where a namespace exists only once the guest wrote to it."""
    project, name = request.match_info["project"], request.match_info["name"]
    zone = check_zone(request.match_info["zone"])
    instance = emulator_of(request).existing_instance(project, zone, name)
    path = f"{instance.path}/guestAttributes"
    body: dict[str, Any] = {"kind": "compute#guestAttributes", "selfLink": base_url(request) + path}
    variable_key = request.query.get("variableKey")
    if variable_key:
        namespace, _, key = variable_key.partition("/")
        value = instance.guest_attributes.get((namespace, key))
        if value is None:
            raise not_found(f"{path}/{variable_key}")
        return reply({**body, "variableKey": variable_key, "variableValue": value})
    query_path = request.query.get("queryPath", "")
    namespace, _, key = query_path.partition("/")
    items = [
        {"namespace": ns, "key": k, "value": value}
        for (ns, k), value in sorted(instance.guest_attributes.items())
        if (not namespace or ns == namespace) and (not key or k == key)
    ]
    if not items:
        raise not_found(f"{path}/{query_path}")
    return reply({**body, "queryPath": query_path, "queryValue": {"items": items}})


# -- autoscalers: none exist here, but gcloud looks them up when it shows a group -------------


async def list_autoscalers(request: web.Request) -> web.Response:
    zone_scope(request)
    list_id, link = list_identity(request)
    kind = "compute#autoscalerList" if "zone" in request.match_info else "compute#regionAutoscalerList"
    return reply(list_body(kind, list_id, link, [], request.query))


async def aggregated_autoscalers(request: web.Request) -> web.Response:
    list_id, link = list_identity(request)
    return reply(
        aggregated_body("compute#autoscalerAggregatedList", list_id, link, "autoscalers", [], request.query)
    )


# -- backend services -----------------------------------------------------------------------


async def insert_service(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    body = await json_body(request, "BackendService")
    return await mutate(request, lambda rid: emulator_of(request).insert_service(project, body, rid))


async def get_service(request: web.Request) -> web.Response:
    service = emulator_of(request).existing_service(request.match_info["project"], request.match_info["name"])
    return reply(service.to_json(base_url(request)))


async def patch_service(request: web.Request) -> web.Response:
    project, name = request.match_info["project"], request.match_info["name"]
    body = await json_body(request, "BackendService")
    merge = request.method == "PATCH"
    return await mutate(
        request, lambda rid: emulator_of(request).change_service(project, name, body, rid, merge=merge)
    )


async def delete_service(request: web.Request) -> web.Response:
    project, name = request.match_info["project"], request.match_info["name"]
    return await mutate(request, lambda rid: emulator_of(request).delete_service(project, name, rid))


def _services(request: web.Request) -> list[dict[str, Any]]:
    project = request.match_info["project"]
    base = base_url(request)
    return [s.to_json(base) for s in emulator_of(request).services.values() if s.project == project]


async def list_services(request: web.Request) -> web.Response:
    list_id, link = list_identity(request)
    return reply(list_body("compute#backendServiceList", list_id, link, _services(request), request.query))


async def aggregated_services(request: web.Request) -> web.Response:
    list_id, link = list_identity(request)
    scoped = [("global", item) for item in _services(request)]
    return reply(
        aggregated_body(
            "compute#backendServiceAggregatedList", list_id, link, "backendServices", scoped, request.query
        )
    )


async def service_health(request: web.Request) -> web.Response:
    emulator = emulator_of(request)
    project = request.match_info["project"]
    service = emulator.existing_service(project, request.match_info["name"])
    body = await json_body(request, "ResourceGroupReference")
    reference = parse_reference(body.get("group"), "resource.group", project, ("instanceGroups",))
    group = emulator.group(reference.path)
    if group is None:
        raise not_found(reference.path)
    if reference.path not in service.attached_groups():
        raise invalid(f"Instance group '{reference.path}' is not a backend of '{service.path}'.")
    return reply(
        {
            "kind": "compute#backendServiceGroupHealth",
            "healthStatus": service.health_of(group, base_url(request)),
        }
    )


# -- side API and liveness ------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def load_balancers(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    items = [
        {"backendService": s.name, "url": s.url}
        for s in emulator_of(request).services.values()
        if s.project == project and s.port is not None
    ]
    return reply({"items": items})


async def processes(request: web.Request) -> web.Response:
    project = request.match_info["project"]
    items = []
    for group in emulator_of(request).groups.values():
        if group.project != project:
            continue
        for instance in group.instances:
            if instance.pid is not None:
                items.append(
                    {
                        "instance": instance.name,
                        "pid": instance.pid,
                        "port": instance.port,
                        "group": group.name,
                    }
                )
    return reply({"items": items})


def build_app(emulator: Emulator, reply_wait: float) -> web.Application:
    app = web.Application(middlewares=[google_errors], client_max_size=8 * 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    app[REPLY_WAIT_KEY] = reply_wait
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/emulator/v1/projects/{project}/load-balancers", load_balancers)
    r.add_get("/emulator/v1/projects/{project}/processes", processes)

    p = "/compute/v1/projects/{project}"
    INSTANCE_TEMPLATES.add_routes(r, p)
    HEALTH_CHECKS.add_routes(r, p)

    for scope in ("/zones/{zone}", "/regions/{region}"):
        groups = p + scope + "/instanceGroupManagers"
        r.add_get(groups, list_groups)
        r.add_post(groups, insert_group)
        r.add_get(groups + "/{name}", get_group)
        r.add_delete(groups + "/{name}", delete_group)
        r.add_post(groups + "/{name}/resize", resize_group)
        r.add_post(groups + "/{name}/listManagedInstances", list_managed_instances)
        r.add_get(p + scope + "/instanceGroups", list_instance_groups)
        r.add_get(p + scope + "/instanceGroups/{name}", get_instance_group)
        r.add_get(p + scope + "/autoscalers", list_autoscalers)
        r.add_get(p + scope + "/operations", list_operations)
        r.add_get(p + scope + "/operations/{name}", get_operation)
        r.add_post(p + scope + "/operations/{name}/wait", wait_operation)
    r.add_get(p + "/zones/{zone}/instances/{name}/getGuestAttributes", get_guest_attributes)
    r.add_get(p + "/aggregated/instanceGroupManagers", aggregated_groups)
    r.add_get(p + "/aggregated/instanceGroups", aggregated_instance_groups)
    r.add_get(p + "/aggregated/autoscalers", aggregated_autoscalers)

    r.add_get(p + "/global/backendServices", list_services)
    r.add_post(p + "/global/backendServices", insert_service)
    r.add_get(p + "/global/backendServices/{name}", get_service)
    r.add_patch(p + "/global/backendServices/{name}", patch_service)
    r.add_put(p + "/global/backendServices/{name}", patch_service)
    r.add_delete(p + "/global/backendServices/{name}", delete_service)
    r.add_post(p + "/global/backendServices/{name}/getHealth", service_health)
    r.add_get(p + "/aggregated/backendServices", aggregated_services)

    r.add_get(p + "/zones", list_zones)
    r.add_get(p + "/zones/{zone}", get_zone)
    r.add_get(p + "/regions", list_regions)
    r.add_get(p + "/regions/{region}", get_region)

    r.add_get(p + "/global/operations", list_operations)
    r.add_get(p + "/global/operations/{name}", get_operation)
    r.add_post(p + "/global/operations/{name}/wait", wait_operation)
    r.add_get(p + "/aggregated/operations", aggregated_operations)

    # Cloud Monitoring's v3 REST API, for the load balancers' request counts (monitoring.py).
    add_monitoring_routes(app, emulator.request_counts)
    return app
