"""The local stack: every service the pipeline needs on one machine, started and stopped as one.

`Stack.start()` brings up, each waited for with a bound:
  - Google's Pub/Sub and Firestore emulators, the Compute emulator and the local token issuer;
  - the per-environment base resources (template, health check, backend service) on the Compute
    emulator, and from them the local pipeline file with each environment's load-balancer URL;
  - one functions-framework server per entry point (`devstack.function_server`), wired to its topic
    by a push subscription with the trigger's retry and dead-letter policy, each push arriving as
    the CloudEvent Eventarc delivers on GCP;
  - a local stand-in for Cloud Scheduler publishing the watchdog tick;
  - last, the supervisor (devstack/supervisor.py), which restarts any of these that dies, except
    the services listed in `NOT_RESTARTED`.
It then writes the `env` file (`export NAME=value` lines). Everything it starts is recorded, pid and
process start time, in the state file, so `stop()` (from this or any later process) ends exactly
those processes and their descendants, and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import shutil
import string
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack import emulators
from devstack.base_resources import create_base_resources, load_balancer_urls
from devstack.processes import (
    ServiceError,
    free_port,
    http_ok,
    port_in_use,
    process_matches,
    process_start_time,
    start_service,
    stop_process_tree,
    wait_until,
)
from devstack.token_issuer import local_identity
from devstack.wiring import wire_pubsub
from shared import config as shared_config
from shared.topology import PUBSUB_TRIGGERS, WATCHDOG_TICK, Trigger, all_entry_points

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".local"
DEFAULT_FUNCTIONS_SOURCE = REPO_ROOT / "main.py"
DEFAULT_PIPELINE_TEMPLATE = Path(__file__).resolve().parent / "pipeline.local.toml"
DEFAULT_PROJECT = "hello-local"
HOST = "127.0.0.1"

STATE_FILE = "stack.json"
ENV_FILE = "env"
PIPELINE_FILE = "pipeline.toml"
NOTIFICATIONS_FILE = "notifications.jsonl"
WEBHOOK_RECORD_FILE = "webhook.jsonl"
ACCESS_TOKEN_FILE = "access-token"
LOCK_FILE = "stack.lock"

# Services with a port of their own, and the environment variable that fixes it.
PUBSUB = "pubsub-emulator"
FIRESTORE = "firestore-emulator"
COMPUTE = "compute-emulator"
TOKEN_ISSUER = "token-issuer"
WEBHOOK_RECEIVER = "webhook-receiver"
SCHEDULER = "scheduler"
SUPERVISOR = "supervisor"
FUNCTION_PREFIX = "function-"
PORT_ENV_VARS = {
    PUBSUB: "DEVSTACK_PUBSUB_PORT",
    FIRESTORE: "DEVSTACK_FIRESTORE_PORT",
    COMPUTE: "DEVSTACK_COMPUTE_PORT",
    TOKEN_ISSUER: "DEVSTACK_TOKEN_ISSUER_PORT",
    WEBHOOK_RECEIVER: "DEVSTACK_WEBHOOK_PORT",
}
FUNCTIONS_PORT_ENV_VAR = "DEVSTACK_FUNCTIONS_PORT"
"""First of consecutive ports for the functions, in `all_entry_points()` order."""

PIPELINE_TEMPLATE_ENV_VAR = "DEVSTACK_PIPELINE_TEMPLATE"
"""A pipeline file (local format, placeholders allowed) to serve instead of the sample configuration."""

RETRY_POLICY_ENV_VAR = "DEVSTACK_PUBSUB_RETRY_POLICY"
"""Set to 1 to give the push subscriptions the topology's retry policies (see devstack/wiring.py)."""

ENV_WEBHOOK_URL = "LOCAL_WEBHOOK_URL"
"""The local pipeline file's webhook channel reads its URL from this variable."""

