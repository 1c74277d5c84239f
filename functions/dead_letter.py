"""`on_dead_letter` (every `*-dead-letter` topic): record and announce an event that exhausted
its retries. Recording is idempotent per message id and the announcement is deduplicated,
so a redelivery here is harmless; a transient Firestore or Pub/Sub error raises and retries."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import services
from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.logging import get_logger, log_context
from shared.usecases.dead_letter import record_dead_letter

log = get_logger("on_dead_letter")


@functions_framework.cloud_event
def on_dead_letter(cloud_event: CloudEvent) -> None:
    pipeline = services()
    with log_context(event_id=str(cloud_event["id"])):
        try:
            message = decode_pubsub_event(cloud_event)
        except UndecodableEvent as exc:  # permanent: nothing to record but the fact
            log.error("undecodable dead-lettered event: %s", exc)
            return
        with log_context(
            app=message.attributes.get("app"),
            environment=message.attributes.get("environment"),
            deployment_id=message.attributes.get("deployment_id"),
        ):
            record_dead_letter(
                pipeline,
                message_id=message.message_id,
                topic=message.topic or "unknown",
                data=message.data,
                attributes=message.attributes,
            )
