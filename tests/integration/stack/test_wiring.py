"""Push subscriptions wire each topic to its function as the topology says, with its policies."""

from __future__ import annotations

import urllib.request
import uuid

from devstack.stack import function_service
from devstack.wiring import emulator_clients, plan_subscriptions
from shared.topology import DEAD_LETTER_ENTRY_POINT, PUBSUB_TRIGGERS, all_entry_points
from tests.conftest import TEST_PROJECT
from tests.integration.stack.conftest import DEAD_LETTER_PROBE, EchoStack


def _publish(stack: EchoStack, topic: str, data: bytes, **attributes: str) -> str:
    with emulator_clients(stack.stack.env["PUBSUB_EMULATOR_HOST"]) as (publisher, _):
        future = publisher.publish(publisher.topic_path(TEST_PROJECT, topic), data, **attributes)
        return str(future.result(timeout=10))


def test_every_subscription_carries_the_topology_policies(echo_stack: EchoStack) -> None:
    function_urls = {entry: echo_stack.stack.function_url(entry) for entry in all_entry_points()}
    with emulator_clients(echo_stack.stack.env["PUBSUB_EMULATOR_HOST"]) as (publisher, subscriber):
        for planned in plan_subscriptions(function_urls, PUBSUB_TRIGGERS):
            actual = subscriber.get_subscription(
                subscription=subscriber.subscription_path(TEST_PROJECT, planned.name), timeout=10
            )
            assert actual.topic == publisher.topic_path(TEST_PROJECT, planned.topic)
            assert actual.push_config.push_endpoint == function_urls[planned.entry_point]
            assert actual.retry_policy.minimum_backoff.total_seconds() == planned.min_backoff_seconds
            assert actual.retry_policy.maximum_backoff.total_seconds() == planned.max_backoff_seconds
            if planned.dead_letter_topic:
                assert actual.dead_letter_policy.dead_letter_topic == publisher.topic_path(
                    TEST_PROJECT, planned.dead_letter_topic
                )
                assert actual.dead_letter_policy.max_delivery_attempts == planned.max_delivery_attempts
            else:
                assert not actual.dead_letter_policy.dead_letter_topic
    # Every trigger is wired, and every dead-letter topic goes to the announcer.
    entry_points = {(p.topic, p.entry_point) for p in plan_subscriptions(function_urls, PUBSUB_TRIGGERS)}
    for trigger in PUBSUB_TRIGGERS:
        assert (trigger.topic, trigger.entry_point) in entry_points
        if trigger.dead_letter_topic:
            assert (trigger.dead_letter_topic, DEAD_LETTER_ENTRY_POINT) in entry_points


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
