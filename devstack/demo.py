"""`make demo`: the whole story on the sample app, narrated, on the local stack.

1. A first release goes live.
2. A `feat:` release goes live under continuous load: no request fails, old then new version.
3. A broken release (its health check answers 500) never gets traffic and ends `failed`.
4. A rollback over the authenticated HTTP endpoint, under load, brings the previous version back:
   its group is still retained (detached, running), so the rollback is a traffic switch to it,
   without a new group or a cool-down.
5. A release whose health check and smoke check pass but whose `/` fails every other request goes
   live under load; its bake window sees the 5xx ratio and the pipeline switches traffic back to
   the retained previous group by itself: the release ends `rolled_back`. The demo prints the
   exposure (from live to traffic back) and the requests that failed meanwhile.
6. The staging release is promoted to production, which is not auto_deploy: it waits; the
   requester's own approval is refused (403); a second person (approver@hello.local) approves;
   production goes live on the same artifact and version; the records say who asked and who approved.

Uses a stack already running from `make up` (and leaves it running), else starts one and stops it
at the end. Prints a table of versions, statuses, time per phase, requests served and failed, and
exits 1 if anything misbehaved: a failed request, a wrong status, a wrong version served, or a
missing notification.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import semver
from google.cloud import firestore

from devstack.load import LoadGenerator, LoadReport
from devstack.stack import DEFAULT_STATE_DIR, running_stack
from releasectl.cli import run as releasectl_run
from releasectl.records import firestore_client, get_deployment, read_environment
from releasectl.remote import (
    APPROVE,
    BadInput,
    OperationFailed,
    build_message,
    identity_token,
    publish_build_succeeded,
    request_decision,
    request_promotion,
    request_rollback,
)
from releasectl.watch import watch_deployment
from shared.artifact import build_artifact, sha256_of_file
from shared.config import ENV_RELEASECTL_DASHBOARD_URL
from shared.domain.identifiers import deployment_id_for
from shared.domain.records import Deployment

APP = "hello"
ENVIRONMENT = "staging"
PRODUCTION = "production"
SECOND_APPROVER = "approver@hello.local"
"""The local pipeline file's second approver of production: the demo's "second person"."""
RECORD_TIMEOUT_SECONDS = 30.0
SAMPLE_APP = Path(__file__).resolve().parent.parent / "examples" / "hello"
WATCH_TIMEOUT_SECONDS = 150.0
NOTIFICATION_TIMEOUT_SECONDS = 60.0
SERVE_TIMEOUT_SECONDS = 30.0
SETTLE_SECONDS = 2.0
"""Load kept running before a release starts and after it ends, to compare with the switch."""
MAX_EXPOSURE_SECONDS = 3.0
"""A release failing its bake window must lose its traffic this soon after going live."""


class DemoFailure(Exception):
    """A step did not behave; the demo stops there and reports."""


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"==> {text}")


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


# ---- helpers -------------------------------------------------------------------------------------


def fake_commit(label: str) -> str:
    """A unique, valid 40-hex commit id for a demo build."""
    return hashlib.sha1(label.encode()).hexdigest()


def hop_durations(deployment: Deployment) -> dict[str, float]:
    """Seconds spent in each status, from consecutive history entries."""
    hops: dict[str, float] = {}
    for current, following in itertools.pairwise(deployment.history):
        hops[str(current.status)] = (following.at - current.at).total_seconds()
    return hops


def rollback_kind(client: firestore.Client, deployment_id: str) -> str:
    """What the rollback did, from its record: a switch to a retained group, or a full deployment."""
    deployment = get_deployment(client, deployment_id) or {}
    group = deployment.get("instance_group") or "?"
    for entry in deployment.get("history") or []:
        if entry.get("status") == "cooling_down" and "retained group" in (entry.get("detail") or ""):
            return f"a traffic switch: it adopted the retained group {group} (no new group, no cool-down)"
    return f"a full deployment: new group {group} and the whole cool-down (no retained group to adopt)"


def served_version(url: str) -> str | None:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:  # transient: the load balancer may be between backends
        return None
    return response.text.strip() if response.status_code == 200 else None


def wait_for_version(url: str, version: str, timeout: float) -> float | None:
    """Seconds until `url` answers `version`, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if served_version(url) == version:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def feature_copy(source: Path, into: Path) -> Path:
    """The sample app plus one file, so the feature release is a different artifact."""
    target = into / "hello"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / "CHANGELOG").write_text("A greeting for everyone.\n", encoding="utf-8")
    return target


