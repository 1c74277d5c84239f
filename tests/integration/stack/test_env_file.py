"""`.local/env` names what CONTRACT §2 promises, and sourcing it is enough for the client libraries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from devstack.stack_state import read_env_file
from tests.integration.stack.conftest import EchoStack

CONTRACT_NAMES = (
    "GOOGLE_CLOUD_PROJECT",
    "PUBSUB_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "RELEASECTL_ROLLBACK_URL",
    "RELEASECTL_PROMOTE_URL",
    "RELEASECTL_APPROVE_URL",
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "PIPELINE_CONFIG",
    "NOTIFICATIONS_FILE",
    "RELEASECTL_TOKEN_URL",
    "ROLLBACK_AUDIENCE",
    "RELEASECTL_DASHBOARD_URL",
    "PROMOTE_AUDIENCE",
    "APPROVE_AUDIENCE",
)
COMPUTE_NAMES = (
    "COMPUTE_EMULATOR_HOST",
    "MONITORING_EMULATOR_HOST",
    "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
)

# Run in a fresh interpreter that knows nothing but what `source env` exported.
CLIENT_PROBE = textwrap.dedent(
    """
    import json, os
    from google.cloud import firestore, pubsub_v1
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    publisher = pubsub_v1.PublisherClient()
    topics = sorted(t.name.rsplit("/", 1)[1] for t in publisher.list_topics(project=f"projects/{project}", timeout=10))
    db = firestore.Client()
    db.collection("env-probe").document("one").set({"sourced": True})
    result = {"topics": topics, "firestore": db.collection("env-probe").document("one").get().to_dict()}
    if os.environ.get("COMPUTE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import compute_v1
        client = compute_v1.BackendServicesClient(
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": "http://" + os.environ["COMPUTE_EMULATOR_HOST"]},
        )
        result["backend_services"] = sorted(s.name for s in client.list(project=project))
    print(json.dumps(result))
    """
)


def test_env_file_holds_the_contract_names(echo_stack: EchoStack) -> None:
    stack = echo_stack.stack
    env = read_env_file(stack.env_file)
    assert env == stack.env
    for name in CONTRACT_NAMES:
        assert env.get(name), f"{name} missing from {stack.env_file}"
    for name in COMPUTE_NAMES:
        assert env.get(name), f"{name} missing from {stack.env_file}"
    assert (
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] == f"http://{env['COMPUTE_EMULATOR_HOST']}/compute/v1/"
    )
    # One function URL, one audience: a token minted for one HTTP function is refused by the others.
    assert env["RELEASECTL_ROLLBACK_URL"] == env["ROLLBACK_AUDIENCE"]
    assert env["RELEASECTL_DASHBOARD_URL"] == stack.function_url("dashboard")
    assert env["RELEASECTL_PROMOTE_URL"] == env["PROMOTE_AUDIENCE"]
    assert env["RELEASECTL_APPROVE_URL"] == env["APPROVE_AUDIENCE"]
    assert len({env["ROLLBACK_AUDIENCE"], env["PROMOTE_AUDIENCE"], env["APPROVE_AUDIENCE"]}) == 3
    assert env["PIPELINE_CONFIG"] == str(stack.pipeline_file)
    assert env["NOTIFICATIONS_FILE"] == str(stack.state_dir / "notifications.jsonl")
    text = stack.env_file.read_text(encoding="utf-8")
    assert all(line.startswith(("export ", "#")) for line in text.splitlines())


def test_sourcing_the_env_file_lets_the_client_libraries_reach_the_stack(echo_stack: EchoStack) -> None:
    stack = echo_stack.stack
    # A clean environment: only PATH and HOME, plus what `source` adds.
    completed = subprocess.run(
        ["bash", "-c", f'source "{stack.env_file}" && exec "{sys.executable}" -c "$PROBE"'],
        env={"PATH": "/usr/bin:/bin", "HOME": str(stack.state_dir), "PROBE": CLIENT_PROBE},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert {"build-succeeded", "build-succeeded-dead-letter", "notify", "watchdog-tick"} <= set(
        result["topics"]
    )
    assert result["firestore"] == {"sourced": True}
    assert stack.config is not None
    environments = stack.config.all_environments()
    expected = {e.backend_service for e in environments}
    expected |= {e.preview_backend_service for e in environments if e.preview_backend_service}
    assert result["backend_services"] == sorted(expected)


@pytest.mark.gcloud
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
def test_sourcing_the_env_file_points_gcloud_at_the_stack(echo_stack: EchoStack) -> None:
    stack = echo_stack.stack
    commands = [
        "gcloud pubsub topics list --format='value(name)'",
        "gcloud compute backend-services list --format='value(name)'",
    ]
    completed = subprocess.run(
        ["bash", "-c", f'source "{stack.env_file}" && ' + " && ".join(commands)],
        # A fresh configuration directory: no login, no default project, nothing but the env file.
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(stack.state_dir),
            "CLOUDSDK_CONFIG": str(stack.state_dir / "gcloud"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    names = completed.stdout.split()
    assert f"projects/{stack.project}/topics/build-succeeded" in names
    assert stack.config is not None
    assert {e.backend_service for e in stack.config.all_environments()} <= set(names)
