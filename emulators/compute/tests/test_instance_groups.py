"""Managed instance groups through the unchanged google-cloud-compute client."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from emulator_helpers import (
    HEALTHY_TIMEOUT_SECONDS,
    REGION,
    ZONE,
    Emulator,
    file_sha256,
    health_states,
    insert_healthy_group,
    insert_template,
    insert_zonal_group,
    pid_alive,
    process_group_alive,
    start_emulator,
    stop_emulator,
    wait_group_healthy,
    wait_until,
)
from google.api_core import exceptions
from google.cloud import compute_v1


def test_zonal_group_of_two_with_autohealing_gets_two_healthy_instances_and_delete_ends_their_processes(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    started = time.monotonic()
    group = insert_zonal_group(emulator, project, "blue", hello_template, 2, health_check)

    wait_group_healthy(emulator, project, "blue", 2)
    assert time.monotonic() - started < HEALTHY_TIMEOUT_SECONDS
    assert group.instance_group.endswith(f"/projects/{project}/zones/{ZONE}/instanceGroups/blue")
    described = emulator.client(compute_v1.InstanceGroupManagersClient).get(
        project=project, zone=ZONE, instance_group_manager="blue"
    )
    assert described.current_actions.none == 2
    assert described.current_actions.creating == 0
    assert [p.name for p in described.named_ports] == ["http"]
    assert described.auto_healing_policies[0].initial_delay_sec == 3
    pids = [item["pid"] for item in emulator.processes(project)]
    assert len(pids) == 2
    assert all(pid_alive(pid) for pid in pids)

    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    groups.delete(project=project, zone=ZONE, instance_group_manager="blue").result(timeout=60)

    assert not [pid for pid in pids if pid_alive(pid) or process_group_alive(pid)]
    assert emulator.processes(project) == []
    with pytest.raises(exceptions.NotFound):
        groups.get(project=project, zone=ZONE, instance_group_manager="blue")


def test_regional_group_spreads_instances_over_zones_and_gets_them_healthy(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    groups = emulator.client(compute_v1.RegionInstanceGroupManagersClient)
    resource = compute_v1.InstanceGroupManager(
        name="regional",
        base_instance_name="regional",
        instance_template=f"projects/{project}/global/instanceTemplates/{hello_template}",
        target_size=3,
        named_ports=[compute_v1.NamedPort(name="http", port=8080)],
        auto_healing_policies=[
            compute_v1.InstanceGroupManagerAutoHealingPolicy(health_check=health_check, initial_delay_sec=3)
        ],
    )
    groups.insert(project=project, region=REGION, instance_group_manager_resource=resource).result(timeout=30)

    def all_healthy() -> list[compute_v1.ManagedInstance]:
        managed = list(
            groups.list_managed_instances(project=project, region=REGION, instance_group_manager="regional")
        )
        stable = groups.get(
            project=project, region=REGION, instance_group_manager="regional"
        ).status.is_stable
        healthy = [m for m in managed if [h.detailed_health_state for h in m.instance_health] == ["HEALTHY"]]
        return managed if stable and len(healthy) == 3 else []

    managed = wait_until(all_healthy, HEALTHY_TIMEOUT_SECONDS, "3 HEALTHY instances in the regional group")
    zones = {m.instance.split("/zones/")[1].split("/")[0] for m in managed}
    assert zones == {f"{REGION}-a", f"{REGION}-b", f"{REGION}-c"}
    described = groups.get(project=project, region=REGION, instance_group_manager="regional")
    assert described.region.endswith(f"/regions/{REGION}")
    assert len(described.distribution_policy.zones) == 3

    pids = [item["pid"] for item in emulator.processes(project)]
    groups.delete(project=project, region=REGION, instance_group_manager="regional").result(timeout=60)
    assert not [pid for pid in pids if pid_alive(pid) or process_group_alive(pid)]


def test_resize_down_ends_the_removed_instance_process_tree(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    insert_healthy_group(emulator, project, "blue", hello_template, 2, health_check)
    before = {item["pid"] for item in emulator.processes(project)}

    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    groups.resize(project=project, zone=ZONE, instance_group_manager="blue", size=1).result(timeout=30)

    wait_until(lambda: len(emulator.processes(project)) == 1, 20, "one instance left")
    wait_group_healthy(emulator, project, "blue", 1)
    after = {item["pid"] for item in emulator.processes(project)}
    (removed,) = before - after
    wait_until(lambda: not process_group_alive(removed), 10, "the removed instance's process group to end")
    assert groups.get(project=project, zone=ZONE, instance_group_manager="blue").target_size == 1


def test_autohealing_recreates_an_instance_whose_web_process_died(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    victim = kill_the_only_instance(emulator, project, hello_template, health_check)

    fresh = wait_replaced(emulator, project, victim, "autohealing to restart the instance")
    assert fresh["instance"] == victim["instance"], "a recreated instance keeps its name"
    wait_group_healthy(emulator, project, "blue", 1)


def test_an_exited_web_process_is_unhealthy_even_when_another_listens_on_its_port(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    # On Compute Engine a VM's address is its own; here instances share 127.0.0.1, and a port a
    # dead instance held may be taken by another process that answers 200.
    victim = kill_the_only_instance(emulator, project, hello_template, health_check)
    wait_until(lambda: not process_group_alive(victim["pid"]), 10, "the killed instance to end")
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", victim["port"]), _AlwaysOk)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    try:
        fresh = wait_replaced(
            emulator, project, victim, "autohealing to restart the instance despite the impostor"
        )
        assert fresh["port"] != victim["port"], "a port another process holds is never given out"
        wait_group_healthy(emulator, project, "blue", 1)
    finally:
        impostor.shutdown()
        impostor.server_close()


def kill_the_only_instance(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> dict[str, Any]:
    """SIGKILL the web process of a healthy one-instance group "blue"; what it was listed as."""
    insert_healthy_group(emulator, project, "blue", hello_template, 1, health_check)
    (victim,) = emulator.processes(project)
    os.killpg(victim["pid"], signal.SIGKILL)
    return victim


def wait_replaced(emulator: Emulator, project: str, victim: dict[str, Any], what: str) -> dict[str, Any]:
    """The one instance of `project` once a process other than `victim`'s runs it (bounded)."""

    def replaced() -> bool:
        items = emulator.processes(project)
        return len(items) == 1 and items[0]["pid"] != victim["pid"]

    wait_until(replaced, 30, what)
    (fresh,) = emulator.processes(project)
    return fresh


