"""The demo's own judgement: hop times, the broken app, load checks and the summary table."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.demo_actions import Demo
from devstack.demo_report import StepResult, exposure_seconds, hop_durations, summary_table
from devstack.load import Sample, summarize
from devstack.sample_releases import SAMPLE_APP, broken_copy, fake_commit, faulty_copy, feature_copy
from shared.artifact import build_artifact
from shared.domain.records import Deployment, HistoryEntry
from shared.domain.status import DeploymentStatus as S
from tests.sample_app import launch


def test_hop_durations_come_from_consecutive_history_entries() -> None:
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    history = tuple(
        HistoryEntry(S(status), t0 + timedelta(seconds=offset))
        for status, offset in (
            ("queued", 0),
            ("provisioning", 0.5),
            ("cooling_down", 1),
            ("switching", 5),
            ("live", 5.25),
        )
    )
    deployment = replace(
        Deployment.queued(
            deployment_id="hello-staging-abc",
            app="hello",
            environment="staging",
            version="1.0.0",
            commit="a" * 40,
            build_id="b",
            artifact="file:///a.tar.gz",
            event={},
            at=t0,
        ),
        history=history,
    )
    assert hop_durations(deployment) == {
        "queued": 0.5,
        "provisioning": 0.5,
        "cooling_down": 4.0,
        "switching": 0.25,
    }


def test_fake_commits_are_valid_and_distinct() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", fake_commit("a"))
    assert fake_commit("a") != fake_commit("b")


def test_the_broken_copy_runs_but_fails_its_health_check(tmp_path: Path) -> None:
    broken = broken_copy(SAMPLE_APP, tmp_path)

    assert (broken / "Procfile").read_text() == (SAMPLE_APP / "Procfile").read_text()
    assert _answers(broken, ["/", "/healthz"]) == [200, 500]


def _answers(app_dir: Path, paths: list[str]) -> list[int]:
    """Run the sample app from `app_dir` on a free port and GET each path in turn."""
    import urllib.error
    import urllib.request

    process, port = launch(app_dir, "9.9.9", output=None)
    try:
        codes = []
        for path in paths:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    codes.append(response.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        return codes
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("half", [200, 200, 200, 500, 200, 200]), ("always", [200, 500, 200, 500, 200, 500])],
)
def test_a_faulty_copy_fails_its_home_page_while_its_health_check_passes(
    tmp_path: Path, fault: str, expected: list[int]
) -> None:
    app_dir = faulty_copy(SAMPLE_APP, tmp_path, fault)
    paths = ["/healthz", "/", "/healthz", "/", "/healthz", "/"]
    assert _answers(app_dir, paths) == expected
    assert _answers(SAMPLE_APP, ["/", "/", "/healthz"]) == [200, 200, 200], "no marker, no fault"


def test_exposure_is_the_time_from_live_to_rolled_back() -> None:
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    history = [
        {"status": "switching", "at": t0},
        {"status": "live", "at": t0 + timedelta(seconds=1)},
        {"status": "rolled_back", "at": t0 + timedelta(seconds=3.5)},
    ]
    assert exposure_seconds({"history": history}) == 2.5
    assert exposure_seconds({"history": history[:2]}) is None


def test_feature_and_broken_copies_are_different_artifacts(tmp_path: Path) -> None:
    names = {
        build_artifact(source, tmp_path / "out").name
        for source in (
            SAMPLE_APP,
            feature_copy(SAMPLE_APP, tmp_path / "f"),
            broken_copy(SAMPLE_APP, tmp_path / "b"),
        )
    }
    assert len(names) == 3


def sample(at: float, phase: str, version: str | None, ok: bool = True) -> Sample:
    return Sample(
        at=at, phase=phase, latency_seconds=0.01, ok=ok, version=version, error=None if ok else "HTTP 502"
    )


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Demo:
    monkeypatch.setattr("devstack.demo_actions.firestore_client", lambda: None)
    return Demo("http://127.0.0.1:9/", tmp_path / "notifications.jsonl", tmp_path)


def test_a_clean_switch_passes_the_load_check(demo: Demo) -> None:
    result = StepResult(step="feature")
    report = summarize(
        [sample(0, "before", "1.0.0"), sample(1, "during", "1.1.0"), sample(2, "after", "1.1.0")]
    )

    demo.check_load(result, report, before="1.0.0", after="1.1.0")

    assert result.problems == []


@pytest.mark.parametrize(
    ("samples", "problem"),
    [
        ([sample(1, "during", None, ok=False)], "1 requests failed"),
        ([sample(2, "after", "1.0.0")], "after the release, served {'1.0.0': 1}"),
        ([sample(0, "before", "1.2.0")], "before the release"),
    ],
)
def test_failures_and_wrong_versions_are_problems(demo: Demo, samples: list[Sample], problem: str) -> None:
    result = StepResult(step="feature")
    demo.check_load(result, summarize(samples), before="1.0.0", after="1.1.0")

    assert any(problem in p for p in result.problems), result.problems


def test_a_version_that_must_never_serve_is_caught(demo: Demo) -> None:
    result = StepResult(step="broken")
    demo.check_load(
        result, summarize([sample(1, "during", "1.1.1")]), before=None, after="1.1.0", never=["1.1.1"]
    )

    assert result.problems == ["1 requests were served by 1.1.1"]


def test_missing_and_duplicate_notifications_are_problems(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("devstack.demo_actions.NOTIFICATION_TIMEOUT_SECONDS", 0.1)
    demo.results = [
        StepResult(step="a", status="live", deployment_id="d1"),
        StepResult(step="b", status="failed", deployment_id="d2"),
    ]
    demo.notifications_file.write_text(
        '{"deployment_id": "d1", "status": "live"}\n{"deployment_id": "d1", "status": "live"}\nnot json\n'
    )

    assert sorted(demo.check_notifications()) == [
        "2 live notifications for d1",
        "no failed notification for d2",
    ]


def test_the_summary_is_one_row_per_step() -> None:
    results = [
        StepResult(
            step="first release", version="1.0.0", status="live", seconds=4.0, hops={"cooling_down": 3.1}
        ),
        StepResult(
            step="broken release",
            version="1.1.1",
            status="failed",
            load=summarize([sample(0, "during", "1.1.0")]),
        ),
    ]
    lines = summary_table(results).splitlines()

    assert lines[0].split()[:3] == ["STEP", "VERSION", "STATUS"]
    assert "3.1 s" in lines[2]
    assert lines[3].split()[-4:] == ["1", "0", "10", "ms"]