def broken_copy(source: Path, into: Path) -> Path:
    """The sample app with a health check that answers 500: it runs, but is never healthy."""
    target = into / "hello"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    app = target / "app.py"
    text = app.read_text(encoding="utf-8")
    healthy = 'self._send(200, b"ok\\n", "text/plain")'
    if healthy not in text:
        raise DemoFailure("cannot break the sample app: its health-check line changed")
    app.write_text(text.replace(healthy, 'self._send(500, b"broken\\n", "text/plain")', 1), encoding="utf-8")
    return target


def faulty_copy(source: Path, into: Path, fault: str) -> Path:
    """The sample app with a FAULT marker (see examples/hello/app.py): `/` fails, /healthz does not."""
    target = into / "hello"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / "FAULT").write_text(f"{fault}\n", encoding="utf-8")
    return target


def exposure_seconds(deployment: Mapping[str, Any]) -> float | None:
    """From going live to traffic back on the previous release, from the record's history."""
    history = deployment.get("history") or []
    live = next((h["at"] for h in history if h.get("status") == "live"), None)
    back = next((h["at"] for h in history if h.get("status") == "rolled_back"), None)
    if isinstance(live, datetime) and isinstance(back, datetime):
        return (back - live).total_seconds()
    return None


@contextmanager
def load_against(url: str) -> Iterator[LoadGenerator]:
    generator = LoadGenerator(url)
    generator.start()
    try:
        yield generator
    finally:
        generator.stop()


def progress_line(load: LoadGenerator | None) -> Callable[[str], None]:
    def line(text: str) -> None:
        if load is None:
            say(f"    {text}")
            return
        served, failed = load.counts()
        say(f"    {text:<70} [load: {served} served, {failed} failed]")

    return line


# ---- the demo --------------------------------------------------------------------------------------


