"""The Compute adapter against the Compute emulator, through the unchanged google-cloud-compute
client: idempotent creates (409 → fetch and continue), the fingerprint guard (412 → re-read),
attach / detach, deletes of what is gone, and how errors are classified.

Runs in a project of its own on the session's stack, so it never touches the pipeline's
environments."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from devstack.base_resources import create_base_resources
from shared.adapters.compute_engine import ComputeEngine, ComputeRefused, ComputeUnavailable
from shared.artifact import build_artifact, sha256_of_url
from shared.config import AppConfig, EnvironmentConfig, PipelineConfig
from shared.domain.naming import instance_group_name, instance_template_name
from shared.ports import GroupHealth, PermanentError, PreconditionFailed, TransientError
from shared.usecases.services import Services
from shared.usecases.watchdog import WatchdogReport, collect_leaks
from tests.e2e.conftest import REPO_ROOT, wait_for
from tests.unit.fakes import FakeClock, FakePublisher, FakeStore
from tests.unit.test_leak_collection import in_flight_record

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def compute_host(local_stack: Any) -> str:
    return str(local_stack.env["COMPUTE_EMULATOR_HOST"])


@pytest.fixture(scope="module")
def project(compute_host: str) -> str:
    return f"adapter-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def env(compute_host: str, project: str) -> EnvironmentConfig:
    environment = EnvironmentConfig(
        app="adapter",
        name="test",
        region="us-central1",
        instance_count=1,
        cool_down_seconds=1,
        provisioning_deadline_seconds=30,
        base_instance_template="adapter-test-base",
        health_check="adapter-test-hc",
        backend_service="adapter-test-backend",
        health_path="/healthz",
        draining_timeout_seconds=1,
        url="",
    )
    create_base_resources(compute_host, project, [environment])
    return environment


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"file://{build_artifact(REPO_ROOT / 'examples' / 'hello', tmp_path_factory.mktemp('adapter'))}"


@pytest.fixture(scope="module")
def digest(artifact: str) -> str:
    return sha256_of_url(artifact)


@pytest.fixture
def compute(compute_host: str, project: str) -> ComputeEngine:
    return ComputeEngine(project, endpoint=f"http://{compute_host}", operation_timeout=60)


def test_templates_and_groups_are_created_once_and_carry_the_release(
    compute: ComputeEngine, env: EnvironmentConfig, project: str, artifact: str, digest: str
) -> None:
    for _ in range(2):  # the second call is a retried step: 409, fetch and continue
        compute.ensure_instance_template(
            env, "adapter-one-tpl", version="2.3.4", artifact=artifact, artifact_sha256=digest
        )
        compute.ensure_instance_group(env, "adapter-one-mig", template="adapter-one-tpl")
    template = compute.templates.get(project=project, instance_template="adapter-one-tpl")
    metadata = {item.key: item.value for item in template.properties.metadata.items}
    assert metadata["release-version"] == "2.3.4" and metadata["release-artifact"] == artifact
    assert metadata["release-artifact-sha256"] == digest
    assert template.properties.machine_type, "the base template's properties were not copied"
    group = compute.groups.get(project=project, region=env.region, instance_group_manager="adapter-one-mig")
    assert group.target_size == 1 and group.auto_healing_policies[0].health_check.endswith("/adapter-test-hc")
    assert [(p.name, p.port) for p in group.named_ports] == [("http", 80)]
    managers = [m.name for m in compute.groups.list(project=project, region=env.region)]
    assert managers.count("adapter-one-mig") == 1

    def healthy() -> GroupHealth | None:
        health = compute.group_health(env, "adapter-one-mig")
        return health if health.all_healthy else None

    assert wait_for(healthy, 30, "green healthy").errors == ()


def test_attach_survives_a_concurrent_change_and_keep_only_detaches_the_rest(
    compute: ComputeEngine,
    env: EnvironmentConfig,
    project: str,
    artifact: str,
    compute_host: str,
    digest: str,
) -> None:
    compute.ensure_instance_template(
        env, "adapter-two-tpl", version="2.3.5", artifact=artifact, artifact_sha256=digest
    )
    compute.ensure_instance_group(env, "adapter-two-mig", template="adapter-two-tpl")
    compute.attach_group(env, "adapter-one-mig")
    wait_for(lambda: compute.group_health(env, "adapter-two-mig").all_healthy, 30, "second group healthy")

    other_writer = compute_v1.BackendServicesClient(
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=f"http://{compute_host}"),
    )
    interfered: list[bool] = []
    reads: list[int] = []

    def add_with_interference(backends: Sequence[compute_v1.Backend]) -> list[compute_v1.Backend] | None:
        reads.append(len(backends))
        if not interfered:
            # Someone else changes the service between our read and our patch: our fingerprint is stale.
            service = other_writer.get(project=project, backend_service=env.backend_service)
            other_writer.patch(
                project=project,
                backend_service=env.backend_service,
                backend_service_resource=compute_v1.BackendService(
                    fingerprint=service.fingerprint, description=f"touched {time.time()}"
                ),
            ).result(timeout=30)
            interfered.append(True)
        link = compute.group_link(env, "adapter-two-mig")
        if any(b.group.endswith("/adapter-two-mig") for b in backends):
            return None
        return [*backends, compute_v1.Backend(group=link, balancing_mode="UTILIZATION", capacity_scaler=1.0)]

    compute._change_backends(env, add_with_interference, "attaching with interference")
    assert len(reads) == 2, "the stale fingerprint (412) did not make the adapter re-read"
    attached = [
        b.group.rsplit("/", 1)[-1]
        for b in other_writer.get(project=project, backend_service=env.backend_service).backends
    ]
    assert sorted(attached) == ["adapter-one-mig", "adapter-two-mig"]
    compute.attach_group(env, "adapter-two-mig")  # already there: no change
    wait_for(lambda: compute.serving_healthy(env, "adapter-two-mig"), 30, "the backend to see green healthy")
    assert compute.keep_only_group(env, "adapter-two-mig") == ["adapter-one-mig"]
    assert compute.keep_only_group(env, "adapter-two-mig") == []
    # An abandoned switch's hand-back never leaves the service without a backend: it retries.
    with pytest.raises(ComputeUnavailable, match="only backend left"):
        compute.detach_group(env, "adapter-two-mig", leave_empty=False)
    assert compute.attached_groups(env) == ["adapter-two-mig"]
    # A switch the watchdog has abandoned meanwhile: its poll's keep_only_group writes nothing.
    compute.attach_group(env, "adapter-one-mig")
    with pytest.raises(PreconditionFailed):
        compute.keep_only_group(env, "adapter-two-mig", only_while=lambda: False)
    assert sorted(compute.attached_groups(env)) == ["adapter-one-mig", "adapter-two-mig"]
    assert compute.keep_only_group(env, "adapter-two-mig", only_while=lambda: True) == ["adapter-one-mig"]
    # Nor can it attach green again; and a hand-back puts the live group back only beside green
    # alone (not beside a newer release that took over since it looked).
    with pytest.raises(PreconditionFailed):
        compute.attach_group(env, "adapter-one-mig", only_while=lambda: False)
    with pytest.raises(PreconditionFailed, match="no longer the only backend"):
        compute.attach_group(env, "adapter-one-mig", only_beside="adapter-three-mig")
    assert compute.attached_groups(env) == ["adapter-two-mig"]
    compute.attach_group(env, "adapter-one-mig", only_beside="adapter-two-mig", only_while=lambda: True)
    assert sorted(compute.attached_groups(env)) == ["adapter-one-mig", "adapter-two-mig"]


def test_a_groups_health_takes_its_target_size_from_the_instances_it_keeps(
    compute: ComputeEngine, env: EnvironmentConfig, project: str, artifact: str, digest: str
) -> None:
    # Green's health is one listing of its instances: the group lists each instance it means to
    # have from the start, and one it is letting go no longer counts.
    two = replace(env, instance_count=2)
    compute.ensure_instance_template(
        two, "adapter-size-tpl", version="2.3.6", artifact=artifact, artifact_sha256=digest
    )
    compute.ensure_instance_group(two, "adapter-size-mig", template="adapter-size-tpl")
    try:
        at_once = compute.group_health(two, "adapter-size-mig")
        assert (at_once.exists, at_once.target_size, at_once.instances) == (True, 2, 2)
        assert not at_once.all_healthy

        def all_healthy() -> GroupHealth | None:
            health = compute.group_health(two, "adapter-size-mig")
            return health if health.all_healthy else None

        both = wait_for(all_healthy, 30, "both instances healthy")
        assert (both.target_size, both.healthy) == (2, 2)
        compute.groups.resize(
            project=project, region=two.region, instance_group_manager="adapter-size-mig", size=1
        ).result(timeout=30)
        after = compute.group_health(two, "adapter-size-mig")
        assert after.target_size == 1 and after.all_healthy
    finally:
        compute.delete_instance_group(two, "adapter-size-mig")
        compute.delete_instance_template(two, "adapter-size-tpl")


def test_deleting_is_idempotent(compute: ComputeEngine, env: EnvironmentConfig, project: str) -> None:
    for _ in range(2):
        compute.delete_instance_group(env, "adapter-one-mig")
        compute.delete_instance_template(env, "adapter-one-tpl")
    assert not compute.group_health(env, "adapter-one-mig").exists


def test_configuration_errors_are_permanent_and_outages_transient(
    compute: ComputeEngine, env: EnvironmentConfig, project: str
) -> None:

    with pytest.raises(ComputeRefused) as refused:
        compute.ensure_instance_template(
            replace(env, base_instance_template="no-such-base"),
            "adapter-three-tpl",
            version="1.0.0",
            artifact="x",
            artifact_sha256="0" * 64,
        )
    assert isinstance(refused.value, PermanentError)
    with pytest.raises(ComputeRefused):
        compute.ensure_instance_group(env, "adapter-three-mig", template="no-such-template")
    unreachable = ComputeEngine(project, endpoint="http://127.0.0.1:9", operation_timeout=5)
    with pytest.raises(ComputeUnavailable) as unavailable:
        unreachable.group_health(env, "adapter-two-mig")
    assert isinstance(unavailable.value, TransientError)


def test_a_group_whose_artifact_fails_its_digest_check_reports_it_as_an_error_within_seconds(
    compute: ComputeEngine, env: EnvironmentConfig, artifact: str, digest: str
) -> None:
    wrong = "0" * 64
    assert wrong != digest
    compute.ensure_instance_template(
        env, "adapter-bad-tpl", version="6.6.6", artifact=artifact, artifact_sha256=wrong
    )
    compute.ensure_instance_group(env, "adapter-bad-mig", template="adapter-bad-tpl")

    def reported() -> GroupHealth | None:
        health = compute.group_health(env, "adapter-bad-mig")
        return health if health.errors else None

    health = wait_for(reported, 10, "the digest mismatch to be reported")
    assert health.healthy == 0
    assert all("artifact digest mismatch" in error for error in health.errors)
    compute.delete_instance_group(env, "adapter-bad-mig")
    compute.delete_instance_template(env, "adapter-bad-tpl")


def test_the_watchdog_collects_a_leaked_group_and_template_through_the_listings(
    compute: ComputeEngine, env: EnvironmentConfig, artifact: str, digest: str
) -> None:
    leaked_id = "adapter-test-0123456789ab"
    kept_id = "adapter-test-ba9876543210"
    for deployment_id in (leaked_id, kept_id):
        compute.ensure_instance_template(
            env,
            instance_template_name(deployment_id),
            version="1.0.0",
            artifact=artifact,
            artifact_sha256=digest,
        )
        compute.ensure_instance_group(
            env, instance_group_name(deployment_id), template=instance_template_name(deployment_id)
        )
    groups = {g.name: g for g in compute.list_instance_groups(env.region)}
    templates = {t.name: t for t in compute.list_instance_templates()}
    created = groups[instance_group_name(leaked_id)].created_at
    assert created is not None and abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert templates[instance_template_name(leaked_id)].created_at is not None
    assert "adapter-test-base" in templates  # listed, but not named by the scheme: never collected

    # Records say only `kept_id` is in flight; the clock is past the grace period.
    store = FakeStore()
    world_clock = FakeClock(datetime.now(UTC) + timedelta(seconds=env.provisioning_deadline_seconds + 5))
    store.deployments[kept_id] = in_flight_record(kept_id, world_clock.now())
    services = Services(
        config=PipelineConfig({"adapter": AppConfig("adapter", "1.0.0", {"test": env})}),
        store=store,
        compute=compute,
        publisher=FakePublisher(),
        clock=world_clock,
    )
    report = WatchdogReport()
    removed = collect_leaks(services, report)
    assert sorted(r.name for r in removed) == [
        instance_group_name(leaked_id),
        instance_template_name(leaked_id),
    ]
    names_left = {g.name for g in compute.list_instance_groups(env.region)}
    names_left |= {t.name for t in compute.list_instance_templates()}
    assert instance_group_name(leaked_id) not in names_left
    assert instance_template_name(leaked_id) not in names_left
    assert {instance_group_name(kept_id), instance_template_name(kept_id), "adapter-test-base"} <= names_left


def test_an_emulator_is_reached_directly_whatever_proxy_the_environment_names(
    compute_host: str, project: str, env: EnvironmentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy meant for the Internet, with no NO_PROXY for loopback: asked, it would refuse.
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    compute = ComputeEngine(project, endpoint=f"http://{compute_host}", operation_timeout=60)

    # Through the proxy each call would be refused (ComputeUnavailable).
    assert compute.backend_services.get(project=project, backend_service=env.backend_service).name == (
        env.backend_service
    )
    assert compute.templates.get(project=project, instance_template=env.base_instance_template).name == (
        env.base_instance_template
    )
