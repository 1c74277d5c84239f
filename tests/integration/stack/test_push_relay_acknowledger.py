"""The push relay's acknowledger, against the Pub/Sub emulator: acknowledgements arriving close
together share requests, every one holds, and every deferral brings its message back."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.pubsub_v1 import SubscriberClient
from google.pubsub_v1.types import PushConfig, Subscription

from devstack.acknowledger import LEASE_MARGIN_SECONDS, Acknowledger
from devstack.emulators import RunningEmulator
from devstack.processes import wait_until
from devstack.push_relay import Pusher
from devstack.subscriptions import emulator_clients
from tests.conftest import TEST_PROJECT

PULL_SECONDS = 10.0


def _pull(subscriber: SubscriberClient, subscription: str, wanted: int, within: float) -> dict[str, str]:
    """Message id -> ack id of what can be pulled within `within` seconds, up to `wanted` messages."""
    received: dict[str, str] = {}
    deadline = time.monotonic() + within
    while len(received) < wanted and (left := deadline - time.monotonic()) > 0:
        try:
            # A pull waits for a message up to its timeout: never past `within`.
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": wanted - len(received)},
                timeout=min(1.0, max(0.1, left)),
            )
        except (api_exceptions.DeadlineExceeded, api_exceptions.RetryError):
            continue  # nothing to pull right now
        received.update({m.message.message_id: m.ack_id for m in response.received_messages})
    return received


def _new_subscription(publisher: Any, subscriber: SubscriberClient, prefix: str) -> tuple[str, str]:
    """A new topic and a pull subscription to it with a 60 s ack deadline: (topic, subscription)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{TEST_PROJECT}/topics/{name}"
    subscription = f"projects/{TEST_PROJECT}/subscriptions/{name}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    return topic, subscription


def _handed_back(
    subscriber: SubscriberClient, subscription: str, since: float, not_within: float
) -> tuple[set[str], float]:
    """The message ids handed back after `not_within` seconds in which none may come, and the
    seconds from `since` (monotonic) until they came."""
    assert _pull(subscriber, subscription, 1, not_within) == {}, "handed back before its time"
    redelivered = _pull(subscriber, subscription, 1, PULL_SECONDS)
    return set(redelivered), time.monotonic() - since


def _handed_back_before_closing(
    acknowledger: Acknowledger,
    subscriber: SubscriberClient,
    subscription: str,
    since: float,
    not_within: float,
) -> tuple[set[str], float]:
    """`_handed_back` while `acknowledger` runs; closed after, whatever happened."""
    try:
        return _handed_back(subscriber, subscription, since, not_within)
    finally:
        acknowledger.close()


def test_acknowledgements_go_out_together_and_deferrals_bring_messages_back(
    pubsub_emulator: RunningEmulator,
) -> None:
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        topic, subscription = _new_subscription(publisher, subscriber, "acks")
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
    topic, subscription = _new_subscription(publisher, subscriber, prefix)
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
        redelivered, back_after = _handed_back_before_closing(
            acknowledger, subscriber, subscription, deferred_at, not_within=1.5
        )

    assert redelivered == {message_id}
    assert back_after < 2.9, f"back after {back_after:.2f} s: a whole-second deadline, not the delay"


class _DiesAt:
    """The subscriber as seen by a relay that dies at `moment` (monotonic): later requests never arrive."""

    def __init__(self, subscriber: SubscriberClient, moment: float) -> None:
        self._subscriber = subscriber
        self._moment = moment

    def modify_ack_deadline(self, **kwargs: Any) -> None:
        if time.monotonic() < self._moment:
            self._subscriber.modify_ack_deadline(**kwargs)

    def acknowledge(self, **kwargs: Any) -> None:
        if time.monotonic() < self._moment:
            self._subscriber.acknowledge(**kwargs)


def test_a_held_message_comes_back_about_when_due_if_the_relay_dies_holding_it(
    pubsub_emulator: RunningEmulator,
) -> None:
    """Held, a message's lease is cut to its delay plus a margin at once: a relay that dies before
    handing it back leaves it for seconds, not for its pull's minute (past a cool-down's deadline)."""
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, message_id, ack_id = _one_pulled_message(publisher, subscriber, "dies")
        deferred_at = time.monotonic()
        # It dies half-way through the delay, before it can hand the message back.
        acknowledger = Acknowledger(_DiesAt(subscriber, deferred_at + 0.5), subscription)
        acknowledger.defer(ack_id, 1.0)
        redelivered, back_after = _handed_back_before_closing(
            acknowledger, subscriber, subscription, deferred_at, not_within=2.0
        )

    assert redelivered == {message_id}
    lease = 1.0 + LEASE_MARGIN_SECONDS
    assert back_after < lease + 2.0, f"back after {back_after:.2f} s: the pull's lease, not the delay's"


