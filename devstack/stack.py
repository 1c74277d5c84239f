"""The local stack: every service the pipeline needs on one machine, started and stopped as one.

`Stack.start()` brings up, each waited for with a bound:
  - Google's Pub/Sub and Firestore emulators, the Compute emulator and the local token issuer;
  - the per-environment base resources (template, health check, backend service) on the Compute
    emulator, and from them the local pipeline file with each environment's load-balancer URL;
  - one functions-framework server per entry point (`devstack.function_server`), wired to its topic
    by a push subscription with the trigger's retry and dead-letter policy, each push arriving as
    the CloudEvent Eventarc delivers on GCP;
  - the push relay (devstack/push_relay.py), which gives push subscriptions the concurrency
    Pub/Sub has on GCP where the emulator pushes two messages at a time;
  - a local stand-in for Cloud Scheduler publishing the watchdog tick;
  - last, the supervisor (devstack/supervisor.py), which restarts any of these that dies, except
    the services whose specification says not to (devstack/services.py).
It then writes the `env` file (`export NAME=value` lines). Everything it starts is recorded, pid and
process start time, in the state file, so `stop()` (from this or any later process) ends exactly
those processes and their descendants, and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devstack import services as specs
from devstack.base_resources import create_base_resources, load_balancer_urls
from devstack.endpoints import Endpoints
from devstack.local_config import (
    DEFAULT_PIPELINE_TEMPLATE,
    PIPELINE_FILE,
    check_pipeline_template,
    render_pipeline_config,
    template_environments,
)
from devstack.processes import (
    ServiceError,
    free_port,
    interrupts_deferred,
    port_in_use,
    process_start_time,
    start_service,
    stop_process_tree,
    wait_until,
)
from devstack.services import (
    COMPUTE,
    FIRESTORE,
    FUNCTION_PREFIX,
    HOST,
    PUBSUB,
    START_TIMEOUT_SECONDS,
    TOKEN_ISSUER,
    WEBHOOK_RECEIVER,
    WEBHOOK_RECORD_FILE,
    function_service,
)
from devstack.stack_state import ENV_FILE, LOCK_FILE, STATE_FILE, ServiceRecord, StackState, write_env_file
from devstack.stack_state import read_env_file as read_env_file
from devstack.subscriptions import wire_pubsub
from shared import config as shared_config
from shared.topology import PUBSUB_TRIGGERS, WATCHDOG_TICK, Trigger, all_entry_points

# Names other modules (the CLI, tests, benches) know the stack by.
__all__ = [
    "COMPUTE",
    "DEFAULT_PIPELINE_TEMPLATE",
    "FUNCTION_PREFIX",
    "PUBSUB",
    "ServiceRecord",
    "Stack",
    "StackAlreadyRunning",
    "StackState",
    "function_service",
    "ports_from_environment",
    "read_env_file",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".local"
DEFAULT_FUNCTIONS_SOURCE = REPO_ROOT / "main.py"
DEFAULT_PROJECT = "hello-local"

NOTIFICATIONS_FILE = "notifications.jsonl"
ACCESS_TOKEN_FILE = "access-token"

RETRY_POLICY_ENV_VAR = "DEVSTACK_PUBSUB_RETRY_POLICY"
"""Set to 1 to give the push subscriptions the topology's retry policies (see devstack/subscriptions.py)."""

SCHEDULER_INTERVAL_SECONDS = 3.0
RESTART_GRACE_SECONDS = 10.0
"""How long an attaching process waits for services the supervisor is restarting."""


class StackAlreadyRunning(ServiceError):
    """`start()` found the stack of this state directory already running; nothing was changed."""


