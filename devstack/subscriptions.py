"""Wire topics to functions with push subscriptions, as Eventarc does on GCP.

Every trigger in `shared.topology` gets its topic, its dead-letter topic, and a push subscription
to its function carrying the trigger's dead-letter policy and, where asked, its retry policy
(exponential backoff). Every dead-letter topic gets a push subscription to `on_dead_letter`.
Each push goes to the function's URL plus the topic's path (`devstack.eventarc.push_endpoint`),
where the function server turns it into the CloudEvent Eventarc delivers on GCP.

Why the retry policy is off by default: the Pub/Sub emulator (Cloud CLI 528) stops redelivering on
a subscription with a retry policy once several messages have failed on it at the same time: its
delayed-redelivery task ends on an internal error and never runs again, so every later failed
message waits forever. It is a race, so not every run shows it, but pipeline runs did: a green
group's cool-down-complete message was never redelivered and the deployment missed its deadline.
As far as the emulator's compiled MessageBacklog shows, its schedule of delayed redeliveries can
hold one ack id twice; the second redelivery finds no record of it, raises, and a periodic Java
task that raises is never run again. Without a retry
policy the emulator redelivers a failed push every second, reliably, and still counts attempts
for the dead-letter policy. So locally a handler that raises is retried each second until
`max_delivery_attempts`, instead of with exponential backoff; what is retried, how often in
total, and where it then goes are exactly as on GCP, where Terraform sets the full policy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]
from google.protobuf import duration_pb2
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from devstack.eventarc import push_endpoint
from shared.topology import DEAD_LETTER_ENTRY_POINT, PUBSUB_TRIGGERS, Trigger

# The dead-letter announcer gets a modest policy of its own; its own failures are only logged.
DEAD_LETTER_MIN_BACKOFF_SECONDS = 1
DEAD_LETTER_MAX_BACKOFF_SECONDS = 60
ACK_DEADLINE_SECONDS = 60
RPC_TIMEOUT_SECONDS = 10.0


def push_subscription_name(topic: str, entry_point: str) -> str:
    """The subscription that pushes `topic` to `entry_point`, e.g. `notify--on-notify`."""
    return f"{topic}--{entry_point.replace('_', '-')}"


@dataclass(frozen=True)
class PushSubscription:
    name: str
    topic: str
    entry_point: str
    push_endpoint: str
    min_backoff_seconds: int
    max_backoff_seconds: int
    dead_letter_topic: str | None
    max_delivery_attempts: int | None
    with_retry_policy: bool = False


def plan_subscriptions(
    project: str,
    function_urls: Mapping[str, str],
    triggers: Sequence[Trigger] = PUBSUB_TRIGGERS,
    retry_policies: bool = False,
) -> list[PushSubscription]:
    """Every push subscription the topology calls for, given each entry point's URL."""
    plan: list[PushSubscription] = []
    for trigger in triggers:
        plan.append(
            PushSubscription(
                name=push_subscription_name(trigger.topic, trigger.entry_point),
                topic=trigger.topic,
                entry_point=trigger.entry_point,
                push_endpoint=push_endpoint(function_urls[trigger.entry_point], project, trigger.topic),
                min_backoff_seconds=trigger.min_backoff_seconds,
                max_backoff_seconds=trigger.max_backoff_seconds,
                dead_letter_topic=trigger.dead_letter_topic,
                max_delivery_attempts=trigger.max_delivery_attempts if trigger.dead_letter_topic else None,
                with_retry_policy=retry_policies,
            )
        )
        if trigger.dead_letter_topic:
            plan.append(
                PushSubscription(
                    name=push_subscription_name(trigger.dead_letter_topic, DEAD_LETTER_ENTRY_POINT),
                    topic=trigger.dead_letter_topic,
                    entry_point=DEAD_LETTER_ENTRY_POINT,
                    push_endpoint=push_endpoint(
                        function_urls[DEAD_LETTER_ENTRY_POINT], project, trigger.dead_letter_topic
                    ),
                    min_backoff_seconds=DEAD_LETTER_MIN_BACKOFF_SECONDS,
                    max_backoff_seconds=DEAD_LETTER_MAX_BACKOFF_SECONDS,
                    dead_letter_topic=None,
                    max_delivery_attempts=None,
                    with_retry_policy=retry_policies,
                )
            )
    return plan


@contextmanager
def emulator_clients(
    emulator_host: str,
) -> Iterator[tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]]:
    """Pub/Sub clients on a plaintext channel to the emulator, without touching os.environ."""
    channel = grpc.insecure_channel(emulator_host)
    try:
        yield (
            pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel)),
            pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel)),
        )
    finally:
        channel.close()


def wire_pubsub(
    emulator_host: str,
    project: str,
    function_urls: Mapping[str, str],
    triggers: Sequence[Trigger] = PUBSUB_TRIGGERS,
    retry_policies: bool = False,
) -> list[PushSubscription]:
    """Create every topic and push subscription; existing ones are left as they are."""
    plan = plan_subscriptions(project, function_urls, triggers, retry_policies)
    topics = {t.topic for t in triggers} | {t.dead_letter_topic for t in triggers if t.dead_letter_topic}
    with emulator_clients(emulator_host) as (publisher, subscriber):
        for topic in sorted(topics):
            with suppress(api_exceptions.AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(project, topic), timeout=RPC_TIMEOUT_SECONDS)
        for subscription in plan:
            request: dict[str, object] = {
                "name": subscriber.subscription_path(project, subscription.name),
                "topic": publisher.topic_path(project, subscription.topic),
                "push_config": pubsub_v1.types.PushConfig(push_endpoint=subscription.push_endpoint),
                "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            }
            if subscription.with_retry_policy:
                request["retry_policy"] = pubsub_v1.types.RetryPolicy(
                    minimum_backoff=duration_pb2.Duration(seconds=subscription.min_backoff_seconds),
                    maximum_backoff=duration_pb2.Duration(seconds=subscription.max_backoff_seconds),
                )
            if subscription.dead_letter_topic and subscription.max_delivery_attempts:
                request["dead_letter_policy"] = pubsub_v1.types.DeadLetterPolicy(
                    dead_letter_topic=publisher.topic_path(project, subscription.dead_letter_topic),
                    max_delivery_attempts=subscription.max_delivery_attempts,
                )
            with suppress(api_exceptions.AlreadyExists):
                subscriber.create_subscription(request=request, timeout=RPC_TIMEOUT_SECONDS)
    return plan
