"""Backend services are real load balancers: health-aware routing, fingerprints, draining."""

from __future__ import annotations

import time

import pytest
import requests
from emulator_helpers import (
    Emulator,
    Load,
    insert_healthy_group,
    insert_template,
    insert_zonal_group,
    wait_group_healthy,
    wait_until,
)
from google.api_core import exceptions
from google.cloud import compute_v1

DRAINING_SECONDS = 3


def insert_service(
    emulator: Emulator, project: str, health_check: str, groups: list[str], draining: int = DRAINING_SECONDS
) -> compute_v1.BackendService:
    services = emulator.client(compute_v1.BackendServicesClient)
    resource = compute_v1.BackendService(
        name="web",
        protocol="HTTP",
        port_name="http",
        health_checks=[health_check],
        connection_draining=compute_v1.ConnectionDraining(draining_timeout_sec=draining),
        backends=[
            compute_v1.Backend(group=group, balancing_mode="UTILIZATION", capacity_scaler=1.0)
            for group in groups
        ],
    )
    services.insert(project=project, backend_service_resource=resource).result(timeout=30)
    return services.get(project=project, backend_service="web")


def set_backends(emulator: Emulator, project: str, groups: list[str]) -> None:
    """What the pipeline does: read the fingerprint, patch the backends list with it."""
    services = emulator.client(compute_v1.BackendServicesClient)
    current = services.get(project=project, backend_service="web")
    patch = compute_v1.BackendService(
        fingerprint=current.fingerprint,
        backends=[
            compute_v1.Backend(group=group, balancing_mode="UTILIZATION", capacity_scaler=1.0)
            for group in groups
        ],
    )
    services.patch(project=project, backend_service="web", backend_service_resource=patch).result(timeout=30)


def healthy_group(
    emulator: Emulator, project: str, name: str, artifact: str, version: str, health_check: str
) -> str:
    insert_template(emulator, project, name, artifact, version)
    return str(insert_healthy_group(emulator, project, name, name, 2, health_check).instance_group)


def test_attaching_a_healthy_group_makes_the_load_balancer_serve_its_version(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "blue", artifacts["hello"], "1.0.0")
    blue = str(insert_zonal_group(emulator, project, "blue", "blue", 2, health_check).instance_group)
    insert_service(emulator, project, health_check, [])
    url = emulator.load_balancer_url(project, "web")
    assert requests.get(url + "/", timeout=5).status_code == 503, "nothing attached: no healthy backend"

    wait_group_healthy(emulator, project, "blue", 2)
    set_backends(emulator, project, [blue])

    def served_body() -> str:
        response = requests.get(url + "/", timeout=5)
        return response.text.strip() if response.status_code == 200 else ""

    assert wait_until(served_body, 10, "the LB to serve") == "1.0.0"
    health = emulator.client(compute_v1.BackendServicesClient).get_health(
        project=project,
        backend_service="web",
        resource_group_reference_resource=compute_v1.ResourceGroupReference(group=blue),
    )
    assert [status.health_state for status in health.health_status] == ["HEALTHY", "HEALTHY"]
    assert all(status.ip_address == "127.0.0.1" and status.port > 0 for status in health.health_status)


