"""Release verification on a private local stack: how fast a bad release loses its traffic, how
long an ordinary switch serves two versions at once, and what verification costs.

- Detection + rollback: a release whose `/` fails every other request goes live under load; from
  `live` to `rolled_back` in its record (traffic back on the retained previous group) is the
  exposure. Several runs; p50 and max, with the requests that failed meanwhile.
- Mixed-version window of an ordinary switch: under load, from the first answer of the new version
  to the last answer of the old one (requests in flight on blue finish while it drains).
- Firestore reads and writes, messages and push deliveries per deployment with verification on:
  one that passes its bake window (counted until the verdict), one rolled back by it. Counted in
  the functions' processes, as in bench_pipeline (rpc_counting/sitecustomize.py).

Prints tables; asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench_pipeline import (
    REPO_ROOT,
    PipelineBench,
    counted_stack,
    say,
    stats_row,
    table,
)
from bench.rpc_counts import Counts, quiet_counts
from devstack.load import LoadReport, under_load
from devstack.stack import Stack
from releasectl.records import get_deployment
from shared.artifact import build_artifact, sha256_of_url

RUNS = int(os.environ.get("BENCH_VERIFICATION_RUNS", "3"))
TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.05
LOAD_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class RollbackRun:
    exposure: float
    """Seconds from `live` to `rolled_back` (traffic back on the previous group)."""
    failed: int
    served: int
    verdict: str


def _at(deployment: dict[str, Any], status: str) -> datetime | None:
    return next(
        (
            h["at"]
            for h in deployment.get("history") or []
            if h.get("status") == status and isinstance(h.get("at"), datetime)
        ),
        None,
    )


def mixed_version_window(report: LoadReport, old: str, new: str) -> float | None:
    """Seconds during which both versions answered: first answer of `new` to last answer of `old`."""
    first_new = min((first for version, first, _ in report.version_sequence if version == new), default=None)
    last_old = max((last for version, _, last in report.version_sequence if version == old), default=None)
    if first_new is None or last_old is None:
        return None
    return max(0.0, last_old - first_new)


class VerificationBench(PipelineBench):
    def __init__(self, stack: Stack, counts_dir: Path, artifact_uri: str, faulty_uri: str) -> None:
        super().__init__(stack, counts_dir, artifact_uri)
        self.faulty_uri = faulty_uri

    def wait_for(
        self, deployment_id: str, done: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            deployment = get_deployment(self.db, deployment_id) or {}
            if done(deployment):
                return deployment
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"{deployment_id}: {what} not within {TIMEOUT_SECONDS:g} s")

    def deploy_verified(self, message: str) -> tuple[dict[str, Any], Counts]:
        """A healthy release, followed until its bake verdict; the work it caused."""
        before = quiet_counts(self.counts_dir)
        deployment_id, _ = self.publish(message)
        deployment = self.wait_for(
            deployment_id,
            lambda d: (
                d.get("status") in ("failed", "rolled_back")
                or (d.get("verification") or {}).get("state") in ("passed", "failed")
            ),
            "a bake verdict",
        )
        return deployment, quiet_counts(self.counts_dir).minus(before)

    def deploy_faulty(self, message: str) -> tuple[dict[str, Any], Counts]:
        """A release failing under load, followed until rolled back; the work it caused."""
        before = quiet_counts(self.counts_dir)
        saved, self.artifact_uri = self.artifact_uri, self.faulty_uri
        self.artifact_sha256, saved_digest = sha256_of_url(self.faulty_uri), self.artifact_sha256
        try:
            deployment_id, _ = self.publish(message)
        finally:
            self.artifact_uri, self.artifact_sha256 = saved, saved_digest
        deployment = self.wait_for(
            deployment_id, lambda d: d.get("status") in ("rolled_back", "failed", "retired"), "a rollback"
        )
        return deployment, quiet_counts(self.counts_dir).minus(before)


def print_rollback_runs(runs: Sequence[RollbackRun]) -> None:
    say()
    say(f"Detection + rollback of a release failing half its requests under load ({len(runs)} runs)")
    say(
        table(
            ["measure", "p50 ms", "max ms", "n"],
            [stats_row("live → traffic back (exposure)", [r.exposure for r in runs])],
        )
    )
    rows = [
        [str(i + 1), f"{r.exposure:.2f} s", str(r.served), str(r.failed), r.verdict]
        for i, r in enumerate(runs)
    ]
    say(table(["run", "exposure", "served", "failed", "verdict"], rows))


def print_mixed(windows: Sequence[float]) -> None:
    say()
    say("Mixed-version window of an ordinary switch (both versions answering), under load")
    say(
        table(
            ["measure", "p50 ms", "max ms", "n"],
            [stats_row("first new answer → last old answer", list(windows))],
        )
    )


def print_costs(columns: Sequence[tuple[str, Counts]]) -> None:
    say()
    say("Firestore and Pub/Sub work per deployment with verification on (until the verdict)")
    topics = sorted({topic for _, c in columns for topic in c.published})
    targets = sorted({target for _, c in columns for target, n in c.deliveries.items() if n})
    rows = [
        ["Firestore document reads", *[str(c.reads) for _, c in columns]],
        ["Firestore document writes", *[str(c.writes) for _, c in columns]],
        ["Pub/Sub messages published by functions", *[str(c.messages) for _, c in columns]],
        *[[f"  {topic}", *[str(c.published.get(topic, 0)) for _, c in columns]] for topic in topics],
        ["Push deliveries (function invocations)", *[str(sum(c.deliveries.values())) for _, c in columns]],
        *[
            [
                f"  {target.replace(' retried', ' answered non-2xx (redelivered)')}",
                *[str(c.deliveries.get(target, 0)) for _, c in columns],
            ]
            for target in targets
        ],
    ]
    say(table(["per deployment", *[label for label, _ in columns]], rows))


def run(progress: Callable[[str], None] = say) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-verification-") as scratch:
        root = Path(scratch)
        with counted_stack(root, "bench-verification", progress) as (stack, counts_dir):
            artifact = build_artifact(REPO_ROOT / "examples" / "hello", root / "artifacts")
            faulty_source = root / "faulty" / "hello"
            shutil.copytree(
                REPO_ROOT / "examples" / "hello", faulty_source, ignore=shutil.ignore_patterns("__pycache__")
            )
            (faulty_source / "FAULT").write_text("half\n", encoding="utf-8")
            faulty = build_artifact(faulty_source, root / "artifacts")
            bench = VerificationBench(
                stack, counts_dir, artifact.resolve().as_uri(), faulty.resolve().as_uri()
            )
            first, _ = bench.deploy_verified("fix: bench warm-up")
            progress(
                f"warm-up: {first.get('version')} verified ({(first.get('verification') or {}).get('detail')})"
            )

            runs: list[RollbackRun] = []
            windows: list[float] = []
            costs: list[tuple[str, Counts]] = []
            for index in range(RUNS):
                before_version = str(first.get("version"))
                (good, good_counts), report = under_load(
                    bench.url,
                    partial(bench.deploy_verified, f"feat: bench release {index + 1}"),
                    LOAD_SETTLE_SECONDS,
                )
                window = mixed_version_window(report, before_version, str(good.get("version")))
                if window is not None:
                    windows.append(window)
                progress(
                    f"run {index + 1}/{RUNS}: {good.get('version')} verified;"
                    f" mixed-version window {window if window is None else f'{window:.2f} s'}"
                )
                (bad, bad_counts), report = under_load(
                    bench.url,
                    partial(bench.deploy_faulty, f"feat: bench faulty release {index + 1}"),
                    LOAD_SETTLE_SECONDS,
                )
                live_at, back_at = _at(bad, "live"), _at(bad, "rolled_back")
                if bad.get("status") == "rolled_back" and live_at and back_at:
                    during = report.phases.get("during")
                    runs.append(
                        RollbackRun(
                            exposure=(back_at - live_at).total_seconds(),
                            failed=during.failed if during else 0,
                            served=during.served if during else 0,
                            verdict=str((bad.get("verification") or {}).get("detail")),
                        )
                    )
                progress(f"run {index + 1}/{RUNS}: {bad.get('version')} ended {bad.get('status')}")
                if index == 0:
                    costs = [("verified", good_counts), ("rolled back", bad_counts)]
                first = good

            say()
            say("=" * 78)
            print_rollback_runs(runs)
            print_mixed(windows)
            print_costs(costs)
            environment = bench.environment
            say()
            say(
                f"Bake window {environment.bake_seconds} s, limit {environment.max_error_ratio:.0%} 5xx over at least"
                f" {environment.min_requests} requests; redelivery (the poll) every second locally."
                f" Goal: exposure under 3 s."
            )


def main() -> None:
    run()
