"""releasectl against the Pub/Sub and Firestore emulators, a real local token issuer, and a
rollback endpoint that verifies tokens with the pipeline's own code. In-process and as a subprocess."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from devstack.processes import free_port, http_ok, start_service, stop_process_group, wait_until
from releasectl.cli import run
from releasectl.watch import watch_deployment
from shared.adapters.identity_tokens import CachingRequest, verify_identity_token
from shared.config import ENV_ID_TOKEN_CERTS_URL, ENV_ID_TOKEN_ISSUERS, ENV_PIPELINE_CONFIG
from shared.domain.identity import InvalidTokenError, bearer_token, caller_allowed
from shared.topology import BUILD_SUCCEEDED
from tests.conftest import TEST_PROJECT

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)

PIPELINE_TOML = """
[apps.hello.defaults]
base_instance_template = "hello-staging-base"
health_check = "hello-staging-hc"
backend_service = "hello-staging-backend"

[apps.hello.environments.staging]
url = "http://127.0.0.1:18080"
preview_backend_service = "hello-staging-preview"
preview_url = "http://127.0.0.1:18081"

[apps.hello.environments.production]
"""


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def releasectl(*argv: str) -> Result:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(list(argv), stdout=stdout, stderr=stderr)
    return Result(code, stdout.getvalue(), stderr.getvalue())


def releasectl_process(env: dict[str, str], *argv: str) -> Result:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "releasectl"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_env: dict[str, str], clean_firestore: str
) -> dict[str, str]:
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE_TOML)
    monkeypatch.setenv(ENV_PIPELINE_CONFIG, str(config))
    return {**emulator_env, ENV_PIPELINE_CONFIG: str(config)}


def deployment(
    version: str, status: str, created: datetime, *, rollback_of: str | None = None, finished: bool = True
) -> dict[str, Any]:
    history = [{"status": "queued", "at": created, "detail": ""}]
    if status != "queued":
        history.append({"status": "provisioning", "at": created + timedelta(seconds=1), "detail": ""})
    if status in ("live", "retired"):
        history.append({"status": "cooling_down", "at": created + timedelta(seconds=2), "detail": ""})
        history.append({"status": "switching", "at": created + timedelta(seconds=5), "detail": ""})
        history.append({"status": "live", "at": created + timedelta(seconds=6), "detail": ""})
    if status == "retired":
        history.append({"status": "retired", "at": created + timedelta(minutes=5), "detail": ""})
    if status == "failed":
        history.append({"status": "failed", "at": created + timedelta(seconds=45), "detail": "never healthy"})
    return {
        "app": "hello",
        "environment": "staging",
        "version": version,
        "commit": COMMIT,
        "build_id": f"build-{version}",
        "artifact": "file:///tmp/hello.tar.gz",
        "artifact_sha256": "0" * 64,
        "status": status,
        "created_at": created,
        "updated_at": created + timedelta(seconds=6),
        "finished_at": created + timedelta(seconds=6) if finished else None,
        "rollback_of": rollback_of,
        "triggered_by": "circleci",
        "history": history,
    }


@pytest.fixture
def seeded(cli_env: dict[str, str]) -> firestore.Client:
    client = firestore.Client()
    deployments = client.collection("deployments")
    deployments.document("hello-staging-aaa").set(deployment("1.0.0", "retired", T0))
    deployments.document("hello-staging-bbb").set(deployment("1.1.0", "live", T0 + timedelta(hours=1)))
    deployments.document("hello-staging-ccc").set(deployment("1.2.0", "failed", T0 + timedelta(hours=2)))
    deployments.document("hello-staging-ddd").set(
        deployment("1.3.0", "provisioning", T0 + timedelta(hours=3), finished=False)
    )
    deployments.document("hello-production-eee").set(
        {**deployment("1.0.0", "live", T0), "environment": "production"}
    )
    deployments.document("hello-production-fff").set(
        {
            **deployment("1.1.0", "queued", T0 + timedelta(hours=1), finished=False),
            "environment": "production",
            "status": "awaiting_approval",
            "history": [{"status": "awaiting_approval", "at": T0 + timedelta(hours=1), "detail": ""}],
            "requested_by": "developer@hello.local",
            "promoted_from": "staging",
        }
    )
    client.collection("environments").document("hello@staging").set(
        {
            "app": "hello",
            "environment": "staging",
            "live_deployment_id": "hello-staging-bbb",
            "live_version": "1.1.0",
            "queue": [],
        }
    )
    return client


def test_status_json_has_exactly_the_contract_shape(seeded: firestore.Client) -> None:
    result = releasectl("status", "--app", "hello", "--env", "staging", "--json")

    assert result.code == 0, result.stderr
    assert result.json() == {
        "app": "hello",
        "environment": "staging",
        "url": "http://127.0.0.1:18080",
        "live": {
            "version": "1.1.0",
            "deployment_id": "hello-staging-bbb",
            "commit": COMMIT,
            "since": (T0 + timedelta(hours=1, seconds=6)).isoformat(),
            "verification": None,
        },
        "in_progress": [{"deployment_id": "hello-staging-ddd", "version": "1.3.0", "status": "provisioning"}],
        "awaiting_approval": [],
        "preview_url": "http://127.0.0.1:18081",
        "next_deploy_window": None,
        "deploy_window_open": True,
    }


def test_status_json_lists_what_awaits_approval_with_its_verified_requester(seeded: firestore.Client) -> None:
    result = releasectl("status", "--app", "hello", "--env", "production", "--json")

    assert result.code == 0, result.stderr
    document = result.json()
    assert document["in_progress"] == []
    assert document["awaiting_approval"] == [
        {"deployment_id": "hello-production-fff", "version": "1.1.0", "requested_by": "developer@hello.local"}
    ]
    human = releasectl("status", "--app", "hello", "--env", "production")
    assert "releasectl approve hello-production-fff" in human.stdout


def test_status_of_an_environment_with_nothing_deployed_yet(cli_env: dict[str, str]) -> None:
    result = releasectl("status", "--app", "hello", "--env", "production", "--json")

    assert result.code == 0, result.stderr
    assert result.json() == {
        "app": "hello",
        "environment": "production",
        "url": None,
        "live": None,
        "in_progress": [],
        "awaiting_approval": [],
        "preview_url": None,
        "next_deploy_window": None,
        "deploy_window_open": True,
    }


def test_status_names_the_next_deploy_window_of_a_frozen_environment(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thaw = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    config = tmp_path / "frozen.toml"
    config.write_text(
        PIPELINE_TOML
        + f'freezes = [{{ start = "2020-01-01T00:00:00Z", end = "{thaw.isoformat()}", reason = "audit" }}]\n'
    )
    monkeypatch.setenv(ENV_PIPELINE_CONFIG, str(config))

    as_json = releasectl("status", "--app", "hello", "--env", "production", "--json")
    for_humans = releasectl("status", "--app", "hello", "--env", "production")
    unfrozen = releasectl("status", "--app", "hello", "--env", "staging")

    assert as_json.code == 0, as_json.stderr
    expected = thaw.isoformat().replace("+00:00", "Z")
    assert as_json.json()["next_deploy_window"] == expected
    assert as_json.json()["deploy_window_open"] is False
    assert f"deploy window: closed (deploy freeze (audit)); opens {expected}" in for_humans.stdout
    assert "deploy window: always open" in unfrozen.stdout


def test_status_for_humans_names_the_live_version_and_what_is_coming(seeded: firestore.Client) -> None:
    result = releasectl("status", "--app", "hello", "--env", "staging")

    assert result.code == 0
    assert "live:         1.1.0  (hello-staging-bbb, commit 0123456" in result.stdout
    assert "1.3.0  provisioning  (hello-staging-ddd)" in result.stdout
    assert "preview:      http://127.0.0.1:18081" in result.stdout, (
        "green is reachable there before its switch"
    )


def test_releases_json_lists_the_environment_newest_first_in_the_contract_shape(
    seeded: firestore.Client,
) -> None:
    result = releasectl("releases", "--app", "hello", "--env", "staging", "--limit", "3", "--json")

    assert result.code == 0, result.stderr
    rows = result.json()
    assert [row["deployment_id"] for row in rows] == [
        "hello-staging-ddd",
        "hello-staging-ccc",
        "hello-staging-bbb",
    ]
    assert rows[2] == {
        "deployment_id": "hello-staging-bbb",
        "version": "1.1.0",
        "commit": COMMIT,
        "status": "live",
        "created_at": (T0 + timedelta(hours=1)).isoformat(),
        "finished_at": (T0 + timedelta(hours=1, seconds=6)).isoformat(),
        "rollback_of": None,
        "triggered_by": "circleci",
        "requested_by": None,
        "promoted_from": None,
    }
    assert rows[0]["finished_at"] is None


def test_releases_for_humans_is_a_table(seeded: firestore.Client) -> None:
    result = releasectl("releases", "--app", "hello", "--env", "staging")

    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "STATUS", "DEPLOYMENT"]
    assert [line.split()[0] for line in lines[1:]] == ["1.3.0", "1.2.0", "1.1.0", "1.0.0"]


def test_an_unknown_app_or_environment_is_bad_input(cli_env: dict[str, str]) -> None:
    for argv in (["--app", "nope", "--env", "staging"], ["--app", "hello", "--env", "nope"]):
        result = releasectl("status", *argv, "--json")
        assert result.code == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1


def test_publish_sends_a_valid_build_succeeded_message_with_the_digest_of_a_local_artifact(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    artifact = tmp_path / "hello-abc.tar.gz"
    artifact.write_bytes(b"not really a tarball, but bytes with a digest")
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(TEST_PROJECT, BUILD_SUCCEEDED)
    subscription = subscriber.subscription_path(TEST_PROJECT, f"releasectl-test-{time.monotonic_ns()}")
    try:
        publisher.create_topic(name=topic)
    except Exception as exc:  # the topic survives from an earlier test in this session
        assert "AlreadyExists" in type(exc).__name__ or "409" in str(exc)
    subscriber.create_subscription(name=subscription, topic=topic)
    try:
        result = releasectl(
            "publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "ci-42",
            "--artifact", artifact.as_uri(), "--commit-message", "feat: hello",
            "--commit-message", "fix: typo", "--committed-at", "2026-01-05T10:00:09+01:00", "--json",
        )  # fmt: skip
        assert result.code == 0, result.stderr
        message_id = result.json()["message_id"]

        response = subscriber.pull(subscription=subscription, max_messages=5, timeout=30)
        [received] = response.received_messages
        assert received.message.message_id == message_id
        assert dict(received.message.attributes) == {"app": "hello", "environment": "staging"}
        assert json.loads(received.message.data) == {
            "app": "hello",
            "environment": "staging",
            "commit": COMMIT,
            "build_id": "ci-42",
            "artifact": artifact.as_uri(),
            "artifact_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
            "committed_at": "2026-01-05T10:00:09+01:00",
            "commit_messages": ["feat: hello", "fix: typo"],
        }
    finally:
        subscriber.delete_subscription(subscription=subscription)


def test_publish_refuses_an_invalid_message_before_sending_it(cli_env: dict[str, str]) -> None:
    result = releasectl(
        "publish", "--app", "hello", "--env", "staging", "--commit", "not-a-sha", "--build-id", "1",
        "--artifact", "file:///tmp/a.tar.gz", "--artifact-sha256", "0" * 64,
    )  # fmt: skip

    assert result.code == 2
    assert result.stderr.strip() == "releasectl: commit: must be 40 lowercase hex characters"


def test_publish_without_a_digest_for_a_cloud_storage_artifact_is_bad_input(cli_env: dict[str, str]) -> None:
    result = releasectl(
        "publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
        "--artifact", "gs://hello-artifacts/hello/a.tar.gz",
    )  # fmt: skip

    assert result.code == 2
    assert "--artifact-sha256" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_watch_follows_a_deployment_until_it_is_live(cli_env: dict[str, str]) -> None:
    client = firestore.Client()
    ref = client.collection("deployments").document("hello-staging-www")
    record = deployment("2.0.0", "queued", datetime.now(UTC), finished=False)

    def advance() -> None:
        # The record appears late (as after a rollback's 202), then moves on step by step.
        for status in ("queued", "provisioning", "cooling_down", "switching", "live"):
            time.sleep(0.3)
            if status != "queued":
                record["history"].append({"status": status, "at": datetime.now(UTC), "detail": ""})
            record["status"] = status
            ref.set(record)

    writer = threading.Thread(target=advance)
    writer.start()
    try:
        result = releasectl("watch", "hello-staging-www", "--timeout", "30")
    finally:
        writer.join(timeout=30)

    assert result.code == 0, result.stdout + result.stderr
    printed = result.stdout
    assert "waiting for hello-staging-www to be recorded" in printed
    positions = [printed.index(status) for status in ("provisioning", "cooling_down", "switching", "live")]
    assert positions == sorted(positions)


def test_watch_exits_1_when_the_deployment_fails(seeded: firestore.Client) -> None:
    result = releasectl("watch", "hello-staging-ccc", "--timeout", "10", "--json")

    assert result.code == 1
    document = result.json()
    assert document["status"] == "failed"
    assert document["history"][-1]["detail"] == "never healthy"


def test_watch_exits_1_when_the_bake_window_rolled_the_deployment_back(seeded: firestore.Client) -> None:
    rolled_back = deployment("1.4.0", "live", T0 + timedelta(hours=4))
    rolled_back["status"] = "rolled_back"
    rolled_back["history"].append(
        {
            "status": "rolled_back",
            "at": T0 + timedelta(hours=4, seconds=8),
            "detail": "5xx 48% of 1,210 requests",
        }
    )
    seeded.collection("deployments").document("hello-staging-fff").set(rolled_back)

    result = releasectl("watch", "hello-staging-fff", "--timeout", "10", "--json")

    assert result.code == 1
    assert result.json()["status"] == "rolled_back"


def test_watch_gives_up_after_its_timeout(seeded: firestore.Client) -> None:
    started = time.monotonic()
    result = releasectl("watch", "hello-staging-ddd", "--timeout", "1")

    assert result.code == 1
    assert "still provisioning" in result.stdout
    assert time.monotonic() - started < 10


def test_package_builds_the_artifact_and_prints_its_path(tmp_path: Path) -> None:
    result = releasectl("package", str(REPO / "examples" / "hello"), "--out", str(tmp_path))

    assert result.code == 0
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path.resolve()
    assert path.name.startswith("hello-") and path.name.endswith(".tar.gz")
    assert releasectl("package", str(tmp_path / "missing"), "--out", str(tmp_path)).code == 2


# ---- token and rollback, against a real issuer and a verifying endpoint ---------------------------


@pytest.fixture
def issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "issuer.log"
    process = start_service(
        "token-issuer",
        [
            sys.executable,
            "-m",
            "devstack.token_issuer",
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "issuer"),
        ],
        log,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/healthz"), 30, "token issuer", process, log)
        monkeypatch.setenv(ENV_ID_TOKEN_CERTS_URL, f"{url}/certs")
        monkeypatch.setenv(ENV_ID_TOKEN_ISSUERS, url)
        yield url
    finally:
        stop_process_group(process.pid)


@dataclass
class RollbackEndpoint:
    """Answers CONTRACT §4 the way the rollback function does, verifying tokens with shared.adapters.identity_tokens."""

    url: str = ""
    allowed: tuple[str, ...] = ("developer@hello.local",)
    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def rollback_endpoint(issuer: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RollbackEndpoint]:
    state = RollbackEndpoint()
    keys = CachingRequest()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                caller = verify_identity_token(
                    bearer_token(self.headers.get("Authorization")), state.url, request=keys
                )
            except InvalidTokenError as exc:
                self._reply(401, {"error": str(exc)})
                return
            if not caller_allowed(caller.email, state.allowed):
                self._reply(403, {"error": f"{caller.email} may not roll back hello/staging"})
                return
            state.calls.append({**body, "caller": caller.email})
            if body.get("to_version") == "9.9.9":
                self._reply(404, {"error": "hello has no release 9.9.9"})
                return
            self._reply(
                202,
                {
                    "deployment_id": "hello-staging-rrr",
                    "version": "1.0.0",
                    "rollback_of": "hello-staging-bbb",
                },
            )

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv("RELEASECTL_ROLLBACK_URL", state.url)
    monkeypatch.setenv("RELEASECTL_TOKEN_URL", f"{issuer}/token")
    # A stack started earlier in this process may have exported its functions' audiences.
    for audience_variable in ("ROLLBACK_AUDIENCE", "PROMOTE_AUDIENCE", "APPROVE_AUDIENCE"):
        monkeypatch.delenv(audience_variable, raising=False)
    monkeypatch.delenv("RELEASECTL_IDENTITY", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_token_prints_a_token_the_rollback_endpoint_verifies(rollback_endpoint: RollbackEndpoint) -> None:
    result = releasectl("token")

    assert result.code == 0
    caller = verify_identity_token(result.stdout.strip(), rollback_endpoint.url, request=CachingRequest())
    assert caller.email == "developer@hello.local"


def test_token_for_another_identity_and_function_carries_that_email_and_audience(
    rollback_endpoint: RollbackEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELEASECTL_APPROVE_URL", "http://127.0.0.1:9/approve")

    result = releasectl("token", "--email", "approver@hello.local", "--for", "approve")

    assert result.code == 0, result.stderr
    caller = verify_identity_token(
        result.stdout.strip(), "http://127.0.0.1:9/approve", request=CachingRequest()
    )
    assert caller.email == "approver@hello.local"
    with pytest.raises(InvalidTokenError):  # one function URL, one audience
        verify_identity_token(result.stdout.strip(), rollback_endpoint.url, request=CachingRequest())


def test_rollback_posts_the_request_with_a_token_and_prints_the_202(
    rollback_endpoint: RollbackEndpoint,
) -> None:
    result = releasectl("rollback", "--app", "hello", "--env", "staging", "--reason", "500s on /", "--json")

    assert result.code == 0, result.stderr
    assert result.json() == {
        "deployment_id": "hello-staging-rrr",
        "version": "1.0.0",
        "rollback_of": "hello-staging-bbb",
    }
    assert rollback_endpoint.calls == [
        {"app": "hello", "environment": "staging", "reason": "500s on /", "caller": "developer@hello.local"}
    ]


def test_rollback_for_humans_says_how_to_follow_it(rollback_endpoint: RollbackEndpoint) -> None:
    result = releasectl("rollback", "--app", "hello", "--env", "staging", "--to", "1.0.0")

    assert result.code == 0
    assert "releasectl watch hello-staging-rrr" in result.stdout
    assert rollback_endpoint.calls[0]["to_version"] == "1.0.0"


def test_a_caller_who_may_not_roll_back_gets_exit_1_with_the_servers_reason(
    rollback_endpoint: RollbackEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELEASECTL_IDENTITY", "intruder@elsewhere.example.com")

    result = releasectl("rollback", "--app", "hello", "--env", "staging")

    assert result.code == 1
    assert result.stderr.strip() == (
        "releasectl: rollback refused (HTTP 403): intruder@elsewhere.example.com may not roll back hello/staging"
    )


def test_an_unknown_version_is_bad_input(rollback_endpoint: RollbackEndpoint) -> None:
    result = releasectl("rollback", "--app", "hello", "--env", "staging", "--to", "9.9.9")

    assert result.code == 2
    assert "HTTP 404" in result.stderr


def test_rollback_without_the_endpoint_configured_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELEASECTL_ROLLBACK_URL", raising=False)

    result = releasectl("rollback", "--app", "hello", "--env", "staging")

    assert result.code == 2
    assert "RELEASECTL_ROLLBACK_URL" in result.stderr


def test_the_console_script_works_as_a_subprocess(
    seeded: firestore.Client, cli_env: dict[str, str], rollback_endpoint: RollbackEndpoint
) -> None:
    env = {
        **cli_env,
        "RELEASECTL_ROLLBACK_URL": rollback_endpoint.url,
        "RELEASECTL_TOKEN_URL": os.environ["RELEASECTL_TOKEN_URL"],
    }

    status = releasectl_process(env, "status", "--app", "hello", "--env", "staging", "--json")
    assert status.code == 0, status.stderr
    assert status.json()["live"]["version"] == "1.1.0"

    rollback = releasectl_process(env, "rollback", "--app", "hello", "--env", "staging", "--json")
    assert rollback.code == 0, rollback.stderr
    assert rollback.json()["deployment_id"] == "hello-staging-rrr"

    usage = releasectl_process(env, "releases", "--app", "hello")
    assert usage.code == 2
    assert len(usage.stderr.strip().splitlines()) == 1
    assert requests.get(f"{os.environ['RELEASECTL_TOKEN_URL']}?audience=x", timeout=10).status_code == 200


@pytest.mark.gcloud
@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_without_a_local_issuer_token_asks_gcloud_and_reports_its_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELEASECTL_TOKEN_URL", raising=False)
    monkeypatch.setenv("RELEASECTL_ROLLBACK_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no account logged in

    result = releasectl("token")

    assert result.code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("releasectl: gcloud auth print-identity-token failed: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_watch_says_a_long_status_is_still_going(seeded: firestore.Client) -> None:
    lines: list[str] = []

    outcome = watch_deployment(
        seeded, "hello-staging-ddd", 1.0, lines.append, poll_seconds=0.1, still_seconds=0.3
    )

    assert outcome.timed_out
    assert any(line.strip().endswith("still provisioning") for line in lines), lines
