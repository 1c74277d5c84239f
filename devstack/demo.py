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
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import semver

from devstack.demo_actions import (
    APP,
    ENVIRONMENT,
    PRODUCTION,
    SERVE_TIMEOUT_SECONDS,
    SETTLE_SECONDS,
    Demo,
    heading,
    load_against,
    say,
)
from devstack.demo_report import summary_table
from devstack.running import running_stack
from devstack.sample_releases import (
    SAMPLE_APP,
    DemoFailure,
    broken_copy,
    faulty_copy,
    feature_copy,
    served_version,
    wait_for_version,
)
from devstack.stack import DEFAULT_STATE_DIR
from releasectl.cli import run as releasectl_run
from releasectl.records import get_deployment, read_environment
from releasectl.remote import (
    BadInput,
    OperationFailed,
)
from shared.config import ENV_RELEASECTL_DASHBOARD_URL


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
