"""`on_notify` end to end on the Firestore emulator, delivering to real local webhook endpoints.

The function is served by functions-framework (its test client) and fed the raw Pub/Sub push
body the emulator sends, so the push-to-CloudEvent conversion is exercised too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask import Flask
from google.cloud import firestore

from shared.adapters import composition_root
from shared.config import ENV_NOTIFICATIONS_FILE, ENV_PIPELINE_CONFIG
from shared.domain.notify_message import NotifyRequest

NOTIFY_SOURCE = Path(__file__).resolve().parents[2] / "functions" / "notify.py"
DEPLOYMENT_ID = "hello-staging-0123456789ab"

PIPELINE_TOML = """
[operations]
channels = [{ kind = "webhook", url_env = "TEST_OPS_URL" }]

[apps.hello.defaults]
base_instance_template = "hello-staging-base"
health_check = "hello-staging-hc"
backend_service = "hello-staging-backend"

[apps.hello.environments.staging]
url = "http://127.0.0.1:1/"
channels = [
  { kind = "webhook", url_env = "TEST_WEBHOOK_URL" },
  { kind = "slack", url_env = "TEST_SLACK_URL" },
]
"""


@dataclass
class WebhookReceiver:
    """Real HTTP endpoints on 127.0.0.1; each path answers its scripted statuses first, then 200."""

    base_url: str = ""
    scripted: dict[str, list[int]] = field(default_factory=dict)
    received: dict[str, list[Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.attempts[self.path] = state.attempts.get(self.path, 0) + 1
                script = state.scripted.get(self.path) or []
                status = script.pop(0) if script else 200
                if status == 200:
                    state.received.setdefault(self.path, []).append(body)
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def notify_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator_env: dict[str, str],
    clean_firestore: str,
    receiver: WebhookReceiver,
) -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(PIPELINE_TOML)
    notifications_file = tmp_path / "notifications.jsonl"
    monkeypatch.setenv(ENV_PIPELINE_CONFIG, str(config))
    monkeypatch.setenv(ENV_NOTIFICATIONS_FILE, str(notifications_file))
    monkeypatch.setenv("TEST_WEBHOOK_URL", receiver.url("/webhook"))
    monkeypatch.setenv("TEST_SLACK_URL", receiver.url("/slack"))
    monkeypatch.setenv("TEST_OPS_URL", receiver.url("/ops"))
    return notifications_file


@contextlib.contextmanager
def fresh_composition_root() -> Iterator[None]:
    """The composition root's cached adapters built afresh, so they see this test's environment."""
    cached = (composition_root.services, composition_root.notify_services, composition_root.pipeline_config)
    for function in cached:
        function.cache_clear()
    try:
        yield
    finally:
        for function in cached:
            function.cache_clear()


@pytest.fixture
def app(notify_env: Path) -> Iterator[Flask]:
    with fresh_composition_root():
        yield functions_framework.create_app(
            target="on_notify", source=str(NOTIFY_SOURCE), signature_type="cloudevent"
        )


@pytest.fixture
def deployment(emulator_env: dict[str, str], clean_firestore: str) -> dict[str, Any]:
    created = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)
    record = {
        "app": "hello",
        "environment": "staging",
        "version": "1.1.0",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "build_id": "build-42",
        "artifact": "file:///tmp/hello.tar.gz",
        "status": "live",
        "created_at": created,
        "updated_at": created + timedelta(seconds=9),
        "finished_at": created + timedelta(seconds=9),
        "rollback_of": None,
        "triggered_by": "circleci",
        "build_url": "https://circleci.example.com/build/42",
        "commit_messages": ["feat: greet in French"],
        "history": [
            {"status": "queued", "at": created, "detail": ""},
            {"status": "live", "at": created + timedelta(seconds=8.5), "detail": ""},
        ],
    }
    firestore.Client().collection("deployments").document(DEPLOYMENT_ID).set(record)
    return record


def push_body(request: NotifyRequest, message_id: str = "1001") -> dict[str, Any]:
    """The body the Pub/Sub emulator POSTs to a push endpoint."""
    return {
        "message": {
            "data": base64.b64encode(request.to_json()).decode(),
            "attributes": {},
            "messageId": message_id,
            "publishTime": "2026-01-05T10:00:09Z",
        },
        "subscription": "projects/release-pipeline-test/subscriptions/notify--on-notify",
    }


LIVE = NotifyRequest.for_deployment(
    app="hello", environment="staging", deployment_id=DEPLOYMENT_ID, version="1.1.0", status="live"
)


def push(app: Flask, request: NotifyRequest) -> int:
    response = app.test_client().post("/", json=push_body(request))
    return int(response.status_code)


def file_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_live_deployment_is_announced_on_every_channel_with_its_facts(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    assert push(app, LIVE) == 200

    [webhook] = receiver.received["/webhook"]
    assert webhook["version"] == "1.1.0"
    assert webhook["commit"] == deployment["commit"]
    assert webhook["changelog"] == ["feat: greet in French"]
    assert webhook["duration_seconds"] == 8.5
    assert webhook["build_url"] == "https://circleci.example.com/build/42"
    assert webhook["triggered_by"] == "circleci"
    assert webhook["rollback_command"] == "releasectl rollback --app hello --env staging"
    [slack] = receiver.received["/slack"]
    assert slack["text"] == "hello 1.1.0 is live on staging"
    [line] = file_lines(notify_env)
    assert {k: line[k] for k in ("app", "environment", "version", "status", "deployment_id")} == {
        "app": "hello",
        "environment": "staging",
        "version": "1.1.0",
        "status": "live",
        "deployment_id": DEPLOYMENT_ID,
    }
    assert line["text"].startswith("hello 1.1.0 is live on staging")

    ledger = firestore.Client().collection("notifications").document(LIVE.dedupe_key).get().to_dict()
    assert ledger is not None
    assert {name: channel["state"] for name, channel in ledger["channels"].items()} == {
        "webhook_TEST_WEBHOOK_URL": "delivered",
        "slack_TEST_SLACK_URL": "delivered",
        "notifications_file": "delivered",
    }
    assert isinstance(ledger["created_at"], datetime)


def test_a_redelivered_event_produces_no_duplicate(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    assert push(app, LIVE) == 200
    assert push(app, LIVE) == 200
    assert push(app, LIVE) == 200

    assert len(receiver.received["/webhook"]) == 1
    assert len(receiver.received["/slack"]) == 1
    assert len(file_lines(notify_env)) == 1
    assert receiver.attempts == {"/webhook": 1, "/slack": 1}


def test_a_channel_failing_twice_then_succeeding_gets_one_message(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    receiver.scripted["/slack"] = [503, 502]

    assert push(app, LIVE) == 200

    assert receiver.attempts["/slack"] == 3
    assert len(receiver.received["/slack"]) == 1
    assert len(receiver.received["/webhook"]) == 1


def test_a_channel_down_longer_is_retried_by_redelivery_and_only_it_is_sent_again(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    receiver.scripted["/slack"] = [500] * 3

    assert push(app, LIVE) == 500  # the function raised: Pub/Sub will redeliver it
    assert "/slack" not in receiver.received
    assert len(receiver.received["/webhook"]) == 1

    assert push(app, LIVE) == 200

    assert len(receiver.received["/slack"]) == 1
    assert len(receiver.received["/webhook"]) == 1
    assert len(file_lines(notify_env)) == 1


def test_a_channel_that_refuses_for_good_does_not_loop(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    receiver.scripted["/slack"] = [404]

    assert push(app, LIVE) == 200
    assert push(app, LIVE) == 200

    assert receiver.attempts["/slack"] == 1
    assert len(receiver.received["/webhook"]) == 1


@pytest.mark.slow
def test_concurrent_deliveries_of_one_event_send_each_channel_one_message(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, deployment: dict[str, Any]
) -> None:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(push(app, LIVE))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Each channel went to whichever delivery claimed it first; a delivery that found a channel
    # held by another answered 500, and its redelivery (this push) finds every channel done.
    assert push(app, LIVE) == 200

    assert len(statuses) == 4
    assert len(receiver.received["/webhook"]) == 1
    assert len(receiver.received["/slack"]) == 1
    assert len(file_lines(notify_env)) == 1


def test_a_rejected_message_for_an_unknown_environment_is_announced(
    app: Flask, notify_env: Path, receiver: WebhookReceiver
) -> None:
    rejected = NotifyRequest(
        kind="rejected",
        app="hello",
        environment="nowhere",
        status="rejected",
        detail="unknown environment 'nowhere'",
        dedupe_key="rejected:777",
    )

    assert push(app, rejected) == 200

    [webhook] = receiver.received["/webhook"]
    assert webhook["status"] == "rejected"
    assert webhook["text"].startswith("Rejected a build-succeeded message for hello/nowhere")
    assert file_lines(notify_env)[0]["status"] == "rejected"


def test_a_rejected_message_for_an_unknown_app_goes_only_to_the_operations_channel(
    app: Flask, notify_env: Path, receiver: WebhookReceiver
) -> None:
    rejected = NotifyRequest(
        kind="rejected",
        app="intruder",
        environment="staging",
        status="rejected",
        detail="unknown app 'intruder'",
        dedupe_key="rejected:778",
    )

    assert push(app, rejected) == 200

    [operations] = receiver.received["/ops"]
    assert operations["text"].startswith("Rejected a build-succeeded message for intruder/staging")
    assert set(receiver.received) == {"/ops"}  # no app's team channel hears about it
    assert file_lines(notify_env)[0]["app"] == "intruder"


@pytest.mark.parametrize(
    "data",
    [base64.b64encode(b"not json").decode(), "%%% not base64 %%%"],
    ids=["not-json", "not-base64"],
)
def test_a_malformed_notify_event_is_acknowledged_and_sends_nothing(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, data: str
) -> None:
    body = push_body(LIVE)
    body["message"]["data"] = data

    assert app.test_client().post("/", json=body).status_code == 200
    assert receiver.attempts == {}
    assert file_lines(notify_env) == []


def test_a_deployment_without_a_record_is_still_announced_from_the_event(
    app: Flask, notify_env: Path, receiver: WebhookReceiver, clean_firestore: str
) -> None:
    assert push(app, LIVE) == 200

    [webhook] = receiver.received["/webhook"]
    assert (webhook["version"], webhook["status"], webhook["commit"]) == ("1.1.0", "live", None)