def ports_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Ports fixed by DEVSTACK_*_PORT variables; every other port is chosen free at start."""
    return specs.ports_from_environment(environ)


@dataclass
class _Launch:
    """A process just started, not yet known to be ready."""

    record: ServiceRecord
    process: subprocess.Popen[bytes]
    ready: Callable[[], bool]
    started: float
    timeout: float = START_TIMEOUT_SECONDS


class Stack:
    """The local stack living in `state_dir` (default `.local/` in the repository)."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        project: str = DEFAULT_PROJECT,
        functions_source: Path = DEFAULT_FUNCTIONS_SOURCE,
        pipeline_template: Path = DEFAULT_PIPELINE_TEMPLATE,
        fixed_ports: Mapping[str, int] | None = None,
        triggers: Sequence[Trigger] = PUBSUB_TRIGGERS,
        extra_function_env: Mapping[str, str] | None = None,
        scheduler_interval: float = SCHEDULER_INTERVAL_SECONDS,
        retry_policies: bool | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.project = project
        self.functions_source = Path(functions_source).resolve()
        self.pipeline_template = Path(pipeline_template).resolve()
        self.fixed_ports = dict(fixed_ports or {})
        self.triggers = tuple(triggers)
        self.extra_function_env = dict(extra_function_env or {})
        self.scheduler_interval = scheduler_interval
        # Off unless asked for: see devstack/subscriptions.py for the emulator fault this avoids.
        self.retry_policies = (
            os.environ.get(RETRY_POLICY_ENV_VAR) == "1" if retry_policies is None else retry_policies
        )
        self.progress = progress or (lambda line: None)
        self.env: dict[str, str] = {}
        self.function_env: dict[str, str] = {}
        self.config: shared_config.PipelineConfig | None = None
        self._state: StackState | None = None

    # ---- paths -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE

    @property
    def pipeline_file(self) -> Path:
        return self.state_dir / PIPELINE_FILE

    @property
    def notifications_file(self) -> Path:
        return self.state_dir / NOTIFICATIONS_FILE

    @property
    def webhook_record_file(self) -> Path:
        return self.state_dir / WEBHOOK_RECORD_FILE

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    # ---- what a running stack offers -------------------------------------------------------
    def url(self, app: str, environment: str) -> str:
        """The public URL (local load balancer) of `app` in `environment`."""
        config = self.config or self._load_config()
        found = config.environment(app, environment)
        if found is None:
            raise KeyError(f"{app}@{environment}: not in {self.pipeline_file}")
        return found.url

    def function_url(self, entry_point: str) -> str:
        record = self._record(function_service(entry_point))
        return f"http://{HOST}:{record.port}/"

    def service(self, name: str) -> ServiceRecord:
        return self._record(name)

    def services(self) -> list[ServiceRecord]:
        # The file first: the supervisor records a restarted service's new pid there.
        state = StackState.load(self.state_file) or self._state
        return list(state.services) if state else []

    def is_running(self) -> bool:
        state = StackState.load(self.state_file)
        return bool(state and state.any_alive())

    def _record(self, name: str) -> ServiceRecord:
        for record in self.services():
            if record.name == name:
                return record
        raise KeyError(f"{name}: not part of the stack in {self.state_dir}")

    def _load_config(self) -> shared_config.PipelineConfig:
        self.config = shared_config.load_pipeline_config(self.pipeline_file)
        return self.config

    def load(self) -> Stack:
        """Attach to the stack already running in `state_dir` (its env, config and services)."""
        self._state = StackState.load(self.state_file)
        if self._state is not None:
            self.project = self._state.project
            self.function_env = dict(self._state.function_env)
        if self.env_file.exists():
            self.env = read_env_file(self.env_file)
        if self.pipeline_file.exists():
            self._load_config()
        return self

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Stack:
        """Start everything, or raise StackAlreadyRunning (having changed nothing)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            existing = StackState.load(self.state_file)
            if existing and existing.any_alive():
                raise StackAlreadyRunning(
                    f"the stack in {self.state_dir} is already running (started {existing.started_at})"
                )
            # A malformed template stops the start before anything runs, naming the file's error.
            check_pipeline_template(self.pipeline_template)
            if existing:
                # A stack that died (machine rebooted, processes killed): clear what it left.
                self._stop_records(existing.services)
                self.state_file.unlink(missing_ok=True)
            ports = self._choose_ports()
            # Every service but the Compute emulator keeps its data in memory; its working files
            # (unpacked artifacts, instance logs) would otherwise outlive the resources they serve.
            shutil.rmtree(self.state_dir / "compute", ignore_errors=True)
            self._state = StackState(
                project=self.project,
                started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            )
            self._state.save(self.state_file)
            try:
                self._start_all(ports)
            except BaseException:
                self.progress("start failed; stopping what was started")
                self._stop_records(self._state.services)
                self.state_file.unlink(missing_ok=True)
                self.env_file.unlink(missing_ok=True)
                raise
            self._state.complete = True
            self._state.save(self.state_file)
        return self

    def stop(self) -> bool:
        """Stop exactly what the state file names. False if nothing was recorded. Safe to repeat."""
        if not self.state_dir.exists():
            return False
        with self._exclusive():
            state = StackState.load(self.state_file)
            if state is None:
                return False
            self._stop_records(state.services)
            self.env_file.unlink(missing_ok=True)
            self.state_file.unlink(missing_ok=True)
            self._state = None
            return True

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `start`/`stop` at a time per state directory, across processes."""
        with open(self.state_dir / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _stop_records(self, records: Sequence[ServiceRecord]) -> None:
        # In the stages the service table gives; within a stage in parallel, so `down` is quick.
        def stage(record: ServiceRecord) -> int:
            return specs.spec_of(record.name).stop_stage

        for current in range(4):
            members = [record for record in records if stage(record) == current]
            if not members:
                continue
            with ThreadPoolExecutor(max_workers=len(members)) as pool:
                list(pool.map(_stop_record, members))

    # ---- ports -------------------------------------------------------------------------------
    def _choose_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name in specs.port_services():
            fixed = self.fixed_ports.get(name)
            if fixed is None:
                continue
            if port_in_use(fixed):
                variable = specs.port_variable(name)
                raise ServiceError(
                    f"port {fixed} for {name} is already in use (fixed by {variable}); "
                    f"free it, or unset {variable} to let the stack choose free ports"
                )
            ports[name] = fixed
        taken = set(ports.values())
        for name in specs.port_services():
            if name in ports:
                continue
            port = free_port()
            while port in taken:
                port = free_port()
            ports[name] = port
            taken.add(port)
        return ports

    # ---- starting ------------------------------------------------------------------------------
    def _launch(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], bool],
        port: int | None = None,
        health_url: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT_SECONDS,
    ) -> _Launch:
        assert self._state is not None
        log = self.logs_dir / specs.log_name(name)
        started = time.monotonic()
        # A Ctrl-C between starting the process and recording it would leave it running with no
        # record to stop it by: it waits until the record is saved, then interrupts as usual.
        with interrupts_deferred():
            banner = f"{name} started {datetime.datetime.now(datetime.UTC).isoformat()}"
            process = start_service(name, argv, log, env=env, cwd=REPO_ROOT, banner=banner)
            record = ServiceRecord(
                name=name,
                pid=process.pid,
                start_time=process_start_time(process.pid),
                log=str(log),
                port=port,
                health_url=health_url,
                argv=list(argv),
                env=dict(env or {}),
                cwd=str(REPO_ROOT),
                restart=specs.spec_of(name).restart,
            )
            # Recorded before waiting, so a failure (or Ctrl-C) during the wait still stops it.
            self._state.services.append(record)
            self._state.save(self.state_file)
        return _Launch(record, process, ready, started, timeout)

    def _await(self, launch: _Launch) -> None:
        record = launch.record
        remaining = max(1.0, launch.timeout - (time.monotonic() - launch.started))
        wait_until(launch.ready, remaining, record.name, launch.process, Path(record.log), interval=0.1)
        where = f"{HOST}:{record.port}" if record.port else f"pid {record.pid}"
        self._report(record.name, where, launch.started)

    def _report(self, name: str, detail: str, started: float, verb: str = "ready") -> None:
        self.progress(f"  {name:<34} {detail:<22} {verb} in {time.monotonic() - started:5.1f} s")

    def _start_all(self, ports: Mapping[str, int]) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        endpoints = Endpoints(
            pubsub_host=f"{HOST}:{ports[PUBSUB]}",
            firestore_host=f"{HOST}:{ports[FIRESTORE]}",
            compute_host=f"{HOST}:{ports[COMPUTE]}",
            issuer_url=f"http://{HOST}:{ports[TOKEN_ISSUER]}",
            webhook_url=f"http://{HOST}:{ports[WEBHOOK_RECEIVER]}/hooks/notify",
            function_ports={entry: ports[function_service(entry)] for entry in all_entry_points()},
        )
        self._start_base_services(ports)
        self._create_environments(endpoints)
        self._compose_env(endpoints)
        self._start_functions(endpoints)
        started = time.monotonic()
        plan = wire_pubsub(
            endpoints.pubsub_host, self.project, endpoints.function_urls(), self.triggers, self.retry_policies
        )
        self._report("push subscriptions", f"{len(plan)} subscriptions", started, "created")
        self._start_push_relay(endpoints)
        self._start_scheduler(endpoints)
        self._start_supervisor()
        write_env_file(self.env_file, self.env)

    def _start_base_services(self, ports: Mapping[str, int]) -> None:
        # All at once, then awaited in turn: the Java emulators take seconds each to boot.
        launches = []
        for spec in specs.SERVICES:
            assert spec.command is not None and spec.health_url is not None
            context = specs.ServiceContext(ports[spec.name], self.state_dir, self.project)
            launches.append(
                self._launch(
                    spec.name,
                    spec.command(context),
                    spec.ready(context),
                    context.port,
                    spec.health_url(context),
                    env=spec.environment() if spec.environment else None,
                )
            )
        for launch in launches:
            self._await(launch)

    def _create_environments(self, endpoints: Endpoints) -> None:
        """Base resources per environment, then the local pipeline file with their URLs."""
        template = self.pipeline_template.read_text(encoding="utf-8")
        environments = template_environments(template)
        started = time.monotonic()
        create_base_resources(endpoints.compute_host, self.project, environments)
        backend_urls = load_balancer_urls(endpoints.compute_host, self.project)
        missing = [e.backend_service for e in environments if e.backend_service not in backend_urls]
        if missing:
            raise ServiceError(f"the Compute emulator lists no load balancer for {', '.join(missing)}")
        names = ", ".join(e.name for e in environments)
        self._report("base resources", names, started, "created")
        self.pipeline_file.write_text(render_pipeline_config(template, backend_urls), encoding="utf-8")
        self._load_config()

    def _compose_env(self, endpoints: Endpoints) -> None:
        self.notifications_file.touch()
        access_token_file = self.state_dir / ACCESS_TOKEN_FILE
        # gcloud insists on some credential; the emulators accept any token.
        access_token_file.write_text("local-stack-token\n", encoding="utf-8")
        self.env = endpoints.stack_env(
            self.project, self.pipeline_file, self.notifications_file, access_token_file
        )
        self.function_env = {**endpoints.function_env(self.env), **self.extra_function_env}
        assert self._state is not None
        self._state.function_env = dict(self.function_env)
        self._state.save(self.state_file)

    def _start_functions(self, endpoints: Endpoints) -> None:
        launches = [
            self._launch(
                function_service(entry_point),
                specs.function_command(entry_point, self.functions_source, port),
                specs.function_ready(port),
                port,
                None,
                env=self.function_env,
                timeout=specs.FUNCTION_START_TIMEOUT_SECONDS,
            )
            for entry_point, port in endpoints.function_ports.items()
        ]
        for launch in launches:
            self._await(launch)

    def _start_scheduler(self, endpoints: Endpoints) -> None:
        ready_file = self.state_dir / "scheduler.ready"
        ready_file.unlink(missing_ok=True)
        launch = self._launch(
            specs.SCHEDULER,
            [
                *(sys.executable, "-m", "devstack.scheduler", "--project", self.project),
                *("--topic", WATCHDOG_TICK, "--interval", f"{self.scheduler_interval:g}"),
                *("--ready-file", str(ready_file)),
            ],
            ready_file.exists,
            env={"PUBSUB_EMULATOR_HOST": endpoints.pubsub_host},
        )
        self._await(launch)

    def _start_push_relay(self, endpoints: Endpoints) -> None:
        # Ready as soon as it runs: the emulator's own pushes deliver everything meanwhile.
        launch = self._launch(
            specs.PUSH_RELAY,
            [sys.executable, "-m", "devstack.push_relay", "--project", self.project],
            lambda: True,
            env={"PUBSUB_EMULATOR_HOST": endpoints.pubsub_host},
        )
        self._await(launch)

    def _start_supervisor(self) -> None:
        # It waits for the stack's lock, which start() holds until the state is complete, so it
        # never sees a half-started stack. Ready as soon as it runs: it has nothing to serve.
        launch = self._launch(
            specs.SUPERVISOR,
            [sys.executable, "-m", "devstack.supervisor", "--state-dir", str(self.state_dir)],
            lambda: True,
        )
        self._await(launch)


def _stop_record(record: ServiceRecord) -> None:
    stop_process_tree(record.pid, record.start_time, specs.spec_of(record.name).stop_grace)
