"""A chaos soak of the whole pipeline on a private local stack, and the invariants it must keep.

`ChaosRun(plan, directory).run()` starts a stack serving `plan.environments` apps of one
environment each, with a fault proxy (devstack/fault_proxy.py) between the functions and the
Compute emulator; gives every environment a first release; then, while a load generator hits the
first environment, publishes a mix of ordinary releases, failing releases (an app whose health
check answers 500), duplicate publishes and rollbacks, and SIGKILLs function processes at random
moments (the stack's supervisor restarts them). Once everything has settled it checks:

  1. every deployment is live or in a terminal state;
  2. every environment serves the version of its newest deployment that was not failed,
     cancelled or rolled back;
  3. exactly one notification per outcome (live, failed, cancelled) and no other;
  4. no instance group, template or instance process that no record needs;
  5. no environment lock held, no queue left;
  6. the load generator saw 0 failed requests.

`python -m bench chaos` runs the long version; tests/e2e/test_chaos.py a short one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1, firestore, pubsub_v1  # type: ignore[attr-defined]

from devstack.chaos_plan import ENVIRONMENT, ChaosPlan, ChaosReport, chaos_template
from devstack.fault_proxy import STATS_PATH
from devstack.load import LoadGenerator
from devstack.processes import (
    descendants,
    environment_applied,
    free_port,
    http_answers,
    start_service,
    stop_process_tree,
    wait_until,
)
from devstack.sample_releases import local_build_message, served_version, unhealthy_app
from devstack.stack import COMPUTE, FUNCTION_PREFIX, Stack
from releasectl.remote import BadInput, OperationFailed, request_rollback
from shared.adapters.compute_engine import ComputeEngine
from shared.artifact import build_artifact, sha256_of_url
from shared.config import ENV_COMPUTE_EMULATOR_HOST
from shared.domain.identifiers import deployment_id_for
from shared.domain.leaks import named_for_environment
from shared.topology import BUILD_SUCCEEDED

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL = frozenset({"live", "failed", "cancelled", "retired", "rolled_back"})
NOT_SERVING = frozenset({"failed", "cancelled", "rolled_back"})
OUTCOMES = frozenset({"live", "failed", "cancelled"})


class ChaosRun:
    def __init__(
        self, plan: ChaosPlan, directory: Path, progress: Callable[[str], None] | None = None
    ) -> None:
        self.plan = plan
        self.directory = directory
        self.progress = progress or (lambda line: None)
        self.random = random.Random(plan.seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.apps = [f"chaos{index}" for index in range(plan.environments)]
        self.report = ChaosReport()
        self.published: list[tuple[bytes, dict[str, str]]] = []
        self.deployment_ids: list[str] = []
        self._sequence = 0
        self._kills_done = threading.Event()
        self._releases_of: Counter[str] = Counter()

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> ChaosReport:
        started = time.monotonic()
        with self._stack() as stack:
            self.stack = stack
            self.db = firestore.Client(project=stack.project)
            self.publisher = pubsub_v1.PublisherClient()
            self.topic = self.publisher.topic_path(stack.project, BUILD_SUCCEEDED)
            self.compute = ComputeEngine(
                stack.project, endpoint=f"http://{stack.env[ENV_COMPUTE_EMULATOR_HOST]}"
            )
            dist = self.directory / "artifacts"
            self.artifact = build_artifact(REPO_ROOT / "examples" / "hello", dist).resolve().as_uri()
            broken = unhealthy_app(self.directory / "unhealthy")
            self.broken_artifact = build_artifact(broken, dist).resolve().as_uri()

            self.progress(f"first release in {len(self.apps)} environments…")
            for app in self.apps:
                self._release(app, "first", self.artifact)
            self._wait_settled(self._settle_timeout())
            url = stack.url(self.apps[0], ENVIRONMENT)
            with LoadGenerator(url, workers=2, pause_seconds=0.02) as load:
                killer = threading.Thread(target=self._killer, daemon=True)
                killer.start()
                self._workload()
                self._kills_done.wait(timeout=120)
                self.progress("workload done; waiting for every deployment to settle…")
                self._wait_settled(self._settle_timeout())
                self._wait_resources_settled()
                load_report = load.report()
            self.report.requests_served = load_report.served
            self.report.requests_failed = load_report.failed
            if load_report.failed:
                samples = [f"{s.error or s.version}" for s in load_report.total.failures[:5]]
                self.report.violations.append(f"load: {load_report.failed} failed requests, e.g. {samples}")
            self.report.restarts = sum(r.restarts for r in stack.services())
            self.report.faults = self._proxy_stats()
            self._check(load_report.failed == 0)
            self.publisher.stop()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _settle_timeout(self) -> float:
        return self.plan.provisioning_deadline_seconds * 4 + 120.0

    @contextlib.contextmanager
    def _stack(self) -> Iterator[Stack]:
        compute_port, proxy_port = free_port(), free_port()
        while proxy_port == compute_port:
            proxy_port = free_port()
        faults = self.plan.faults
        proxy_log = self.directory / "fault-proxy.log"
        self.proxy_url = f"http://127.0.0.1:{proxy_port}"
        proxy = start_service(
            "fault-proxy",
            [
                *(sys.executable, "-m", "devstack.fault_proxy", "--port", str(proxy_port)),
                *("--target", f"127.0.0.1:{compute_port}"),
                *("--error-rate", str(faults.error), "--drop-before-rate", str(faults.drop_before)),
                *("--drop-after-rate", str(faults.drop_after), "--latency-rate", str(faults.latency)),
                *("--max-latency", str(faults.max_latency_seconds)),
                *(("--seed", str(self.plan.seed)) if self.plan.seed is not None else ()),
            ],
            proxy_log,
            cwd=REPO_ROOT,
        )
        template = self.directory / "chaos.toml"
        template.write_text(chaos_template(self.plan), encoding="utf-8")
        stack = Stack(
            self.directory / "stack",
            project=f"chaos-{self.run_id}",
            fixed_ports={COMPUTE: compute_port},
            pipeline_template=template,
            extra_function_env={ENV_COMPUTE_EMULATOR_HOST: f"127.0.0.1:{proxy_port}"},
        )
        try:
            wait_until(http_answers(f"{self.proxy_url}{STATS_PATH}"), 30, "the fault proxy", proxy, proxy_log)
            self.progress("starting a private stack with the fault proxy in front of the Compute emulator…")
            stack.start()
            with environment_applied(stack.env):
                yield stack
        finally:
            stack.stop()
            stop_process_tree(proxy.pid, None)
            with contextlib.suppress(OSError):
                proxy.wait(timeout=5)

    # ---- the workload --------------------------------------------------------------------------
    def _release(self, app: str, label: str, artifact: str) -> str:
        self._sequence += 1
        build_id = f"chaos-{self.run_id}-{self._sequence}-{label}"
        data, attributes = local_build_message(
            app=app,
            environment=ENVIRONMENT,
            build_id=build_id,
            artifact=artifact,
            artifact_sha256=sha256_of_url(artifact),
            commit_message=f"fix: {label}",
        )
        self._publish(data, attributes)
        self.published.append((data, attributes))
        deployment_id = deployment_id_for(app, ENVIRONMENT, build_id)
        self.deployment_ids.append(deployment_id)
        self._releases_of[app] += 1
        self.report.actions["failing release" if artifact == self.broken_artifact else "release"] += 1
        return deployment_id

    def _publish(self, data: bytes, attributes: dict[str, str]) -> None:
        self.publisher.publish(self.topic, data, **attributes).result(timeout=60)

    def _actions(self) -> list[str]:
        """The workload's actions in a random order: at least one of each kind, in the plan's shares."""
        plan = self.plan
        creating = plan.deployments - len(self.apps)
        failing = max(1, round(creating * plan.failing_share))
        rollbacks = max(1, round(creating * plan.rollback_share))
        releases = max(1, creating - failing - rollbacks)
        duplicates = max(1, round(creating * plan.duplicate_share))
        actions = ["release"] * releases + ["failing"] * failing + ["rollback"] * rollbacks
        self.random.shuffle(actions)
        # A duplicate needs something published before it; anywhere after the first action will do.
        for _ in range(duplicates):
            actions.insert(self.random.randint(1, len(actions)), "duplicate")
        return actions

    def _workload(self) -> None:
        actions = self._actions()
        # Until the plan's number of deployments exists: a refused rollback creates none.
        while actions or len(self.deployment_ids) < self.plan.deployments:
            action = actions.pop(0) if actions else "release"
            app = self.random.choice(self.apps)
            if action == "duplicate":
                data, attributes = self.random.choice(self.published)
                self._publish(data, attributes)
                self.report.actions["duplicate publish"] += 1
            elif action == "rollback":
                # The environment with the most releases so far: it most likely has one to go back to.
                app = max(self.apps, key=lambda name: (self._releases_of[name], self.random.random()))
                try:
                    accepted = request_rollback(app, ENVIRONMENT, None, "chaos")
                except (BadInput, OperationFailed) as exc:  # an outcome too: nothing earlier, or killed
                    unanswered = "cannot reach" in str(exc)
                    self.report.actions["rollback unanswered" if unanswered else "rollback refused"] += 1
                    self.progress(f"rollback of {app}: {exc}")
                else:
                    self.deployment_ids.append(accepted.deployment_id)
                    self.report.actions["rollback"] += 1
            elif action == "failing":
                self._release(app, "broken", self.broken_artifact)
            else:
                self._release(app, "release", self.artifact)
            time.sleep(self.random.uniform(0, 2 * self.plan.mean_gap_seconds))
        self.progress(f"workload: {dict(self.report.actions)}")

    def _killer(self) -> None:
        """SIGKILL a random function process at random moments, spread over the workload."""
        expected = self.plan.deployments * self.plan.mean_gap_seconds
        try:
            for _ in range(self.plan.kills):
                time.sleep(self.random.uniform(0.2, 2 * expected / max(1, self.plan.kills)))
                victims = [r for r in self.stack.services() if r.name.startswith(FUNCTION_PREFIX) and r.alive]
                if not victims:
                    continue
                victim = self.random.choice(victims)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim.pid, signal.SIGKILL)
                    self.report.kills += 1
                    self.progress(f"SIGKILLed {victim.name} (pid {victim.pid})")
        finally:
            self._kills_done.set()

    # ---- settling --------------------------------------------------------------------------------
    def _records(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for snapshot in self.db.collection("deployments").stream():
            records[snapshot.id] = snapshot.to_dict() or {}
        return records

    def _wait_settled(self, timeout: float) -> None:
        def settled() -> bool:
            records = self._records()
            known = all(d in records for d in self.deployment_ids)
            return known and all(r.get("status") in TERMINAL for r in records.values())

        with contextlib.suppress(Exception):
            wait_until(settled, timeout, "every deployment to settle", interval=1.0)

    def _needed_resources(self, records: dict[str, dict[str, Any]]) -> set[str]:
        return {
            str(r[key]).rsplit("/", 1)[-1]
            for r in records.values()
            if r.get("status") == "live" or r.get("cleanup_due_at") is not None
            for key in ("instance_group", "instance_template")
            if r.get(key)
        }

    def _ours(self) -> tuple[set[str], set[str]]:
        groups = {g.name for g in self.compute.list_instance_groups("us-central1")}
        templates = {t.name for t in self.compute.list_instance_templates()}

        def scheme(kind: Any, name: str) -> bool:
            return any(named_for_environment(kind, name, app, ENVIRONMENT) for app in self.apps)

        return (
            {g for g in groups if scheme("instance_group", g)},
            {t for t in templates if scheme("instance_template", t)},
        )

    def _wait_resources_settled(self) -> None:
        """Bounded: retired groups drain and are deleted; leaks are collected after their grace."""

        def settled() -> bool:
            groups, templates = self._ours()
            return (groups | templates) <= self._needed_resources(self._records())

        with contextlib.suppress(Exception):
            wait_until(
                settled, self.plan.provisioning_deadline_seconds + 90, "resources to settle", interval=1.0
            )

    def _proxy_stats(self) -> dict[str, int]:
        try:
            return dict(requests.get(f"{self.proxy_url}{STATS_PATH}", timeout=5).json())
        except (requests.RequestException, ValueError):  # the summary just lacks the numbers
            return {}

    # ---- the invariants ----------------------------------------------------------------------------
    def _check(self, load_ok: bool) -> None:
        records = self._records()
        report = self.report
        report.statuses = Counter(str(r.get("status")) for r in records.values())

        missing = [d for d in self.deployment_ids if d not in records]
        unsettled = {d: r.get("status") for d, r in records.items() if r.get("status") not in TERMINAL}
        report.checks["every deployment is live or terminal"] = not unsettled and not missing
        if missing:
            report.violations.append(f"published but never recorded: {missing}")
        if unsettled:
            report.violations.append(f"not settled: {unsettled}")

        serving_ok = True
        for app in self.apps:
            mine = [r for r in records.values() if r.get("app") == app and r.get("status") not in NOT_SERVING]
            if not mine:
                continue
            newest = max(mine, key=lambda r: r["created_at"])
            served = served_version(self.stack.url(app, ENVIRONMENT))
            if newest.get("status") != "live" or served != newest.get("version"):
                serving_ok = False
                report.violations.append(
                    f"{app}: newest deployment {newest.get('version')} is {newest.get('status')}, serves {served}"
                )
        report.checks["every environment serves its newest good deployment"] = serving_ok

        notes: Counter[tuple[str, str]] = Counter()
        for line in self.stack.notifications_file.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("deployment_id") and entry.get("status") in OUTCOMES:
                notes[(entry["deployment_id"], entry["status"])] += 1
        expected: set[tuple[str, str]] = set()
        for deployment_id, record in records.items():
            history = [h.get("status") for h in record.get("history") or []]
            expected |= {(deployment_id, status) for status in OUTCOMES if status in history}
        twice = {key: n for key, n in notes.items() if n > 1}
        absent = expected - set(notes)
        extra = set(notes) - expected
        report.checks["exactly one notification per outcome"] = not twice and not absent and not extra
        for label, found in (
            ("sent more than once", twice),
            ("never sent", absent),
            ("without an outcome", extra),
        ):
            if found:
                report.violations.append(f"notifications {label}: {sorted(found)[:5]}")

        groups, templates = self._ours()
        needed = self._needed_resources(records)
        unneeded = sorted((groups | templates) - needed)
        stray = self._stray_instance_processes(groups & needed)
        report.checks["no group, template or instance process that no record needs"] = (
            not unneeded and not stray
        )
        if unneeded:
            report.violations.append(f"resources no record needs: {unneeded}")
        if stray:
            report.violations.append(f"instance processes of no needed group: {stray}")

        held = []
        for snapshot in self.db.collection("environments").stream():
            state = snapshot.to_dict() or {}
            if state.get("active_deployment_id") or state.get("queue"):
                held.append(
                    f"{snapshot.id}: lock {state.get('active_deployment_id')}, queue {state.get('queue')}"
                )
        report.checks["no environment lock held"] = not held
        report.violations.extend(held)
        report.checks["0 failed requests under load"] = load_ok

    def _stray_instance_processes(self, needed_groups: set[str]) -> list[str]:
        """Instance processes (found by their working directory) whose instance is in no needed group."""
        compute = self.stack.service(COMPUTE)
        instances_root = self.stack.state_dir / "compute" / "instances"
        needed_instances: set[str] = set()
        client = compute_v1.RegionInstanceGroupManagersClient(
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://{self.stack.env[ENV_COMPUTE_EMULATOR_HOST]}"},
        )
        for group in needed_groups:
            for managed in client.list_managed_instances(
                project=self.stack.project, region="us-central1", instance_group_manager=group
            ):
                needed_instances.add(managed.instance.rsplit("/", 1)[-1])
        stray = []
        for pid, _ in descendants(compute.pid):
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if instances_root not in cwd.parents:
                continue
            instance = cwd.relative_to(instances_root).parts[2]
            if instance not in needed_instances:
                stray.append(f"pid {pid} ({instance})")
        return stray
