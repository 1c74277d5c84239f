"""Backend services: their backends and health check, fingerprinted patch/update, delete."""

from __future__ import annotations

import copy
from typing import Any

from ..backends import BackendService
from ..errors import ApiError, already_exists, condition_not_met, invalid, not_found
from ..links import check_name, parse_reference
from ..operations import Operation
from .registry import OUTPUT_ONLY, Registry, int_in_range, refuse

# Refused rather than silently ignored: ignoring them would change what the caller gets.
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


class BackendServices(Registry):
    """backendServices.insert/patch/update/delete."""

    def _service_resource(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        refuse(body, REFUSED_SERVICE_FIELDS, "a backend service")
        protocol = body.get("protocol", "HTTP")
        if protocol != "HTTP":
            raise invalid(
                f"Backend service protocol '{protocol}' is not supported by the local Compute emulator."
            )
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in (*OUTPUT_ONLY, "fingerprint")}
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
            int_in_range(body["connectionDraining"], "drainingTimeoutSec", 0, 0, 3600)
        if "timeoutSec" in body:
            int_in_range(body, "timeoutSec", 30, 1, 2_147_483_647)
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
            merged = merge_patch(current, body)
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


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge-patch (RFC 7396), as a backend service's `patch` applies its body.

    >>> merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": None, "b": {"c": 4}})
    {'b': {'c': 4, 'd': 3}}
    """
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
