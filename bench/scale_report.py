"""What `python -m bench scale` measured (one round's outcomes, one K's rounds) and its report:
the scale table, where the time goes per hop, and the CPU per component (bench/bench_scale.py
runs the rounds)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.bench_pipeline import say, table
from bench.machine_speed import MachineSpeed
from bench.process_cpu import COMPONENTS, CpuUse
from bench.rpc_counts import Counts
from devstack.load import percentile


@dataclass(frozen=True)
class Outcome:
    deployment_id: str
    status: str
    version: str
    total: float | None
    """publish → live, seconds."""
    wait: float | None
    """cooling_down → ready (the later of the cool-down's end and green healthy)."""
    boot_to_healthy: float | None
    hops: dict[str, float]
    """Seconds per hop (see HOPS), where the record has both ends."""


HOPS = (
    ("admission", "publish → recorded"),
    ("lock", "recorded → provisioning"),
    ("provisioning", "provisioning → green requested"),
    ("detection", "ready → switching noticed"),
    ("switching", "switching → live"),
)


@dataclass(frozen=True)
class Round:
    outcomes: list[Outcome]
    counts: Counts
    cpu: CpuUse
    load_average: float
    """The machine's 1-minute load average when the round ended (other work included)."""
    wall_seconds: float
    """First publish → the last deployment ended."""
    serving: int
    """How many apps serve the version they were just given."""

    def values(self, pick: Callable[[Outcome], float | None]) -> list[float]:
        return [value for o in self.outcomes if (value := pick(o)) is not None]


@dataclass(frozen=True)
class Result:
    apps: int
    lone: list[Round]
    burst: Round
    run: int = 0
    """Which of several runs of this K (`--repeat`), from 1; 0 when K ran once."""
    speed: tuple[MachineSpeed, MachineSpeed] | None = None
    """How fast the machine was before the stack started and after it stopped."""

    @property
    def label(self) -> str:
        return str(self.apps) if self.run == 0 else f"{self.apps}#{self.run}"

    @property
    def lone_p50(self) -> float | None:
        """The median publish -> live of the releases published alone."""
        return percentile([v for r in self.lone for v in r.values(lambda o: o.total)], 0.5)

    @property
    def p50_ratio(self) -> float | None:
        """The burst's median publish -> live over the lone release's."""
        lone = self.lone_p50
        p50 = percentile(self.burst.values(lambda o: o.total), 0.5)
        return None if lone is None or p50 is None else p50 / lone


def repeat_summary(ratios: Mapping[int, Sequence[float | None]]) -> list[str]:
    """One line per K that ran more than once: each run's p50/lone and their median.

    >>> repeat_summary({10: [1.1], 100: [1.71, 1.62, None, 1.8]})
    ['K=100 over 4 runs: p50/lone 1.71x 1.62x - 1.80x; median 1.71x']
    """
    lines = []
    for apps, values in ratios.items():
        if len(values) < 2:
            continue
        measured = sorted(v for v in values if v is not None)
        each = " ".join("-" if v is None else f"{v:.2f}x" for v in values)
        median_text = f"{statistics.median(measured):.2f}x" if measured else "-"
        lines.append(f"K={apps} over {len(values)} runs: p50/lone {each}; median {median_text}")
    return lines


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _per(value: float, n: int) -> str:
    return "-" if n == 0 else f"{value / n:.1f}"


def _hop_seconds(key: str) -> Callable[[Outcome], float | None]:
    """How long one outcome spent on the hop `key` (None where it did not get that far)."""
    return lambda outcome: outcome.hops.get(key)


def report(results: Sequence[Result], cool_down_seconds: int) -> None:
    say()
    say("=" * 78)
    say(
        f"Scale: K apps x 1 environment (instance_count 1, cool-down {cool_down_seconds} s), K releases at once"
    )
    say(f"Machine: {os.cpu_count()} CPUs; {datetime.now(UTC):%Y-%m-%d}. Times in seconds.")
    rows = []
    for result in results:
        burst = result.burst
        totals = burst.values(lambda o: o.total)
        overheads = [o.total - o.wait for o in burst.outcomes if o.total is not None and o.wait is not None]
        boots = burst.values(lambda o: o.boot_to_healthy)
        n = len(burst.outcomes)
        ratio = result.p50_ratio
        rpcs = burst.counts.rpcs
        begun = sum(v for k, v in rpcs.items() if k.endswith("/BeginTransaction"))
        aborted = sum(v for k, v in rpcs.items() if k.endswith(" aborted"))
        live = sum(1 for o in burst.outcomes if o.status == "live")
        rows.append(
            [
                result.label,
                seconds_text(result.lone_p50),
                seconds_text(percentile(totals, 0.5)),
                seconds_text(percentile(totals, 0.9)),
                seconds_text(max(totals) if totals else None),
                "-" if ratio is None else f"{ratio:.2f}x",
                f"{seconds_text(percentile(boots, 0.5))}/{seconds_text(percentile(boots, 0.9))}",
                f"{seconds_text(percentile(overheads, 0.5))}/{seconds_text(percentile(overheads, 0.9))}",
                f"{_per(burst.counts.reads, n)}/{_per(burst.counts.writes, n)}",
                f"{aborted}/{begun}",
                _per(sum(burst.counts.deliveries.values()), n),
                f"{burst.cpu.seconds['functions'] / n:.2f}" if n else "-",
                f"{live}/{n} live, {burst.serving} serve",
            ]
        )
    say(
        table(
            [
                "K",
                "lone",
                "p50",
                "p90",
                "max",
                "p50/lone",
                "boot p50/p90",
                "overhead p50/p90",
                "reads/writes per dep",
                "aborted/begun txns",
                "invocations per dep",
                "CPU s per dep",
                "outcome",
            ],
            rows,
        )
    )
    say()
    say("Where the time goes with K at once (p50/p90 per hop, seconds)")
    hop_rows = []
    for label_key, label in HOPS:
        cells = [label]
        for result in results:
            values = result.burst.values(_hop_seconds(label_key))
            cells.append(f"{seconds_text(percentile(values, 0.5))}/{seconds_text(percentile(values, 0.9))}")
        hop_rows.append(cells)
    say(table(["hop", *[f"K={r.label}" for r in results]], hop_rows))
    say()
    say("CPU seconds per deployment by component, and how busy the whole machine was")
    say(table(["K", "round", "wall s", "machine busy", "load", *COMPONENTS], cpu_rows(results)))
    names, rows = function_rows(results)
    if names:
        say()
        say("The functions' CPU seconds per deployment in the burst, by function (the busiest first)")
        say(table(["K", *names], rows))
    say(
        "lone: median publish -> live of a release alone; p50/p90/max: publish -> live of the K at once;"
        " boot: MIG requested -> instance healthy; overhead: publish -> live minus the wait for green"
        " (the later of the cool-down and healthy); invocations: push deliveries incl. redeliveries;"
        " CPU s per dep: the functions' processes only; the last table has every component (instances: every"
        " process the Compute emulator runs; machine busy and load count other work on the machine too)."
    )
    say()
    say(
        "How fast the machine was, before the stack started / after it stopped (bench/machine_speed.py;"
        " lower is faster: runs with different figures ran on a machine of different speed, whatever their code)"
    )
    say(table(["K", "Python workload ms", "process round trip µs"], speed_rows(results)))
    ratios: dict[int, list[float | None]] = {}
    for result in results:
        ratios.setdefault(result.apps, []).append(result.p50_ratio)
    summary = repeat_summary(ratios)
    if summary:
        say()
        say("Single runs vary; over the repeated runs:")
        for line in summary:
            say(line)


def function_rows(results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    """The functions that used CPU in any burst, busiest first, and their CPU per deployment.

    Which step to make cheaper: admission is `on_build_succeeded`, provisioning
    `on_start_rolling_replace`, the cool-down's polls and the switch `on_cool_down_complete`.
    """
    totals: dict[str, float] = {}
    for result in results:
        for name, seconds in result.burst.cpu.by_function.items():
            totals[name] = totals.get(name, 0.0) + seconds
    names = [name for name, seconds in sorted(totals.items(), key=lambda item: -item[1]) if seconds > 0]
    rows = []
    for result in results:
        n = max(len(result.burst.outcomes), 1)
        used = result.burst.cpu.by_function
        rows.append([result.label, *(f"{used.get(name, 0.0) / n:.4f}" for name in names)])
    return names, rows


def speed_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    for result in results:
        if result.speed is None:
            rows.append([result.label, "-", "-"])
            continue
        before, after = result.speed
        rows.append(
            [
                result.label,
                f"{before.python_ms:.0f}/{after.python_ms:.0f}",
                f"{before.round_trip_us:.0f}/{after.round_trip_us:.0f}",
            ]
        )
    return rows


def cpu_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    for result in results:
        for label, rounds in (("lone", result.lone), ("burst", [result.burst])):
            n = sum(len(r.outcomes) for r in rounds)
            wall = sum(r.wall_seconds for r in rounds)
            busy = sum(r.cpu.machine_busy * r.wall_seconds for r in rounds) / wall if wall else 0.0
            per_component = [sum(r.cpu.seconds.get(c, 0.0) for r in rounds) / max(n, 1) for c in COMPONENTS]
            rows.append(
                [
                    result.label,
                    label,
                    f"{wall / len(rounds):.1f}",
                    f"{busy:.0%}",
                    f"{max(r.load_average for r in rounds):.1f}",
                    *(f"{value:.3f}" for value in per_component),
                ]
            )
    return rows
