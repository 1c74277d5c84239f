"""The local stack's services, one specification each: name, command, port variable, readiness,
log, whether the supervisor restarts it, and when and how gently `stop()` ends it.

`devstack/stack.py` starts what this table describes; the supervisor and `make status` read the
state file it writes. A service's identity lives here and nowhere else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack import emulators
from devstack.processes import ServiceError, http_ok, port_in_use
from shared.topology import all_entry_points

HOST = "127.0.0.1"

START_TIMEOUT_SECONDS = 60.0
FUNCTION_START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
# The Compute emulator ends its instance processes on SIGTERM; give it time to do so cleanly.
COMPUTE_STOP_GRACE_SECONDS = 15.0

# `stop()` ends services in stages: first the supervisor, so nothing is restarted while it is being
# stopped; then callers before what they call: the scheduler and the functions, so no new work
# starts; then the issuer, receiver and Compute emulator (ending its instances); last Google's
# emulators.
STOP_FIRST, STOP_CALLERS, STOP_SERVERS, STOP_LAST = range(4)

PUBSUB = "pubsub-emulator"
FIRESTORE = "firestore-emulator"
COMPUTE = "compute-emulator"
TOKEN_ISSUER = "token-issuer"
WEBHOOK_RECEIVER = "webhook-receiver"
SCHEDULER = "scheduler"
PUSH_RELAY = "push-relay"
SUPERVISOR = "supervisor"
FUNCTION_PREFIX = "function-"

FUNCTIONS_PORT_ENV_VAR = "DEVSTACK_FUNCTIONS_PORT"
"""First of consecutive ports for the functions, in `all_entry_points()` order."""

WEBHOOK_RECORD_FILE = "webhook.jsonl"


@dataclass(frozen=True)
class ServiceContext:
    """What a service's command and readiness check may depend on."""

    port: int
    state_dir: Path
    project: str

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the stack. Services with a port start together, first, from this table."""

    name: str
    stop_stage: int
    restart: bool = True
    """Whether the supervisor restarts it when it dies."""
    port_variable: str | None = None
    """The environment variable that fixes its port (DEVSTACK_*_PORT); None: no port of its own."""
    command: Callable[[ServiceContext], list[str]] | None = None
    health_url: Callable[[ServiceContext], str] | None = None
    """Ready once this answers 200."""
    environment: Callable[[], Mapping[str, str]] | None = None
    """Variables it starts with beside the stack's own environment."""
    stop_grace: float = STOP_GRACE_SECONDS

    def ready(self, context: ServiceContext) -> Callable[[], bool]:
        assert self.health_url is not None
        return http_ok(self.health_url(context))


def _python_module(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]


def _served(context: ServiceContext, *arguments: str) -> list[str]:
    return ["--host", HOST, "--port", str(context.port), *arguments]


# Pub/Sub, Firestore and Compute are not restarted: each keeps its data in memory only (topics and
# subscriptions, records, resources and their instances), so a restarted one would answer health
# checks while everything it held was gone. `make status` shows them stopped; `make down; make up`
# starts afresh. Every other service, including any added later, is restarted.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        PUBSUB,
        STOP_LAST,
        restart=False,
        port_variable="DEVSTACK_PUBSUB_PORT",
        command=lambda context: emulators.pubsub_command(context.port, HOST),
        health_url=lambda context: emulators.pubsub_ready_url(context.address, context.project),
        environment=emulators.emulator_environment,
    ),
    ServiceSpec(
        FIRESTORE,
        STOP_LAST,
        restart=False,
        port_variable="DEVSTACK_FIRESTORE_PORT",
        command=lambda context: emulators.firestore_command(context.port, HOST),
        health_url=lambda context: emulators.firestore_ready_url(context.address),
        environment=emulators.emulator_environment,
    ),
    ServiceSpec(
        COMPUTE,
        STOP_SERVERS,
        restart=False,
        port_variable="DEVSTACK_COMPUTE_PORT",
        command=lambda context: _python_module(
            "compute_emulator", *_served(context, "--state-dir", str(context.state_dir / "compute"))
        ),
        health_url=lambda context: f"http://{context.address}/healthz",
        stop_grace=COMPUTE_STOP_GRACE_SECONDS,
    ),
    ServiceSpec(
        TOKEN_ISSUER,
        STOP_SERVERS,
        port_variable="DEVSTACK_TOKEN_ISSUER_PORT",
        command=lambda context: _python_module(
            "devstack.token_issuer", *_served(context, "--state-dir", str(context.state_dir / "token-issuer"))
        ),
        health_url=lambda context: f"http://{context.address}/healthz",
    ),
    ServiceSpec(
        WEBHOOK_RECEIVER,
        STOP_SERVERS,
        port_variable="DEVSTACK_WEBHOOK_PORT",
        command=lambda context: _python_module(
            "devstack.webhook_receiver",
            *_served(context, "--record-file", str(context.state_dir / WEBHOOK_RECORD_FILE)),
        ),
        health_url=lambda context: f"http://{context.address}/healthz",
    ),
)
"""The services with a port of their own, started together before anything else."""