START_TIMEOUT_SECONDS = 60.0
FUNCTION_START_TIMEOUT_SECONDS = 60.0
# The Compute emulator ends its instance processes on SIGTERM; give it time to do so cleanly.
COMPUTE_STOP_GRACE_SECONDS = 15.0
STOP_GRACE_SECONDS = 5.0
SCHEDULER_INTERVAL_SECONDS = 3.0
RESTART_GRACE_SECONDS = 10.0
"""How long an attaching process waits for services the supervisor is restarting."""


NOT_RESTARTED = frozenset({PUBSUB, FIRESTORE, COMPUTE})
"""Services the supervisor leaves down when they die: each keeps its data in memory only (topics
and subscriptions, records, resources and their instances), so a restarted one would answer health
checks while everything it held was gone. `make status` shows them stopped; `make down; make up`
starts afresh. Every other service, including any added later, is restarted."""


class StackAlreadyRunning(ServiceError):
    """`start()` found the stack of this state directory already running; nothing was changed."""


def function_service(entry_point: str) -> str:
    return f"{FUNCTION_PREFIX}{entry_point}"


def ports_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Ports fixed by DEVSTACK_*_PORT variables; every other port is chosen free at start."""
    fixed: dict[str, int] = {}
    for service, variable in PORT_ENV_VARS.items():
        if environ.get(variable):
            fixed[service] = _parse_port(environ[variable], variable)
    if environ.get(FUNCTIONS_PORT_ENV_VAR):
        first = _parse_port(environ[FUNCTIONS_PORT_ENV_VAR], FUNCTIONS_PORT_ENV_VAR)
        for offset, entry_point in enumerate(all_entry_points()):
            fixed[function_service(entry_point)] = first + offset
    return fixed


def _parse_port(text: str, variable: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ServiceError(f"{variable}={text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServiceError(f"{variable}={port} is not a port number")
    return port


@dataclass
class ServiceRecord:
    """One started process, as the state file keeps it."""

    name: str
    pid: int
    start_time: int | None
    log: str
    port: int | None = None
    health_url: str | None = None
    argv: list[str] = field(default_factory=list)
    """How to start it again: command, extra environment and working directory."""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    restart: bool = False
    """Whether the supervisor restarts it when it dies (see `NOT_RESTARTED`)."""
    restarts: int = 0
    last_restart_at: str | None = None

    @property
    def alive(self) -> bool:
        return process_matches(self.pid, self.start_time)


@dataclass
class StackState:
    project: str
    started_at: str
    complete: bool = False
    services: list[ServiceRecord] = field(default_factory=list)
    function_env: dict[str, str] = field(default_factory=dict)
    """What the functions were started with, so a later process can attach to the stack."""

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ServiceError(f"{path}: unreadable state file ({exc}); remove it once nothing runs") from exc
        return cls(
            project=document["project"],
            started_at=document["started_at"],
            complete=document.get("complete", False),
            services=[ServiceRecord(**service) for service in document.get("services", [])],
            function_env=document.get("function_env", {}),
        )

    def save(self, path: Path) -> None:
        # Written whole and renamed, so a reader (a concurrent `status`) never sees half a file.
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)

    def any_alive(self) -> bool:
        return any(service.alive for service in self.services)


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
        # Off unless asked for: see devstack/wiring.py for the emulator fault this avoids.
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
        # In stages: first the supervisor, so nothing is restarted while it is being stopped; then
        # callers before what they call: the scheduler and the functions, so no new work starts;
        # then the issuer, receiver and Compute emulator (ending its instances); last Google's
        # emulators. Within a stage services stop in parallel, so `down` is quick.
        def stage(record: ServiceRecord) -> int:
            if record.name == SUPERVISOR:
                return 0
            if record.name == SCHEDULER or record.name.startswith(FUNCTION_PREFIX):
                return 1
            return 3 if record.name in (PUBSUB, FIRESTORE) else 2

        for current in range(4):
            members = [record for record in records if stage(record) == current]
            if not members:
                continue
            with ThreadPoolExecutor(max_workers=len(members)) as pool:
                list(pool.map(_stop_record, members))

    # ---- ports -------------------------------------------------------------------------------
    def _service_names(self) -> list[str]:
        names = [PUBSUB, FIRESTORE, COMPUTE, TOKEN_ISSUER, WEBHOOK_RECEIVER]
        names += [function_service(entry_point) for entry_point in all_entry_points()]
        return names

    def _choose_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name in self._service_names():
            fixed = self.fixed_ports.get(name)
            if fixed is None:
                continue
            if port_in_use(fixed):
                variable = PORT_ENV_VARS.get(name, FUNCTIONS_PORT_ENV_VAR)
                raise ServiceError(
                    f"port {fixed} for {name} is already in use (fixed by {variable}); "
                    f"free it, or unset {variable} to let the stack choose free ports"
                )
            ports[name] = fixed
        taken = set(ports.values())
        for name in self._service_names():
            if name in ports:
                continue
            port = free_port()
            while port in taken:
                port = free_port()
            ports[name] = port
            taken.add(port)
        return ports

    # ---- starting ------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _launch(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], bool],
        port: int | None = None,
        health_url: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT_SECONDS,
        restart: bool | None = None,
    ) -> _Launch:
        assert self._state is not None
        log = self._log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            # Logs are kept across runs; a banner tells one run from the next.
            handle.write(f"\n===== {name} started {datetime.datetime.now(datetime.UTC).isoformat()} =====\n")
        started = time.monotonic()
        process = start_service(name, argv, log, env=env, cwd=REPO_ROOT)
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
            restart=name not in NOT_RESTARTED if restart is None else restart,
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
        endpoints = _Endpoints(
            pubsub_host=f"{HOST}:{ports[PUBSUB]}",
            firestore_host=f"{HOST}:{ports[FIRESTORE]}",
            compute_host=f"{HOST}:{ports[COMPUTE]}",
            issuer_url=f"http://{HOST}:{ports[TOKEN_ISSUER]}",
            webhook_url=f"http://{HOST}:{ports[WEBHOOK_RECEIVER]}/hooks/notify",
            function_ports={entry: ports[function_service(entry)] for entry in all_entry_points()},
        )
        self._start_base_services(endpoints, ports)
        self._create_environments(endpoints)
        self._compose_env(endpoints)
        self._start_functions(endpoints)
        started = time.monotonic()
        plan = wire_pubsub(
            endpoints.pubsub_host, self.project, endpoints.function_urls(), self.triggers, self.retry_policies
        )
        self._report("push subscriptions", f"{len(plan)} subscriptions", started, "created")
        self._start_scheduler(endpoints)
        self._start_supervisor()
        write_env_file(self.env_file, self.env)

    def _start_base_services(self, endpoints: _Endpoints, ports: Mapping[str, int]) -> None:
        python = sys.executable
        pubsub_health = emulators.pubsub_ready_url(endpoints.pubsub_host, self.project)
        firestore_health = emulators.firestore_ready_url(endpoints.firestore_host)
        # All at once, then awaited in turn: the Java emulators take seconds each to boot.
        launches = [
            self._launch(
                PUBSUB,
                emulators.pubsub_command(ports[PUBSUB], HOST),
                http_ok(pubsub_health),
                ports[PUBSUB],
                pubsub_health,
            ),
            self._launch(
                FIRESTORE,
                emulators.firestore_command(ports[FIRESTORE], HOST),
                http_ok(firestore_health),
                ports[FIRESTORE],
                firestore_health,
            ),
        ]
        compute_health = f"http://{endpoints.compute_host}/healthz"
        launches.append(
            self._launch(
                COMPUTE,
                [
                    *(python, "-m", "compute_emulator"),
                    *("--host", HOST, "--port", str(ports[COMPUTE])),
                    *("--state-dir", str(self.state_dir / "compute")),
                ],
                http_ok(compute_health),
                ports[COMPUTE],
                compute_health,
            )
        )
        issuer_health = f"{endpoints.issuer_url}/healthz"
        launches.append(
            self._launch(
                TOKEN_ISSUER,
                [
                    *(python, "-m", "devstack.token_issuer"),
                    *("--host", HOST, "--port", str(ports[TOKEN_ISSUER])),
                    *("--state-dir", str(self.state_dir / "token-issuer")),
                ],
                http_ok(issuer_health),
                ports[TOKEN_ISSUER],
                issuer_health,
            )
        )
        receiver_health = f"http://{HOST}:{ports[WEBHOOK_RECEIVER]}/healthz"
        launches.append(
            self._launch(
                WEBHOOK_RECEIVER,
                [
                    *(python, "-m", "devstack.webhook_receiver"),
                    *("--host", HOST, "--port", str(ports[WEBHOOK_RECEIVER])),
                    *("--record-file", str(self.webhook_record_file)),
                ],
                http_ok(receiver_health),
                ports[WEBHOOK_RECEIVER],
                receiver_health,
            )
        )
        for launch in launches:
            self._await(launch)

    def _create_environments(self, endpoints: _Endpoints) -> None:
        """Base resources per environment, then the local pipeline file with their URLs."""
        template = self.pipeline_template.read_text(encoding="utf-8")
        # Placeholders sit inside TOML strings, so the template parses as it is.
        environments = shared_config.parse_pipeline_config(tomllib.loads(template)).all_environments()
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

    def _compose_env(self, endpoints: _Endpoints) -> None:
        function_urls = endpoints.function_urls()
        rollback_url = function_urls["rollback"]
        self.notifications_file.touch()
        access_token_file = self.state_dir / ACCESS_TOKEN_FILE
        # gcloud insists on some credential; the emulators accept any token.
        access_token_file.write_text("local-stack-token\n", encoding="utf-8")
        env = {
            shared_config.ENV_PROJECT: self.project,
            "PUBSUB_EMULATOR_HOST": endpoints.pubsub_host,
            "FIRESTORE_EMULATOR_HOST": endpoints.firestore_host,
            shared_config.ENV_COMPUTE_EMULATOR_HOST: endpoints.compute_host,
        }
        # The Compute emulator's process also serves Cloud Monitoring's request counts.
        env[shared_config.ENV_MONITORING_EMULATOR_HOST] = endpoints.compute_host
        env[shared_config.ENV_RELEASECTL_ROLLBACK_URL] = rollback_url
        env[shared_config.ENV_RELEASECTL_PROMOTE_URL] = function_urls["promote"]
        env[shared_config.ENV_RELEASECTL_APPROVE_URL] = function_urls["approve"]
        env[shared_config.ENV_RELEASECTL_DASHBOARD_URL] = endpoints.function_urls()["dashboard"]
        env["CLOUDSDK_CORE_PROJECT"] = self.project
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB"] = f"http://{endpoints.pubsub_host}/"
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] = f"http://{endpoints.compute_host}/compute/v1/"
        env["CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"] = str(access_token_file)
        env[shared_config.ENV_PIPELINE_CONFIG] = str(self.pipeline_file)
        env[shared_config.ENV_NOTIFICATIONS_FILE] = str(self.notifications_file)
        env[shared_config.ENV_RELEASECTL_TOKEN_URL] = f"{endpoints.issuer_url}/token"
        # One function URL, one audience: each HTTP function accepts tokens minted for it alone.
        env[shared_config.ENV_ROLLBACK_AUDIENCE] = rollback_url
        env[shared_config.ENV_PROMOTE_AUDIENCE] = function_urls["promote"]
        env[shared_config.ENV_APPROVE_AUDIENCE] = function_urls["approve"]
        env[ENV_WEBHOOK_URL] = endpoints.webhook_url
        self.env = env
        self.function_env = {
            **env,
            shared_config.ENV_ID_TOKEN_CERTS_URL: f"{endpoints.issuer_url}/certs",
            shared_config.ENV_ID_TOKEN_ISSUERS: endpoints.issuer_url,
            # The dashboard forwards actions to the functions, and offers tokens of the local issuer.
            shared_config.ENV_DASHBOARD_ROLLBACK_URL: rollback_url,
            shared_config.ENV_DASHBOARD_APPROVE_URL: endpoints.function_urls().get("approve", ""),
            shared_config.ENV_DASHBOARD_LOCAL_TOKEN_URL: f"{endpoints.issuer_url}/token",
            "PYTHONUNBUFFERED": "1",
            **self.extra_function_env,
        }
        assert self._state is not None
        self._state.function_env = dict(self.function_env)
        self._state.save(self.state_file)

    def _start_functions(self, endpoints: _Endpoints) -> None:
        launches = [
            self._launch(
                function_service(entry_point),
                [
                    *(sys.executable, "-m", "devstack.function_server"),
                    *("--source", str(self.functions_source), "--target", entry_point),
                    *("--host", HOST, "--port", str(port)),
                ],
                _listening(port),
                port,
                None,
                env=self.function_env,
                timeout=FUNCTION_START_TIMEOUT_SECONDS,
            )
            for entry_point, port in endpoints.function_ports.items()
        ]
        for launch in launches:
            self._await(launch)

    def _start_scheduler(self, endpoints: _Endpoints) -> None:
        ready_file = self.state_dir / "scheduler.ready"
        ready_file.unlink(missing_ok=True)
        launch = self._launch(
            SCHEDULER,
            [
                *(sys.executable, "-m", "devstack.scheduler", "--project", self.project),
                *("--topic", WATCHDOG_TICK, "--interval", f"{self.scheduler_interval:g}"),
                *("--ready-file", str(ready_file)),
            ],
            ready_file.exists,
            env={"PUBSUB_EMULATOR_HOST": endpoints.pubsub_host},
        )
        self._await(launch)

    def _start_supervisor(self) -> None:
        # It waits for the stack's lock, which start() holds until the state is complete, so it
        # never sees a half-started stack. Ready as soon as it runs: it has nothing to serve.
        launch = self._launch(
            SUPERVISOR,
            [sys.executable, "-m", "devstack.supervisor", "--state-dir", str(self.state_dir)],
            lambda: True,
            restart=False,
        )
        self._await(launch)


@dataclass(frozen=True)
class _Endpoints:
    pubsub_host: str
    firestore_host: str
    compute_host: str
    issuer_url: str
    webhook_url: str
    function_ports: Mapping[str, int]

    def function_urls(self) -> dict[str, str]:
        return {entry: f"http://{HOST}:{port}/" for entry, port in self.function_ports.items()}


def _stop_record(record: ServiceRecord) -> None:
    grace = COMPUTE_STOP_GRACE_SECONDS if record.name == COMPUTE else STOP_GRACE_SECONDS
    stop_process_tree(record.pid, record.start_time, grace)


def _listening(port: int) -> Callable[[], bool]:
    # functions-framework imports the source before it binds, so a listening port means loaded.
    return lambda: port_in_use(port)


def backend_placeholder(backend_service: str) -> str:
    """The template placeholder for a backend service's URL: `lb_` + the name, dashes as underscores."""
    return "lb_" + backend_service.replace("-", "_")