class Demo:
    def __init__(
        self, url: str, notifications_file: Path, workdir: Path, production_url: str | None = None
    ) -> None:
        self.url = url
        self.production_url = production_url
        self.notifications_file = notifications_file
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.firestore = firestore_client()
        self.results: list[StepResult] = []

    def release(
        self,
        step: str,
        source: Path,
        commit_message: str,
        expected_status: str,
        load: LoadGenerator | None,
    ) -> StepResult:
        result = StepResult(step=step, expected_status=expected_status)
        self.results.append(result)
        artifact = build_artifact(source, self.workdir / "artifacts")
        build_id = f"demo-{self.run_id}-{len(self.results)}"
        data, attributes = build_message(
            app=APP,
            environment=ENVIRONMENT,
            commit=fake_commit(build_id),
            build_id=build_id,
            artifact=artifact.resolve().as_uri(),
            artifact_sha256=sha256_of_file(artifact),
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            commit_messages=[commit_message],
            build_url=f"https://ci.example.com/demo/{build_id}",
            triggered_by="make demo",
        )
        say(f"    artifact {artifact.name}; publishing build-succeeded ({commit_message!r})")
        if load is not None:
            load.phase("during")
        message_id = publish_build_succeeded(data, attributes)
        result.deployment_id = deployment_id_for(APP, ENVIRONMENT, build_id)
        say(f"    published message {message_id}; deployment {result.deployment_id}")
        self._follow(result, load)
        return result

    def rollback(self, step: str, load: LoadGenerator) -> StepResult:
        result = StepResult(step=step)
        self.results.append(result)
        load.phase("during")
        accepted = request_rollback(APP, ENVIRONMENT, None, "make demo: rolling back", token=None)
        answered = time.monotonic()
        result.deployment_id = accepted.deployment_id
        say(
            f"    202 accepted: {accepted.version} as {accepted.deployment_id}"
            f" (rolling back {accepted.rollback_of})"
        )
        served_after = wait_for_version(self.url, accepted.version, WATCH_TIMEOUT_SECONDS)
        if served_after is None:
            result.problems.append(f"{accepted.version} was never served after the rollback")
        else:
            say(f"    the URL serves {accepted.version} {time.monotonic() - answered:.1f} s after the 202")
        self._follow(result, load)
        say(f"    {rollback_kind(self.firestore, accepted.deployment_id)}")
        if result.version != accepted.version:
            result.problems.append(f"rollback deployed {result.version}, the 202 promised {accepted.version}")
        return result

    def promote(self, step: str) -> StepResult:
        """Promote staging's live release to production and take it through the two-person rule."""
        result = StepResult(step=step)
        self.results.append(result)
        accepted = request_promotion(APP, ENVIRONMENT, PRODUCTION, None, "make demo: promoting")
        deployment_id = str(accepted.get("deployment_id"))
        result.deployment_id = deployment_id
        say(
            f"    202 accepted: {accepted.get('version')} as {deployment_id}, status {accepted.get('status')}"
        )
        if accepted.get("status") != "awaiting_approval":
            result.problems.append(f"the promotion started {accepted.get('status')}, not awaiting_approval")
        waiting = self._wait_for_status(deployment_id, "awaiting_approval")
        say(
            f"    {deployment_id} is {waiting.get('status')}: it takes no lock and no instances until approved"
        )
        try:
            request_decision(deployment_id, "approve", "make demo: approving my own request")
            result.problems.append("the requester's own approval was accepted")
        except OperationFailed as exc:  # expected: 403, the requester may not approve
            if "HTTP 403" not in str(exc):
                raise
            say(f"    the requester's own approval is refused: {exc}")
        token = identity_token(APPROVE, email=SECOND_APPROVER)
        taken = request_decision(deployment_id, "approve", "make demo: second pair of eyes", token=token)
        say(f"    {SECOND_APPROVER} approves: {deployment_id} is now {taken.get('status')}")
        self._follow(result, None)
        record = get_deployment(self.firestore, deployment_id) or {}
        approvals = [f"{a.get('by')} ({a.get('decision')})" for a in record.get("approvals") or []]
        say(f"    requested by {record.get('requested_by')}; approved by {', '.join(approvals) or 'nobody'}")
        if [a.get("by") for a in record.get("approvals") or []] != [SECOND_APPROVER]:
            result.problems.append(f"approvals recorded: {approvals}")
        return result

    def _wait_for_status(self, deployment_id: str, status: str) -> dict[str, Any]:
        deadline = time.monotonic() + RECORD_TIMEOUT_SECONDS
        while True:
            record = get_deployment(self.firestore, deployment_id) or {}
            if record.get("status") == status:
                return record
            if time.monotonic() > deadline:
                raise DemoFailure(f"{deployment_id} is {record.get('status')}, not {status}")
            time.sleep(0.25)

    def _follow(self, result: StepResult, load: LoadGenerator | None) -> None:
        assert result.deployment_id
        outcome = watch_deployment(
            self.firestore, result.deployment_id, WATCH_TIMEOUT_SECONDS, progress_line(load)
        )
        deployment = outcome.deployment
        result.status = outcome.status
        if deployment is not None:
            result.version = deployment.version
            if deployment.finished_at is not None:
                result.seconds = (deployment.finished_at - deployment.created_at).total_seconds()
            result.hops = hop_durations(deployment)
        if outcome.timed_out:
            result.problems.append(f"still {outcome.status} after {WATCH_TIMEOUT_SECONDS:g} s")
        elif outcome.status != result.expected_status and not (
            # A release rolled back by its bake window is seen live first, unless the watch is late.
            result.expected_status == "rolled_back" and outcome.status == "live"
        ):
            result.problems.append(f"ended {outcome.status}, expected {result.expected_status}")
        if load is not None and result.expected_status != "rolled_back":
            # A release expected to be rolled back is still "during" until traffic is back.
            load.phase("after")

    def await_automatic_rollback(self, result: StepResult, load: LoadGenerator) -> None:
        """After `result` went live: wait (bounded) until its bake window rolled it back."""
        assert result.deployment_id
        deadline = time.monotonic() + WATCH_TIMEOUT_SECONDS
        record: Mapping[str, Any] = {}
        while time.monotonic() < deadline:
            record = get_deployment(self.firestore, result.deployment_id) or {}
            if record.get("status") != "live":
                break
            time.sleep(0.1)
        result.status = record.get("status")
        if result.status != "rolled_back":
            result.problems.append(f"ended {result.status}, expected rolled_back by its bake window")
            return
        load.phase("after")
        verification = record.get("verification") or {}
        exposure = exposure_seconds(record)
        say(f"    bake window: {verification.get('detail')}")
        say(
            "    exposure: "
            + ("unknown" if exposure is None else f"{exposure:.1f} s")
            + " from live to traffic back on the previous release"
        )
        if exposure is None or exposure >= MAX_EXPOSURE_SECONDS:
            result.problems.append(f"exposure {exposure} s, expected under {MAX_EXPOSURE_SECONDS:g} s")

    def check_load(
        self,
        result: StepResult,
        report: LoadReport,
        before: str | None,
        after: str,
        never: Sequence[str] = (),
    ) -> None:
        """Zero failures; only `before` before the step, only `after` after it, never `never`."""
        result.load = report
        if report.failed:
            first = report.total.failures[0]
            result.problems.append(
                f"{report.failed} requests failed (first at +{first.at:.1f} s: {first.error})"
            )
        for phase, allowed in (("before", before), ("after", after)):
            stats = report.phases.get(phase)
            if stats is None or allowed is None:
                continue
            wrong = {v: n for v, n in stats.versions.items() if v != allowed}
            if wrong:
                result.problems.append(f"{phase} the release, served {wrong} instead of only {allowed}")
        for version in never:
            if version and report.total.versions.get(version):
                result.problems.append(f"{report.total.versions[version]} requests were served by {version}")
        sequence = " → ".join(v for v, _, _ in report.version_sequence) or "nothing"
        say(f"    load: {report.served} served, {report.failed} failed; versions in order: {sequence}")

    def check_notifications(self) -> list[str]:
        """Every deployment's outcome was announced exactly once in the notifications file."""
        expected = {r.deployment_id: r.status for r in self.results if r.deployment_id and r.status}
        deadline = time.monotonic() + NOTIFICATION_TIMEOUT_SECONDS
        while True:
            counts = self._notification_counts()
            missing = {d: s for d, s in expected.items() if not counts.get((d, s))}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        for (deployment_id, status), count in sorted(counts.items()):
            say(f"    {deployment_id}: {status} notification (x{count})")
        problems = [f"no {status} notification for {deployment}" for deployment, status in missing.items()]
        problems += [f"{n} {status} notifications for {d}" for (d, status), n in counts.items() if n > 1]
        return problems

    def _notification_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        if not self.notifications_file.exists():
            return counts
        ours = {r.deployment_id for r in self.results}
        for line in self.notifications_file.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line being appended right now: read it next poll
                continue
            if entry.get("deployment_id") in ours:
                key = (str(entry["deployment_id"]), str(entry.get("status")))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def final_statuses(self, expected: Mapping[str, str]) -> list[str]:
        problems = []
        for deployment_id, status in expected.items():
            record = get_deployment(self.firestore, deployment_id) or {}
            say(f"    {deployment_id}: {record.get('version')} {record.get('status')} (expected {status})")
            if record.get("status") != status:
                problems.append(f"{deployment_id} is {record.get('status')}, expected {status}")
        return problems


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


