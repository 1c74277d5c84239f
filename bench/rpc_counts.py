"""What the pipeline's functions did, as their RPC-counting wrappers (bench/rpc_counting) record it:
Firestore reads and writes, messages published, Compute calls and push deliveries, summed over processes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

FIRESTORE_BUDGET = 30
"""Document reads plus writes an ordinary staging deployment may cost, publish to notified."""

QUIET_SECONDS = 1.5
"""Counts unchanged this long means the deployment's last function (notify) has finished."""
QUIET_TIMEOUT_SECONDS = 20.0


@dataclass
class Counts:
    reads: int = 0
    writes: int = 0
    published: dict[str, int] = field(default_factory=dict)
    rpcs: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    """`<entry point>` (acknowledged) and `<entry point> retried` (answered non-2xx) push deliveries."""
    reads_by_step: dict[str, int] = field(default_factory=dict)
    writes_by_step: dict[str, int] = field(default_factory=dict)
    """Firestore reads and writes per entry point (the function whose process did them)."""

    def minus(self, earlier: Counts) -> Counts:
        return Counts(
            reads=self.reads - earlier.reads,
            writes=self.writes - earlier.writes,
            published={k: v - earlier.published.get(k, 0) for k, v in self.published.items()},
            rpcs={k: v - earlier.rpcs.get(k, 0) for k, v in self.rpcs.items()},
            deliveries={k: v - earlier.deliveries.get(k, 0) for k, v in self.deliveries.items()},
            reads_by_step={k: v - earlier.reads_by_step.get(k, 0) for k, v in self.reads_by_step.items()},
            writes_by_step={k: v - earlier.writes_by_step.get(k, 0) for k, v in self.writes_by_step.items()},
        )

    @property
    def messages(self) -> int:
        return sum(self.published.values())


def read_counts(directory: Path) -> Counts:
    total = Counts()
    for path in directory.glob("*.json"):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):  # a file being replaced right now: read it next time
            continue
        reads, writes = int(document.get("firestore_reads", 0)), int(document.get("firestore_writes", 0))
        total.reads += reads
        total.writes += writes
        # A restarted function is a new process with a file of its own: per step, they add up.
        step = str(document.get("target") or "other")
        total.reads_by_step[step] = total.reads_by_step.get(step, 0) + reads
        total.writes_by_step[step] = total.writes_by_step.get(step, 0) + writes
        for topic, n in document.get("published", {}).items():
            total.published[topic] = total.published.get(topic, 0) + int(n)
        for method, n in document.get("rpcs", {}).items():
            total.rpcs[method] = total.rpcs.get(method, 0) + int(n)
        for target, outcome in document.get("deliveries", {}).items():
            for key, n in (
                (target, outcome.get("acknowledged", 0)),
                (f"{target} retried", outcome.get("retried", 0)),
            ):
                total.deliveries[key] = total.deliveries.get(key, 0) + int(n)
    return total


def quiet_counts(directory: Path) -> Counts:
    """The counts once they stop moving (bounded)."""
    deadline = time.monotonic() + QUIET_TIMEOUT_SECONDS
    last = read_counts(directory)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = read_counts(directory)
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= QUIET_SECONDS:
            break
    return last
