"""What a running local stack leaves on disk: the state file (`stack.json`) and the `env` file.

The state file names every process the stack started (pid and process start time), so any later
process can attach to the stack, supervise it or stop exactly those processes; the env file holds
its endpoints as `export NAME=value` lines for a shell.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack.processes import ServiceError, process_matches

STATE_FILE = "stack.json"
ENV_FILE = "env"
LOCK_FILE = "stack.lock"


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
    """Whether the supervisor restarts it when it dies (see `ServiceSpec.restart`)."""
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
            # Permanent until someone looks: a state file nobody can read names no process to stop.
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
