"""Start, refuse a second start, refuse a busy fixed port, stop everything (twice)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from devstack.processes import ServiceError, descendants, port_in_use, process_matches, wait_until
from devstack.running import running_stack
from devstack.stack import PUBSUB, Stack, StackAlreadyRunning
from tests.conftest import TEST_PROJECT
from tests.integration.stack.conftest import ECHO_SOURCE, EchoStack

REPO_ROOT = Path(__file__).resolve().parents[3]


def _devstack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_start_says_already_running_and_changes_nothing(echo_stack: EchoStack) -> None:
    stack = echo_stack.stack
    pids_before = [(s.name, s.pid) for s in stack.services()]
    env_before = stack.env_file.read_text(encoding="utf-8")
    with pytest.raises(StackAlreadyRunning, match="already running"):
        Stack(stack.state_dir, project=TEST_PROJECT, functions_source=ECHO_SOURCE, fixed_ports={}).start()
    completed = _devstack("up", "--state-dir", str(stack.state_dir))
    assert completed.returncode == 0, completed.stderr
    assert "Already running" in completed.stdout
    assert [(s.name, s.pid) for s in stack.services()] == pids_before
    assert stack.env_file.read_text(encoding="utf-8") == env_before
    assert all(s.alive for s in stack.services())


def test_status_lists_every_service_as_healthy(echo_stack: EchoStack) -> None:
    completed = _devstack("status", "--state-dir", str(echo_stack.stack.state_dir))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for record in echo_stack.stack.services():
        line = next(line for line in completed.stdout.splitlines() if line.startswith(record.name + " "))
        assert str(record.pid) in line and "running" in line and line.rstrip().endswith("ok")


def test_a_busy_fixed_port_is_named_in_a_clear_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServiceError, match=rf"port {port} for {PUBSUB} is already in use"):
            Stack(tmp_path / "api", functions_source=ECHO_SOURCE, fixed_ports={PUBSUB: port}).start()
        assert not (tmp_path / "api" / "stack.json").exists()

        completed = _devstack(
            "up", "--state-dir", str(tmp_path / "cli"), env={"DEVSTACK_PUBSUB_PORT": str(port)}
        )
        assert completed.returncode == 1
        assert f"port {port}" in completed.stderr and "DEVSTACK_PUBSUB_PORT" in completed.stderr
        assert not (tmp_path / "cli" / "stack.json").exists()


def _stop_and_check(stack: Stack, extra: list[tuple[int, int]]) -> None:
    tracked = [(s.pid, s.start_time) for s in stack.services()]
    for record in stack.services():
        tracked.extend(descendants(record.pid))
    tracked.extend(extra)
    assert tracked and all(process_matches(pid, start) for pid, start in tracked)
    assert stack.stop() is True
    survivors = [pid for pid, start in tracked if process_matches(pid, start)]
    assert survivors == [], f"still running after stop: {survivors}"
    assert not stack.state_file.exists() and not stack.env_file.exists()


def _echo_stack(tmp_path: Path) -> Stack:
    return Stack(
        tmp_path / "stack",
        project=TEST_PROJECT,
        functions_source=ECHO_SOURCE,
        fixed_ports={},
        extra_function_env={"ECHO_RECORD_FILE": str(tmp_path / "echo.jsonl")},
    )


def test_stop_leaves_no_process_behind_and_is_safe_twice(tmp_path: Path) -> None:
    stack = _echo_stack(tmp_path).start()
    try:
        _stop_and_check(stack, [])
    finally:
        stack.stop()
    assert stack.stop() is False  # twice is fine
    completed = _devstack("down", "--state-dir", str(stack.state_dir))
    assert completed.returncode == 0 and "not running" in completed.stdout


def test_stop_ends_the_compute_emulator_instances(tmp_path: Path) -> None:
    stack = _echo_stack(tmp_path).start()
    try:
        instance_processes = _start_an_instance(stack)
        _stop_and_check(stack, instance_processes)
    finally:
        stack.stop()


def _start_an_instance(stack: Stack) -> list[tuple[int, int]]:
    """A one-instance MIG on the Compute emulator; returns its processes (pid, start time)."""
    options = {"api_endpoint": f"http://{stack.env['COMPUTE_EMULATOR_HOST']}"}
    credentials = AnonymousCredentials()
    assert stack.config is not None
    environment = stack.config.environment("hello", "staging")
    assert environment is not None
    compute = stack.service("compute-emulator")
    before = {pid for pid, _ in descendants(compute.pid)}
    artifact = _tiny_artifact(stack.state_dir)
    templates = compute_v1.InstanceTemplatesClient(credentials=credentials, client_options=options)
    base = templates.get(project=stack.project, instance_template=environment.base_instance_template)
    template = compute_v1.InstanceTemplate(
        name="lifecycle-probe",
        properties=compute_v1.InstanceProperties(
            machine_type=base.properties.machine_type,
            disks=list(base.properties.disks),
            network_interfaces=list(base.properties.network_interfaces),
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key="release-artifact", value=artifact.as_uri()),
                    compute_v1.Items(
                        key="release-artifact-sha256", value=hashlib.sha256(artifact.read_bytes()).hexdigest()
                    ),
                    compute_v1.Items(key="release-version", value="0.0.1"),
                ]
            ),
        ),
    )
    templates.insert(project=stack.project, instance_template_resource=template).result(timeout=30)
    link = templates.get(project=stack.project, instance_template="lifecycle-probe").self_link
    groups = compute_v1.InstanceGroupManagersClient(credentials=credentials, client_options=options)
    zone = f"{environment.region}-a"
    groups.insert(
        project=stack.project,
        zone=zone,
        instance_group_manager_resource=compute_v1.InstanceGroupManager(
            name="lifecycle-probe",
            base_instance_name="lifecycle-probe",
            instance_template=link,
            target_size=1,
        ),
    ).result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        managed = list(
            groups.list_managed_instances(
                project=stack.project, zone=zone, instance_group_manager="lifecycle-probe"
            )
        )
        new = [(pid, start) for pid, start in descendants(compute.pid) if pid not in before]
        if managed and managed[0].instance_status == "RUNNING" and new:
            return new
        time.sleep(0.2)
    raise AssertionError("the probe instance did not reach RUNNING with a process within 30 s")


def _tiny_artifact(directory: Path) -> Path:
    procfile = f"web: {sys.executable} -m http.server $PORT --bind 127.0.0.1\n".encode()
    path = directory / "probe-artifact.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("Procfile")
        info.size = len(procfile)
        archive.addfile(info, io.BytesIO(procfile))
    return path


def answer_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_start_leaves_nothing_running(tmp_path: Path) -> None:
    state_dir = tmp_path / "interrupted"
    # Its output goes to a file, not a pipe: a pipe nobody reads while we wait could fill and
    # stall the start, and the file's tail says where a start that never got far stopped.
    output_path = tmp_path / "up.log"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack",
                "up",
                "--state-dir",
                str(state_dir),
                "--functions-source",
                str(ECHO_SOURCE),
            ],
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            # As at a terminal. A shell without job control starts background commands with SIGINT
            # ignored, and a process inherits that: run that way, this test's Ctrl-C would be lost.
            preexec_fn=answer_ctrl_c,
        )
    state_file = state_dir / "stack.json"
    seen: list[tuple[int, int | None]] = []

    def some_services_started() -> bool:
        if not state_file.exists():
            return False
        try:
            services = json.loads(state_file.read_text())["services"]
        except (ValueError, KeyError):
            return False
        seen[:] = [(s["pid"], s["start_time"]) for s in services]
        return len(seen) >= 2

    try:
        wait_until(some_services_started, 60, "the first services of the stack", process, output_path)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        said = output_path.read_text(errors="replace")
        assert process.returncode == 130, said
        assert "interrupted" in said
        assert seen and not any(process_matches(pid, start) for pid, start in seen)
        assert not state_file.exists() and not (state_dir / "env").exists()
    finally:
        # Whatever happened above, no stack outlives the test (a failure would leave one running).
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        Stack(state_dir).stop()


def test_another_process_can_attach_to_a_running_stack(echo_stack: EchoStack) -> None:
    started = echo_stack.stack
    attached = Stack(started.state_dir).load()
    assert attached.is_running()
    assert attached.env == started.env
    assert attached.function_env == started.function_env
    assert attached.project == started.project
    assert attached.config == started.config
    assert attached.function_url("rollback") == started.env["RELEASECTL_ROLLBACK_URL"]


def test_running_stack_uses_a_running_stack_and_leaves_it_running(echo_stack: EchoStack) -> None:
    started = echo_stack.stack
    with running_stack(started.state_dir) as attached:
        assert attached.env == started.env
    assert started.is_running()
    assert all(service.alive for service in started.services())


def test_a_killed_function_is_restarted_and_stop_still_leaves_nothing(tmp_path: Path) -> None:
    stack = _echo_stack(tmp_path).start()
    try:
        victim = stack.service("function-on_notify")
        # What the dead server leaves behind (its worker, holding the port) must not survive either.
        old_tree = [(victim.pid, victim.start_time), *descendants(victim.pid)]
        os.kill(victim.pid, signal.SIGKILL)

        def restarted() -> bool:
            record = stack.service("function-on_notify")
            return record.pid != victim.pid and record.alive and port_in_use(record.port or 0)

        wait_until(restarted, 20, "the killed function to be restarted and listening", None)
        record = stack.service("function-on_notify")
        assert record.restarts == 1 and record.last_restart_at
        assert "restarted by the supervisor" in Path(record.log).read_text(encoding="utf-8")
        assert not any(process_matches(pid, start) for pid, start in old_tree)
        supervisor_log = Path(stack.service("supervisor").log).read_text(encoding="utf-8")
        assert f"pid {victim.pid} -> {record.pid}" in supervisor_log

        completed = _devstack("status", "--state-dir", str(stack.state_dir))
        line = next(line for line in completed.stdout.splitlines() if line.startswith("function-on_notify "))
        assert line.split()[1:5] == [str(record.pid), str(record.port), "1", "running"]
        assert "function-on_notify was restarted 1 time(s)" in completed.stdout
        _stop_and_check(stack, [])
    finally:
        stack.stop()


def test_a_dead_emulator_is_reported_and_not_restarted(echo_stack: EchoStack) -> None:
    # Read-only on the shared echo stack: the emulators' records say they are never restarted.
    never = {record.name for record in echo_stack.stack.services() if not record.restart}
    assert {PUBSUB, "firestore-emulator", "supervisor"} <= never
    assert all(record.argv for record in echo_stack.stack.services())
