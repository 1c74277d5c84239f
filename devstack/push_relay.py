"""More push capacity for the Pub/Sub emulator's push subscriptions, as Pub/Sub has on GCP.

`python -m devstack.push_relay --project P` (PUBSUB_EMULATOR_HOST names the emulator).

The emulator pushes each subscription's messages two at a time: two push loops per subscription,
each posting one message and waiting for the answer, a fixed number no flag changes. Pub/Sub on
Google Cloud keeps many pushes in flight and Eventarc scales the function out, so there a hundred
releases published at once are admitted, provisioned and switched side by side; locally every
step of all of them queued behind two pushes (a hundred pushes to an endpoint that answers in
0.5 s take 25 s), while the functions' threads sat mostly idle.

This process adds the missing capacity without changing the wiring: it lists the project's push
subscriptions, pulls from each (the emulator serves pull on a push subscription, handing each
message to one consumer at a time), keeps up to ten pushes in flight per subscription with the
emulator's own two, and delivers each message exactly as the emulator's push does: the same JSON
body POSTed to the subscription's push endpoint; a 2xx answer acknowledges it,
anything else (or no answer) leaves it to be redelivered after the same delay the emulator's push
uses, one second, or the subscription's retry policy when it has one, counted as Pub/Sub counts
a retry policy's backoff: between consecutive deliveries of the message, from when the push went
out, not from when its answer came. Delivery attempts and
dead-lettering stay the emulator's: a pulled message counts as an attempt as a pushed one does.
Acknowledgements go out in batches, as the Pub/Sub client library's subscriber sends them
(`Acknowledger`). The emulator's own two push loops keep running beside it, so nothing depends
on this process being up: when it is down (the supervisor restarts it), delivery is as slow as
before, never lost. A message it had pulled when it died (being pushed, held until its backoff
is over, or answered but not yet acknowledged) is delivered again when its lease ends, within
seconds (`Acknowledger`), a duplicate when it had been answered, which every function is built
to take.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

from google.api_core import exceptions as api_exceptions
from google.pubsub_v1.types import Subscription

from devstack.acknowledger import DEFAULT_ACK_DEADLINE_SECONDS, Acknowledger
from devstack.processes import stop_requested
from devstack.subscriptions import ACK_DEADLINE_SECONDS, emulator_clients

DISCOVERY_INTERVAL_SECONDS = 1.0
"""How soon a subscription created after start gets its extra capacity."""
PULL_TIMEOUT_SECONDS = 2.0
"""A pull's deadline. The emulator answers a waiting pull as soon as it has messages, and with
none once less than a second of the deadline is left, so an idle subscription costs one pull a
second (the emulator checks a waiting pull's backlog every 50 ms however long it waits).

Short because of what a dead relay leaves: the emulator does not notice that a waiting pull's
client has gone, so the pull goes on taking messages until its deadline, less that second, and
leases them to no one for the subscription's ack deadline, a minute (a pull killed 0.7 s into a
ten-second wait took a message published 2 s after its death, every time; one published 9.5 s
after was free). With ten-second pulls a relay killed in a cool-down lost the poll it held that
way: the poll's short lease ended, a pull of the dead relay took it, and the release failed at
its deadline. Now those pulls end within a second of the relay's death, before any lease the
relay gave (`Acknowledger`) runs out; what is freed or published within that second (a message
handed back just before the death) can still go to one of them. The cost, an idle stack measured over 30 s: the relay 1.3 %
of a core instead of 0.7 %, the emulator 4.0 % instead of 3.3 %."""
REDELIVERY_DELAY_SECONDS = 1
"""What the emulator's push waits before a failed message is delivered again (no retry policy)."""
PUSH_TIMEOUT_SECONDS = ACK_DEADLINE_SECONDS - 5
"""An answer later than this would come after the emulator handed the message out again."""
ERROR_PAUSE_SECONDS = 0.5
STOP_WAIT_SECONDS = 4.0
"""How long a stopping relay waits for its pushes in flight to be answered and their answers
sent, within the grace the stack gives a stopping service (5 s) before it kills it."""
SUCCESS = range(200, 300)