def render_pipeline_config(template: str, backend_urls: Mapping[str, str]) -> str:
    """Fill the local pipeline template: load-balancer URLs and the local identity."""
    values: dict[str, Any] = {backend_placeholder(name): url for name, url in backend_urls.items()}
    values["identity"] = local_identity()
    document = tomllib.loads(template)
    for environment in shared_config.parse_pipeline_config(document).all_environments():
        values.setdefault(backend_placeholder(environment.backend_service), "")
    rendered = string.Template(template).substitute(values)
    shared_config.parse_pipeline_config(tomllib.loads(rendered))  # fail here, not in a function
    return rendered


def pipeline_template_from_environment(environ: Mapping[str, str] = os.environ) -> Path:
    """The template `make up` serves: DEVSTACK_PIPELINE_TEMPLATE if set, else the sample's."""
    chosen = environ.get(PIPELINE_TEMPLATE_ENV_VAR, "").strip()
    return Path(chosen).expanduser().resolve() if chosen else DEFAULT_PIPELINE_TEMPLATE


def check_pipeline_template(path: Path) -> shared_config.PipelineConfig:
    """Parse the template as `start()` will render it; any fault is a ServiceError naming the file.

    Every backend service gets a stand-in URL here, so an unknown placeholder (a misspelt
    `${lb_...}`) is found as surely as bad TOML or a bad setting.
    """
    try:
        template = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServiceError(f"pipeline template {path}: cannot read it: {exc.strerror or exc}") from exc
    stand_ins: dict[str, str] = {}
    try:
        document = tomllib.loads(template)
        environments = shared_config.parse_pipeline_config(document).all_environments()
        services = {e.backend_service for e in environments}
        services |= {e.preview_backend_service for e in environments if e.preview_backend_service}
        stand_ins = dict.fromkeys(sorted(services), "http://127.0.0.1:1")
        return shared_config.parse_pipeline_config(tomllib.loads(render_pipeline_config(template, stand_ins)))
    except tomllib.TOMLDecodeError as exc:
        raise ServiceError(f"pipeline template {path}: not valid TOML: {exc}") from exc
    except shared_config.ConfigError as exc:
        raise ServiceError(f"pipeline template {path}: {exc}") from exc
    except (KeyError, ValueError) as exc:
        # string.Template: an unknown placeholder (KeyError) or a stray `$` (ValueError).
        known = ", ".join(sorted({backend_placeholder(b) for b in stand_ins} | {"identity"}))
        raise ServiceError(
            f"pipeline template {path}: bad placeholder {exc}; known placeholders: {known} "
            "(write $$ for a literal $)"
        ) from exc


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    lines = ["# The local stack's endpoints. Use: source .local/env"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("export "):
            continue
        name, _, raw = line[len("export ") :].partition("=")
        values = shlex.split(raw)
        env[name] = values[0] if values else ""
    return env


@contextlib.contextmanager
def running_stack(
    state_dir: Path = DEFAULT_STATE_DIR, progress: Callable[[str], None] | None = None
) -> Iterator[Stack]:
    """The stack of `state_dir` for the duration of the block.

    If it already runs (`make up`), it is used and left running; otherwise it is started here
    and stopped at the end, whatever happens in the block.
    """
    stack = Stack(state_dir, fixed_ports=ports_from_environment(), progress=progress)
    if stack.is_running():
        yield _attach_to_complete(stack)
        return
    try:
        stack.start()
    except StackAlreadyRunning:
        # Started by someone else between the check and the start: theirs to stop.
        yield _attach_to_complete(stack)
        return
    try:
        yield stack
    finally:
        stack.stop()


def _attach_to_complete(stack: Stack) -> Stack:
    """Attach to a running stack once it has finished starting (bounded), and all of it runs."""

    def complete() -> bool:
        state = StackState.load(stack.state_file)
        return bool(state and state.complete)

    wait_until(complete, START_TIMEOUT_SECONDS * 2, f"the stack in {stack.state_dir} to finish starting")

    def all_running() -> bool:
        stack.load()
        return all(service.alive for service in stack.services())

    # A service that died may be between its death and the supervisor's restart: give it a while.
    with contextlib.suppress(ServiceError):
        wait_until(all_running, RESTART_GRACE_SECONDS, "every service of the stack")
    stack.load()
    down = [service.name for service in stack.services() if not service.alive]
    if down:
        raise ServiceError(
            f"the stack in {stack.state_dir} runs without {', '.join(down)}; restart it (make down; make up)"
        )
    return stack
