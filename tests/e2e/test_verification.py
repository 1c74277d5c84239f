"""Release verification end to end on the local stack (CONTRACT §9): smoke checks on the preview
before the switch, the bake window after it (load-balancer request counts served by the emulator's
Monitoring API) and the automatic rollback to the retained previous group.

The tests share the session's stack and run in file order on `staging`; each starts from whatever
is live there. Bounded polls everywhere; no test sleeps a fixed time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds

from shared.artifact import build_artifact
from tests.e2e.conftest import REPO_ROOT, Load, Pipeline, new_commit, wait_for

pytestmark = pytest.mark.stack

ENVIRONMENT = "staging"


def faulty_artifact(tmp: Path, fault: str) -> str:
    """The sample app with its FAULT marker: `/` fails (always, or every other request)."""
    source = tmp / f"hello-{fault}"
    shutil.copytree(REPO_ROOT / "examples" / "hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "FAULT").write_text(f"{fault}\n", encoding="utf-8")
    return f"file://{build_artifact(source, tmp / 'dist')}"


def release_and_pass_bake(pipeline: Pipeline, build_id: str) -> dict[str, Any]:
    deployment_id = pipeline.publish_build(ENVIRONMENT, new_commit(), build_id, messages=["fix: good"])
    live = pipeline.wait_status(deployment_id, "live", "failed", "rolled_back")
    assert live["status"] == "live", live["history"]

    def verdict() -> dict[str, Any] | None:
        doc = pipeline.deployment(deployment_id)
        return doc if doc and (doc.get("verification") or {}).get("state") != "pending" else None

    bake = pipeline.config.apps["hello"].environments[ENVIRONMENT].bake_seconds
    return wait_for(verdict, bake + 30, f"the bake verdict on {deployment_id}")


def alerts_for(pipeline: Pipeline, deployment_id: str) -> list[dict[str, Any]]:
    return [n for n in pipeline.notifications() if n.get("deployment_id") == deployment_id]


def test_a_healthy_release_passes_its_bake_window_and_blue_retires(pipeline: Pipeline) -> None:
    previous = pipeline.environment(ENVIRONMENT).get("live_deployment_id")
    if previous is None:  # a fresh stack: a first release, so that users have something to load
        previous = release_and_pass_bake(pipeline, f"verify-first-{new_commit()[:8]}")["deployment_id"]
    with Load(pipeline.url(ENVIRONMENT)) as load:
        passed = release_and_pass_bake(pipeline, f"verify-good-{new_commit()[:8]}")
    verification = passed["verification"]
    assert verification["state"] == "passed", verification
    assert verification["detail"].startswith("passed: 5xx 0% of"), verification["detail"]
    assert verification["requests"] >= pipeline.config.apps["hello"].environments[ENVIRONMENT].min_requests
    assert verification["server_errors"] == 0 and verification["metrics"] is True
    assert isinstance(verification["checked_at"], DatetimeWithNanoseconds)
    assert load.result.failures == [], load.result.failures[:5]
    assert any("smoke check(s) passed" in (h.get("detail") or "") for h in passed["history"])
    assert (pipeline.deployment(previous) or {}).get("status") == "retired"
    assert pipeline.environment(ENVIRONMENT)["active_deployment_id"] is None, "the lock is free again"
    wait_for(
        lambda: any(n["status"] == "verified" for n in alerts_for(pipeline, passed["deployment_id"])),
        15,
        "the bake window's notification",
    )


def test_a_release_whose_home_page_fails_is_stopped_by_its_smoke_check_before_any_user_request(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    before = pipeline.environment(ENVIRONMENT)["live_version"]
    artifact = faulty_artifact(tmp_path, "always")
    with Load(pipeline.url(ENVIRONMENT)) as load:
        deployment_id = pipeline.publish_build(
            ENVIRONMENT, new_commit(), f"verify-smoke-{new_commit()[:8]}", artifact=artifact
        )
        failed = pipeline.wait_status(deployment_id, "failed", "live", "rolled_back")
    assert failed["status"] == "failed"
    assert "live" not in [h["status"] for h in failed["history"]], "never live"
    reason = failed["history"][-1]["detail"]
    assert "smoke check GET / → 200 failed: answered 500 'injected fault'" in reason, reason
    assert load.result.failures == [], f"{len(load.result.failures)} user requests failed"
    assert set(load.result.bodies) == {before}, "users only ever saw the live version"
    wait_for(
        lambda: [n for n in alerts_for(pipeline, deployment_id) if n["status"] == "failed"],
        15,
        "the failure alert",
    )
    [alert] = [n for n in alerts_for(pipeline, deployment_id) if n["status"] == "failed"]
    assert "smoke check GET /" in alert["text"]


def test_a_release_failing_under_load_is_rolled_back_to_the_retained_group_within_seconds(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    good = release_and_pass_bake(pipeline, f"verify-base-{new_commit()[:8]}")
    artifact = faulty_artifact(tmp_path, "half")
    with Load(pipeline.url(ENVIRONMENT), workers=4) as load:
        bad_id = pipeline.publish_build(
            ENVIRONMENT, new_commit(), f"verify-bake-{new_commit()[:8]}", artifact=artifact,
            messages=["feat: fails under load"],
        )  # fmt: skip
        bad = pipeline.wait_status(bad_id, "rolled_back", "failed", timeout=120)
        wait_for(lambda: pipeline.serving(ENVIRONMENT) == good["version"], 10, "the previous version again")
        served_after = {pipeline.serving(ENVIRONMENT) for _ in range(20)}
    assert bad["status"] == "rolled_back", bad["history"]
    assert [h["status"] for h in bad["history"]][-2:] == ["live", "rolled_back"]
    verification = bad["verification"]
    assert verification["state"] == "failed" and verification["detail"].startswith("5xx "), verification
    assert served_after == {good["version"]}

    live_at = next(h["at"] for h in bad["history"] if h["status"] == "live")
    back_at = bad["history"][-1]["at"]
    exposure = (back_at - live_at).total_seconds()
    assert exposure < 3.0, f"traffic went back {exposure:.1f} s after the bad release went live"

    environment = pipeline.environment(ENVIRONMENT)
    rollback = pipeline.deployment(environment["live_deployment_id"]) or {}
    assert rollback["rollback_of"] == bad_id and rollback["version"] == good["version"]
    assert (
        rollback["triggered_by"] == "pipeline (bake window)"
        and "failed its bake window" in rollback["reason"]
    )
    assert any("retained group" in (h.get("detail") or "") for h in rollback["history"]), rollback["history"]
    assert environment["active_deployment_id"] is None

    wait_for(
        lambda: [n for n in alerts_for(pipeline, bad_id) if n["status"] == "rolled_back"],
        15,
        "the rollback alert",
    )
    about_it = alerts_for(pipeline, bad_id) + alerts_for(pipeline, rollback["deployment_id"])
    assert [n["status"] for n in about_it if n["status"] != "live" or n["deployment_id"] != bad_id] == [
        "rolled_back"
    ], about_it
    # By status, not position: the bad release's own "live" alert may be delivered after it.
    [rolled_back] = [n for n in about_it if n["status"] == "rolled_back"]
    assert "5xx" in rolled_back["text"]
    failed_requests = len(load.result.failures)
    assert failed_requests > 0, "the bad release did serve some failures before it was caught"
