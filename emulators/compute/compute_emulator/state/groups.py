"""Managed instance groups (zonal and regional): their template, size, ports, autohealing, zones."""

from __future__ import annotations

import copy
from typing import Any

from ..errors import already_exists, invalid, not_found, required
from ..groups import ManagedInstanceGroup
from ..instances import Instance
from ..links import (
    BASE_INSTANCE_NAME_PATTERN,
    NAME_PATTERN,
    ZONE_PATTERN,
    check_name,
    parse_reference,
    region_of_zone,
)
from ..operations import Operation
from .registry import Registry, default_zones, int_in_range, refuse

# Refused rather than silently ignored: ignoring them would change what the caller gets; the
# ignored ones are kept and echoed back, since they only tune how Compute Engine rolls out.
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


class InstanceGroupManagers(Registry):
    """instanceGroupManagers.insert/delete/resize, and instance lookups."""

    def insert_group(
        self, project: str, scope: str, body: dict[str, Any], request_id: str | None
    ) -> Operation:
        name = check_name(body.get("name"))
        path = f"projects/{project}/{scope}/instanceGroupManagers/{name}"
        if path in self.groups:
            raise already_exists(path)
        refuse(body, REFUSED_GROUP_FIELDS, "an instance group manager")
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
        resource["targetSize"] = int_in_range(body, "targetSize", 0, 0, 1000)
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
            delay = int_in_range(policy, "initialDelaySec", 0, 0, 3600)
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
            number = int_in_range(port, "port", 0, 1, 65535)
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
