"""Every read method the Compute emulator serves answers what Google's Compute v1 discovery
document allows, field by field, after a real deployment (groups, health, a backend service)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from compute_emulator.api import build_app
from compute_emulator.discovery import discovery_document, method_for, problems
from compute_emulator.state import Emulator as EmulatorState
from emulator_helpers import (
    REGION,
    ZONE,
    Emulator,
    group_resource,
    insert_template,
    wait_until,
)
from google.api_core.exceptions import NotFound
from google.cloud import compute_v1
from test_load_balancer import healthy_group, insert_service

# POST methods that only read: they are part of what a client reads after a deployment.
READING_POSTS = ("/listManagedInstances", "/getHealth", "/wait")


def served_read_routes() -> list[str]:
    """The emulator's Compute routes that read, as `METHOD path-pattern`, from its own router."""
    app = build_app(EmulatorState(Path("/nonexistent")), reply_wait=0.0)
    found = set()
    for route in app.router.routes():
        pattern = route.resource.canonical if route.resource is not None else ""
        if not pattern.startswith("/compute/v1/"):
            continue
        if route.method == "GET" or (route.method == "POST" and pattern.endswith(READING_POSTS)):
            found.add(f"{route.method} {pattern}")
    return sorted(found)


def _operation_names(emulator: Emulator, project: str) -> dict[str, str]:
    """One operation name per scope the deployment produced operations in."""
    names = {}
    for scope in ("global", f"zones/{ZONE}", f"regions/{REGION}"):
        listing = requests.get(f"{emulator.api_root}projects/{project}/{scope}/operations", timeout=10).json()
        names[scope] = listing["items"][0]["name"]
    return names


def _concrete(pattern: str, values: dict[str, str], operations: dict[str, str]) -> str:
    path = pattern.replace("{project}", values["project"]).replace("{zone}", ZONE).replace("{region}", REGION)
    collection = re.search(r"/(\w+)/\{name\}", path)
    if collection is not None:
        kind = collection.group(1)
        if kind == "operations":
            scope = (
                "global"
                if "/global/" in path
                else (f"zones/{ZONE}" if "/zones/" in path else f"regions/{REGION}")
            )
            name = operations[scope]
        else:
            name = values[kind if "/regions/" not in path else f"regional:{kind}"]
        path = path.replace("{name}", name)
    return path


def refused_instance(emulator: Emulator, project: str, artifact: str, health_check: str) -> str:
    """The name of an instance whose startup refused its release, so it has guest attributes.

    Its group has no autohealing: a recreation would clear them while the check reads them."""
    insert_template(emulator, project, "refused", artifact, "6.6.6", sha256="0" * 64)
    resource = group_resource(project, "refused", "refused", 1, health_check)
    resource.auto_healing_policies = []
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    groups.insert(project=project, zone=ZONE, instance_group_manager_resource=resource).result(timeout=30)
    (managed,) = groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="refused")
    instances = emulator.client(compute_v1.InstancesClient)

    def reported() -> bool:
        try:
            instances.get_guest_attributes(project=project, zone=ZONE, instance=managed.name)
        except NotFound:
            return False
        return True

    wait_until(reported, 10, "the refusal in the guest attributes")
    return managed.name


def test_every_read_method_answers_within_the_compute_v1_discovery_document(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    document = discovery_document("compute.v1")
    zonal = healthy_group(emulator, project, "blue", artifacts["testapp"], "1.0.0", health_check)
    regional_groups = emulator.client(compute_v1.RegionInstanceGroupManagersClient)
    regional = group_resource(project, "green", "blue", 1, health_check)
    regional_groups.insert(project=project, region=REGION, instance_group_manager_resource=regional).result(
        timeout=30
    )
    insert_service(emulator, project, health_check, [zonal])
    url = emulator.load_balancer_url(project, "web")
    wait_until(lambda: requests.get(url + "/", timeout=5).status_code == 200, 10, "the LB to serve")
    refused = refused_instance(emulator, project, artifacts["testapp"], health_check)

    values = {
        "project": project,
        "instanceTemplates": "blue",
        "healthChecks": "hc",
        "instanceGroupManagers": "blue",
        "instanceGroups": "blue",
        "regional:instanceGroupManagers": "green",
        "regional:instanceGroups": "green",
        "backendServices": "web",
        "instances": refused,
    }
    operations = _operation_names(emulator, project)
    root = emulator.endpoint
    checked, unmatched, failures = [], [], []
    for route in served_read_routes():
        method, pattern = route.split(" ", 1)
        path = _concrete(pattern, values, operations)
        relative = path.removeprefix("/compute/v1/")
        api_method = method_for(document, method, relative)
        if api_method is None or api_method.response is None:
            unmatched.append(route)
            continue
        body: dict[str, Any] | None = {"group": zonal} if path.endswith("/getHealth") else None
        response = requests.request(method, root + path, json=body, timeout=30)
        if response.status_code != 200:
            failures.append(f"{route}: HTTP {response.status_code} {response.text[:200]}")
            continue
        failures.extend(
            f"{api_method.id}: {p}" for p in problems(document, api_method.response, response.json())
        )
        checked.append(api_method.id)

    assert unmatched == [], f"served routes that are no Compute v1 method: {unmatched}"
    assert failures == [], "\n".join(failures)
    assert {
        "compute.backendServices.getHealth",
        "compute.regionInstanceGroupManagers.listManagedInstances",
        "compute.instances.getGuestAttributes",
    } <= set(checked)
    assert len(checked) >= 30, checked


def test_the_check_finds_an_answer_the_document_does_not_allow() -> None:
    document = discovery_document("compute.v1")
    valid = {"kind": "compute#zone", "name": "us-central1-a", "status": "UP", "id": "123"}
    assert problems(document, "Zone", valid) == []
    assert problems(document, "Zone", {**valid, "color": "blue"}) == ["Zone.color: unknown field"]
    assert problems(document, "Zone", {**valid, "status": "SIDEWAYS"}) == [
        "Zone.status: 'SIDEWAYS' is not one of ['DOWN', 'UP']"
    ]
    assert problems(document, "Zone", {**valid, "id": 123}) == [
        "Zone.id: expected a decimal string (uint64), got 123"
    ]
    assert problems(document, "BackendService", {"timeoutSec": "30"}) == [
        "BackendService.timeoutSec: expected integer, got '30'"
    ]
