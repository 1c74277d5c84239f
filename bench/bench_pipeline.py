"""What the pipeline itself costs, on a private local stack: time, Firestore and Pub/Sub work.

- Orchestration overhead per deployment: publish → live, minus the time spent waiting for green
  (the cool-down and green's boot-to-healthy run at the same time, so the wait is the later of
  the two), split per hop from the deployment's history timestamps.
- Rollback latency: from the endpoint's 202 until the URL serves the target version, apart for
  rollbacks within the target's retention (a traffic switch to its retained group) and after it
  (a full deployment with the cool-down); each sample is labelled by what its record says it did.
- A zero-downtime run: requests, failures, p50/p99 before, during and after a release.
- Firestore reads and writes, Pub/Sub messages and push deliveries per deployment, counted in
  the functions' own processes at the gRPC and WSGI boundaries (see rpc_counting/sitecustomize.py),
  Firestore in billing units.

The watchdog's scheduled tick is slowed to once an hour so its cost is not mixed into a
deployment's; one tick is measured on its own instead. Prints tables; asserts nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1, firestore

from bench.count_tables import print_counts, table
from bench.rpc_counts import Counts, quiet_counts
from devstack.load import LoadGenerator, PhaseStats, percentile
from devstack.sample_releases import local_build_message, served_version, wait_for_version
from devstack.stack import Stack
from releasectl.records import read_deployment
from releasectl.remote import publish_build_succeeded, request_rollback
from shared.artifact import build_artifact, sha256_of_url
from shared.config import ENV_COMPUTE_EMULATOR_HOST, EnvironmentConfig
from shared.domain.identifiers import deployment_id_for
from shared.domain.records import Deployment
from shared.domain.status import FINISHED
from shared.domain.status import DeploymentStatus as S
from shared.topology import WATCHDOG_TICK

REPO_ROOT = Path(__file__).resolve().parents[1]
COUNTING_DIR = Path(__file__).resolve().parent / "rpc_counting"
APP, ENVIRONMENT = "hello", "staging"
DEPLOYMENTS = int(os.environ.get("BENCH_PIPELINE_DEPLOYMENTS", "5"))
ROLLBACKS = int(os.environ.get("BENCH_PIPELINE_ROLLBACKS", "3"))
ROLLBACKS_AFTER_RETENTION = int(os.environ.get("BENCH_PIPELINE_ROLLBACKS_AFTER_RETENTION", "1"))
DEPLOY_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 0.05
LOAD_SETTLE_SECONDS = 3.0

HOPS = (
    ("publish → recorded (build-succeeded admitted)", "admission"),
    ("recorded → provisioning (lock taken)", "queued"),
    ("provisioning → green requested (template + MIG)", "provisioning"),
    ("ready → switching noticed (after cool-down and healthy)", "detection"),
    ("switching → live (attach green, drain blue)", "switching"),
    ("live → notification written", "notify"),
)


def say(text: str = "") -> None:
    print(text, flush=True)


# ---- one deployment, timed -----------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackSample:
    served: float
    """Seconds from the 202 until the URL serves the target version."""
    recorded: float
    """Seconds from the 202 until the deployment is recorded live."""
    adopted: bool
    """Whether it was a traffic switch to the target's retained group."""


@dataclass
class DeploymentTiming:
    deployment_id: str
    version: str
    total: float
    wait: float
    boot_to_healthy: float | None
    hops: dict[str, float]
    counts: Counts

    @property
    def overhead(self) -> float:
        return self.total - self.wait


def _history(deployment: Deployment) -> dict[str, datetime]:
    """When the deployment (last) entered each status."""
    return {str(entry.status): entry.at for entry in deployment.history}


