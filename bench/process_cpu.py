"""CPU time of a local stack's parts, read from /proc: which component a burst of releases keeps busy.

A snapshot holds user + system time per process: each service's process, its live descendants,
and what their reaped children used (`cutime`/`cstime`), so an instance process that ended during a
round still counts, on its parent's side. The Compute emulator's own time is kept apart from its
instances' (every process below it). Two snapshots' difference, process by process (a process
restarted in between counts from zero), summed per component, is what a round cost; the machine's
busy fraction over the same span (from /proc/stat, every process on the machine, other work
included) says whether the cores were saturated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

COMPONENTS = ("functions", "compute", "instances", "pubsub", "firestore", "other")
"""Column order in reports: the pipeline's functions, the Compute emulator itself, the instance
processes it runs, Google's two emulators, and the stack's remaining helpers."""


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat a CPU account needs, in clock ticks."""

    parent: int
    own: int
    """utime + stime"""
    reaped: int
    """cutime + cstime: children this process has waited for"""
    started: int
    """Start time since boot: with the pid, which process this is."""


def parse_stat(text: str) -> Stat:
    """Read /proc/PID/stat, whose command name (in parentheses) may hold spaces.

    >>> parse_stat("42 (a b) S 7 42 42 0 -1 0 0 0 0 0 11 4 3 2 20 0 1 0 9")
    Stat(parent=7, own=15, reaped=5, started=9)
    """
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return Stat(parent=int(fields[1]), own=utime + stime, reaped=cutime + cstime, started=int(fields[19]))


def _all_stats() -> dict[int, Stat]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat(
                (entry / "stat").read_text(encoding="ascii", errors="replace")
            )
        except (OSError, ValueError, IndexError):  # gone since listed: its time is on its parent now
            continue
    return stats


FUNCTION_SERVICE_PREFIX = "function-"
"""A function's stack service is named after its entry point with this prefix."""


def component_of(service: str) -> str:
    """The report column a stack service's processes belong to.

    >>> [component_of(s) for s in ("function-on_notify", "compute-emulator", "pubsub-emulator", "scheduler")]
    ['functions', 'compute', 'pubsub', 'other']
    """
    if service.startswith(FUNCTION_SERVICE_PREFIX):
        return "functions"
    for component in ("compute", "pubsub", "firestore"):
        if service.startswith(component):
            return component
    return "other"


Ticks = dict[tuple[str, str, int, int], int]
"""(component, stack service, pid, start time) → clock ticks used so far."""


@dataclass(frozen=True)
class CpuSnapshot:
    ticks: Mapping[tuple[str, str, int, int], int]
    busy_ticks: int
    total_ticks: int
    """Machine-wide, from /proc/stat's first line."""

    def minus(self, earlier: CpuSnapshot) -> CpuUse:
        """What each component used since `earlier`, and each function apart.

        >>> a = CpuSnapshot({("functions", "function-f", 1, 5): 100, ("functions", "function-g", 2, 6): 50}, 0, 0)
        >>> b = CpuSnapshot({("functions", "function-f", 1, 5): 130, ("functions", "function-g", 2, 9): 20}, 0, 0)
        >>> used = b.minus(a)
        >>> used.seconds["functions"] == (30 + 20) / CLOCK_TICKS
        True
        >>> used.by_function == {"f": 30 / CLOCK_TICKS, "g": 20 / CLOCK_TICKS}
        True
        """
        used = dict.fromkeys(COMPONENTS, 0)
        by_function: dict[str, int] = {}
        for key, ticks in self.ticks.items():
            spent = ticks - min(ticks, earlier.ticks.get(key, 0))
            component, service, _, _ = key
            used[component] = used.get(component, 0) + spent
            if component == "functions":
                name = service.removeprefix(FUNCTION_SERVICE_PREFIX)
                by_function[name] = by_function.get(name, 0) + spent
        total = self.total_ticks - earlier.total_ticks
        return CpuUse(
            seconds={c: ticks / CLOCK_TICKS for c, ticks in used.items()},
            machine_busy=(self.busy_ticks - earlier.busy_ticks) / total if total > 0 else 0.0,
            by_function={name: ticks / CLOCK_TICKS for name, ticks in by_function.items()},
        )


@dataclass(frozen=True)
class CpuUse:
    seconds: Mapping[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0
    """Share of all cores' time that was not idle (0..1), whatever ran."""
    by_function: Mapping[str, float] = field(default_factory=dict)
    """The functions' part of `seconds`, per function (its entry point's name)."""


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot; idle and iowait count as not busy."""
    values = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already included in user time
    total = sum(values[:8])
    return total - idle, total


def snapshot(services: Iterable[tuple[str, int]]) -> CpuSnapshot:
    """CPU ticks per process now, by component, for (service name, pid) pairs of one stack."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.parent, []).append(pid)
    ticks: Ticks = {}
    for name, root in services:
        if root not in stats:
            continue
        component = component_of(name)
        below = "instances" if component == "compute" else component
        ticks[(component, name, root, stats[root].started)] = stats[root].own
        # What the service's process reaped is its children's: the instances, for the emulator.
        ticks[(below, name, root, stats[root].started)] = (
            ticks.get((below, name, root, stats[root].started), 0) + stats[root].reaped
        )
        pending = list(children.get(root, []))
        while pending:
            pid = pending.pop()
            ticks[(below, name, pid, stats[pid].started)] = stats[pid].own + stats[pid].reaped
            pending.extend(children.get(pid, []))
    busy, total = machine_ticks()
    return CpuSnapshot(ticks, busy, total)
