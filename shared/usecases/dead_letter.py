"""on_dead_letter: an event exhausted its retries; record it and tell the team."""

from __future__ import annotations

from collections.abc import Mapping

from shared.logging import get_logger
from shared.notify_message import NotifyRequest
from shared.ports import DeadLetteredEvent
from shared.usecases.services import Services, publish_notify

log = get_logger("dead_letter")

MAX_STORED_PAYLOAD = 4096
SOURCE_SUBSCRIPTION_ATTRIBUTE = "CloudPubSubDeadLetterSourceSubscription"
DELIVERY_ATTEMPT_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"


def record_dead_letter(
    services: Services, *, message_id: str, topic: str, data: bytes, attributes: Mapping[str, str]
) -> DeadLetteredEvent:
    attempts_text = attributes.get(DELIVERY_ATTEMPT_ATTRIBUTE)
    event = DeadLetteredEvent(
        message_id=message_id,
        topic=topic,
        subscription=attributes.get(SOURCE_SUBSCRIPTION_ATTRIBUTE),
        delivery_attempts=int(attempts_text) if attempts_text and attempts_text.isdigit() else None,
        payload=data[:MAX_STORED_PAYLOAD].decode("utf-8", errors="replace"),
        attributes=dict(attributes),
        received_at=services.clock.now(),
    )
    services.store.record_dead_lettered(event)
    source = event.subscription or topic
    log.error("event dead-lettered from %s", source)
    publish_notify(
        services,
        NotifyRequest(
            kind="dead_letter",
            app=attributes.get("app"),
            environment=attributes.get("environment"),
            status="dead_lettered",
            detail=f"message {message_id} from {source} exhausted its retries",
            dedupe_key=f"dead-letter:{message_id}",
            deployment_id=attributes.get("deployment_id"),
        ),
    )
    return event