class PipelineBench:
    def __init__(self, stack: Stack, counts_dir: Path, artifact_uri: str) -> None:
        self.stack = stack
        self.counts_dir = counts_dir
        self.artifact_uri = artifact_uri
        self.artifact_sha256 = sha256_of_url(artifact_uri)
        self.run_id = uuid.uuid4().hex[:8]
        self.db = firestore.Client()
        assert stack.config is not None
        environment = stack.config.environment(APP, ENVIRONMENT)
        assert environment is not None
        self.environment: EnvironmentConfig = environment
        self.url = stack.url(APP, ENVIRONMENT)
        compute_host = stack.env.get(ENV_COMPUTE_EMULATOR_HOST)
        self.groups = compute_v1.RegionInstanceGroupManagersClient(
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=f"http://{compute_host}"),
        )
        self.sequence = 0

    def publish(self, message: str) -> tuple[str, datetime]:
        self.sequence += 1
        build_id = f"bench-{self.run_id}-{self.sequence}"
        data, attributes = local_build_message(
            app=APP,
            environment=ENVIRONMENT,
            build_id=build_id,
            artifact=self.artifact_uri,
            artifact_sha256=self.artifact_sha256,
            commit_message=message,
        )
        published_at = datetime.now(UTC)
        publish_build_succeeded(data, attributes)
        return deployment_id_for(APP, ENVIRONMENT, build_id), published_at

    def green_healthy_at(self, group: str) -> datetime | None:
        managed = list(
            self.groups.list_managed_instances(
                project=self.stack.project, region=self.environment.region, instance_group_manager=group
            )
        )
        healthy = [m for m in managed if [h.detailed_health_state for h in m.instance_health] == ["HEALTHY"]]
        if managed and len(healthy) >= self.environment.instance_count:
            return datetime.now(UTC)
        return None

    def follow(self, deployment_id: str, published_at: datetime, before: Counts) -> DeploymentTiming:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
        healthy_at: datetime | None = None
        deployment: Deployment | None = None
        while time.monotonic() < deadline:
            deployment = read_deployment(self.db, deployment_id)
            group = deployment.instance_group if deployment else None
            if group and healthy_at is None and deployment and deployment.status is S.COOLING_DOWN:
                try:
                    healthy_at = self.green_healthy_at(group.rsplit("/", 1)[-1])
                except Exception:  # transient: the group is being created; poll again
                    healthy_at = None
            if deployment is not None and deployment.status in FINISHED:
                break
            time.sleep(POLL_SECONDS)
        if deployment is None or deployment.status is not S.LIVE:
            raise RuntimeError(f"{deployment_id} ended {deployment.status if deployment else None}, not live")
        notified_at = self.notified_at(deployment_id, "live")
        if deployment.verification is not None:
            # The deployment's work ends with its bake window's verdict: count up to that, so none
            # of it spills into the next deployment's figures.
            self.notified_at(deployment_id, "verified", timeout=DEPLOY_TIMEOUT_SECONDS)
        counts = quiet_counts(self.counts_dir).minus(before)
        at = _history(deployment)
        cool_down_ends = deployment.not_before or (
            at["cooling_down"] + timedelta(seconds=self.environment.cool_down_seconds)
        )
        # Green is healthy no later than the switch; the poll may simply have missed the moment.
        healthy = min(healthy_at or at["switching"], at["switching"])
        ready = max(cool_down_ends, healthy)
        hops = {
            "admission": (at["queued"] - published_at).total_seconds(),
            "queued": (at["provisioning"] - at["queued"]).total_seconds(),
            "provisioning": (at["cooling_down"] - at["provisioning"]).total_seconds(),
            "detection": max(0.0, (at["switching"] - ready).total_seconds()),
            "switching": (at["live"] - at["switching"]).total_seconds(),
        }
        if notified_at:
            hops["notify"] = (notified_at - at["live"]).total_seconds()
        return DeploymentTiming(
            deployment_id=deployment_id,
            version=deployment.version,
            total=(at["live"] - published_at).total_seconds(),
            wait=(ready - at["cooling_down"]).total_seconds(),
            boot_to_healthy=(healthy - at["cooling_down"]).total_seconds() if healthy_at else None,
            hops=hops,
            counts=counts,
        )

    def notified_at(self, deployment_id: str, status: str, timeout: float = 30.0) -> datetime | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stack.notifications_file.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                if entry.get("deployment_id") == deployment_id and entry.get("status") == status:
                    return datetime.fromisoformat(entry["at"])
            time.sleep(POLL_SECONDS)
        return None

    def deploy(self, message: str) -> DeploymentTiming:
        before = quiet_counts(self.counts_dir)
        deployment_id, published_at = self.publish(message)
        return self.follow(deployment_id, published_at, before)

    def rollback(self) -> RollbackSample:
        """Seconds from the 202 to the URL serving the target and to `live` recorded, and whether
        the rollback adopted the target's retained group (its history says so)."""
        accepted = request_rollback(APP, ENVIRONMENT, None, "bench")
        answered = time.monotonic()
        answered_wall = datetime.now(UTC)
        served = wait_for_version(self.url, accepted.version, DEPLOY_TIMEOUT_SECONDS)
        if served is None:
            raise RuntimeError(f"{accepted.version} never served after the rollback")
        served_after = time.monotonic() - answered
        deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            record = read_deployment(self.db, accepted.deployment_id)
            if record is not None and record.status is S.LIVE:
                live_at = _history(record).get("live")
                recorded = (live_at - answered_wall).total_seconds() if live_at else float("nan")
                self.notified_at(accepted.deployment_id, "live")
                adopted = any("retained group" in entry.detail for entry in record.history)
                return RollbackSample(served_after, recorded, adopted)
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"rollback {accepted.deployment_id} never went live")

    def watchdog_tick_cost(self) -> Counts:
        before = quiet_counts(self.counts_dir)
        body = {"messages": [{"data": "eyJzY2hlZHVsZWRfYXQiOiAiYmVuY2gifQ=="}]}  # {"scheduled_at": "bench"}
        requests.post(
            f"http://{self.stack.env['PUBSUB_EMULATOR_HOST']}/v1/projects/{self.stack.project}/topics/{WATCHDOG_TICK}:publish",
            json=body,
            timeout=10,
        ).raise_for_status()
        return quiet_counts(self.counts_dir).minus(before)


