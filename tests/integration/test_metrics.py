"""`releasectl metrics` on the Firestore emulator, over records this test writes, checked against
a hand computation (CONTRACT §5 `metrics`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import firestore

from shared.adapters.firestore_documents import deployment_to_document
from shared.domain.records import Deployment, HistoryEntry
from shared.domain.status import DeploymentStatus
from tests.integration.test_releasectl import Result, releasectl, releasectl_process

S = DeploymentStatus
PIPELINE_TOML = """
[apps.hello.defaults]
base_instance_template = "hello-base"
health_check = "hello-hc"
backend_service = "hello-backend"

[apps.hello.environments.staging]
[apps.hello.environments.production]
"""


@pytest.fixture
def metrics_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_env: dict[str, str], clean_firestore: str
) -> dict[str, str]:
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE_TOML)
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    return {**emulator_env, "PIPELINE_CONFIG": str(config)}


def record(
    deployment_id: str,
    created: datetime,
    steps: list[tuple[DeploymentStatus, float]],
    environment: str = "staging",
    **fields: object,
) -> Deployment:
    """A deployment whose history enters each status the given seconds after the previous one."""
    history = [HistoryEntry(S.QUEUED, created)]
    for status, seconds in steps:
        history.append(HistoryEntry(status, history[-1].at + timedelta(seconds=seconds)))
    live = next((h.at for h in history if h.status is S.LIVE), None)
    deployment = Deployment(
        deployment_id=deployment_id,
        app="hello",
        environment=environment,
        version="1.0.0",
        commit="c" * 40,
        build_id=deployment_id,
        artifact="file:///tmp/hello.tar.gz",
        status=history[-1].status,
        created_at=created,
        updated_at=history[-1].at,
        history=tuple(history),
        event={},
        went_live_at=live,
    )
    return replace(deployment, **fields)  # type: ignore[arg-type]


def to_live(
    queued: float, provisioning: float, cooling: float, switching: float
) -> list[tuple[DeploymentStatus, float]]:
    return [
        (S.PROVISIONING, queued),
        (S.COOLING_DOWN, provisioning),
        (S.SWITCHING, cooling),
        (S.LIVE, switching),
    ]


@pytest.fixture
def records(metrics_env: dict[str, str]) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    first = record(
        "a", base, [*to_live(1, 2, 3, 4), (S.RETIRED, 3600)], committed_at=base - timedelta(minutes=10)
    )
    second_created = base + timedelta(hours=1)
    second = record(
        "b",
        second_created,
        [*to_live(2, 3, 5, 10), (S.RETIRED, 584)],
        committed_at=second_created - timedelta(minutes=20),
        replaced_deployment_id="a",
    )
    rollback = record(
        "c",
        second_created + timedelta(minutes=10),
        to_live(1, 1, 1, 1),
        committed_at=second_created - timedelta(minutes=20),  # the old build's claim, not a lead time
        rollback_of="b",
        replaced_deployment_id="b",
        triggered_by="developer@hello.local",
    )
    failed = record(
        "d",
        base + timedelta(hours=2),
        [(S.PROVISIONING, 1), (S.COOLING_DOWN, 2), (S.FAILED, 30)],
        committed_at=base + timedelta(hours=2) - timedelta(minutes=10),
    )
    production = record("p", base, to_live(1, 1, 1, 1), environment="production")
    too_old = record(
        "old", base - timedelta(days=40), to_live(9, 9, 9, 9), committed_at=base - timedelta(days=41)
    )
    client = firestore.Client()
    for deployment in (first, second, rollback, failed, production, too_old):
        client.collection("deployments").document(deployment.deployment_id).set(
            deployment_to_document(deployment)
        )


def metrics(*argv: str) -> Result:
    result = releasectl("metrics", "--app", "hello", *argv)
    assert result.code == 0, result.stderr
    return result


@pytest.mark.usefixtures("records")
def test_metrics_json_matches_the_hand_computation() -> None:
    document = metrics("--env", "staging", "--since", "30", "--json").json()
    # Went live in the last 30 days on staging: a, b and c (the rollback). d failed, "old" is too old.
    assert document["deployments"] == 3
    assert document["deployment_frequency_per_day"] == pytest.approx(3 / 30, abs=1e-3)
    # Lead times: a 10 min + 10 s = 610 s, b 20 min + 20 s = 1220 s (c is a rollback: not counted).
    # p50 915; p90 610 + 0.9 * 610 = 1159.
    assert document["lead_time_seconds"] == {"p50": pytest.approx(915), "p90": pytest.approx(1159)}
    # b went live, then was rolled back by hand (c): 1 of 3.
    assert document["change_failure_rate"] == pytest.approx(1 / 3, abs=1e-3)
    # b live at +20 s; c live 10 min + 4 s after b's creation: 584 s.
    assert document["time_to_restore_seconds"] == {"p50": pytest.approx(584), "p90": pytest.approx(584)}
    phases = document["phases"]
    # queued [1, 1, 1, 2]: p50 1, p90 1.7; provisioning [1, 2, 2, 3]: 2, 2.7;
    # cooling_down [1, 3, 5, 30]: 4, 22.5; switching [1, 4, 10]: 4, 8.8.
    assert phases["queued"] == {"p50": pytest.approx(1), "p90": pytest.approx(1.7)}
    assert phases["provisioning"] == {"p50": pytest.approx(2), "p90": pytest.approx(2.7)}
    assert phases["cooling_down"] == {"p50": pytest.approx(4), "p90": pytest.approx(22.5)}
    assert phases["switching"] == {"p50": pytest.approx(4), "p90": pytest.approx(8.8)}
    assert phases["bake"] == {"p50": None, "p90": None}
    assert phases["awaiting_approval"] == {"p50": None, "p90": None}
    assert document["app"] == "hello" and document["environment"] == "staging"
    since = datetime.fromisoformat(document["since"])
    assert abs((datetime.now(UTC) - timedelta(days=30) - since).total_seconds()) < 60


@pytest.mark.usefixtures("records")
def test_without_env_every_environment_counts() -> None:
    document = metrics("--json").json()
    assert document["environment"] is None
    assert document["deployments"] == 4  # a, b, c and production's p


@pytest.mark.usefixtures("records")
def test_a_short_window_leaves_out_what_is_older() -> None:
    document = metrics("--env", "staging", "--since", "1", "--json").json()
    assert document["deployments"] == 0
    assert document["deployment_frequency_per_day"] is None
    assert document["change_failure_rate"] is None


@pytest.mark.usefixtures("records")
def test_the_human_form_prints_each_key_with_its_band(metrics_env: dict[str, str]) -> None:
    result = releasectl_process(metrics_env, "metrics", "--app", "hello", "--env", "staging")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    row = {line.split("  ")[0]: line for line in lines}
    assert row["deployment frequency"].split()[-1] == "medium"  # 0.1 a day: monthly to weekly
    assert row["lead time (p50 / p90)"].split()[-1] == "elite"
    assert row["change failure rate"].split()[-1] == "medium"  # 33 %: between 30 and 45 %
    assert row["time to restore (p50 / p90)"].split()[-1] == "elite"
    assert "cooling down" in result.stdout


def test_an_unknown_app_is_bad_input(metrics_env: dict[str, str]) -> None:
    result = releasectl("metrics", "--app", "nope", "--json")
    assert result.code == 2 and "unknown app" in result.stderr
    assert releasectl("metrics", "--app", "hello", "--since", "0").code == 2
