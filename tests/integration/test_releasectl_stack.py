"""releasectl against the whole local stack: the real functions, load balancer and token checks.

An operator's session, run as subprocesses with the stack's environment (as after
`source .local/env`): package, publish two releases, watch them, read status and history, roll
back through the authenticated endpoint and watch the rollback go live. Production is not
auto_deploy, so each CI build there waits until a second identity approves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.domain.identifiers import deployment_id_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RELEASECTL = str(Path(sys.executable).parent / "releasectl")


def releasectl(env: dict[str, str], *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RELEASECTL, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def awaiting_approval(env: dict[str, str], app: str, environment: str, deployment_id: str) -> dict[str, Any]:
    """The deployment's row in `status --json`'s awaiting_approval, once admission recorded it."""
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = as_json(releasectl(env, "status", "--app", app, "--env", environment, "--json"))[
            "awaiting_approval"
        ]
        found = [row for row in rows if row["deployment_id"] == deployment_id]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"{deployment_id} never showed as awaiting approval (last: {rows})")


def test_an_operator_session_from_publish_to_rollback(local_stack: Any, tmp_path: Path) -> None:
    env = dict(local_stack.env)
    # Staging may already hold releases from other tests of this session: use production.
    app, environment = "hello", "production"
    run = uuid.uuid4().hex[:8]

    packaged = releasectl(env, "package", str(REPO / "examples" / "hello"), "--out", str(tmp_path), "--json")
    artifact_uri = as_json(packaged)["uri"]

    approver = {**env, "RELEASECTL_IDENTITY": "approver@hello.local"}
    deployments = []
    for index, message in enumerate(("fix: releasectl session one", "feat: releasectl session two")):
        build_id = f"releasectl-{run}-{index}"
        commit = hashlib.sha1(build_id.encode()).hexdigest()
        published = releasectl(
            env, "publish", "--app", app, "--env", environment, "--commit", commit, "--build-id", build_id,
            "--artifact", artifact_uri, "--commit-message", message, "--triggered-by", "releasectl-test",
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        deployment_id = deployment_id_for(app, environment, build_id)
        waiting = awaiting_approval(env, app, environment, deployment_id)
        assert waiting["requested_by"] is None, "a CI build has no verified requester"
        approved = releasectl(approver, "approve", deployment_id, "--reason", "session", "--json")
        assert as_json(approved)["deployment_id"] == deployment_id
        watched = releasectl(env, "watch", deployment_id, "--timeout", "150")
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "live" in watched.stdout
        deployments.append(deployment_id)

    status = as_json(releasectl(env, "status", "--app", app, "--env", environment, "--json"))
    assert status["live"]["deployment_id"] == deployments[1]
    second_version = status["live"]["version"]
    assert status["in_progress"] == []
    assert requests.get(status["url"], timeout=10).text.strip() == second_version

    history = as_json(
        releasectl(env, "releases", "--app", app, "--env", environment, "--limit", "2", "--json")
    )
    assert [row["deployment_id"] for row in history] == [deployments[1], deployments[0]]
    assert [row["status"] for row in history] == ["live", "retired"]
    assert history[0]["triggered_by"] == "releasectl-test"

    accepted = as_json(
        releasectl(env, "rollback", "--app", app, "--env", environment, "--reason", "test", "--json")
    )
    assert accepted["rollback_of"] == deployments[1]
    first_version = history[1]["version"]
    assert accepted["version"] == first_version

    watched = releasectl(env, "watch", accepted["deployment_id"], "--timeout", "150", "--json")
    outcome = as_json(watched)
    assert outcome["status"] == "live"
    assert requests.get(status["url"], timeout=10).text.strip() == first_version

    history = as_json(
        releasectl(env, "releases", "--app", app, "--env", environment, "--limit", "1", "--json")
    )
    assert history[0]["rollback_of"] == deployments[1]
    assert history[0]["triggered_by"] == "developer@hello.local"

    refused = releasectl({**env, "RELEASECTL_IDENTITY": "stranger@elsewhere.example.com"}, "rollback",
                         "--app", app, "--env", environment)  # fmt: skip
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr

    # The rolled-back release is a change failure, and the rollback going live restored service.
    metrics = as_json(
        releasectl(env, "metrics", "--app", app, "--env", environment, "--since", "1", "--json")
    )
    assert metrics["deployments"] >= 3
    assert metrics["change_failure_rate"] is not None and metrics["change_failure_rate"] > 0
    assert metrics["time_to_restore_seconds"]["p50"] is not None
    # The dashboard of the stack shows the same records.
    page = requests.get(
        env["RELEASECTL_DASHBOARD_URL"], params={"format": "json", "app": app, "days": "1"}, timeout=30
    )
    assert page.status_code == 200
    shown = {view["environment"]: view for view in page.json()["environments"]}
    assert shown[environment]["live"]["deployment_id"] == accepted["deployment_id"]
    assert (
        shown[environment]["metrics"]["deployments"] == metrics["deployments"] or metrics["deployments"] > 3
    )
