"""The push relay's body is the push body the Eventarc layer reads, and its redelivery delays are
the emulator push's second or the subscription's retry policy."""

from __future__ import annotations

import doctest

from google.pubsub_v1.types import PubsubMessage, ReceivedMessage

import devstack.push_relay
from devstack.eventarc import eventarc_request
from devstack.push_relay import push_body


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(devstack.push_relay).failed == 0


def test_a_relayed_push_becomes_the_cloudevent_eventarc_delivers() -> None:
    message = PubsubMessage(data=b"{}", attributes={"app": "hello"}, message_id="42")
    message._pb.publish_time.FromJsonString("2026-12-01T10:00:00.123Z")
    body = push_body(
        ReceivedMessage.pb(ReceivedMessage(ack_id="a", message=message)), "projects/p/subscriptions/s"
    )

    request = eventarc_request(body, "projects/p/topics/notify")

    assert request is not None
    assert request.headers["ce-id"] == "42"
    assert request.headers["ce-time"] == "2026-12-01T10:00:00.123000Z"
    assert request.headers["ce-source"] == "//pubsub.googleapis.com/projects/p/topics/notify"