PUSHES_IN_FLIGHT = 10
"""Per subscription. On Google Cloud a function takes up to `function_max_instances` (10) times
`function_request_concurrency` (8) requests at once; here one function server with eight threads
stands for all its instances, on the machine's cores, so more pushes in flight only queue in it:
sixteen were no faster than ten with a hundred releases at once (README, *Pub/Sub push*)."""
EMULATOR_PUSH_LOOPS = 2
"""The emulator's own pushes per subscription, which keep running beside the relay."""


def in_flight_per_subscription() -> int:
    return PUSHES_IN_FLIGHT - EMULATOR_PUSH_LOOPS


def push_body(received: Any, subscription: str) -> bytes:
    """The JSON body the emulator's push sends for one message, from the pulled `ReceivedMessage`
    as the raw protocol buffer (`ReceivedMessage.pb(...)`): the relay reads its fields without the
    proto-plus wrappers, whose attribute lookups were a third of the relay's CPU per delivery.

    >>> from google.pubsub_v1.types import PubsubMessage, ReceivedMessage
    >>> message = PubsubMessage(data=b"hi", attributes={"app": "a"}, message_id="7")
    >>> raw = ReceivedMessage.pb(ReceivedMessage(message=message, delivery_attempt=2))
    >>> body = json.loads(push_body(raw, "projects/p/subscriptions/s"))
    >>> body["message"]["data"], body["message"]["attributes"], body["message"]["messageId"]
    ('aGk=', {'app': 'a'}, '7')
    >>> body["subscription"], body["deliveryAttempt"], "publishTime" in body["message"]
    ('projects/p/subscriptions/s', 2, False)
    """
    message = received.message
    fields: dict[str, Any] = {
        "data": base64.b64encode(message.data).decode("ascii"),
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
    }
    if message.HasField("publish_time"):
        published = message.publish_time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        fields["publishTime"] = fields["publish_time"] = published
    envelope: dict[str, Any] = {"message": fields, "subscription": subscription}
    if received.delivery_attempt:
        envelope["deliveryAttempt"] = received.delivery_attempt
    return json.dumps(envelope).encode("utf-8")


@dataclass(frozen=True)
class Backoff:
    """A subscription's retry policy in whole seconds (Pub/Sub's exponential backoff)."""

    minimum: int
    maximum: int

    @classmethod
    def of(cls, subscription: Subscription) -> Backoff | None:
        """The subscription's backoff; None without a retry policy.

        >>> from google.pubsub_v1.types import RetryPolicy
        >>> Backoff.of(Subscription()) is None
        True
        >>> Backoff.of(Subscription(retry_policy=RetryPolicy(minimum_backoff={"seconds": 2}, maximum_backoff={"seconds": 10})))
        Backoff(minimum=2, maximum=10)
        """
        policy = subscription.retry_policy
        if not policy.maximum_backoff:
            return None
        low = max(1, int(policy.minimum_backoff.total_seconds()))
        return cls(low, max(low, int(policy.maximum_backoff.total_seconds())))


def redelivery_delay(backoff: Backoff | None, delivery_attempt: int) -> int:
    """Seconds before a failed message is delivered again: the retry policy's exponential backoff
    where the subscription has one, else the emulator push's fixed second.

    >>> redelivery_delay(None, 3)
    1
    >>> [redelivery_delay(Backoff(2, 10), n) for n in (1, 2, 3, 4)]
    [2, 4, 8, 10]
    """
    if backoff is None:
        return REDELIVERY_DELAY_SECONDS
    return int(min(backoff.maximum, backoff.minimum * 2 ** max(0, delivery_attempt - 1)))


class _KeptConnections(threading.local):
    """Each delivery thread's connections to the function servers, by server address."""

    def __init__(self) -> None:
        self.by_address: dict[tuple[str, int], http.client.HTTPConnection] = {}


