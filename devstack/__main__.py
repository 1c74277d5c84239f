"""`python -m devstack up|down|status`: the local stack's lifecycle (what `make up` etc. run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devstack.local_config import pipeline_template_from_environment
from devstack.processes import ServiceError, http_ok, port_in_use
from devstack.stack import (
    DEFAULT_FUNCTIONS_SOURCE,
    DEFAULT_STATE_DIR,
    Stack,
    StackAlreadyRunning,
    StackState,
    ports_from_environment,
)
from shared.config import ENV_RELEASECTL_DASHBOARD_URL


def _print(line: str) -> None:
    print(line, flush=True)


def up(stack: Stack) -> int:
    _print(f"Starting the local stack in {stack.state_dir} ...")
    started = time.monotonic()
    try:
        stack.start()
    except StackAlreadyRunning as exc:
        _print(f"Already running: {exc}. Nothing to do (`make down` stops it).")
        return 0
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Stack.start() has already stopped whatever it had started.
        print("interrupted: nothing left running", file=sys.stderr)
        return 130
    _print(f"Stack up in {time.monotonic() - started:.1f} s. Logs: {stack.logs_dir}/")
    _print(f"Environment: source {stack.env_file}")
    dashboard = stack.env.get(ENV_RELEASECTL_DASHBOARD_URL)
    if dashboard:
        _print(f"Release dashboard: {dashboard}")
    if stack.config:
        for environment in stack.config.all_environments():
            _print(f"  {environment.key:<24} {environment.url or '(no URL)'}")
    return 0


def down(stack: Stack) -> int:
    if stack.stop():
        _print("Local stack stopped.")
    else:
        _print("Local stack is not running; nothing to stop.")
    return 0


def status(stack: Stack) -> int:
    services = stack.services()
    if not services:
        _print(f"Local stack is not running (no state in {stack.state_dir}).")
        return 0
    state = StackState.load(stack.state_file)
    if state and not state.complete:
        _print(
            f"The stack started at {state.started_at} has not finished starting (or its start was cut short)."
        )
    _print(f"{'SERVICE':<34} {'PID':>8}  {'PORT':>6}  {'RESTARTS':>8}  {'PROCESS':<8} HEALTH")
    all_healthy = True
    for record in services:
        alive = record.alive
        if not alive:
            health = "-"
        elif record.port is None:
            health = "ok"
        elif record.health_url:
            health = "ok" if http_ok(record.health_url)() else "no answer"
        else:
            health = "ok" if port_in_use(record.port) else "no answer"
        all_healthy = all_healthy and alive and health == "ok"
        port = str(record.port) if record.port else "-"
        # Restarts by the supervisor; a service it never restarts (its data lived in memory) says so.
        restarts = str(record.restarts) if record.restart else "never"
        _print(
            f"{record.name:<34} {record.pid:>8}  {port:>6}  {restarts:>8}  "
            f"{'running' if alive else 'stopped':<8} {health}"
        )
    stack.load()
    if stack.config:
        for environment in stack.config.all_environments():
            _print(f"{environment.key:<34} {environment.url or '(no URL)'}")
    restarted = [record for record in services if record.restarts]
    for record in restarted:
        _print(f"{record.name} was restarted {record.restarts} time(s), last at {record.last_restart_at}")
    _print(f"Environment: {stack.env_file}   Logs: {stack.logs_dir}/")
    # Non-zero when something is down, so scripts can wait on `python -m devstack status`.
    return 0 if all_healthy and state is not None and state.complete else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .local/")
    parser.add_argument(
        "--functions-source", type=Path, default=DEFAULT_FUNCTIONS_SOURCE, help="default: main.py"
    )
    args = parser.parse_args(argv)
    try:
        stack = Stack(
            args.state_dir,
            functions_source=args.functions_source,
            fixed_ports=ports_from_environment(),
            pipeline_template=pipeline_template_from_environment(),
            progress=_print,
        )
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    commands = {"up": up, "down": down, "status": status}
    try:
        return commands[args.command](stack)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