class _AlwaysOk(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def test_artifacts_that_exit_or_fail_their_health_check_never_become_healthy(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "exits", artifacts["exits"], "9.9.9")
    insert_template(emulator, project, "unhealthy", artifacts["unhealthy"], "9.9.8")
    insert_zonal_group(emulator, project, "exits", "exits", 1, health_check)
    insert_zonal_group(emulator, project, "unhealthy", "unhealthy", 1, health_check)

    # Long enough for several probes, the initial delay and at least one autohealing round.
    deadline = time.monotonic() + 6
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for group in ("exits", "unhealthy"):
            for _, _, states in health_states(emulator, project, group):
                seen.update(states)
        time.sleep(0.3)
    assert "HEALTHY" not in seen
    assert "UNHEALTHY" in seen
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    for group in ("exits", "unhealthy"):
        assert not groups.get(
            project=project, zone=ZONE, instance_group_manager=group
        ).status.is_stable or any(
            states != ["HEALTHY"] for _, _, states in health_states(emulator, project, group)
        )
        groups.delete(project=project, zone=ZONE, instance_group_manager=group).result(timeout=60)
    log_text = "".join(p.read_text() for p in (emulator.state_dir / "logs").glob(f"{project}.*.log"))
    assert "crashing" in log_text
    assert "exited with code 3" in log_text


def test_gs_artifact_is_refused_with_a_clear_message_and_the_group_shows_it(
    emulator: Emulator, project: str, health_check: str
) -> None:
    insert_template(emulator, project, "from-gcs", "gs://bucket/hello.tar.gz", "1.0.0")
    insert_zonal_group(emulator, project, "blue", "from-gcs", 1, health_check)
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)

    def failing_attempt() -> list[compute_v1.ManagedInstance]:
        managed = list(
            groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="blue")
        )
        return [m for m in managed if m.last_attempt.errors.errors]

    (instance,) = wait_until(failing_attempt, 10, "the failed creation to show in lastAttempt")
    assert instance.current_action == "CREATING"
    assert "gs://bucket/hello.tar.gz" in instance.last_attempt.errors.errors[0].message
    described = groups.get(project=project, zone=ZONE, instance_group_manager="blue")
    assert described.current_actions.creating == 1
    assert not described.status.is_stable
    log_text = "".join(p.read_text() for p in (emulator.state_dir / "logs").glob(f"{project}.*.log"))
    assert "no Cloud Storage" in log_text
    assert emulator.processes(project) == []
    groups.delete(project=project, zone=ZONE, instance_group_manager="blue").result(timeout=60)


