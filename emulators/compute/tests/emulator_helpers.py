"""Shared helpers for the Compute emulator tests: starting it, clients, bounded waits, resources."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import requests
from compute_emulator.launcher import EmulatorProcess
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

ZONE = "us-central1-a"
REGION = "us-central1"
HEALTHY_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = check()
    return last


def process_group_alive(pid: int) -> bool:
    """True while any process of the group `pid` leads still runs (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pid) and fields[0] != "Z":
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it no longer runs anything.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


@dataclass
class Emulator:
    """The emulator under test, with the side API and client construction the tests use."""

    running: EmulatorProcess
    projects: set[str] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return self.running.endpoint

    @property
    def api_root(self) -> str:
        return self.running.api_root

    @property
    def state_dir(self) -> Path:
        return self.running.state_dir

    def client(self, client_class: type[T]) -> T:
        return client_class(  # type: ignore[call-arg]
            credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=self.endpoint)
        )

    def processes(self, project: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.endpoint}/emulator/v1/projects/{project}/processes", timeout=10)
        response.raise_for_status()
        return list(response.json()["items"])

    def load_balancer_url(self, project: str, service: str) -> str:
        response = requests.get(f"{self.endpoint}/emulator/v1/projects/{project}/load-balancers", timeout=10)
        response.raise_for_status()
        for item in response.json()["items"]:
            if item["backendService"] == service:
                return str(item["url"])
        raise AssertionError(f"no load balancer for {service}: {response.json()}")

    def log_tail(self) -> str:
        return self.running.log_tail()


def start_emulator(state_dir: Path, *extra: str) -> Emulator:
    return Emulator(EmulatorProcess.start(state_dir, *extra))


def stop_emulator(emulator: Emulator) -> int:
    return emulator.running.stop()


# -- resources ------------------------------------------------------------------------------


def file_sha256(artifact: str) -> str:
    """The SHA-256 of a file:// artifact, as the pipeline puts it in a template; for a URL that is
    not a local file, a well-formed digest of its text (the boot fails before checking it)."""
    path = Path(unquote(urlparse(artifact).path))
    if artifact.startswith("file://") and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(artifact.encode()).hexdigest()


def insert_template(
    emulator: Emulator, project: str, name: str, artifact: str, version: str, sha256: str | None = None
) -> None:
    """A release template; `sha256` defaults to the artifact's own digest."""
    templates = emulator.client(compute_v1.InstanceTemplatesClient)
    resource = compute_v1.InstanceTemplate(
        name=name,
        properties=compute_v1.InstanceProperties(
            machine_type="e2-small",
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key="release-artifact", value=artifact),
                    compute_v1.Items(key="release-artifact-sha256", value=sha256 or file_sha256(artifact)),
                    compute_v1.Items(key="release-version", value=version),
                ]
            ),
        ),
    )
    templates.insert(project=project, instance_template_resource=resource).result(timeout=30)


def insert_health_check(emulator: Emulator, project: str, name: str = "hc") -> str:
    checks = emulator.client(compute_v1.HealthChecksClient)
    resource = compute_v1.HealthCheck(
        name=name,
        type_="HTTP",
        check_interval_sec=1,
        timeout_sec=1,
        healthy_threshold=1,
        unhealthy_threshold=2,
        http_health_check=compute_v1.HTTPHealthCheck(
            port_specification="USE_NAMED_PORT", port_name="http", request_path="/healthz"
        ),
    )
    checks.insert(project=project, health_check_resource=resource).result(timeout=30)
    return f"projects/{project}/global/healthChecks/{name}"


def group_resource(project: str, name: str, template: str, size: int, health_check: str) -> Any:
    return compute_v1.InstanceGroupManager(
        name=name,
        base_instance_name=name,
        instance_template=f"projects/{project}/global/instanceTemplates/{template}",
        target_size=size,
        named_ports=[compute_v1.NamedPort(name="http", port=8080)],
        auto_healing_policies=[
            compute_v1.InstanceGroupManagerAutoHealingPolicy(health_check=health_check, initial_delay_sec=3)
        ],
    )


def insert_zonal_group(
    emulator: Emulator, project: str, name: str, template: str, size: int, health_check: str
) -> compute_v1.InstanceGroupManager:
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    resource = group_resource(project, name, template, size, health_check)
    groups.insert(project=project, zone=ZONE, instance_group_manager_resource=resource).result(timeout=30)
    return groups.get(project=project, zone=ZONE, instance_group_manager=name)


def insert_healthy_group(
    emulator: Emulator, project: str, name: str, template: str, size: int, health_check: str
) -> compute_v1.InstanceGroupManager:
    """A zonal group of `size` instances of `template`, once all of them answer their health check."""
    group = insert_zonal_group(emulator, project, name, template, size, health_check)
    wait_group_healthy(emulator, project, name, size)
    return group


def health_states(emulator: Emulator, project: str, group: str) -> list[tuple[str, str, list[str]]]:
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)
    return [
        (m.instance_status, m.current_action, [h.detailed_health_state for h in m.instance_health])
        for m in groups.list_managed_instances(project=project, zone=ZONE, instance_group_manager=group)
    ]


def wait_group_healthy(emulator: Emulator, project: str, group: str, size: int) -> None:
    groups = emulator.client(compute_v1.InstanceGroupManagersClient)

    def healthy() -> bool:
        states = health_states(emulator, project, group)
        stable = groups.get(project=project, zone=ZONE, instance_group_manager=group).status.is_stable
        return stable and len(states) == size and all(s == ("RUNNING", "NONE", ["HEALTHY"]) for s in states)

    wait_until(healthy, HEALTHY_TIMEOUT_SECONDS, f"{group}: {size} instances RUNNING and HEALTHY")


# -- load -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    finished: float
    status: int  # 0 when the request failed without an HTTP answer
    body: str


class Load:
    """Worker threads sending requests to `url + path` back to back until stopped (bounded)."""

    MAX_SECONDS = 90.0

    def __init__(self, url: str, path: str, workers: int = 8) -> None:
        self.url = url
        self.path = path
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self._started = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.MAX_SECONDS
        for _ in range(self.workers):
            thread = threading.Thread(target=self._work, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _work(self, deadline: float) -> None:
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                with self._lock:
                    self._started += 1
                try:
                    response = session.get(self.url + self.path, timeout=10)
                    outcome = Outcome(started, time.monotonic(), response.status_code, response.text.strip())
                except requests.RequestException as exc:
                    outcome = Outcome(started, time.monotonic(), 0, type(exc).__name__)
                with self._lock:
                    self.outcomes.append(outcome)

    def in_flight(self) -> int:
        with self._lock:
            return self._started - len(self.outcomes)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200]

    def versions_since(self, moment: float) -> set[str]:
        return {o.body for o in self.snapshot() if o.started >= moment and o.status == 200}


def build_artifact(source: Path, out_dir: Path) -> Path:
    """Pack `source` the way the pipeline's artifacts are packed: `<name>-<sha256 prefix>.tar.gz`.

    The tests build their own artifacts so that this distribution needs nothing from the pipeline;
    the emulator only relies on the format (a gzipped tar with a Procfile at its root).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(item for item in source.rglob("*") if item.is_file()):
            info = tarfile.TarInfo(path.relative_to(source).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    # mtime=0 and no file name keep the archive, and so its name, the same for the same files.
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as archive:
        archive.write(raw.getvalue())
    payload = compressed.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.name}-{hashlib.sha256(payload).hexdigest()[:16]}.tar.gz"
    target.write_bytes(payload)
    return target