# ---- tables --------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 1000:.0f}"


def stats_row(label: str, values: list[float]) -> list[str]:
    return [label, ms(percentile(values, 0.5)), ms(max(values) if values else None), str(len(values))]


def print_timings(timings: Sequence[DeploymentTiming], cool_down: int) -> None:
    say()
    say(f"Orchestration overhead per deployment ({len(timings)} deployments, cool-down {cool_down} s)")
    rows = [stats_row(label, [t.hops[key] for t in timings if key in t.hops]) for label, key in HOPS]
    say(table(["hop", "p50 ms", "max ms", "n"], rows))
    say()
    totals = [t.total for t in timings]
    waits = [t.wait for t in timings]
    boots = [t.boot_to_healthy for t in timings if t.boot_to_healthy is not None]
    overheads = [t.overhead for t in timings]
    say(
        table(
            ["measure", "p50 ms", "max ms", "n"],
            [
                stats_row("publish → live", totals),
                stats_row("green boot-to-healthy (after the MIG request)", boots),
                stats_row(f"wait for green: max(cool-down {cool_down} s, healthy)", waits),
                stats_row("overhead = (publish → live) - wait", overheads),
            ],
        )
    )


def print_load(stats: Mapping[str, PhaseStats]) -> None:
    say()
    say("Zero-downtime run: one release under continuous load")
    rows = []
    for phase in ("before", "during", "after"):
        s = stats.get(phase)
        if s is None:
            continue
        p50, p99 = s.p50_ms, s.p99_ms
        rows.append(
            [
                phase,
                str(s.requests),
                str(s.failed),
                "-" if p50 is None else f"{p50:.1f}",
                "-" if p99 is None else f"{p99:.1f}",
                ", ".join(f"{v}: {n}" for v, n in sorted(s.versions.items())),
            ]
        )
    say(table(["phase", "requests", "failed", "p50 ms", "p99 ms", "versions served"], rows))


def print_rollbacks(samples: Sequence[RollbackSample]) -> None:
    say()
    say("Rollback latency (from the 202)")
    rows = []
    for adopted, label in ((True, "within retention"), (False, "after retention")):
        kind = [s for s in samples if s.adopted is adopted]
        if kind:
            rows.append(stats_row(f"{label}: 202 → URL serves the target", [s.served for s in kind]))
            rows.append(stats_row(f"{label}: 202 → recorded live", [s.recorded for s in kind]))
    say(table(["measure", "p50 ms", "max ms", "n"], rows))