_kept_alive = _KeptConnections()

_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def post(endpoint: str, body: bytes, timeout: float) -> int:
    """POST a push body; the HTTP status, or 0 when no answer came (refused, reset, timed out).

    Over this thread's connection to the endpoint's server, kept alive between pushes as Pub/Sub's
    are on Google Cloud: a new connection per push cost the function server about 0.4 ms of CPU
    and the relay 0.1 ms more than a kept one. (A closed `HTTPConnection` opens a new socket for
    its next request by itself, so the connection object is kept whatever the server said.) A
    kept connection the server closed while idle (its keep-alive timeout) fails before the
    request reaches the function; the push then goes once more, on a new socket. (Had the
    function died mid-request instead, that is one more delivery, which it takes.)
    """
    target = urlsplit(endpoint)
    address = (target.hostname or "127.0.0.1", target.port or 80)
    connection = _kept_alive.by_address.get(address)
    if connection is None:
        connection = _kept_alive.by_address[address] = http.client.HTTPConnection(*address, timeout=timeout)
    if connection.sock is not None:  # open since an earlier push
        try:
            return _exchange(connection, target.path, body)
        except _STALE_CONNECTION_ERRORS:
            connection.close()  # transient: the server closed it while idle; once more below
        except (OSError, http.client.HTTPException):  # transient: the function is down or busy
            connection.close()
            return 0
    try:
        return _exchange(connection, target.path, body)
    except (OSError, http.client.HTTPException):  # transient: the function is down or busy; redelivered
        connection.close()
        return 0


