"""The notify → dead letter → on_dead_letter → notify cycle ends, on the Pub/Sub and Firestore emulators.

`on_notify` and `on_dead_letter` are served by functions-framework (test clients). What
`on_dead_letter` publishes goes to the emulator's real `notify` topic and is pulled from there and
pushed to `on_notify`, as the push subscription would. Dead-lettering is what Pub/Sub does after
the subscription's maximum attempts: the same message, with the dead-letter attributes, pushed to
`on_dead_letter`.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask import Flask
from google.api_core import exceptions as api_exceptions
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from shared import topology
from shared.domain.notify_message import NotifyRequest
from shared.usecases.dead_letter import DELIVERY_ATTEMPT_ATTRIBUTE, SOURCE_SUBSCRIPTION_ATTRIBUTE
from tests.conftest import TEST_PROJECT
from tests.integration.test_notify import (  # noqa: F401  (fixtures)
    LIVE,
    WebhookReceiver,
    app,
    deployment,
    file_lines,
    fresh_composition_root,
    notify_env,
    receiver,
)

# The emulator answers an empty pull at once only with the (deprecated) return_immediately flag.
pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag is deprecated")

DEAD_LETTER_SOURCE = Path(__file__).resolve().parents[2] / "functions" / "dead_letter.py"
NOTIFY_ATTEMPTS = topology.trigger_of(topology.NOTIFY).max_delivery_attempts


@pytest.fixture
def dead_letter_app(notify_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:  # noqa: F811
    # on_dead_letter builds every adapter at cold start; Compute is never called here.
    monkeypatch.setenv("COMPUTE_EMULATOR_HOST", "127.0.0.1:9")
    with fresh_composition_root():
        yield functions_framework.create_app(
            target="on_dead_letter", source=str(DEAD_LETTER_SOURCE), signature_type="cloudevent"
        )


@pytest.fixture
def notify_topic(emulator_env: dict[str, str]) -> Iterator[tuple[pubsub_v1.SubscriberClient, str]]:
    """A subscription on the emulator's `notify` topic: every notify event published meanwhile."""
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(TEST_PROJECT, topology.NOTIFY)
    with contextlib.suppress(api_exceptions.AlreadyExists):  # another test of the session made it
        publisher.create_topic(name=topic)
    subscription = subscriber.subscription_path(TEST_PROJECT, f"cycle-{uuid.uuid4().hex[:12]}")
    subscriber.create_subscription(name=subscription, topic=topic)
    try:
        yield subscriber, subscription
    finally:
        subscriber.delete_subscription(subscription=subscription)


def pull_all(notify_topic: tuple[pubsub_v1.SubscriberClient, str]) -> list[Any]:
    """Every message waiting on the subscription (a bounded number of pulls), acknowledged."""
    subscriber, subscription = notify_topic
    messages: list[Any] = []
    for _ in range(3):
        response = subscriber.pull(
            subscription=subscription, max_messages=50, timeout=5, return_immediately=True
        )
        if not response.received_messages:
            break
        messages.extend(received.message for received in response.received_messages)
        subscriber.acknowledge(
            subscription=subscription, ack_ids=[r.ack_id for r in response.received_messages]
        )
    return messages


def push_message(app: Flask, data: bytes, attributes: dict[str, str], message_id: str) -> int:  # noqa: F811
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2026-01-05T10:00:09Z",
        },
        "subscription": f"projects/{TEST_PROJECT}/subscriptions/push",
    }
    return int(app.test_client().post("/", json=body).status_code)


def deliver_until_dead_lettered(
    notify_app: Flask, dead_letter_app: Flask, data: bytes, attributes: dict[str, str], message_id: str
) -> None:
    """Push a notify event until the subscription's attempts run out, then dead-letter it."""
    for _ in range(NOTIFY_ATTEMPTS):
        assert push_message(notify_app, data, attributes, message_id) == 500  # still undelivered
    dead_lettered = {
        **attributes,
        SOURCE_SUBSCRIPTION_ATTRIBUTE: f"projects/{TEST_PROJECT}/subscriptions/notify--on-notify",
        DELIVERY_ATTEMPT_ATTRIBUTE: str(NOTIFY_ATTEMPTS),
    }
    assert push_message(dead_letter_app, data, dead_lettered, message_id) == 200


