"""Push subscriptions wire each topic to its function as the topology says, with its policies."""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

from devstack.eventarc import MESSAGE_PUBLISHED, push_endpoint
from devstack.services import function_service
from devstack.subscriptions import emulator_clients, plan_subscriptions, push_subscription_name, wire_pubsub
from shared.topology import DEAD_LETTER_ENTRY_POINT, PUBSUB_TRIGGERS, Trigger, all_entry_points
from tests.conftest import TEST_PROJECT
from tests.integration.stack.conftest import DEAD_LETTER_PROBE, EchoStack


def _publish(stack: EchoStack, topic: str, data: bytes, **attributes: str) -> str:
    with emulator_clients(stack.stack.env["PUBSUB_EMULATOR_HOST"]) as (publisher, _):
        future = publisher.publish(publisher.topic_path(TEST_PROJECT, topic), data, **attributes)
        return str(future.result(timeout=10))


def test_every_subscription_carries_the_topology_policies(echo_stack: EchoStack) -> None:
    function_urls = {entry: echo_stack.stack.function_url(entry) for entry in all_entry_points()}
    with emulator_clients(echo_stack.stack.env["PUBSUB_EMULATOR_HOST"]) as (publisher, subscriber):
        for planned in plan_subscriptions(TEST_PROJECT, function_urls, PUBSUB_TRIGGERS):
            actual = subscriber.get_subscription(
                subscription=subscriber.subscription_path(TEST_PROJECT, planned.name), timeout=10
            )
            assert actual.topic == publisher.topic_path(TEST_PROJECT, planned.topic)
            assert actual.push_config.push_endpoint == push_endpoint(
                function_urls[planned.entry_point], TEST_PROJECT, planned.topic
            )
            # Off by default: the emulator stalls with retry policies (devstack/subscriptions.py).
            assert not actual.retry_policy.maximum_backoff
            if planned.dead_letter_topic:
                assert actual.dead_letter_policy.dead_letter_topic == publisher.topic_path(
                    TEST_PROJECT, planned.dead_letter_topic
                )
                assert actual.dead_letter_policy.max_delivery_attempts == planned.max_delivery_attempts
            else:
                assert not actual.dead_letter_policy.dead_letter_topic
    # Every trigger is wired, and every dead-letter topic goes to the announcer.
    entry_points = {
        (p.topic, p.entry_point) for p in plan_subscriptions(TEST_PROJECT, function_urls, PUBSUB_TRIGGERS)
    }
    for trigger in PUBSUB_TRIGGERS:
        assert (trigger.topic, trigger.entry_point) in entry_points
        if trigger.dead_letter_topic:
            assert (trigger.dead_letter_topic, DEAD_LETTER_ENTRY_POINT) in entry_points


def test_retry_policies_are_wired_from_the_topology_when_asked(echo_stack: EchoStack) -> None:
    probe = Trigger(f"retry-probe-{uuid.uuid4().hex[:8]}", "on_notify", 2, 30, 7)
    function_urls = {entry: echo_stack.stack.function_url(entry) for entry in all_entry_points()}
    host = echo_stack.stack.env["PUBSUB_EMULATOR_HOST"]
    plan = wire_pubsub(host, TEST_PROJECT, function_urls, [probe], retry_policies=True)
    with emulator_clients(host) as (_, subscriber):
        for planned in plan:
            actual = subscriber.get_subscription(
                subscription=subscriber.subscription_path(TEST_PROJECT, planned.name), timeout=10
            )
            assert actual.retry_policy.minimum_backoff.total_seconds() == planned.min_backoff_seconds
            assert actual.retry_policy.maximum_backoff.total_seconds() == planned.max_backoff_seconds
    assert (plan[0].min_backoff_seconds, plan[0].max_backoff_seconds) == (2, 30)


def _fail_concurrently_then_once_more(stack: EchoStack, topic: str) -> tuple[str, float]:
    """Three messages fail together for 2 s; then one more fails for 3 s. Returns its tag and end."""
    tag = uuid.uuid4().hex
    until = time.time() + 2
    for index in range(3):
        _publish(stack, topic, b"first", tag=f"{tag}-first-{index}", fail_until=str(until))
    stack.wait_for_records(
        lambda r: r["attributes"].get("tag", "").startswith(f"{tag}-first") and r["at"] >= until, 3
    )
    until = time.time() + 3
    _publish(stack, topic, b"later", tag=f"{tag}-later", fail_until=str(until))
    return f"{tag}-later", until


def test_a_failed_message_keeps_being_redelivered_after_concurrent_failures(echo_stack: EchoStack) -> None:
    trigger = Trigger(f"redelivery-probe-{uuid.uuid4().hex[:8]}", "on_notify", 1, 10, 50)
    function_urls = {entry: echo_stack.stack.function_url(entry) for entry in all_entry_points()}
    wire_pubsub(echo_stack.stack.env["PUBSUB_EMULATOR_HOST"], TEST_PROJECT, function_urls, [trigger])
    tag, until = _fail_concurrently_then_once_more(echo_stack, trigger.topic)
    # Delivered once more after it stopped failing: it was retried throughout.
    echo_stack.wait_for_records(lambda r: r["attributes"].get("tag") == tag and r["at"] >= until, timeout=15)


