"""The push relay's acknowledger, against the Pub/Sub emulator: acknowledgements arriving close
together share requests, every one holds, and every deferral brings its message back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.pubsub_v1 import SubscriberClient

from devstack.emulators import RunningEmulator
from devstack.push_relay import Acknowledger
from devstack.subscriptions import emulator_clients
from tests.conftest import TEST_PROJECT

PULL_SECONDS = 10.0


def _pull(subscriber: SubscriberClient, subscription: str, wanted: int, within: float) -> dict[str, str]:
    """Message id -> ack id of what can be pulled within `within` seconds, up to `wanted` messages."""
    received: dict[str, str] = {}
    deadline = time.monotonic() + within
    while len(received) < wanted and time.monotonic() < deadline:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": wanted - len(received)}, timeout=1.0
            )
        except (api_exceptions.DeadlineExceeded, api_exceptions.RetryError):
            continue  # nothing to pull right now
        received.update({m.message.message_id: m.ack_id for m in response.received_messages})
    return received


def test_acknowledgements_go_out_together_and_deferrals_bring_messages_back(
    pubsub_emulator: RunningEmulator,
) -> None:
    name = f"acks-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{TEST_PROJECT}/topics/{name}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{name}"
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
        for future in [publisher.publish(topic, f"m{n}".encode()) for n in range(40)]:
            future.result(timeout=30)
        pulled = _pull(subscriber, subscription, 40, PULL_SECONDS)
        assert len(pulled) == 40
        to_acknowledge, to_defer = list(pulled.items())[:30], list(pulled.items())[30:]

        acknowledger = Acknowledger(subscriber, subscription)
        for _, ack_id in to_acknowledge:
            acknowledger.acknowledge(ack_id)
            time.sleep(0.001)  # answers come in over time, as the functions finish
        for _, ack_id in to_defer:
            acknowledger.defer(ack_id, 0)
        acknowledger.close()

        # One request per message would be 40.
        assert acknowledger.requests_sent <= 6
        redelivered = _pull(subscriber, subscription, 10, PULL_SECONDS)
        assert set(redelivered) == {message_id for message_id, _ in to_defer}
        # An acknowledged message cannot be handed out again: asking for it back changes nothing.
        subscriber.modify_ack_deadline(
            request={
                "subscription": subscription,
                "ack_ids": [ack_id for _, ack_id in to_acknowledge],
                "ack_deadline_seconds": 0,
            }
        )
        assert not set(_pull(subscriber, subscription, 30, 3.0)) & {m for m, _ in to_acknowledge}


def _one_pulled_message(publisher: Any, subscriber: SubscriberClient, prefix: str) -> tuple[str, str, str]:
    """A new subscription with one message pulled from it: (subscription, message id, ack id)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{TEST_PROJECT}/topics/{name}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{name}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    publisher.publish(topic, b"poll").result(timeout=30)
    [(message_id, ack_id)] = _pull(subscriber, subscription, 1, PULL_SECONDS).items()
    return subscription, message_id, ack_id


def test_a_deferral_brings_the_message_back_when_its_delay_is_over_to_a_fraction_of_a_second(
    pubsub_emulator: RunningEmulator,
) -> None:
    """A backoff counts from the push, so what is left of it is rarely whole seconds: the message
    must come back when it is over, not at the next whole second, nor sooner."""
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, message_id, ack_id = _one_pulled_message(publisher, subscriber, "release")
        acknowledger = Acknowledger(subscriber, subscription)
        deferred_at = time.monotonic()
        acknowledger.defer(ack_id, 2.1)
        try:
            assert _pull(subscriber, subscription, 1, 1.5) == {}, "handed back before its time"
            redelivered = _pull(subscriber, subscription, 1, PULL_SECONDS)
            back_after = time.monotonic() - deferred_at
        finally:
            acknowledger.close()

    assert set(redelivered) == {message_id}
    assert back_after < 2.9, f"back after {back_after:.2f} s: a whole-second deadline, not the delay"


def test_closing_hands_a_held_message_back_by_its_deadline_not_at_once(
    pubsub_emulator: RunningEmulator,
) -> None:
    # A relay that stops must neither keep a deferred message for its pull's whole lease (60 s)
    # nor have it redelivered before its backoff is over.
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, message_id, ack_id = _one_pulled_message(publisher, subscriber, "closing")
        acknowledger = Acknowledger(subscriber, subscription)
        closed_at = time.monotonic()
        acknowledger.defer(ack_id, 1.5)
        acknowledger.close()

        assert _pull(subscriber, subscription, 1, 0.5) == {}, "handed back before its time"
        redelivered = _pull(subscriber, subscription, 1, PULL_SECONDS)
        back_after = time.monotonic() - closed_at

    assert set(redelivered) == {message_id}
    assert back_after < 5.0, f"back after {back_after:.2f} s: the pull's lease, not the deadline"
