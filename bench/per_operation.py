"""What one call costs the calling process: CPU and wall time per operation, after a warm-up.

For the benchmarks that compare two ways of doing the same call (`bench publish`, `bench
firestore`): the CPU is the whole process's (user and system, every thread), because a client
library's background threads are part of what a call costs.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence

WARM_UP = 50


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(operation: Callable[[], object], times: int, warm_up: int = WARM_UP) -> tuple[float, float]:
    """(CPU ms, wall ms) per call of `operation`, over `times` calls after `warm_up` unmeasured ones."""
    for _ in range(warm_up):
        operation()
    cpu, started = own_cpu_seconds(), time.monotonic()
    for _ in range(times):
        operation()
    return (
        1000 * (own_cpu_seconds() - cpu) / times,
        1000 * (time.monotonic() - started) / times,
    )


def print_costs(rows: Sequence[tuple[str, tuple[float, float]]], label: str = "operation") -> None:
    """A table of (name, (CPU ms, wall ms)) rows."""
    width = max(len(label), *(len(name) for name, _ in rows))
    print(f"{label:{width}s}  {'CPU ms':>7s}  {'wall ms':>7s}")
    print(f"{'-' * width}  {'-' * 7}  {'-' * 7}")
    for name, (cpu, wall) in rows:
        print(f"{name:{width}s}  {cpu:7.2f}  {wall:7.2f}")
