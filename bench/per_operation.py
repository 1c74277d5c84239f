"""What one call costs: CPU and wall time per operation, after a warm-up.

For the benchmarks that compare two ways of doing the same call (`bench publish`, `bench
firestore`). The caller's CPU is the whole process's (user and system, every thread), because a
client library's background threads are part of what a call costs; given the pid of the server
the calls go to, its CPU per call is measured too (that process and everything below it, from
/proc), since a way of calling that saves the client work may cost the server more.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import process_cpu

WARM_UP = 50


@dataclass(frozen=True)
class Cost:
    """Milliseconds per call."""

    cpu: float
    wall: float
    server_cpu: float | None = None


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    operation: Callable[[], object], times: int, warm_up: int = WARM_UP, server_pid: int | None = None
) -> Cost:
    """The cost per call of `operation`, over `times` calls after `warm_up` unmeasured ones."""
    for _ in range(warm_up):
        operation()
    server = process_cpu.snapshot([("server", server_pid)]) if server_pid is not None else None
    cpu, started = own_cpu_seconds(), time.monotonic()
    for _ in range(times):
        operation()
    own, wall = own_cpu_seconds() - cpu, time.monotonic() - started
    server_cpu = None
    if server_pid is not None and server is not None:
        used = process_cpu.snapshot([("server", server_pid)]).minus(server).seconds.values()
        server_cpu = 1000 * sum(used) / times
    return Cost(cpu=1000 * own / times, wall=1000 * wall / times, server_cpu=server_cpu)


def print_costs(rows: Sequence[tuple[str, Cost]], label: str = "operation", server: str = "") -> None:
    """A table of (name, cost) rows; with a `server` name, a column of that server's CPU too."""
    width = max(len(label), *(len(name) for name, _ in rows))
    server_header = f"  {server + ' CPU ms':>18s}" if server else ""
    print(f"{label:{width}s}  {'CPU ms':>7s}  {'wall ms':>7s}{server_header}")
    print(f"{'-' * width}  {'-' * 7}  {'-' * 7}" + (f"  {'-' * 18}" if server else ""))
    for name, cost in rows:
        served = f"  {cost.server_cpu:18.2f}" if server and cost.server_cpu is not None else ""
        print(f"{name:{width}s}  {cost.cpu:7.2f}  {cost.wall:7.2f}{served}")
