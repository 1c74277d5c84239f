"""Per-environment base resources: what Terraform creates on GCP, created here on the Compute emulator.

For each environment: a base instance template (the pipeline copies it per release and adds the
release metadata), an HTTP health check on the environment's health path, a backend service
with connection draining and, where the environment has one, its preview backend service (green's
smoke checks run through it before the switch). They are created with the unchanged `google-cloud-compute` client.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterable
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from shared.config import EnvironmentConfig

OPERATION_TIMEOUT_SECONDS = 60.0
MACHINE_TYPE = "e2-small"
SOURCE_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
NAMED_PORT = "http"
# Probe fast and decide fast: local releases should turn healthy (or not) within seconds.
HEALTH_CHECK_INTERVAL_SECONDS = 1
HEALTH_CHECK_TIMEOUT_SECONDS = 1
HEALTHY_THRESHOLD = 1
UNHEALTHY_THRESHOLD = 2
BACKEND_TIMEOUT_SECONDS = 30


def _client_options(compute_host: str) -> dict[str, str]:
    return {"api_endpoint": f"http://{compute_host}"}


def _await(operation: Any) -> None:
    operation.result(timeout=OPERATION_TIMEOUT_SECONDS)


def _insert_or_keep(insert: Any) -> None:
    """Run one insert; a resource that already exists (a restarted stack) is kept as it is."""
    with contextlib.suppress(api_exceptions.Conflict):
        _await(insert())


def create_base_resources(compute_host: str, project: str, environments: Iterable[EnvironmentConfig]) -> None:
    credentials = AnonymousCredentials()
    options = _client_options(compute_host)
    templates = compute_v1.InstanceTemplatesClient(credentials=credentials, client_options=options)
    health_checks = compute_v1.HealthChecksClient(credentials=credentials, client_options=options)
    backend_services = compute_v1.BackendServicesClient(credentials=credentials, client_options=options)

    for environment in environments:
        template = compute_v1.InstanceTemplate(
            name=environment.base_instance_template,
            description=f"Base template for {environment.key}; each release copies it.",
            properties=compute_v1.InstanceProperties(
                machine_type=MACHINE_TYPE,
                disks=[
                    compute_v1.AttachedDisk(
                        boot=True,
                        auto_delete=True,
                        initialize_params=compute_v1.AttachedDiskInitializeParams(source_image=SOURCE_IMAGE),
                    )
                ],
                network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default")],
                labels={"app": environment.app, "environment": environment.name},
            ),
        )
        _insert_or_keep(
            lambda template=template: templates.insert(project=project, instance_template_resource=template)
        )

        health_check = compute_v1.HealthCheck(
            name=environment.health_check,
            type_="HTTP",
            http_health_check=compute_v1.HTTPHealthCheck(
                port_name=NAMED_PORT,
                port_specification="USE_NAMED_PORT",
                request_path=environment.health_path,
            ),
            check_interval_sec=HEALTH_CHECK_INTERVAL_SECONDS,
            timeout_sec=HEALTH_CHECK_TIMEOUT_SECONDS,
            healthy_threshold=HEALTHY_THRESHOLD,
            unhealthy_threshold=UNHEALTHY_THRESHOLD,
        )
        _insert_or_keep(
            lambda health_check=health_check: health_checks.insert(
                project=project, health_check_resource=health_check
            )
        )
        health_check_link = health_checks.get(
            project=project, health_check=environment.health_check
        ).self_link

        backend_service = compute_v1.BackendService(
            name=environment.backend_service,
            protocol="HTTP",
            port_name=NAMED_PORT,
            load_balancing_scheme="EXTERNAL_MANAGED",
            timeout_sec=BACKEND_TIMEOUT_SECONDS,
            health_checks=[health_check_link],
            connection_draining=compute_v1.ConnectionDraining(
                draining_timeout_sec=environment.draining_timeout_seconds
            ),
        )
        _insert_or_keep(
            lambda backend_service=backend_service: backend_services.insert(
                project=project, backend_service_resource=backend_service
            )
        )
        if environment.preview_backend_service:
            preview = compute_v1.BackendService(
                name=environment.preview_backend_service,
                description=f"Preview of {environment.key}: the release about to go live, for its smoke checks.",
                protocol="HTTP",
                port_name=NAMED_PORT,
                load_balancing_scheme="EXTERNAL_MANAGED",
                timeout_sec=BACKEND_TIMEOUT_SECONDS,
                health_checks=[health_check_link],
                connection_draining=compute_v1.ConnectionDraining(draining_timeout_sec=0),
            )
            _insert_or_keep(
                lambda preview=preview: backend_services.insert(
                    project=project, backend_service_resource=preview
                )
            )


def load_balancer_urls(compute_host: str, project: str, timeout: float = 10.0) -> dict[str, str]:
    """Each backend service's local load-balancer URL, from the emulator's side API."""
    url = f"http://{compute_host}/emulator/v1/projects/{project}/load-balancers"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        document = json.loads(response.read().decode("utf-8"))
    return {str(item["backendService"]): str(item["url"]) for item in document.get("items", [])}
