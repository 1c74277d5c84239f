"""The emulator's resources and the rules for changing them.

Every mutation validates synchronously (so bad input gets an immediate Google-shaped 4xx), records
the change, and returns an Operation whose work finishes it. Conflicts that Compute Engine reports
through the operation (deleting a resource still in use) fail the operation, not the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

from .backends import BackendService, close_all
from .clock import new_id, rfc3339_now
from .errors import ApiError, already_exists, condition_not_met, in_use, invalid, not_found, required
from .groups import ManagedInstanceGroup
from .health import HealthChecker
from .instances import Instance
from .links import (
    BASE_INSTANCE_NAME_PATTERN,
    NAME_PATTERN,
    ZONE_PATTERN,
    check_name,
    parse_reference,
    region_of_zone,
)
from .monitoring import RequestCounts
from .operations import Operation, OperationRegistry, Work

LOG = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_SECONDS = 20.0

# Fields that exist in the API but that the emulator cannot honour: refused rather than silently
# ignored, because ignoring them would change what the caller gets.
REFUSED_TEMPLATE_FIELDS = ("sourceInstance", "sourceInstanceParams")
REFUSED_HEALTH_CHECK_FIELDS = (
    "region",
    "httpsHealthCheck",
    "http2HealthCheck",
    "sslHealthCheck",
    "grpcHealthCheck",
    "grpcTlsHealthCheck",
)
SUPPORTED_HEALTH_CHECK_TYPES = ("HTTP", "TCP")
REFUSED_GROUP_FIELDS = (
    "statefulPolicy",
    "targetPools",
    "allInstancesConfig",
    "instanceFlexibilityPolicy",
    "standbyPolicy",
    "targetStoppedSize",
    "targetSuspendedSize",
    "resourcePolicies",
    "targetSizePolicy",
)
IGNORED_GROUP_FIELDS = ("updatePolicy", "instanceLifecyclePolicy", "listManagedInstancesResults")
REFUSED_SERVICE_FIELDS = (
    "region",
    "network",
    "failoverPolicy",
    "haPolicy",
    "subsetting",
    "serviceBindings",
    "serviceLbPolicy",
    "securitySettings",
    "tlsSettings",
    "customMetrics",
)
SUPPORTED_BALANCING_MODES = ("UTILIZATION", "RATE")
# Output-only fields a caller may echo back from a get; Compute Engine ignores them on input.
_OUTPUT_ONLY = ("kind", "id", "selfLink", "creationTimestamp", "selfLinkWithId")


def _refuse(body: dict[str, Any], fields: tuple[str, ...], what: str) -> None:
    for field in fields:
        if field in body:
            raise invalid(f"Field '{field}' of {what} is not supported by the local Compute emulator.")


def _int_in_range(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise invalid(f"Invalid value for field 'resource.{field}': '{value}'.") from exc
    if not low <= number <= high:
        raise invalid(f"Invalid value for field 'resource.{field}': '{number}'. Must be in [{low}, {high}].")
    return number


def default_zones(region: str) -> list[str]:
    return [f"{region}-{suffix}" for suffix in ("a", "b", "c")]


class Emulator:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.health = HealthChecker()
        self.operations = OperationRegistry()
        self.templates: dict[str, dict[str, Any]] = {}
        self.health_checks: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, ManagedInstanceGroup] = {}
        self.services: dict[str, BackendService] = {}
        self.request_counts = RequestCounts()

    # -- what groups and backend services ask --------------------------------------------------

    def template_resource(self, path: str) -> dict[str, Any] | None:
        return self.templates.get(path)

    def health_check_resource(self, path: str) -> dict[str, Any] | None:
        return self.health_checks.get(path)

    def draining_timeout_for(self, group_path: str) -> float:
        timeouts = [s.draining_timeout for s in self.services.values() if s.serves(group_path)]
        return max(timeouts, default=0.0)

    def health_checks_serving(self, group_path: str) -> list[str]:
        return [hc for s in self.services.values() if s.serves(group_path) for hc in s.health_check_paths]

    def group(self, group_path: str) -> ManagedInstanceGroup | None:
        return self.groups.get(group_path.replace("/instanceGroups/", "/instanceGroupManagers/"))

    def _operation(
        self,
        project: str,
        scope: str,
        operation_type: str,
        target_path: str,
        target_id: str,
        work: Work,
        request_id: str | None,
    ) -> Operation:
        return self.operations.start(project, scope, operation_type, target_path, target_id, work, request_id)

    # -- instance templates -----------------------------------------------------------------

    def insert_template(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/global/instanceTemplates/{name}"
        if path in self.templates:
            raise already_exists(path)
        _refuse(body, REFUSED_TEMPLATE_FIELDS, "an instance template")
        if "properties" not in body:
            raise required("resource.properties")
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in _OUTPUT_ONLY}
        resource.update({"id": new_id(), "creationTimestamp": rfc3339_now()})
        self.templates[path] = resource

        async def work() -> None:
            return None

        return self._operation(project, "global", "insert", path, resource["id"], work, request_id)

    def delete_template(self, project: str, name: str, request_id: str | None) -> Operation:
        path = f"projects/{project}/global/instanceTemplates/{name}"
        resource = self.templates.get(path)
        if resource is None:
            raise not_found(path)

        async def work() -> None:
            for group in self.groups.values():
                if group.template_path == path:
                    raise in_use(path, group.path)
            self.templates.pop(path, None)

        return self._operation(project, "global", "delete", path, resource["id"], work, request_id)

    # -- health checks ----------------------------------------------------------------------

    def insert_health_check(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/global/healthChecks/{name}"
        if path in self.health_checks:
            raise already_exists(path)
        _refuse(body, REFUSED_HEALTH_CHECK_FIELDS, "a health check")
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in _OUTPUT_ONLY}
        kind = resource.get("type") or ("TCP" if "tcpHealthCheck" in resource else "HTTP")
        if kind not in SUPPORTED_HEALTH_CHECK_TYPES:
            raise invalid(
                f"Health check type '{kind}' is not supported by the local Compute emulator "
                f"(supported: {', '.join(SUPPORTED_HEALTH_CHECK_TYPES)})."
            )
        details_field = "httpHealthCheck" if kind == "HTTP" else "tcpHealthCheck"
        other_field = "tcpHealthCheck" if kind == "HTTP" else "httpHealthCheck"
        if other_field in resource:
            raise invalid(f"Invalid value for field 'resource.{other_field}': not allowed with type {kind}.")
        details = resource.setdefault(details_field, {})
        interval = _int_in_range(resource, "checkIntervalSec", 5, 1, 300)
        timeout = _int_in_range(resource, "timeoutSec", 5, 1, 300)
        if timeout > interval:
            raise invalid("Invalid value for field 'resource.timeoutSec': must not exceed checkIntervalSec.")
        resource["checkIntervalSec"] = interval
        resource["timeoutSec"] = timeout
        resource["healthyThreshold"] = _int_in_range(resource, "healthyThreshold", 2, 1, 10)
        resource["unhealthyThreshold"] = _int_in_range(resource, "unhealthyThreshold", 2, 1, 10)
        resource["type"] = kind
        specification = details.get("portSpecification")
        if specification not in (None, "USE_FIXED_PORT", "USE_NAMED_PORT", "USE_SERVING_PORT"):
            raise invalid(
                f"Invalid value for field 'resource.{details_field}.portSpecification': '{specification}'."
            )
        if "port" in details:
            details["port"] = _int_in_range(details, "port", 80, 1, 65535)
        if specification in (None, "USE_FIXED_PORT") and "portName" not in details:
            details.setdefault("port", 80)
        if "portName" in details and not NAME_PATTERN.fullmatch(str(details["portName"])):
            raise invalid(
                f"Invalid value for field 'resource.{details_field}.portName': '{details['portName']}'."
            )
        if kind == "HTTP":
            request_path = details.setdefault("requestPath", "/")
            if not str(request_path).startswith("/"):
                raise invalid(
                    f"Invalid value for field 'resource.httpHealthCheck.requestPath': '{request_path}'."
                )
            details.setdefault("proxyHeader", "NONE")
        resource.update({"id": new_id(), "creationTimestamp": rfc3339_now()})
        self.health_checks[path] = resource

        async def work() -> None:
            return None

        return self._operation(project, "global", "insert", path, resource["id"], work, request_id)

    def delete_health_check(self, project: str, name: str, request_id: str | None) -> Operation:
        path = f"projects/{project}/global/healthChecks/{name}"
        resource = self.health_checks.get(path)
        if resource is None:
            raise not_found(path)

        async def work() -> None:
            for group in self.groups.values():
                if group.autohealing is not None and group.autohealing[0] == path:
                    raise in_use(path, group.path)
            for service in self.services.values():
                if path in service.health_check_paths:
                    raise in_use(path, service.path)
            self.health_checks.pop(path, None)

        return self._operation(project, "global", "delete", path, resource["id"], work, request_id)

    # -- managed instance groups ------------------------------------------------------------

    def insert_group(
        self, project: str, scope: str, body: dict[str, Any], request_id: str | None
    ) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/{scope}/instanceGroupManagers/{name}"
        if path in self.groups:
            raise already_exists(path)
        _refuse(body, REFUSED_GROUP_FIELDS, "an instance group manager")
        resource: dict[str, Any] = {}
        if "description" in body:
            resource["description"] = body["description"]
        base = body.get("baseInstanceName")
        if not base:
            raise required("resource.baseInstanceName")
        if not BASE_INSTANCE_NAME_PATTERN.fullmatch(str(base)):
            raise invalid(
                f"Invalid value for field 'resource.baseInstanceName': '{base}'. "
                "Must be a match of regex '[a-z]([-a-z0-9]{0,57}|[-a-z0-9]{0,51}-#{1,10})'"
            )
        resource["baseInstanceName"] = base
        resource["instanceTemplate"] = self._template_reference(project, body)
        resource["targetSize"] = _int_in_range(body, "targetSize", 0, 0, 1000)
        resource["namedPorts"] = self._named_ports(body.get("namedPorts", []))
        policies = body.get("autoHealingPolicies", [])
        if len(policies) > 1:
            raise invalid(
                "Invalid value for field 'resource.autoHealingPolicies': only one policy is allowed."
            )
        if policies:
            policy = policies[0]
            reference = parse_reference(
                policy.get("healthCheck"),
                "resource.autoHealingPolicies[0].healthCheck",
                project,
                ("healthChecks",),
            )
            if reference.scope != "global":
                raise invalid("Regional health checks are not supported by the local Compute emulator.")
            if reference.path not in self.health_checks:
                raise not_found(reference.path)
            delay = _int_in_range(policy, "initialDelaySec", 0, 0, 3600)
            resource["autoHealingPolicies"] = [{"healthCheck": reference.path, "initialDelaySec": delay}]
        for field in IGNORED_GROUP_FIELDS:
            if field in body:
                resource[field] = copy.deepcopy(body[field])
        if scope.startswith("zones/"):
            if "distributionPolicy" in body:
                raise invalid(
                    "Field 'distributionPolicy' is only allowed for regional instance group managers."
                )
            zones = [scope.split("/", 1)[1]]
        else:
            region = scope.split("/", 1)[1]
            zones = self._distribution_zones(region, body.get("distributionPolicy") or {})
            if "distributionPolicy" in body:
                resource["distributionPolicy"] = {
                    "targetShape": body["distributionPolicy"].get("targetShape", "EVEN")
                }
        group = ManagedInstanceGroup(self, project, scope, name, resource, zones)
        self.groups[path] = group

        async def work() -> None:
            group.start()

        return self._operation(project, scope, "insert", path, group.id, work, request_id)

    def _template_reference(self, project: str, body: dict[str, Any]) -> str:
        versions = body.get("versions") or []
        if len(versions) > 1:
            raise invalid(
                "Only one entry in 'versions' is supported by the local Compute emulator (no canaries)."
            )
        if versions and "targetSize" in versions[0]:
            raise invalid("Field 'versions[0].targetSize' is not supported by the local Compute emulator.")
        value = body.get("instanceTemplate") or (versions[0].get("instanceTemplate") if versions else None)
        if not value:
            raise required("resource.instanceTemplate")
        reference = parse_reference(value, "resource.instanceTemplate", project, ("instanceTemplates",))
        if reference.scope != "global":
            raise invalid("Regional instance templates are not supported by the local Compute emulator.")
        if reference.path not in self.templates:
            raise not_found(reference.path)
        return reference.path

    @staticmethod
    def _named_ports(ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = []
        for index, port in enumerate(ports):
            name = port.get("name")
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                raise invalid(f"Invalid value for field 'resource.namedPorts[{index}].name': '{name}'.")
            number = _int_in_range(port, "port", 0, 1, 65535)
            result.append({"name": name, "port": number})
        return result

    @staticmethod
    def _distribution_zones(region: str, policy: dict[str, Any]) -> list[str]:
        zones = []
        for index, entry in enumerate(policy.get("zones", [])):
            # A zone URL, `zones/us-central1-a` or the bare zone name.
            zone = str(entry.get("zone", "")).rstrip("/").rsplit("/", 1)[-1]
            if not ZONE_PATTERN.fullmatch(zone) or region_of_zone(zone) != region:
                raise invalid(
                    f"Invalid value for field 'resource.distributionPolicy.zones[{index}].zone': '{zone}'."
                )
            zones.append(zone)
        return zones or default_zones(region)

    def delete_group(self, project: str, scope: str, name: str, request_id: str | None) -> Operation:
        path = f"projects/{project}/{scope}/instanceGroupManagers/{name}"
        group = self.groups.get(path)
        if group is None:
            raise not_found(path)

        async def work() -> None:
            # Like Compute Engine, the group goes when its instances are gone (and their processes).
            await group.delete()
            self.groups.pop(path, None)

        return self._operation(project, scope, "delete", path, group.id, work, request_id)

    def resize_group(
        self, project: str, scope: str, name: str, size: str | None, request_id: str | None
    ) -> Operation:
        group = self.existing_group(project, scope, name)
        if size is None:
            raise required("size")
        try:
            target = int(size)
        except ValueError as exc:
            raise invalid(f"Invalid value for field 'size': '{size}'.") from exc
        if not 0 <= target <= 1000:
            raise invalid(f"Invalid value for field 'size': '{target}'. Must be in [0, 1000].")

        async def work() -> None:
            group.resize(target)

        return self._operation(
            project, scope, "compute.instanceGroupManagers.resize", group.path, group.id, work, request_id
        )

    def existing_group(self, project: str, scope: str, name: str) -> ManagedInstanceGroup:
        path = f"projects/{project}/{scope}/instanceGroupManagers/{name}"
        group = self.groups.get(path)
        if group is None:
            raise not_found(path)
        return group

    def existing_instance(self, project: str, zone: str, name: str) -> Instance:
        """An instance of any group, by zone and name (instances exist only in groups here)."""
        for group in self.groups.values():
            if group.project != project:
                continue
            for instance in group.instances:
                if instance.zone == zone and instance.name == name:
                    return instance
        raise not_found(f"projects/{project}/zones/{zone}/instances/{name}")

    # -- backend services -------------------------------------------------------------------

    def _service_resource(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        _refuse(body, REFUSED_SERVICE_FIELDS, "a backend service")
        protocol = body.get("protocol", "HTTP")
        if protocol != "HTTP":
            raise invalid(
                f"Backend service protocol '{protocol}' is not supported by the local Compute emulator."
            )
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in (*_OUTPUT_ONLY, "fingerprint")}
        checks = []
        for index, value in enumerate(body.get("healthChecks", [])):
            reference = parse_reference(value, f"resource.healthChecks[{index}]", project, ("healthChecks",))
            if reference.path not in self.health_checks:
                raise not_found(reference.path)
            checks.append(reference.path)
        if len(checks) > 1:
            raise invalid(
                "Invalid value for field 'resource.healthChecks': at most one health check is allowed."
            )
        resource["healthChecks"] = checks
        backends = []
        seen = set()
        for index, backend in enumerate(body.get("backends", [])):
            if "customMetrics" in backend:
                raise invalid(
                    "Field 'backends[].customMetrics' is not supported by the local Compute emulator."
                )
            reference = parse_reference(
                backend.get("group"), f"resource.backends[{index}].group", project, ("instanceGroups",)
            )
            if self.group(reference.path) is None:
                raise not_found(reference.path)
            if reference.path in seen:
                raise invalid(f"Invalid value for field 'resource.backends[{index}].group': duplicate group.")
            seen.add(reference.path)
            mode = backend.get("balancingMode", "UTILIZATION")
            if mode not in SUPPORTED_BALANCING_MODES:
                raise invalid(
                    f"Invalid value for field 'resource.backends[{index}].balancingMode': '{mode}'. "
                    f"Supported here: {', '.join(SUPPORTED_BALANCING_MODES)}."
                )
            scaler = float(backend.get("capacityScaler", 1.0))
            if not (scaler == 0.0 or 0.1 <= scaler <= 1.0):
                raise invalid(
                    f"Invalid value for field 'resource.backends[{index}].capacityScaler': '{scaler}'. "
                    "Must be 0 or in [0.1, 1]."
                )
            stored = copy.deepcopy(backend)
            stored.update({"group": reference.path, "balancingMode": mode, "capacityScaler": scaler})
            backends.append(stored)
        resource["backends"] = backends
        if backends and not checks:
            raise invalid("Backend services with instance group backends must have a health check.")
        if len(backends) == 1 and backends[0]["capacityScaler"] == 0.0:
            raise invalid(
                "Invalid value for field 'resource.backends[0].capacityScaler': '0'. "
                "A capacityScaler of 0 needs another backend attached to the backend service."
            )
        if "connectionDraining" in body:
            _int_in_range(body["connectionDraining"], "drainingTimeoutSec", 0, 0, 3600)
        if "timeoutSec" in body:
            _int_in_range(body, "timeoutSec", 30, 1, 2_147_483_647)
        return resource

    def insert_service(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/global/backendServices/{name}"
        if path in self.services:
            raise already_exists(path)
        resource = self._service_resource(project, body)
        service = BackendService(self, project, name, resource)
        self.services[path] = service

        async def work() -> None:
            try:
                await service.start()
            except OSError as exc:
                self.services.pop(path, None)
                raise ApiError(500, "backendError", f"cannot open the load balancer's port: {exc}") from exc
            self._wake_groups(service)

        return self._operation(project, "global", "insert", path, service.id, work, request_id)

    def existing_service(self, project: str, name: str) -> BackendService:
        path = f"projects/{project}/global/backendServices/{name}"
        service = self.services.get(path)
        if service is None:
            raise not_found(path)
        return service

    def change_service(
        self, project: str, name: str, body: dict[str, Any], request_id: str | None, *, merge: bool
    ) -> Operation:
        """patch (`merge=True`, JSON merge-patch) or update (replace); both check the fingerprint."""
        service = self.existing_service(project, name)
        if body.get("name", name) != name:
            raise invalid(f"Invalid value for field 'resource.name': '{body.get('name')}'. It cannot change.")
        supplied = body.get("fingerprint")
        if not supplied:
            raise condition_not_met(
                "Required field 'resource.fingerprint' not specified: an up-to-date fingerprint is needed "
                "to change a backend service."
            )
        if supplied != service.fingerprint:
            raise condition_not_met("Supplied fingerprint does not match current fingerprint.")
        if merge:
            current = service.to_json("")
            current["backends"] = copy.deepcopy(service.resource.get("backends", []))
            current["healthChecks"] = list(service.health_check_paths)
            merged = _merge_patch(current, body)
        else:
            merged = dict(body)
        merged["name"] = name
        resource = self._service_resource(project, {k: v for k, v in merged.items() if k != "fingerprint"})
        # The fingerprint changes now, so a second writer holding the old one gets 412.
        service.replace_resource(resource)
        self._wake_groups(service)

        async def work() -> None:
            return None

        return self._operation(
            project, "global", "patch" if merge else "update", service.path, service.id, work, request_id
        )

    def _wake_groups(self, service: BackendService) -> None:
        for group_path in service.attached_groups():
            group = self.group(group_path)
            if group is not None:
                group.wake()

    def delete_service(self, project: str, name: str, request_id: str | None) -> Operation:
        service = self.existing_service(project, name)

        async def work() -> None:
            self.services.pop(service.path, None)
            await service.close()

        return self._operation(project, "global", "delete", service.path, service.id, work, request_id)

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every instance's process tree, then close the load balancers."""
        groups = list(self.groups.values())
        try:
            await asyncio.wait_for(
                asyncio.gather(*(g.delete() for g in groups), return_exceptions=True),
                _SHUTDOWN_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            LOG.error("instances did not stop within %ss; killing them", _SHUTDOWN_TIMEOUT_SECONDS)
        for group in groups:
            group.kill_now()
        await close_all(list(self.services.values()))
        with contextlib.suppress(Exception):
            await self.health.close()

    def kill_everything_now(self) -> None:
        for group in self.groups.values():
            group.kill_now()


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