def test_a_patch_with_a_stale_fingerprint_is_refused_with_412(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    services = emulator.client(compute_v1.BackendServicesClient)
    stale = insert_service(emulator, project, health_check, []).fingerprint
    services.patch(
        project=project,
        backend_service="web",
        backend_service_resource=compute_v1.BackendService(fingerprint=stale, description="first writer"),
    ).result(timeout=30)

    with pytest.raises(exceptions.PreconditionFailed, match="fingerprint"):
        services.patch(
            project=project,
            backend_service="web",
            backend_service_resource=compute_v1.BackendService(
                fingerprint=stale, description="second writer"
            ),
        )
    assert services.get(project=project, backend_service="web").description == "first writer"


def test_under_load_attaching_green_then_detaching_blue_with_draining_fails_no_request(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    blue = healthy_group(emulator, project, "blue", artifacts["testapp"], "1.0.0", health_check)
    insert_service(emulator, project, health_check, [blue])
    url = emulator.load_balancer_url(project, "web")
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)

    # Slow requests keep work in flight on blue at the moment it is detached.
    with Load(url, "/slow?ms=200") as load:
        wait_until(lambda: len(load.snapshot()) >= 20, 20, "traffic on blue")
        green = healthy_group(emulator, project, "green", artifacts["testapp"], "2.0.0", health_check)
        set_backends(emulator, project, [blue, green])
        wait_until(lambda: "2.0.0" in load.versions_since(0), 20, "green to take traffic")

        set_backends(emulator, project, [green])
        detached_at = time.monotonic()
        # The pipeline deletes blue only after the draining timeout.
        wait_until(
            lambda: time.monotonic() - detached_at > DRAINING_SECONDS, DRAINING_SECONDS + 5, "draining"
        )
        groups.delete(project=project, zone="us-central1-a", instance_group_manager="blue").result(timeout=60)
        after_delete = time.monotonic()
        wait_until(lambda: load.versions_since(after_delete), 10, "traffic after blue is gone")

    outcomes = load.snapshot()
    assert len(outcomes) > 50
    assert load.failures() == []
    assert {o.body for o in outcomes} == {"1.0.0", "2.0.0"}
    assert load.versions_since(detached_at) == {"2.0.0"}, "no new request may reach a detached group"


def test_negative_control_deleting_blue_while_attached_fails_requests(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    blue = healthy_group(emulator, project, "blue", artifacts["testapp"], "1.0.0", health_check)
    green = healthy_group(emulator, project, "green", artifacts["testapp"], "2.0.0", health_check)
    insert_service(emulator, project, health_check, [blue, green])
    url = emulator.load_balancer_url(project, "web")
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)

    with Load(url, "/slow?ms=300") as load:
        wait_until(lambda: {"1.0.0", "2.0.0"} <= load.versions_since(0), 20, "traffic on both groups")
        groups.delete(project=project, zone="us-central1-a", instance_group_manager="blue").result(timeout=60)
        after_delete = time.monotonic()
        wait_until(lambda: load.versions_since(after_delete), 10, "traffic after blue is gone")

    failures = load.failures()
    assert failures, (
        "killing an attached group must cut its in-flight requests; if not, the load test is blind"
    )
    assert {f.status for f in failures} <= {0, 502}


def test_groups_that_exit_or_fail_health_checks_never_receive_traffic(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "exits", artifacts["exits"], "6.6.6")
    insert_template(emulator, project, "unhealthy", artifacts["unhealthy"], "6.6.7")
    broken = [
        str(insert_zonal_group(emulator, project, name, name, 1, health_check).instance_group)
        for name in ("exits", "unhealthy")
    ]
    good = healthy_group(emulator, project, "good", artifacts["testapp"], "1.0.0", health_check)
    insert_service(emulator, project, health_check, broken)
    url = emulator.load_balancer_url(project, "web")

    only_broken = [requests.get(url + "/", timeout=5).status_code for _ in range(20)]
    assert set(only_broken) == {503}

    set_backends(emulator, project, [*broken, good])
    with Load(url, "/", workers=4) as load:
        wait_until(lambda: len(load.snapshot()) >= 200, 20, "200 requests")
    assert load.failures() == []
    assert {o.body for o in load.snapshot()} == {"1.0.0"}
    services = emulator.client(compute_v1.BackendServicesClient)
    for group in broken:
        health = services.get_health(
            project=project,
            backend_service="web",
            resource_group_reference_resource=compute_v1.ResourceGroupReference(group=group),
        )
        assert {s.health_state for s in health.health_status} <= {"UNHEALTHY"}


def test_requests_still_in_flight_when_the_draining_timeout_ends_are_cut(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    blue = healthy_group(emulator, project, "blue", artifacts["testapp"], "1.0.0", health_check)
    green = healthy_group(emulator, project, "green", artifacts["testapp"], "2.0.0", health_check)
    insert_service(emulator, project, health_check, [blue], draining=1)
    url = emulator.load_balancer_url(project, "web")

    with Load(url, "/slow?ms=4000", workers=2) as load:
        wait_until(lambda: load.in_flight() == 2, 10, "slow requests in flight on blue")
        set_backends(emulator, project, [green])
        detached_at = time.monotonic()
        wait_until(lambda: load.failures(), 10, "the draining timeout to cut blue's requests")
    cut = load.failures()[0]
    assert cut.finished - detached_at < 3.5, "cut at the 1 s draining timeout, long before the 4 s answer"


def test_resizing_down_an_attached_group_lets_its_requests_finish(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    blue = healthy_group(emulator, project, "blue", artifacts["testapp"], "1.0.0", health_check)
    insert_service(emulator, project, health_check, [blue])
    url = emulator.load_balancer_url(project, "web")
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)

    with Load(url, "/slow?ms=300", workers=6) as load:
        wait_until(lambda: len(load.snapshot()) >= 12, 20, "traffic on both instances")
        groups.resize(project=project, zone="us-central1-a", instance_group_manager="blue", size=1).result(
            timeout=30
        )
        wait_until(lambda: len(emulator.processes(project)) == 1, 20, "one instance left")
        after_resize = time.monotonic()
        wait_until(lambda: load.versions_since(after_resize), 10, "traffic after the resize")
    assert load.failures() == []