def release_errors(emulator: Emulator, project: str, instance: str) -> list[compute_v1.GuestAttributesEntry]:
    """The instance's `release/` guest attributes, as the pipeline reads them; [] for a 404."""
    try:
        attributes = emulator.client(compute_v1.InstancesClient).get_guest_attributes(
            request=compute_v1.GetGuestAttributesInstanceRequest(
                project=project, zone=ZONE, instance=instance, query_path="release/"
            )
        )
    except exceptions.NotFound:
        return []
    return list(attributes.query_value.items)


@pytest.mark.parametrize(
    ("digest", "reason"),
    [
        ("0" * 64, "artifact digest mismatch"),
        ("", "no 'release-artifact-sha256' metadata item"),
    ],
)
def test_an_artifact_that_fails_its_digest_check_is_never_unpacked_and_the_guest_reports_why(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str], digest: str, reason: str
) -> None:
    templates = emulator.client(compute_v1.InstanceTemplatesClient)
    items = [
        compute_v1.Items(key="release-artifact", value=artifacts["hello"]),
        compute_v1.Items(key="release-version", value="6.6.6"),
    ]
    if digest:
        items.append(compute_v1.Items(key="release-artifact-sha256", value=digest))
    templates.insert(
        project=project,
        instance_template_resource=compute_v1.InstanceTemplate(
            name="tampered",
            properties=compute_v1.InstanceProperties(metadata=compute_v1.Metadata(items=items)),
        ),
    ).result(timeout=30)
    insert_zonal_group(emulator, project, "green", "tampered", 1, health_check)
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    (managed,) = wait_until(
        lambda: list(
            groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="green")
        ),
        10,
        "the instance to exist",
    )

    # As on Compute Engine: the VM runs, its startup refused the release and says so in a guest
    # attribute; lastAttempt (what the platform itself failed to do) stays empty.
    (entry,) = wait_until(
        lambda: release_errors(emulator, project, managed.name), 10, "the refusal in release/error"
    )
    assert (entry.namespace, entry.key) == ("release", "error")
    assert reason in entry.value
    one = emulator.client(compute_v1.InstancesClient).get_guest_attributes(
        request=compute_v1.GetGuestAttributesInstanceRequest(
            project=project, zone=ZONE, instance=managed.name, variable_key="release/error"
        )
    )
    assert one.variable_value == entry.value
    (managed,) = groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="green")
    assert managed.instance_status == "RUNNING"
    assert not managed.last_attempt.errors.errors
    assert emulator.processes(project) == []
    work = emulator.state_dir / "instances" / project
    assert not list(work.rglob("Procfile")), "the artifact was unpacked although its digest failed"
    groups.delete(project=project, zone=ZONE, instance_group_manager="green").result(timeout=60)


def test_guest_attributes_are_a_404_until_the_guest_writes_some_and_for_unknown_instances(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str]
) -> None:
    insert_template(emulator, project, "hello-guest", artifacts["hello"], "1.0.0")
    insert_healthy_group(emulator, project, "served", "hello-guest", 1, health_check)
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    (managed,) = groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager="served")
    instances = emulator.client(compute_v1.InstancesClient)

    for query in ({"query_path": "release/"}, {"variable_key": "release/error"}, {}):
        with pytest.raises(exceptions.NotFound) as missing:
            instances.get_guest_attributes(
                request=compute_v1.GetGuestAttributesInstanceRequest(
                    project=project, zone=ZONE, instance=managed.name, **query
                )
            )
        assert f"instances/{managed.name}/guestAttributes" in missing.value.message
    with pytest.raises(exceptions.NotFound) as unknown:
        instances.get_guest_attributes(
            request=compute_v1.GetGuestAttributesInstanceRequest(
                project=project, zone=ZONE, instance="no-such-vm", query_path="release/"
            )
        )
    assert f"zones/{ZONE}/instances/no-such-vm" in unknown.value.message
    groups.delete(project=project, zone=ZONE, instance_group_manager="served").result(timeout=60)


