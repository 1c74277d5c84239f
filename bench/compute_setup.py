"""What the Compute benchmarks share: client options for an emulator, and the release template
plus the fast HTTP health check that every benchmark group is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from shared.artifact import sha256_of_file

PROJECT = "bench"
ZONE = "us-central1-a"
TEMPLATE_URL = f"projects/{PROJECT}/global/instanceTemplates/bench"
HEALTH_CHECK_URL = f"projects/{PROJECT}/global/healthChecks/bench"


def client_options(endpoint: str) -> dict[str, Any]:
    return {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=endpoint)}


def create_template_and_health_check(options: dict[str, Any], artifact: Path, version: str = "1.0.0") -> None:
    """Template `bench` running `artifact`, and health check `bench` probing /healthz every second."""
    metadata = compute_v1.Metadata(
        items=[
            compute_v1.Items(key="release-artifact", value=f"file://{artifact}"),
            compute_v1.Items(key="release-artifact-sha256", value=sha256_of_file(artifact)),
            compute_v1.Items(key="release-version", value=version),
        ]
    )
    compute_v1.InstanceTemplatesClient(**options).insert(
        project=PROJECT,
        instance_template_resource=compute_v1.InstanceTemplate(
            name="bench", properties=compute_v1.InstanceProperties(metadata=metadata)
        ),
    ).result(timeout=30)
    compute_v1.HealthChecksClient(**options).insert(
        project=PROJECT,
        health_check_resource=compute_v1.HealthCheck(
            name="bench",
            type_="HTTP",
            check_interval_sec=1,
            timeout_sec=1,
            healthy_threshold=1,
            unhealthy_threshold=2,
            http_health_check=compute_v1.HTTPHealthCheck(
                port_specification="USE_NAMED_PORT", port_name="http", request_path="/healthz"
            ),
        ),
    ).result(timeout=30)
