"""A Pub/Sub push reaches a function, through the local function server's Eventarc layer, as the
CloudEvent Eventarc delivers on GCP. Real functions-framework app, driven by its test client."""

from __future__ import annotations

import base64
import doctest
import json
from pathlib import Path
from typing import Any

import functions_framework
import pytest

import devstack.eventarc
from devstack.eventarc import MESSAGE_PUBLISHED, EventarcDelivery

HANDLER_SOURCE = """
import json

import functions_framework

from shared.adapters.pubsub_event import decode_pubsub_event


@functions_framework.cloud_event
def handler(event):
    seen = {name: event.get(name) for name in ("type", "source", "subject", "id", "time", "specversion")}
    seen["data"] = event.data
    seen["decoded_topic"] = decode_pubsub_event(event).topic
    with open(RECORD, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(seen) + "\\n")
"""


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(devstack.eventarc).failed == 0


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, Path]:
    record = tmp_path / "seen.jsonl"
    source = tmp_path / "handler_source.py"
    source.write_text(f"RECORD = {str(record)!r}\n{HANDLER_SOURCE}", encoding="utf-8")
    app = functions_framework.create_app("handler", str(source))
    app.wsgi_app = EventarcDelivery(app.wsgi_app)
    return app.test_client(), record


def _seen(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def _push_body(**message: Any) -> dict[str, Any]:
    # What the Pub/Sub emulator pushes: the message and the subscription, nothing about the topic.
    return {"message": message, "subscription": "projects/p/subscriptions/notify--on-notify"}


def test_a_push_to_the_topic_path_arrives_as_eventarcs_cloudevent(served: tuple[Any, Path]) -> None:
    client, record = served
    body = _push_body(
        data=base64.b64encode(b'{"hello": 1}').decode(),
        attributes={"app": "hello"},
        messageId="42",
        publishTime="2026-12-01T08:00:00.000Z",
    )
    response = client.post("/projects/p/topics/notify", json=body)
    assert response.status_code == 200
    [seen] = _seen(record)
    assert seen["type"] == MESSAGE_PUBLISHED
    assert seen["source"] == "//pubsub.googleapis.com/projects/p/topics/notify"
    assert seen["subject"] is None  # Eventarc's Pub/Sub events carry none
    assert (seen["id"], seen["time"], seen["specversion"]) == ("42", "2026-12-01T08:00:00.000Z", "1.0")
    assert seen["data"] == {
        "subscription": "projects/p/subscriptions/notify--on-notify",
        "message": {
            "data": base64.b64encode(b'{"hello": 1}').decode(),
            "attributes": {"app": "hello"},
            "messageId": "42",
            "message_id": "42",
            "publishTime": "2026-12-01T08:00:00.000Z",
            "publish_time": "2026-12-01T08:00:00.000Z",
        },
    }
    assert seen["decoded_topic"] == "notify"


def test_a_binary_cloudevent_on_the_root_path_passes_through_untouched(served: tuple[Any, Path]) -> None:
    client, record = served
    headers = {
        "ce-specversion": "1.0",
        "ce-type": MESSAGE_PUBLISHED,
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/build-succeeded",
        "ce-id": "7",
    }
    response = client.post("/", json=_push_body(data="", messageId="7"), headers=headers)
    assert response.status_code == 200
    [seen] = _seen(record)
    assert seen["source"] == "//pubsub.googleapis.com/projects/p/topics/build-succeeded"
    assert seen["data"]["message"] == {"data": "", "messageId": "7"}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"message": {"data": ""}, "subscription": "projects/p/subscriptions/s"}'],
    ids=["not-json", "not-an-object", "no-message-id"],
)
def test_what_is_not_a_push_body_is_refused_as_functions_framework_refuses_it(
    served: tuple[Any, Path], body: bytes
) -> None:
    client, record = served
    response = client.post("/projects/p/topics/notify", data=body, content_type="application/json")
    assert response.status_code == 400
    assert not record.exists()
