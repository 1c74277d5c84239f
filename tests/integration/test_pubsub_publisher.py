"""The Publisher adapter against the Pub/Sub emulator: one Publish call per message."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from devstack.processes import free_port
from shared.adapters.pubsub_publisher import PublishFailed, PubSubPublisher
from tests.conftest import TEST_PROJECT


def test_a_published_message_arrives_with_its_data_attributes_and_id(emulator_env: dict[str, str]) -> None:
    topic = f"publisher-{uuid.uuid4().hex[:8]}"
    admin, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    admin.create_topic(name=admin.topic_path(TEST_PROJECT, topic))
    subscription = subscriber.subscription_path(TEST_PROJECT, topic)
    subscriber.create_subscription(name=subscription, topic=admin.topic_path(TEST_PROJECT, topic))

    publisher = PubSubPublisher(TEST_PROJECT)
    ids = [publisher.publish(topic, f"step {n}".encode(), {"app": "hello", "n": str(n)}) for n in range(3)]

    pulled: list[Any] = []
    deadline = time.monotonic() + 10
    while len(pulled) < 3 and time.monotonic() < deadline:  # a pull may return fewer than are there
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 10}, timeout=10)
        pulled += [received.message for received in response.received_messages]
    messages = sorted(pulled, key=lambda m: m.data)
    assert [m.data for m in messages] == [b"step 0", b"step 1", b"step 2"]
    assert [dict(m.attributes) for m in messages] == [{"app": "hello", "n": str(n)} for n in range(3)]
    assert [m.message_id for m in messages] == ids and len(set(ids)) == 3


def test_a_publish_that_pub_sub_refuses_is_a_transient_publish_failure(emulator_env: dict[str, str]) -> None:
    # The step that published is retried (its effects are idempotent); nothing is lost silently.
    with pytest.raises(PublishFailed, match="publishing to no-such-topic failed"):
        PubSubPublisher(TEST_PROJECT).publish("no-such-topic", b"{}", {})


def test_a_publish_to_a_pub_sub_that_never_answers_fails_within_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on a free port: every attempt fails as UNAVAILABLE and is retried. The
    # generated client's own default would keep retrying for 600 s, past any function's timeout.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    publisher = PubSubPublisher(TEST_PROJECT, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(PublishFailed):
        publisher.publish("step", b"{}", {})
    # Bounded by the limit plus at most one attempt's share past it (and the machine's slack).
    assert time.monotonic() - started < 10