def test_a_message_being_pushed_comes_back_within_its_short_lease_if_the_relay_dies(
    pubsub_emulator: RunningEmulator,
) -> None:
    """A message whose push is in flight gets a short lease at once: a relay that dies before the
    answer leaves it for that lease, not for its pull's minute."""
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, message_id, ack_id = _one_pulled_message(publisher, subscriber, "in-flight")
        leased_at = time.monotonic()
        # It dies half a second into the push, long before its answer.
        acknowledger = Acknowledger(
            _DiesAt(subscriber, leased_at + 0.5), subscription, in_flight_lease_seconds=2
        )
        acknowledger.lease([ack_id])
        redelivered, back_after = _handed_back_before_closing(
            acknowledger, subscriber, subscription, leased_at, not_within=1.0
        )

    assert redelivered == {message_id}
    assert back_after < 2 + 2.0, f"back after {back_after:.2f} s: the pull's lease, not the short one"


def test_a_message_being_pushed_is_not_handed_out_again_while_its_push_lasts(
    pubsub_emulator: RunningEmulator,
) -> None:
    """The short lease is renewed while the push lasts: a slow function is not sent a duplicate."""
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, _, ack_id = _one_pulled_message(publisher, subscriber, "renewed")
        acknowledger = Acknowledger(
            subscriber, subscription, in_flight_lease_seconds=2, renew_before_seconds=1
        )
        acknowledger.lease([ack_id])
        try:
            during_push = _pull(subscriber, subscription, 1, 5.0)  # two and a half leases
            acknowledger.acknowledge(ack_id)
        finally:
            acknowledger.close()
        after_answer = _pull(subscriber, subscription, 1, 3.0)

    assert during_push == {}, "handed out again while its push was in flight"
    assert after_answer == {}, "acknowledged, yet handed out again"


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
        redelivered, back_after = _handed_back(subscriber, subscription, closed_at, not_within=0.5)

    assert redelivered == {message_id}
    assert back_after < 5.0, f"back after {back_after:.2f} s: the pull's lease, not the deadline"


def test_a_deferral_that_would_outlast_its_lease_becomes_the_ack_deadline_at_once(
    pubsub_emulator: RunningEmulator,
) -> None:
    """Held past its pull's lease, a message would come back when the lease ends, early, and
    its hand-back would then name an ack id already given out again."""
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, message_id, ack_id = _one_pulled_message(publisher, subscriber, "lease")
        acknowledger = Acknowledger(subscriber, subscription)
        deferred_at = time.monotonic()
        acknowledger.defer(ack_id, 1.5, lease_left=LEASE_MARGIN_SECONDS + 1.0)
        try:
            # Sent now (a held message is sent when its delay is over, 1.5 s from now).
            wait_until(lambda: acknowledger.requests_sent == 1, 1.0, "the deadline sent", interval=0.02)
            redelivered, back_after = _handed_back(subscriber, subscription, deferred_at, not_within=1.4)
        finally:
            acknowledger.close()

    assert redelivered == {message_id}
    assert back_after < 5.0, f"back after {back_after:.2f} s: not by the 2 s deadline it was given"


def test_what_is_acknowledged_or_deferred_after_closing_still_reaches_pub_sub(
    pubsub_emulator: RunningEmulator,
) -> None:
    # A relay that stops lets its pushes in flight finish: their answers must not be dropped.
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        topic, subscription = _new_subscription(publisher, subscriber, "late")
        for future in [publisher.publish(topic, b"answered"), publisher.publish(topic, b"deferred")]:
            future.result(timeout=30)
        pulled = _pull(subscriber, subscription, 2, PULL_SECONDS)
        assert len(pulled) == 2
        (answered_id, answered_ack), (deferred_id, deferred_ack) = pulled.items()
        acknowledger = Acknowledger(subscriber, subscription)
        acknowledger.close()

        acknowledger.acknowledge(answered_ack)
        acknowledger.defer(deferred_ack, 0)

        redelivered = _pull(subscriber, subscription, 1, 5.0)
        assert set(redelivered) == {deferred_id}
        subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": [answered_ack], "ack_deadline_seconds": 0}
        )
        assert answered_id not in _pull(subscriber, subscription, 1, 2.0), "its acknowledgement was lost"


