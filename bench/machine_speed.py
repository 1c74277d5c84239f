"""How fast this machine is right now, in two figures: a fixed Python workload, and a round trip
between two processes.

The same code's CPU per deployment in `python -m bench scale` has varied by up to 1.7x between
periods of a day on the same machine (nothing else running, no steal time in /proc/stat), and the
ratio to a lone release follows it. A scale run therefore also takes these figures before its
stack starts and after it stops: runs with different figures were not on the same machine,
whatever their code. The first is the kind of work the stack's Python does (JSON documents encoded
and decoded, dictionaries walked, strings formatted) on one core. The second is what the stack does
between its processes all the time (a message, a wakeup, an answer): one byte to a child process
over a pipe and back. Each is the best of several repeats, so a moment of other work does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

REPEATS = 5
_DOCUMENTS = 3000


def _sample_document(index: int) -> dict[str, object]:
    return {
        "deployment_id": f"hello-staging-{index:06d}",
        "status": "live",
        "version": f"1.{index % 17}.{index % 5}",
        "history": [
            {"status": status, "at": f"2026-12-03T17:{minute:02d}:00Z", "detail": f"{status} step {minute}"}
            for minute, status in enumerate(("recorded", "provisioning", "cooling_down", "switching", "live"))
        ],
        "verification": {"state": "pending", "requests": index, "server_errors": index % 3},
    }


def workload() -> int:
    """The fixed work: returns a figure that depends on all of it, so none is skipped."""
    total = 0
    for index in range(_DOCUMENTS):
        decoded = json.loads(json.dumps(_sample_document(index)))
        statuses = [entry["status"] for entry in decoded["history"]]
        total += len(",".join(statuses)) + decoded["verification"]["requests"]
    return total


def reference_milliseconds(repeats: int = REPEATS) -> float:
    """Milliseconds the workload takes, the best of `repeats` (lower is a faster machine)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        workload()
        best = min(best, time.perf_counter() - started)
    return best * 1000.0


_ECHO = "import os\nwhile True:\n    b = os.read(0, 1)\n    if not b:\n        break\n    os.write(1, b)\n"
"""The child's side of a round trip: read a byte, write it back, until the pipe closes."""


def round_trip_microseconds(trips: int = 1000, repeats: int = REPEATS) -> float:
    """Microseconds for one byte to go to a child process and come back, the best of `repeats`
    batches of `trips` (lower is a faster machine)."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None  # both are pipes, as asked
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    try:
        os.write(to_child, b"x")  # the child's interpreter has started once this comes back
        os.read(from_child, 1)
        best = float("inf")
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            for _ in range(trips):
                os.write(to_child, b"x")
                os.read(from_child, 1)
            best = min(best, (time.perf_counter() - started) / trips)
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait(timeout=10)
    return best * 1_000_000.0


@dataclass(frozen=True)
class MachineSpeed:
    """Both figures; lower is a faster machine."""

    python_ms: float
    round_trip_us: float


def measure() -> MachineSpeed:
    return MachineSpeed(reference_milliseconds(), round_trip_microseconds())