FUNCTION = ServiceSpec(FUNCTION_PREFIX, STOP_CALLERS, port_variable=FUNCTIONS_PORT_ENV_VAR)
"""Every function server: one per entry point, on consecutive ports from DEVSTACK_FUNCTIONS_PORT."""
SCHEDULER_SPEC = ServiceSpec(SCHEDULER, STOP_CALLERS)
PUSH_RELAY_SPEC = ServiceSpec(PUSH_RELAY, STOP_CALLERS)
"""Push capacity beside the Pub/Sub emulator's own two pushes per subscription (devstack/push_relay.py)."""
SUPERVISOR_SPEC = ServiceSpec(SUPERVISOR, STOP_FIRST, restart=False)

NOT_RESTARTED = frozenset(spec.name for spec in SERVICES if not spec.restart)
"""Services the supervisor leaves down when they die (see the comment on `SERVICES`)."""


def log_name(service: str) -> str:
    """The file in the stack's logs directory that a started service writes to: one per service,
    so each function has its own (its spec is shared by every function).

    >>> log_name("function-on_notify")
    'function-on_notify.log'
    """
    return f"{service}.log"


def function_service(entry_point: str) -> str:
    return f"{FUNCTION_PREFIX}{entry_point}"


def function_command(entry_point: str, functions_source: Path, port: int) -> list[str]:
    return _python_module(
        "devstack.function_server",
        *("--source", str(functions_source), "--target", entry_point),
        *("--host", HOST, "--port", str(port)),
    )


def function_ready(port: int) -> Callable[[], bool]:
    # functions-framework imports the source before it binds, so a listening port means loaded.
    return lambda: port_in_use(port)


def spec_of(name: str) -> ServiceSpec:
    """The specification a started service's name belongs to.

    >>> spec_of("function-on_build_succeeded").stop_stage == STOP_CALLERS
    True
    >>> spec_of(PUBSUB).restart
    False
    """
    for spec in (*SERVICES, SCHEDULER_SPEC, PUSH_RELAY_SPEC, SUPERVISOR_SPEC):
        if spec.name == name:
            return spec
    if name.startswith(FUNCTION_PREFIX):
        return FUNCTION
    # A name this table does not know (a state file written by another version): stopped with the
    # servers, and restarted like every service not listed as unrestartable.
    return ServiceSpec(name, STOP_SERVERS)


def port_services() -> list[str]:
    """Every service that listens on a port of its own, in start order."""
    return [spec.name for spec in SERVICES] + [function_service(entry) for entry in all_entry_points()]


PORT_ENV_VARS = {spec.name: spec.port_variable for spec in SERVICES if spec.port_variable}


def port_variable(name: str) -> str:
    variable = spec_of(name).port_variable
    assert variable is not None, f"{name} has no port"
    return variable


def ports_from_environment(environ: Mapping[str, str]) -> dict[str, int]:
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
        # Permanent: the variable's value; the stack does not start.
        raise ServiceError(f"{variable}={text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServiceError(f"{variable}={port} is not a port number")
    return port