def test_a_message_the_relay_cannot_push_is_reported_and_delivered_again(
    pubsub_emulator: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
        subscription, _, ack_id = _one_pulled_message(publisher, subscriber, "unpushable")
        subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": [ack_id], "ack_deadline_seconds": 0}
        )
        # An endpoint whose port is no number: building the request fails before any socket opens.
        broken = Subscription(
            name=subscription,
            push_config=PushConfig(push_endpoint="http://127.0.0.1:no-port/"),
            ack_deadline_seconds=60,
        )
        stopping = threading.Event()
        pusher = Pusher(subscriber, broken, capacity=2, stopping=stopping)
        thread = threading.Thread(target=pusher.run, daemon=True)
        thread.start()
        try:
            seen = ""

            def reported_twice() -> bool:
                nonlocal seen
                seen += capsys.readouterr().err
                return seen.count("cannot push a message") >= 2

            # The second report is the message delivered again after its one-second backoff.
            wait_until(reported_twice, 10.0, "the message reported as unpushable twice")
        finally:
            stopping.set()
            subscriber.delete_subscription(request={"subscription": subscription})
            thread.join(timeout=15.0)
        assert not thread.is_alive()
        assert "ValueError" in seen


class _HeldAnswers(ThreadingHTTPServer):
    """Answers each push 204, but only once `release` is set (within a bound)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HeldHandler)
        self.release = threading.Event()
        self.pushes = 0
        self.counting = threading.Lock()


class _HeldHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HeldAnswers

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.counting:
            self.server.pushes += 1
        self.server.release.wait(10.0)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _TellsWhenStopping(Pusher):
    """A pusher that says when it has stopped taking messages and waits for its pushes in flight."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.waiting_for_deliveries = threading.Event()

    def _wait_for_deliveries(self, deadline: float) -> None:
        self.waiting_for_deliveries.set()
        super()._wait_for_deliveries(deadline)


class _CountsAcknowledgements:
    """The subscriber, counting the messages acknowledged through it."""

    def __init__(self, subscriber: SubscriberClient) -> None:
        self._subscriber = subscriber
        self.acknowledged = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subscriber, name)

    def acknowledge(self, *, request: dict[str, Any], **kwargs: Any) -> None:
        self._subscriber.acknowledge(request=request, **kwargs)
        self.acknowledged += len(request["ack_ids"])


def test_a_stopping_pusher_sends_the_answers_of_its_pushes_in_flight(
    pubsub_emulator: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    server = _HeldAnswers()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with emulator_clients(pubsub_emulator.host) as (publisher, subscriber):
            topic, subscription = _new_subscription(publisher, subscriber, "stopping")
            served = Subscription(
                name=subscription,
                push_config=PushConfig(push_endpoint=f"http://127.0.0.1:{server.server_address[1]}/"),
                ack_deadline_seconds=60,
            )
            stopping = threading.Event()
            counting = _CountsAcknowledgements(subscriber)
            pusher = _TellsWhenStopping(counting, served, capacity=3, stopping=stopping)
            thread = threading.Thread(target=pusher.run, daemon=True)
            thread.start()
            for data in (b"first", b"second"):
                publisher.publish(topic, data).result(timeout=30)
            wait_until(lambda: server.pushes == 2, 10.0, "both messages pushed", interval=0.02)
            stopping.set()  # the relay stops while the function is still working on both
            # Its waiting pull ends (a free slot keeps one waiting) and it takes nothing more.
            wait_until(
                pusher.waiting_for_deliveries.is_set, 10.0, "the pusher to stop pulling", interval=0.02
            )
            server.release.set()
            thread.join(timeout=10.0)

            assert not thread.is_alive()
            # The answers reached Pub/Sub: before, they came after the acknowledger had stopped
            # and were dropped, and both messages came back when their lease ended.
            assert counting.acknowledged == 2
            assert "failed" not in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