def test_a_notification_failing_on_one_channel_is_announced_once_on_the_others_and_the_cycle_ends(
    app: Flask,  # noqa: F811
    dead_letter_app: Flask,
    notify_topic: tuple[pubsub_v1.SubscriberClient, str],
    notify_env: Path,  # noqa: F811
    receiver: WebhookReceiver,  # noqa: F811
    deployment: dict[str, Any],  # noqa: F811
) -> None:
    receiver.scripted["/slack"] = [500] * 1000  # Slack is down for the whole test
    attributes = {
        "kind": "deployment",
        "app": "hello",
        "environment": "staging",
        "notify_dedupe_key": LIVE.dedupe_key,
    }

    deliver_until_dead_lettered(app, dead_letter_app, LIVE.to_json(), attributes, "live-1")

    [announcement] = pull_all(notify_topic)
    request = NotifyRequest.from_json(announcement.data)
    assert request.kind == "dead_letter" and request.about_notification == LIVE.dedupe_key
    # The announcement is delivered on the channels that took the original, never to Slack …
    assert push_message(app, announcement.data, dict(announcement.attributes), announcement.message_id) == 200
    webhook_texts = [body["text"] for body in receiver.received["/webhook"]]
    assert len(webhook_texts) == 2 and webhook_texts[0].startswith("hello 1.1.0 is live on staging")
    assert "not delivered to slack_TEST_SLACK_URL" in webhook_texts[1]
    [operations] = receiver.received["/ops"]
    assert operations["dedupe_key"] == f"undelivered:{LIVE.dedupe_key}"
    assert "/slack" not in receiver.received
    slack_attempts = receiver.attempts["/slack"]
    assert slack_attempts == NOTIFY_ATTEMPTS * 3  # quick retries per attempt, none for the announcement

    # … and the same original dead-lettered again (a duplicate) is not announced a second time.
    deliver_until_dead_lettered(app, dead_letter_app, LIVE.to_json(), attributes, "live-2")
    [duplicate] = pull_all(notify_topic)
    assert push_message(app, duplicate.data, dict(duplicate.attributes), duplicate.message_id) == 200
    assert len(receiver.received["/webhook"]) == 2 and len(receiver.received["/ops"]) == 1

    records = firestore.Client().collection("dead_lettered_events").stream()
    assert {record.id for record in records} == {"live-1", "live-2"}


def test_a_dead_letter_notification_that_cannot_be_delivered_is_recorded_and_never_announced(
    app: Flask,  # noqa: F811
    dead_letter_app: Flask,
    notify_topic: tuple[pubsub_v1.SubscriberClient, str],
    notify_env: Path,  # noqa: F811
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    receiver.scripted["/ops"] = [500] * 1000  # the operations channel is down
    # An event of another topic ran out of retries: on_dead_letter announces it.
    cool_down = b'{"deployment_id": "hello-staging-000000000000"}'
    assert (
        push_message(
            dead_letter_app,
            cool_down,
            {
                "app": "hello",
                "environment": "staging",
                SOURCE_SUBSCRIPTION_ATTRIBUTE: "cool-down-complete--x",
            },
            "cool-1",
        )
        == 200
    )
    [alert] = pull_all(notify_topic)
    assert NotifyRequest.from_json(alert.data).dedupe_key == "dead-letter:cool-1"

    # That alert cannot reach the operations channel, so it is dead-lettered in turn …
    deliver_until_dead_lettered(app, dead_letter_app, alert.data, dict(alert.attributes), "alert-1")

    # … recorded, and not announced: nothing more is published to notify.
    assert pull_all(notify_topic) == []
    assert firestore.Client().collection("dead_lettered_events").document("alert-1").get().exists
    assert len(receiver.received["/webhook"]) == 1  # the alert itself reached the team's channel once
    assert len(file_lines(notify_env)) == 1