def run_demo(url: str, notifications_file: Path, production_url: str | None = None) -> int:
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="release-demo-") as scratch:
        demo = Demo(url, notifications_file, Path(scratch), production_url)
        try:
            _story(demo)
        except DemoFailure as exc:  # a step misbehaved: report it, skip the steps that need it
            problems.append(str(exc))
        except (BadInput, OperationFailed) as exc:  # publish or rollback refused: report it
            problems.append(f"releasectl: {exc}")
        heading("Checking notifications")
        problems += demo.check_notifications()
        for result in demo.results:
            problems += [f"{result.step}: {p}" for p in result.problems]
        heading("Summary")
        say(summary_table(demo.results))
        problems += show_metrics()
    say()
    if problems:
        say("The demo found problems:")
        for problem in problems:
            say(f"  - {problem}")
        return 1
    say(
        "Every step behaved: no failed request but the faulty release's own before its automatic"
        " rollback, the right versions, statuses and notifications."
    )
    return 0


def show_metrics() -> list[str]:
    """The delivery metrics of today's releases, as `releasectl metrics` prints them."""
    heading(f"Delivery metrics of {APP} (releasectl metrics --app {APP} --since 1)")
    output, errors = io.StringIO(), io.StringIO()
    code = releasectl_run(["metrics", "--app", APP, "--since", "1"], stdout=output, stderr=errors)
    for line in output.getvalue().splitlines():
        say(f"    {line}")
    return [] if code == 0 else [f"releasectl metrics failed: {errors.getvalue().strip()}"]