# ---- main ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def counted_stack(root: Path, project: str, progress: Callable[[str], None]) -> Iterator[tuple[Stack, Path]]:
    """A private local stack in `root` whose functions count their Firestore and Pub/Sub work into
    the directory it yields with it; this process uses its environment until the stack stops."""
    counts_dir = root / "counts"
    counts_dir.mkdir()
    pythonpath = os.pathsep.join(p for p in (str(COUNTING_DIR), os.environ.get("PYTHONPATH", "")) if p)
    stack = Stack(
        root / "stack",
        project=project,
        fixed_ports={},
        extra_function_env={"PYTHONPATH": pythonpath, "BENCH_RPC_COUNTS_DIR": str(counts_dir)},
        scheduler_interval=3600,
    )
    progress("starting a private local stack…")
    stack.start()
    saved = {name: os.environ.get(name) for name in stack.env}
    os.environ.update(stack.env)
    try:
        yield stack, counts_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        progress("stopping the private stack…")
        stack.stop()


def run(progress: Callable[[str], None] = say) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        root = Path(scratch)
        with counted_stack(root, "bench-pipeline", progress) as (stack, counts_dir):
            artifact = build_artifact(REPO_ROOT / "examples" / "hello", root / "artifacts")
            bench = PipelineBench(stack, counts_dir, artifact.resolve().as_uri())
            # The first deployment after a start pays every function's cold start (imports, first
            # connections); it is shown on its own and kept out of the steady-state figures.
            cold = bench.deploy("fix: bench warm-up")
            progress(f"warm-up deployment: {cold.version} live in {cold.total:.2f} s (cold start)")
            timings = []
            for index in range(DEPLOYMENTS):
                timing = bench.deploy(f"fix: bench deployment {index + 1}")
                progress(
                    f"deployment {index + 1}/{DEPLOYMENTS}: {timing.version} live in {timing.total:.2f} s"
                )
                timings.append(timing)

            progress("zero-downtime run…")
            with LoadGenerator(bench.url) as load:
                time.sleep(LOAD_SETTLE_SECONDS)
                load.phase("during")
                zero_downtime = bench.deploy("feat: bench under load")
                load.phase("after")
                time.sleep(LOAD_SETTLE_SECONDS)
            load_report = load.report()
            progress(
                f"zero-downtime run: {zero_downtime.version} live; now serving {served_version(bench.url)}"
            )

            rollbacks = []
            for index in range(ROLLBACKS):
                sample = bench.rollback()
                progress(f"rollback {index + 1}/{ROLLBACKS}: served after {sample.served:.2f} s")
                rollbacks.append(sample)
            # The retired release's group stops being adoptable once its retention ends; wait
            # that out so these rollbacks build a new group and wait the whole cool-down.
            for index in range(ROLLBACKS_AFTER_RETENTION):
                wait = bench.environment.retain_previous_seconds + 1
                progress(f"waiting {wait} s for the retired release's retention to end…")
                time.sleep(wait)
                sample = bench.rollback()
                progress(
                    f"rollback after retention {index + 1}/{ROLLBACKS_AFTER_RETENTION}:"
                    f" served after {sample.served:.2f} s"
                )
                rollbacks.append(sample)
            tick = bench.watchdog_tick_cost()

            say()
            say("=" * 78)
            print_timings(timings, bench.environment.cool_down_seconds)
            say(
                f"First deployment after the stack started (cold functions): publish → live {cold.total:.2f} s,"
                f" overhead {cold.overhead:.2f} s."
            )
            print_counts([t.counts for t in timings], tick)
            print_load(load_report.phases)
            print_rollbacks(rollbacks)
            say()
            say(
                "Goals: 0 failed requests, under 2 s of total overhead locally, per-hop p50 under 200 ms."
                " Reads and writes are Firestore billing units; deliveries include redeliveries."
            )


def main() -> None:
    run()


if __name__ == "__main__":
    main()
