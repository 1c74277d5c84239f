"""What each step of the demo did, and the summary table the demo ends with."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devstack.load import LoadReport
from shared.domain.records import Deployment


@dataclass
class StepResult:
    step: str
    version: str | None = None
    expected_status: str = "live"
    status: str | None = None
    deployment_id: str | None = None
    seconds: float | None = None
    hops: dict[str, float] = field(default_factory=dict)
    load: LoadReport | None = None
    problems: list[str] = field(default_factory=list)


def hop_durations(deployment: Deployment) -> dict[str, float]:
    """Seconds spent in each status, from consecutive history entries."""
    hops: dict[str, float] = {}
    for current, following in itertools.pairwise(deployment.history):
        hops[str(current.status)] = (following.at - current.at).total_seconds()
    return hops


def exposure_seconds(deployment: Mapping[str, Any]) -> float | None:
    """From going live to traffic back on the previous release, from the record's history."""
    history = deployment.get("history") or []
    live = next((h["at"] for h in history if h.get("status") == "live"), None)
    back = next((h["at"] for h in history if h.get("status") == "rolled_back"), None)
    if isinstance(live, datetime) and isinstance(back, datetime):
        return (back - live).total_seconds()
    return None


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def summary_table(results: Sequence[StepResult]) -> str:
    headers = [
        "step",
        "version",
        "status",
        "total",
        "provision",
        "cool-down",
        "switch",
        "served",
        "failed",
        "p99",
    ]
    rows = []
    for r in results:
        p99 = r.load.total.p99_ms if r.load else None
        rows.append(
            [
                r.step,
                r.version or "-",
                r.status or "-",
                _fmt_seconds(r.seconds),
                _fmt_seconds(r.hops.get("provisioning")),
                _fmt_seconds(r.hops.get("cooling_down")),
                _fmt_seconds(r.hops.get("switching")),
                str(r.load.served) if r.load else "-",
                str(r.load.failed) if r.load else "-",
                "-" if p99 is None else f"{p99:.0f} ms",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