def _exchange(connection: http.client.HTTPConnection, path: str, body: bytes) -> int:
    """One POST and its answer."""
    connection.request("POST", path or "/", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


@dataclass
class Pusher:
    """Pulls one push subscription's messages and delivers up to `capacity` of them at once."""

    subscriber: Any  # pubsub_v1.SubscriberClient
    subscription: Subscription
    capacity: int
    stopping: threading.Event

    def __post_init__(self) -> None:
        # Read once: a proto-plus field lookup costs microseconds, and each delivery made several.
        self.name: str = self.subscription.name
        self.endpoint: str = self.subscription.push_config.push_endpoint
        self.backoff = Backoff.of(self.subscription)
        self.lease_seconds: int = self.subscription.ack_deadline_seconds or DEFAULT_ACK_DEADLINE_SECONDS
        self.slots = threading.Semaphore(self.capacity)
        self.pool = ThreadPoolExecutor(self.capacity, thread_name_prefix=f"push {self.name}")
        self.acknowledger = Acknowledger(self.subscriber, self.name)

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and self._pull_and_deliver():
                pass
        finally:
            # Nothing new is taken; the pushes in flight are answered, within a bound, before
            # the acknowledger sends what is pending and stops.
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._wait_for_deliveries(time.monotonic() + STOP_WAIT_SECONDS)
            self.acknowledger.close()

    def _wait_for_deliveries(self, deadline: float) -> None:
        """Until every delivery has given its slot back, or `deadline` (monotonic) passes."""
        taken = 0
        while taken < self.capacity and self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            taken += 1
        self._release(taken)

    def _pull_and_deliver(self) -> bool:
        """One pull of as many messages as there are free slots; False once the subscription is gone."""
        self.slots.acquire()
        free = 1
        while free < self.capacity and self.slots.acquire(blocking=False):
            free += 1
        try:
            response = self.subscriber.pull(
                request={"subscription": self.name, "max_messages": free},
                timeout=PULL_TIMEOUT_SECONDS,
            )
            # A pull answers as soon as it hands messages out, so their lease starts about now
            # (LEASE_MARGIN_SECONDS covers the difference); taken before the pull's wait, it was
            # up to that wait early.
            pulled_at = time.monotonic()
            received = list(type(response).pb(response).received_messages)
        except api_exceptions.NotFound:  # permanent: the subscription was deleted; stop serving it
            self._release(free)
            return False
        except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as exc:
            # Transient: a pull the busy emulator answered too late (DEADLINE_EXCEEDED), or refused.
            # Said: messages handed to a pull that ended so are leased to nobody until their ack
            # deadline passes.
            sys.stderr.write(f"push-relay: {self.name}: pull failed: {type(exc).__name__}\n")
            self._release(free)
            self.stopping.wait(ERROR_PAUSE_SECONDS)
            return True
        except ValueError:  # the channel was closed under a waiting pull: the relay is stopping
            if not self.stopping.is_set():
                raise
            self._release(free)
            return False
        self._release(free - len(received))
        self.acknowledger.lease([message.ack_id for message in received])
        for message in received:
            self.pool.submit(self._deliver, message, pulled_at + self.lease_seconds)
        return True

    def _release(self, count: int) -> None:
        for _ in range(count):
            self.slots.release()

    def _deliver(self, received: Any, lease_ends: float) -> None:
        """Push one pulled message (its raw `ReceivedMessage`) and acknowledge or defer it;
        its pull's lease ends at `lease_ends` (monotonic)."""
        pushed_at = time.monotonic()
        try:
            status = post(self.endpoint, push_body(received, self.name), PUSH_TIMEOUT_SECONDS)
        except Exception as exc:  # a message this relay cannot push: said, and redelivered as a failure
            sys.stderr.write(f"push-relay: {self.name}: cannot push a message: {exc!r}\n")
            status = 0
        try:
            if status in SUCCESS:
                self.acknowledger.acknowledge(received.ack_id)
            else:
                # The backoff runs between deliveries: the time the push took is part of it.
                delay = redelivery_delay(self.backoff, received.delivery_attempt)
                now = time.monotonic()
                hold = pushed_at + delay - now
                self.acknowledger.defer(received.ack_id, hold, lease_left=lease_ends - now)
                # Said, so that what a death of this process cost can be told from its log.
                sys.stderr.write(
                    f"push-relay: {self.name}: message {received.message.message_id} answered {status};"
                    f" held for {max(0.0, hold):.1f} s\n"
                )
        finally:
            self.slots.release()


def run(emulator_host: str, project: str, capacity: int) -> None:
    stopping = stop_requested()
    sys.stderr.write(f"push-relay: up to {capacity} pushes in flight per push subscription of {project}\n")
    served: dict[str, threading.Thread] = {}
    with emulator_clients(emulator_host) as (_, subscriber):
        while not stopping.is_set():
            try:
                subscriptions = list(
                    subscriber.list_subscriptions(request={"project": f"projects/{project}"}, timeout=10)
                )
            except (api_exceptions.GoogleAPICallError, api_exceptions.RetryError) as exc:
                # Transient: the emulator is starting or busy; the next round lists again.
                sys.stderr.write(f"push-relay: listing subscriptions failed: {exc}\n")
                subscriptions = []
            for subscription in subscriptions:
                thread = served.get(subscription.name)
                if not subscription.push_config.push_endpoint or (thread is not None and thread.is_alive()):
                    continue
                pusher = Pusher(subscriber, subscription, capacity, stopping)
                served[subscription.name] = threading.Thread(
                    target=pusher.run, name=f"pull {subscription.name}", daemon=True
                )
                served[subscription.name].start()
            stopping.wait(DISCOVERY_INTERVAL_SECONDS)
        # Before the channel closes: each pusher's answers in flight go out (a pusher still in
        # a long poll when the bound passes stops when the channel closes under it).
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for thread in served.values():
            thread.join(max(0.0, deadline - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.push_relay", description=__doc__)
    parser.add_argument("--project", required=True)
    parser.add_argument("--in-flight", type=int, default=in_flight_per_subscription())
    args = parser.parse_args(argv)
    emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not emulator_host:
        parser.error("PUBSUB_EMULATOR_HOST is not set")
    run(emulator_host, args.project, max(1, args.in_flight))


if __name__ == "__main__":
    main()