def test_each_topic_is_pushed_to_its_own_function(echo_stack: EchoStack) -> None:
    marker = uuid.uuid4().hex
    for trigger in PUBSUB_TRIGGERS:
        _publish(echo_stack, trigger.topic, f"to {trigger.entry_point}".encode(), marker=marker)
    delivered = echo_stack.wait_for_records(
        lambda record: record["attributes"].get("marker") == marker, count=len(PUBSUB_TRIGGERS)
    )
    assert sorted((r["entry_point"], r["data"]) for r in delivered) == sorted(
        (t.entry_point, f"to {t.entry_point}") for t in PUBSUB_TRIGGERS
    )


def test_every_push_reaches_its_function_as_the_cloudevent_eventarc_delivers(echo_stack: EchoStack) -> None:
    marker = uuid.uuid4().hex
    topics = {t.topic: t.entry_point for t in PUBSUB_TRIGGERS}
    topics |= {t.dead_letter_topic: DEAD_LETTER_ENTRY_POINT for t in PUBSUB_TRIGGERS if t.dead_letter_topic}
    published = {topic: _publish(echo_stack, topic, b"{}", marker=marker) for topic in topics}
    for topic, entry_point in topics.items():

        def this_delivery(record: dict[str, Any], topic: str = topic) -> bool:
            return bool(
                record["attributes"].get("marker") == marker and record["message_id"] == published[topic]
            )

        [record, *_] = echo_stack.wait_for_records(this_delivery)
        assert record["entry_point"] == entry_point
        assert record["event"]["type"] == MESSAGE_PUBLISHED
        assert record["event"]["source"] == f"//pubsub.googleapis.com/projects/{TEST_PROJECT}/topics/{topic}"
        assert record["event"]["subject"] is None  # as from Eventarc: Pub/Sub events have no subject
        assert record["event"]["id"] == record["message_id"] == published[topic]
        assert record["event"]["time"]
        subscription = push_subscription_name(topic, entry_point)
        assert record["subscription"] == f"projects/{TEST_PROJECT}/subscriptions/{subscription}"
        assert {"data", "attributes", "messageId", "message_id", "publishTime", "publish_time"} <= set(
            record["message_fields"]
        )


def test_a_failing_function_is_retried_then_dead_lettered_to_the_announcer(echo_stack: EchoStack) -> None:
    marker = uuid.uuid4().hex
    message_id = _publish(echo_stack, DEAD_LETTER_PROBE.topic, b"poison", marker=marker, fail="yes")
    attempts = echo_stack.wait_for_records(
        lambda r: (
            r["entry_point"] == DEAD_LETTER_PROBE.entry_point and r["attributes"].get("marker") == marker
        ),
        count=DEAD_LETTER_PROBE.max_delivery_attempts,
        timeout=60,
    )
    assert {r["message_id"] for r in attempts} == {message_id}
    announced = echo_stack.wait_for_records(
        lambda r: r["entry_point"] == DEAD_LETTER_ENTRY_POINT and r["attributes"].get("marker") == marker,
        timeout=30,
    )[0]
    assert announced["data"] == "poison"
    assert announced["event"]["source"].endswith(f"/topics/{DEAD_LETTER_PROBE.dead_letter_topic}")
    source = announced["attributes"].get("CloudPubSubDeadLetterSourceSubscription", "")
    assert source.endswith(f"{DEAD_LETTER_PROBE.topic}--{DEAD_LETTER_PROBE.entry_point.replace('_', '-')}")
    assert "CloudPubSubDeadLetterSourceDeliveryCount" in announced["attributes"]
    # A dead-lettered message is not delivered again to the failing function.
    assert (
        len(
            [
                r
                for r in echo_stack.records()
                if r["entry_point"] == DEAD_LETTER_PROBE.entry_point
                and r["attributes"].get("marker") == marker
            ]
        )
        == DEAD_LETTER_PROBE.max_delivery_attempts
    )


def test_many_pushes_of_one_subscription_are_in_flight_at_once(echo_stack: EchoStack) -> None:
    # The emulator alone pushes two at a time per subscription; the push relay adds capacity as
    # Pub/Sub has on GCP. Each delivery takes 3 s: two at a time, the sixth would start after 6 s.
    marker = uuid.uuid4().hex
    for index in range(10):
        _publish(echo_stack, "notify", b"{}", marker=marker, hold_seconds="3", index=str(index))
    delivered = echo_stack.wait_for_records(
        lambda r: r["entry_point"] == "on_notify" and r["attributes"].get("marker") == marker, count=10
    )
    started = sorted(r["at"] for r in delivered)
    overlapping = [at for at in started if at < started[0] + 3]
    assert len(overlapping) >= 6, f"only {len(overlapping)} deliveries began while the first was in flight"


def test_the_local_scheduler_ticks_the_watchdog(echo_stack: EchoStack) -> None:
    before = len(
        [r for r in echo_stack.records() if r["entry_point"] == "watchdog" and "scheduled_at" in r["data"]]
    )
    echo_stack.wait_for_records(
        lambda r: r["entry_point"] == "watchdog" and "scheduled_at" in r["data"], count=before + 2, timeout=15
    )


def test_the_http_function_is_served_on_its_own_port(echo_stack: EchoStack) -> None:
    request = urllib.request.Request(
        echo_stack.stack.env["RELEASECTL_ROLLBACK_URL"], data=b'{"app": "hello"}', method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert echo_stack.stack.function_url("rollback") == echo_stack.stack.env["RELEASECTL_ROLLBACK_URL"]
    assert echo_stack.stack.service(function_service("rollback")).alive
