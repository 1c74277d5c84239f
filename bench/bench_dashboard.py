"""How fast the release dashboard answers with a long history (the goal: < 200 ms with 100
deployments in an environment's history).

Starts the Firestore emulator and the dashboard function under functions-framework, as the
local stack serves it, writes 100 deployments per environment (two environments, both in the
metrics window, each with a live release, one in flight and a few failures and rollbacks),
then times GETs of the page and of its JSON over HTTP. Prints a table; asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import requests
from google.cloud import firestore

from devstack.emulators import start_firestore
from devstack.processes import free_port, port_in_use, start_service, stop_process_group, wait_until
from shared.adapters.firestore_documents import deployment_to_document, environment_to_document
from shared.domain.metrics import percentile
from shared.domain.records import Deployment, EnvironmentState, HistoryEntry
from shared.domain.status import DeploymentStatus

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = "dashboard-bench"
DEPLOYMENTS_PER_ENVIRONMENT = 100
REQUESTS = 50
GOAL_MS = 200.0
PIPELINE = """
[apps.hello]
first_version = "1.0.0"
[apps.hello.defaults]
base_instance_template = "hello-base"
health_check = "hello-hc"
backend_service = "hello-backend"
rollback_callers = ["developer@hello.local"]
[apps.hello.environments.staging]
url = "http://127.0.0.1:1/"
[apps.hello.environments.production]
url = "http://127.0.0.1:2/"
"""
S = DeploymentStatus


def history(environment: str, now: datetime) -> list[Deployment]:
    """A realistic history: one release every few hours, some failing, some rolled back."""
    deployments: list[Deployment] = []
    for index in range(DEPLOYMENTS_PER_ENVIRONMENT):
        created = now - timedelta(hours=5 * (DEPLOYMENTS_PER_ENVIRONMENT - index))
        steps = [S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING, S.LIVE]
        if index % 10 == 7:
            steps = [S.PROVISIONING, S.COOLING_DOWN, S.FAILED]
        elif index == DEPLOYMENTS_PER_ENVIRONMENT - 1:
            steps = [S.PROVISIONING, S.COOLING_DOWN]  # in flight
        entries = [HistoryEntry(S.QUEUED, created, "build")]
        for step, status in enumerate(steps, start=1):
            entries.append(HistoryEntry(status, created + timedelta(seconds=20 * step), f"{status} step"))
        live_at = next((e.at for e in entries if e.status is S.LIVE), None)
        deployment = Deployment(
            deployment_id=f"hello-{environment}-{index:04d}",
            app="hello",
            environment=environment,
            version=f"1.{index}.0",
            commit=f"{index:040x}",
            build_id=f"b{index}",
            artifact="file:///tmp/hello.tar.gz",
            status=entries[-1].status,
            created_at=created,
            updated_at=entries[-1].at,
            history=tuple(entries),
            event={},
            went_live_at=live_at,
            triggered_by="ci@hello.local",
            commit_messages=(f"feat: change number {index}", "fix: a typo"),
            committed_at=created - timedelta(minutes=30),
            rollback_of=f"hello-{environment}-{index - 1:04d}" if index % 10 == 3 else None,
        )
        deployments.append(deployment)
    # Whatever went live was retired by the next live one, except the last.
    live = [d for d in deployments if d.went_live_at is not None]
    for previous, following in pairwise(live):
        index = deployments.index(previous)
        deployments[index] = replace(
            previous,
            status=S.RETIRED,
            history=(
                *previous.history,
                HistoryEntry(S.RETIRED, following.went_live_at or previous.updated_at),
            ),
        )
    return deployments


def seed(client: firestore.Client, now: datetime) -> None:
    for environment in ("staging", "production"):
        deployments = history(environment, now)
        batch = client.batch()
        for deployment in deployments:
            batch.set(
                client.collection("deployments").document(deployment.deployment_id),
                deployment_to_document(deployment),
            )
        batch.commit()
        live = [d for d in deployments if d.status is S.LIVE][-1]
        state = EnvironmentState("hello", environment, live.deployment_id, live.version)
        client.collection("environments").document(state.key).set(environment_to_document(state))


def timed(url: str, headers: dict[str, str]) -> list[float]:
    samples = []
    with requests.Session() as session:
        session.get(url, headers=headers, timeout=30).raise_for_status()  # warm: imports, clients
        for _ in range(REQUESTS):
            started = time.perf_counter()
            response = session.get(url, headers=headers, timeout=30)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return samples


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    emulator = start_firestore(free_port(), workdir / "firestore.log")
    server = None
    try:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        seed(firestore.Client(project=PROJECT), datetime.now(UTC))
        (workdir / "pipeline.toml").write_text(PIPELINE, encoding="utf-8")
        port = free_port()
        functions_framework = str(Path(sys.executable).parent / "functions-framework")
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": emulator.host,
            "PIPELINE_CONFIG": str(workdir / "pipeline.toml"),
            "DASHBOARD_ROLLBACK_URL": "http://127.0.0.1:1/",
        }
        server = start_service(
            "dashboard",
            [
                functions_framework,
                "--source",
                str(REPO_ROOT / "main.py"),
                "--target",
                "dashboard",
                "--port",
                str(port),
            ],
            workdir / "dashboard.log",
            env=env,
            cwd=REPO_ROOT,
        )
        wait_until(lambda: port_in_use(port), 60, "the dashboard function", server, workdir / "dashboard.log")
        url = f"http://127.0.0.1:{port}/"
        rows = [
            ("page (HTML), both environments", timed(url, {"Accept": "text/html"})),
            ("page (HTML), one app", timed(url + "?app=hello", {"Accept": "text/html"})),
            ("state (JSON)", timed(url + "?format=json", {"Accept": "application/json"})),
        ]
        print(
            f"Dashboard answer times over HTTP, {DEPLOYMENTS_PER_ENVIRONMENT} deployments in each of 2 "
            f"environments' history, {REQUESTS} requests each (goal: p90 < {GOAL_MS:.0f} ms)"
        )
        print(f"{'REQUEST':<34} {'P50 MS':>8} {'P90 MS':>8} {'MAX MS':>8}  GOAL")
        for name, samples in rows:
            p90 = percentile(samples, 0.9) or 0.0
            print(
                f"{name:<34} {percentile(samples, 0.5) or 0.0:8.1f} {p90:8.1f} {max(samples):8.1f}  "
                + ("met" if p90 < GOAL_MS else "MISSED")
            )
    finally:
        if server is not None:
            stop_process_group(server.pid)
        stop_process_group(emulator.process.pid)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
