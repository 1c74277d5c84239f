"""What the demo does at each step: publish, roll back, promote and approve, follow a deployment to
its end under load, and check what came of it (statuses, versions served, notifications, failed requests).
`devstack/demo.py` tells the story with these; each returns or records the problems it found.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore

from devstack.demo_report import StepResult, exposure_seconds, hop_durations
from devstack.load import LoadGenerator, LoadReport
from devstack.sample_releases import (
    DemoFailure,
    local_build_message,
    wait_for_version,
)
from releasectl.records import firestore_client, get_deployment
from releasectl.remote import (
    APPROVE,
    OperationFailed,
    identity_token,
    publish_build_succeeded,
    request_decision,
    request_promotion,
    request_rollback,
)
from releasectl.watch import watch_deployment
from shared.artifact import build_artifact, sha256_of_file
from shared.domain.identifiers import deployment_id_for

APP = "hello"
ENVIRONMENT = "staging"
PRODUCTION = "production"
SECOND_APPROVER = "approver@hello.local"
"""The local pipeline file's second approver of production: the demo's "second person"."""
RECORD_TIMEOUT_SECONDS = 30.0
WATCH_TIMEOUT_SECONDS = 150.0
NOTIFICATION_TIMEOUT_SECONDS = 60.0
SERVE_TIMEOUT_SECONDS = 30.0
SETTLE_SECONDS = 2.0
"""Load kept running before a release starts and after it ends, to compare with the switch."""
MAX_EXPOSURE_SECONDS = 3.0
"""A release failing its bake window must lose its traffic this soon after going live."""


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"==> {text}")


# ---- helpers -------------------------------------------------------------------------------------


def rollback_kind(client: firestore.Client, deployment_id: str) -> str:
    """What the rollback did, from its record: a switch to a retained group, or a full deployment."""
    deployment = get_deployment(client, deployment_id) or {}
    group = deployment.get("instance_group") or "?"
    for entry in deployment.get("history") or []:
        if entry.get("status") == "cooling_down" and "retained group" in (entry.get("detail") or ""):
            return f"a traffic switch: it adopted the retained group {group} (no new group, no cool-down)"
    return f"a full deployment: new group {group} and the whole cool-down (no retained group to adopt)"


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
        data, attributes = local_build_message(
            app=APP,
            environment=ENVIRONMENT,
            build_id=build_id,
            artifact=artifact.resolve().as_uri(),
            artifact_sha256=sha256_of_file(artifact),
            committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            commit_message=commit_message,
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
