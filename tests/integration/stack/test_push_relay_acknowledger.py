"""The push relay's acknowledger, against the Pub/Sub emulator: acknowledgements arriving close
together share requests, every one holds, and every deferral brings its message back."""

from __future__ import annotations

import time
import uuid

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


def test_a_deferral_of_a_fraction_of_a_second_brings_the_message_back_before_its_whole_second_deadline(
    pubsub_emulator: RunningEmulator,
) -> None:
    """A backoff counts from the push, so what is left of it is rarely whole seconds: the message
    must come back when it is over, not when the deadline rounded up to a second ends."""
    name = f"release-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{TEST_PROJECT}/topics/{name}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{name}"
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
        publisher.publish(topic, b"poll").result(timeout=30)
        [(message_id, ack_id)] = _pull(subscriber, subscription, 1, PULL_SECONDS).items()

        acknowledger = Acknowledger(subscriber, subscription)
        deferred_at = time.monotonic()
        acknowledger.defer(ack_id, 2.1)  # an ack deadline of 3 s, the release at 2.1 s
        try:
            assert _pull(subscriber, subscription, 1, 1.5) == {}, "handed back before its time"
            redelivered = _pull(subscriber, subscription, 1, PULL_SECONDS)
            back_after = time.monotonic() - deferred_at
        finally:
            acknowledger.close()

    assert set(redelivered) == {message_id}
    assert back_after < 2.9, f"back after {back_after:.2f} s: the 3 s deadline, not the release, brought it"