def _story(demo: Demo) -> None:
    firestore = demo.firestore
    state = read_environment(firestore, APP, ENVIRONMENT)
    live_before = state.live_version if state is not None else None

    heading(
        f"1. First release of {APP} to {ENVIRONMENT}"
        + (f" (now serving {live_before})" if live_before else "")
    )
    first = demo.release("first release", SAMPLE_APP, "fix: first demo release", "live", None)
    if first.status != "live" or not first.version:
        raise DemoFailure(f"the first release ended {first.status}; stopping")
    if live_before is None and first.version != "1.0.0":
        first.problems.append(f"a first release should be 1.0.0, got {first.version}")
    if wait_for_version(demo.url, first.version, SERVE_TIMEOUT_SECONDS) is None:
        first.problems.append(f"{demo.url} does not serve {first.version}")
    say(f"    {demo.url} serves {served_version(demo.url)}")

    heading("2. A feature release under continuous load")
    with load_against(demo.url) as load:
        time.sleep(SETTLE_SECONDS)
        second = demo.release(
            "feature release",
            feature_copy(SAMPLE_APP, demo.workdir / "feature"),
            "feat: a greeting for everyone",
            "live",
            load,
        )
        time.sleep(SETTLE_SECONDS)
    report = load.report()
    expected_second = str(semver.Version.parse(first.version).bump_minor())
    if second.version != expected_second:
        second.problems.append(
            f"a feat: release after {first.version} should be {expected_second}, got {second.version}"
        )
    demo.check_load(second, report, before=first.version, after=second.version or "?")
    if second.status != "live":
        raise DemoFailure("the feature release did not go live; stopping")

    heading("3. A broken release (its health check answers 500): it must never get traffic")
    broken_source = broken_copy(SAMPLE_APP, demo.workdir / "broken")
    with load_against(demo.url) as load:
        time.sleep(SETTLE_SECONDS)
        third = demo.release(
            "broken release", broken_source, "fix: a change that breaks /healthz", "failed", load
        )
        time.sleep(SETTLE_SECONDS)
    demo.check_load(
        third, load.report(), before=second.version, after=second.version or "?", never=[third.version or ""]
    )

    heading("4. Roll back over the authenticated HTTP endpoint, under load (to the retained group)")
    with load_against(demo.url) as load:
        time.sleep(SETTLE_SECONDS)
        rollback = demo.rollback("rollback", load)
        time.sleep(SETTLE_SECONDS)
    demo.check_load(rollback, load.report(), before=second.version, after=first.version)

    heading("5. A release that fails under load: its bake window rolls it back automatically")
    faulty_source = faulty_copy(SAMPLE_APP, demo.workdir / "faulty", "half")
    with load_against(demo.url) as load:
        time.sleep(SETTLE_SECONDS)
        fifth = demo.release(
            "fails under load",
            faulty_source,
            "feat: a change that fails every other page",
            "rolled_back",
            load,
        )
        if fifth.status in ("live", "rolled_back"):
            demo.await_automatic_rollback(fifth, load)
        time.sleep(SETTLE_SECONDS)
    report = load.report()
    fifth.load = report
    after_phase = report.phases.get("after")
    after_failed = after_phase.failed if after_phase is not None else 0
    say(
        f"    load: {report.served} served, {report.failed} failed"
        f" ({after_failed} of them after traffic went back)"
    )
    if wait_for_version(demo.url, first.version, SERVE_TIMEOUT_SECONDS) is None:
        fifth.problems.append(f"{first.version} is not served again after the automatic rollback")
    else:
        say(f"    {demo.url} serves {served_version(demo.url)} again")
    if after_failed and after_phase is not None:
        first_failure = after_phase.failures[0]
        fifth.problems.append(
            f"{after_failed} requests failed after traffic went back"
            f" (first at +{first_failure.at:.1f} s: {first_failure.error})"
        )

    heading(f"6. Promote the {ENVIRONMENT} release to {PRODUCTION}: it waits for a second person")
    staging_state = read_environment(demo.firestore, APP, ENVIRONMENT)
    staged_id = staging_state.live_deployment_id if staging_state else None
    staged = get_deployment(demo.firestore, staged_id or "") or {}
    promotion = demo.promote("promotion")
    promoted = get_deployment(demo.firestore, promotion.deployment_id or "") or {}
    for key in ("version", "commit", "artifact", "artifact_sha256"):
        if staged.get(key) != promoted.get(key):
            promotion.problems.append(
                f"{key}: {PRODUCTION} got {promoted.get(key)}, {ENVIRONMENT} had {staged.get(key)}"
            )
    if demo.production_url and promotion.version:
        if wait_for_version(demo.production_url, promotion.version, SERVE_TIMEOUT_SECONDS) is None:
            promotion.problems.append(f"{demo.production_url} does not serve {promotion.version}")
        say(
            f"    {demo.production_url} serves {served_version(demo.production_url)},"
            f" the same artifact as {ENVIRONMENT}"
        )
    heading("Checking the records")
    environment = firestore.collection("environments").document(f"{APP}@{ENVIRONMENT}").get().to_dict() or {}
    automatic = get_deployment(firestore, str(environment.get("live_deployment_id"))) or {}
    if automatic.get("rollback_of") != fifth.deployment_id:
        fifth.problems.append(f"the live deployment is not the automatic rollback of {fifth.deployment_id}")
    else:
        say(f"    {environment.get('live_deployment_id')}: triggered by {automatic.get('triggered_by')!r}")
    expected = {
        first.deployment_id: "retired",
        second.deployment_id: "retired",
        third.deployment_id: "failed",
        rollback.deployment_id: "retired",
        fifth.deployment_id: "rolled_back",
        promotion.deployment_id: "live",
    }
    known = {deployment_id: status for deployment_id, status in expected.items() if deployment_id}
    rollback.problems += demo.final_statuses(known)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the stack's state directory"
    )
    args = parser.parse_args(argv)
    heading("Local stack")
    started = time.monotonic()
    with running_stack(args.state_dir, progress=lambda line: say(f"    {line.strip()}")) as stack:
        os.environ.update(stack.env)
        url = stack.url(APP, ENVIRONMENT)
        say(f"    ready in {time.monotonic() - started:.1f} s; {APP}/{ENVIRONMENT} is served at {url}")
        say(f"    notifications: {stack.notifications_file}; logs: {stack.logs_dir}")
        say(f"    release dashboard: {stack.env.get(ENV_RELEASECTL_DASHBOARD_URL, '(not served)')}")
        code = run_demo(url, stack.notifications_file, stack.url(APP, PRODUCTION))
    return code


if __name__ == "__main__":
    sys.exit(main())
