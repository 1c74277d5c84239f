"""The tables benchmarks print, and the one of what a deployment cost in Firestore and Pub/Sub work
(as counted by bench/rpc_counting in the functions' processes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.rpc_counts import FIRESTORE_BUDGET, Counts
from devstack.load import percentile
from shared.topology import BUILD_SUCCEEDED


def say(text: str = "") -> None:
    print(text, flush=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    body = [list(row) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def print_counts(per_deployment: Sequence[Counts], tick: Counts) -> None:
    say()
    say("Firestore and Pub/Sub work per deployment (counted in the functions' processes)")
    topics = sorted({topic for t in per_deployment for topic in t.published} | {BUILD_SUCCEEDED})
    rows = [
        ["Firestore document reads", *[str(t.reads) for t in per_deployment]],
        ["Firestore document writes", *[str(t.writes) for t in per_deployment]],
        ["Pub/Sub messages published by functions", *[str(t.messages) for t in per_deployment]],
    ]
    for topic in topics:
        if topic == BUILD_SUCCEEDED:
            rows.append(["  build-succeeded (published by CI)", *["1" for _ in per_deployment]])
        else:
            rows.append([f"  {topic}", *[str(t.published.get(topic, 0)) for t in per_deployment]])
    targets = sorted(
        {target for t in per_deployment for target, n in t.deliveries.items() if n},
        key=lambda name: (name.removesuffix(" retried"), name.endswith(" retried")),
    )
    rows.append(
        ["Push deliveries (function invocations)", *[str(sum(t.deliveries.values())) for t in per_deployment]]
    )
    for target in targets:
        label = target.replace(" retried", " answered non-2xx (redelivered)")
        rows.append([f"  {label}", *[str(t.deliveries.get(target, 0)) for t in per_deployment]])
    say(table(["per deployment", *[f"#{i + 1}" for i in range(len(per_deployment))]], rows))
    print_firestore_by_step(per_deployment)
    say(
        f"One watchdog tick (not per deployment; every minute on GCP by default): {tick.reads} reads, {tick.writes} writes,"
        f" {tick.messages} messages, {sum(tick.deliveries.values())} deliveries."
    )


def print_firestore_by_step(per_deployment: Sequence[Counts]) -> None:
    """Where each deployment's Firestore operations go: per step (entry point), the median over
    the deployments of its reads, writes and invocations, and the total against the budget."""
    say()
    say(
        f"Firestore document operations per deployment, by step (median of {len(per_deployment)}; budget {FIRESTORE_BUDGET})"
    )
    steps = sorted(
        {
            step
            for t in per_deployment
            for step, n in (*t.reads_by_step.items(), *t.writes_by_step.items())
            if n
        }
    )

    def median(values: Sequence[float]) -> float:
        return percentile(list(values), 0.5) or 0.0

    rows = []
    for step in steps:
        reads = median([t.reads_by_step.get(step, 0) for t in per_deployment])
        writes = median([t.writes_by_step.get(step, 0) for t in per_deployment])
        invocations = median(
            [t.deliveries.get(step, 0) + t.deliveries.get(f"{step} retried", 0) for t in per_deployment]
        )
        rows.append([step, f"{invocations:g}", f"{reads:g}", f"{writes:g}", f"{reads + writes:g}"])
    totals = [t.reads + t.writes for t in per_deployment]
    rows.append(
        [
            "total",
            f"{median([sum(t.deliveries.values()) for t in per_deployment]):g}",
            f"{median([t.reads for t in per_deployment]):g}",
            f"{median([t.writes for t in per_deployment]):g}",
            f"{median(totals):g} (max {max(totals) if totals else 0})",
        ]
    )
    say(table(["step", "invocations", "reads", "writes", "reads + writes"], rows))
