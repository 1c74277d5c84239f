"""Bad input gets Google's error JSON with the right status; nothing leaks a traceback."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from emulator_helpers import ZONE, Emulator, insert_health_check, insert_template
from google.api_core import exceptions
from google.cloud import compute_v1


def call(
    emulator: Emulator, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> requests.Response:
    url = emulator.api_root + path
    if raw is not None:
        return requests.request(
            method, url, data=raw, headers={"Content-Type": "application/json"}, timeout=10
        )
    return requests.request(method, url, json=body, timeout=10)


def assert_google_error(response: requests.Response, code: int, reason: str, words: str) -> None:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["errors"][0]["reason"] == reason
    assert error["errors"][0]["domain"] == "global"
    assert words in error["message"], error["message"]
    assert "Traceback" not in response.text


def test_malformed_json_is_a_400_parse_error(emulator: Emulator, project: str) -> None:
    response = call(emulator, "POST", f"projects/{project}/global/instanceTemplates", raw=b'{"name": "x",')
    assert_google_error(response, 400, "parseError", "Invalid JSON payload")


def test_an_unknown_field_is_a_400_naming_it(emulator: Emulator, project: str) -> None:
    body = {"name": "t", "properties": {"metadata": {"items": []}, "machineTipe": "e2-small"}}
    response = call(emulator, "POST", f"projects/{project}/global/instanceTemplates", body)
    assert_google_error(response, 400, "invalid", 'Unknown name "machineTipe"')


def test_a_field_of_the_wrong_type_is_a_400(emulator: Emulator, project: str) -> None:
    body = {"name": "hc", "type": "HTTP", "checkIntervalSec": "often"}
    response = call(emulator, "POST", f"projects/{project}/global/healthChecks", body)
    assert_google_error(response, 400, "invalid", "checkIntervalSec")


@pytest.mark.parametrize("name", ["Upper", "1starts-with-digit", "ends-with-dash-", "under_score", "x" * 64])
def test_names_breaking_the_compute_engine_rule_are_a_400(
    emulator: Emulator, project: str, name: str
) -> None:
    response = call(
        emulator, "POST", f"projects/{project}/global/instanceTemplates", {"name": name, "properties": {}}
    )
    assert_google_error(response, 400, "invalid", "resource.name")


def test_dangling_references_are_404s(emulator: Emulator, project: str) -> None:
    missing_template = {
        "name": "blue",
        "baseInstanceName": "blue",
        "instanceTemplate": f"projects/{project}/global/instanceTemplates/missing",
        "targetSize": 1,
    }
    response = call(
        emulator, "POST", f"projects/{project}/zones/{ZONE}/instanceGroupManagers", missing_template
    )
    assert_google_error(response, 404, "notFound", "instanceTemplates/missing")

    missing_group = {
        "name": "web",
        "backends": [{"group": f"projects/{project}/zones/{ZONE}/instanceGroups/nope"}],
    }
    response = call(emulator, "POST", f"projects/{project}/global/backendServices", missing_group)
    assert_google_error(response, 404, "notFound", "instanceGroups/nope")

    missing_check = {"name": "web", "healthChecks": [f"projects/{project}/global/healthChecks/nope"]}
    response = call(emulator, "POST", f"projects/{project}/global/backendServices", missing_check)
    assert_google_error(response, 404, "notFound", "healthChecks/nope")


def test_the_client_library_raises_its_usual_exceptions(
    emulator: Emulator, project: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "t", artifacts["hello"], "1.0.0")
    templates = emulator.client(compute_v1.InstanceTemplatesClient)
    with pytest.raises(exceptions.Conflict, match="already exists"):
        insert_template(emulator, project, "t", artifacts["hello"], "1.0.0")
    with pytest.raises(exceptions.NotFound):
        templates.get(project=project, instance_template="missing")
    with pytest.raises(exceptions.BadRequest, match=r"resource\.name"):
        templates.insert(project=project, instance_template_resource=compute_v1.InstanceTemplate(name="Bad"))
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    with pytest.raises(exceptions.NotFound):
        groups.insert(
            project=project,
            zone=ZONE,
            instance_group_manager_resource=compute_v1.InstanceGroupManager(
                name="blue",
                base_instance_name="blue",
                instance_template=f"projects/{project}/global/instanceTemplates/missing",
                target_size=1,
            ),
        )


def test_fields_the_emulator_cannot_honour_are_refused_not_ignored(emulator: Emulator, project: str) -> None:
    insert_health_check(emulator, project)
    response = call(
        emulator, "POST", f"projects/{project}/global/healthChecks", {"name": "tls", "type": "HTTPS"}
    )
    assert_google_error(response, 400, "invalid", "HTTPS")
    body = {"name": "web", "protocol": "HTTPS"}
    response = call(emulator, "POST", f"projects/{project}/global/backendServices", body)
    assert_google_error(response, 400, "invalid", "HTTPS")


def test_a_backend_service_with_group_backends_needs_a_health_check(
    emulator: Emulator, project: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "t", artifacts["hello"], "1.0.0")
    group = {"name": "blue", "baseInstanceName": "blue", "instanceTemplate": "global/instanceTemplates/t"}
    assert call(emulator, "POST", f"projects/{project}/zones/{ZONE}/instanceGroupManagers", group).ok
    body = {"name": "web", "backends": [{"group": f"zones/{ZONE}/instanceGroups/blue"}]}
    response = call(emulator, "POST", f"projects/{project}/global/backendServices", body)
    assert_google_error(response, 400, "invalid", "must have a health check")


def test_unknown_paths_and_methods_answer_in_the_same_shape(emulator: Emulator, project: str) -> None:
    assert_google_error(
        call(emulator, "GET", f"projects/{project}/global/networks"), 404, "notFound", "networks"
    )
    response = call(emulator, "PUT", f"projects/{project}/global/instanceTemplates")
    assert_google_error(response, 405, "httpMethodNotAllowed", "PUT")


def test_a_retried_insert_with_the_same_request_id_returns_the_first_operation(
    emulator: Emulator, project: str
) -> None:
    request_id = str(uuid.uuid4())
    path = f"projects/{project}/global/instanceTemplates?requestId={request_id}"
    first = call(emulator, "POST", path, {"name": "t", "properties": {}})
    second = call(emulator, "POST", path, {"name": "t", "properties": {}})
    assert first.status_code == second.status_code == 200
    assert first.json()["name"] == second.json()["name"]
    response = call(
        emulator, "POST", f"projects/{project}/global/instanceTemplates?requestId=nope", {"name": "u"}
    )
    assert_google_error(response, 400, "invalid", "requestId")
