"""The Metrics adapter against the Monitoring API the Compute emulator serves: the real REST
client reads what the load balancer counted for one group, and an outage is transient."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from compute_emulator.launcher import EmulatorProcess, free_port

from devstack.base_resources import create_base_resources, load_balancer_urls
from shared.adapters.compute_engine import ComputeEngine
from shared.adapters.monitoring import CloudMonitoring, MonitoringUnavailable
from shared.artifact import build_artifact, sha256_of_file
from shared.config import EnvironmentConfig
from tests.e2e.conftest import REPO_ROOT, wait_for

PROJECT = "metrics-test"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    running = EmulatorProcess.start(tmp_path_factory.mktemp("emulator"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def env(emulator: EmulatorProcess) -> EnvironmentConfig:
    environment = EnvironmentConfig(
        app="metrics",
        name="test",
        region="us-central1",
        instance_count=1,
        cool_down_seconds=1,
        provisioning_deadline_seconds=30,
        base_instance_template="metrics-test-base",
        health_check="metrics-test-hc",
        backend_service="metrics-test-backend",
        health_path="/healthz",
        draining_timeout_seconds=1,
        url="",
    )
    host = emulator.endpoint.removeprefix("http://")
    create_base_resources(host, PROJECT, [environment])
    return environment


def test_the_adapter_reads_requests_and_server_errors_of_one_group(
    emulator: EmulatorProcess, env: EnvironmentConfig, tmp_path: Path
) -> None:
    built = build_artifact(REPO_ROOT / "examples" / "hello", tmp_path)
    artifact = f"file://{built}"
    compute = ComputeEngine(PROJECT, endpoint=emulator.endpoint, operation_timeout=60)
    compute.ensure_instance_template(
        env, "metrics-green-tpl", version="1.0.0", artifact=artifact, artifact_sha256=sha256_of_file(built)
    )
    compute.ensure_instance_group(env, "metrics-green-mig", template="metrics-green-tpl")
    wait_for(lambda: compute.group_health(env, "metrics-green-mig").all_healthy, 30, "green healthy")
    compute.attach_group(env, "metrics-green-mig")
    url = load_balancer_urls(emulator.endpoint.removeprefix("http://"), PROJECT)[env.backend_service]
    wait_for(lambda: requests.get(url + "/", timeout=5).status_code == 200, 30, "the LB to serve green")
    start = dt.datetime.now(dt.UTC)
    served = [requests.get(url + "/", timeout=5).status_code for _ in range(5)]
    missing = [requests.get(url + "/nothing-here", timeout=5).status_code for _ in range(2)]
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert served == [200] * 5 and missing == [404] * 2

    metrics = CloudMonitoring(PROJECT, endpoint=emulator.endpoint)
    sample = metrics.traffic(env, "metrics-green-mig", start, end)
    assert sample.requests >= 7, "at least the requests of the window (its first second may hold more)"
    assert sample.server_errors == 0, "404 is a client error, not a breach"
    other = metrics.traffic(env, "metrics-other-mig", start, end)
    assert (other.requests, other.server_errors) == (0, 0)


def test_an_unreachable_monitoring_api_is_transient(env: EnvironmentConfig) -> None:
    metrics = CloudMonitoring(PROJECT, endpoint=f"http://127.0.0.1:{free_port()}")
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(MonitoringUnavailable):
        metrics.traffic(env, "any-mig", now - dt.timedelta(seconds=5), now)
