"""Health checks: the HTTP and TCP kinds, their defaults and ranges, and when a delete must wait."""

from __future__ import annotations

import copy
from typing import Any

from ..clock import new_id, rfc3339_now
from ..errors import already_exists, in_use, invalid, not_found
from ..links import NAME_PATTERN, check_name
from ..operations import Operation
from .registry import OUTPUT_ONLY, Registry, int_in_range, refuse

# Refused rather than silently ignored: ignoring them would change what the caller gets.
REFUSED_HEALTH_CHECK_FIELDS = (
    "region",
    "httpsHealthCheck",
    "http2HealthCheck",
    "sslHealthCheck",
    "grpcHealthCheck",
    "grpcTlsHealthCheck",
)
SUPPORTED_HEALTH_CHECK_TYPES = ("HTTP", "TCP")


class HealthChecks(Registry):
    """healthChecks.insert/delete."""

    def insert_health_check(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/global/healthChecks/{name}"
        if path in self.health_checks:
            raise already_exists(path)
        refuse(body, REFUSED_HEALTH_CHECK_FIELDS, "a health check")
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in OUTPUT_ONLY}
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
        interval = int_in_range(resource, "checkIntervalSec", 5, 1, 300)
        timeout = int_in_range(resource, "timeoutSec", 5, 1, 300)
        if timeout > interval:
            raise invalid("Invalid value for field 'resource.timeoutSec': must not exceed checkIntervalSec.")
        resource["checkIntervalSec"] = interval
        resource["timeoutSec"] = timeout
        resource["healthyThreshold"] = int_in_range(resource, "healthyThreshold", 2, 1, 10)
        resource["unhealthyThreshold"] = int_in_range(resource, "unhealthyThreshold", 2, 1, 10)
        resource["type"] = kind
        specification = details.get("portSpecification")
        if specification not in (None, "USE_FIXED_PORT", "USE_NAMED_PORT", "USE_SERVING_PORT"):
            raise invalid(
                f"Invalid value for field 'resource.{details_field}.portSpecification': '{specification}'."
            )
        if "port" in details:
            details["port"] = int_in_range(details, "port", 80, 1, 65535)
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