def test_operations_are_done_on_return_and_answer_get_and_wait(emulator: Emulator, project: str) -> None:
    templates = emulator.client(compute_v1.InstanceTemplatesClient)
    operation = templates.insert(
        project=project,
        instance_template_resource=compute_v1.InstanceTemplate(
            name="t", properties=compute_v1.InstanceProperties()
        ),
    )
    operation.result(timeout=30)
    assert operation.status == compute_v1.Operation.Status.DONE
    global_operations = emulator.client(compute_v1.GlobalOperationsClient)
    fetched = global_operations.get(project=project, operation=operation.name)
    assert fetched.status == compute_v1.Operation.Status.DONE
    assert fetched.target_link.endswith(f"/projects/{project}/global/instanceTemplates/t")
    assert fetched.self_link.endswith(f"/projects/{project}/global/operations/{operation.name}")
    assert (
        global_operations.wait(project=project, operation=operation.name).status
        == compute_v1.Operation.Status.DONE
    )
    with pytest.raises(exceptions.NotFound):
        global_operations.get(project=project, operation="operation-missing")


def test_a_failed_operation_carries_its_error_and_the_client_raises_it(
    emulator: Emulator, project: str, hello_template: str, health_check: str
) -> None:
    insert_zonal_group(emulator, project, "blue", hello_template, 0, health_check)
    templates = emulator.client(compute_v1.InstanceTemplatesClient)

    operation = templates.delete(project=project, instance_template=hello_template)
    with pytest.raises(exceptions.BadRequest, match="already being used"):
        operation.result(timeout=30)
    fetched = emulator.client(compute_v1.GlobalOperationsClient).get(
        project=project, operation=operation.name
    )
    assert fetched.error.errors[0].code == "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"
    assert fetched.http_error_status_code == 400
    templates.get(project=project, instance_template=hello_template)


def test_with_async_operations_they_go_pending_to_done_and_zone_operations_wait_returns_done(
    tmp_path: Path, artifacts: dict[str, str]
) -> None:
    emulator = start_emulator(tmp_path / "async", "--async-operations")
    try:
        project = "async-project"
        # insert_unary + an operations client built with the same endpoint: ExtendedOperation.result()
        # would poll through an operations client that ignores the api_endpoint override.
        template = emulator.client(compute_v1.InstanceTemplatesClient).insert_unary(
            project=project,
            instance_template_resource=compute_v1.InstanceTemplate(
                name="hello-1-0-0",
                properties=compute_v1.InstanceProperties(
                    metadata=compute_v1.Metadata(
                        items=[
                            compute_v1.Items(key="release-artifact", value=artifacts["hello"]),
                            compute_v1.Items(
                                key="release-artifact-sha256", value=file_sha256(artifacts["hello"])
                            ),
                        ]
                    )
                ),
            ),
        )
        emulator.client(compute_v1.GlobalOperationsClient).wait(project=project, operation=template.name)
        groups = emulator.client(compute_v1.InstanceGroupManagersClient)
        pending = groups.insert_unary(
            project=project,
            zone=ZONE,
            instance_group_manager_resource=compute_v1.InstanceGroupManager(
                name="blue",
                base_instance_name="blue",
                instance_template=f"projects/{project}/global/instanceTemplates/hello-1-0-0",
                target_size=1,
            ),
        )
        assert pending.status == compute_v1.Operation.Status.PENDING
        assert pending.zone.endswith(f"/zones/{ZONE}")
        done = emulator.client(compute_v1.ZoneOperationsClient).wait(
            project=project, zone=ZONE, operation=pending.name
        )
        assert done.status == compute_v1.Operation.Status.DONE
        assert done.start_time and done.end_time
        wait_until(lambda: len(emulator.processes(project)) == 1, 20, "the instance's process")
        pids = [item["pid"] for item in emulator.processes(project)]
    finally:
        code = stop_emulator(emulator)
    assert code == 0
    assert not [pid for pid in pids if pid_alive(pid) or process_group_alive(pid)]


def test_instance_processes_die_with_the_emulator_even_when_it_is_killed_outright(
    tmp_path: Path, artifacts: dict[str, str]
) -> None:
    emulator = start_emulator(tmp_path / "killed")
    try:
        project = "killed"
        insert_template(emulator, project, "hello-1-0-0", artifacts["hello"], "1.0.0")
        emulator.client(compute_v1.InstanceGroupManagersClient).insert(
            project=project,
            zone=ZONE,
            instance_group_manager_resource=compute_v1.InstanceGroupManager(
                name="blue",
                base_instance_name="blue",
                instance_template=f"projects/{project}/global/instanceTemplates/hello-1-0-0",
                target_size=2,
            ),
        ).result(timeout=30)
        wait_until(lambda: len(emulator.processes(project)) == 2, 20, "two instance processes")
        pids = [item["pid"] for item in emulator.processes(project)]
    finally:
        emulator.running.process.kill()
        emulator.running.process.wait(10)
    wait_until(lambda: not [pid for pid in pids if pid_alive(pid)], 10, "instances to die with the emulator")
