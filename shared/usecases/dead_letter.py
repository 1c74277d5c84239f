"""on_dead_letter: an event exhausted its retries; record it and tell the team.

A dead-lettered `notify` event needs care, because telling the team is itself a `notify` event:
announcing it the ordinary way would send the same message to the channel that keeps failing,
which would fail, be dead-lettered, and be announced again, forever. So:
- an ordinary notification (a deployment outcome, a rejected message) that could not reach every
  channel is announced once, keyed on its own dedupe key, and only on the channels that did take
  it (on_notify leaves out the others, see `about_notification`);
- a notification that was itself about a dead-lettered event (including such an announcement)
  is recorded and logged, never announced again.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared import topology
from shared.domain.messages import stored_payload
from shared.domain.notify_message import DEDUPE_KEY_ATTRIBUTE, NotifyMessageError, NotifyRequest
from shared.logging import get_logger
from shared.ports import DeadLetteredEvent
from shared.usecases.services import Services, publish_notify

log = get_logger("dead_letter")

SOURCE_SUBSCRIPTION_ATTRIBUTE = "CloudPubSubDeadLetterSourceSubscription"
DELIVERY_ATTEMPT_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"
UNDELIVERED_KEY_PREFIX = "undelivered:"


def record_dead_letter(
    services: Services, *, message_id: str, topic: str, data: bytes, attributes: Mapping[str, str]
) -> DeadLetteredEvent:
    attempts_text = attributes.get(DELIVERY_ATTEMPT_ATTRIBUTE)
    event = DeadLetteredEvent(
        message_id=message_id,
        topic=topic,
        subscription=attributes.get(SOURCE_SUBSCRIPTION_ATTRIBUTE),
        delivery_attempts=int(attempts_text) if attempts_text and attempts_text.isdigit() else None,
        payload=stored_payload(data),
        attributes=dict(attributes),
        received_at=services.clock.now(),
    )
    services.store.record_dead_lettered(event)
    source = event.subscription or topic
    log.error("event dead-lettered from %s", source)
    if _is_notification(topic, attributes):
        announcement = _undelivered_notification_announcement(message_id, data, source)
    else:
        announcement = NotifyRequest(
            kind="dead_letter",
            app=attributes.get("app"),
            environment=attributes.get("environment"),
            status="dead_lettered",
            detail=f"message {message_id} from {source} exhausted its retries",
            dedupe_key=f"dead-letter:{message_id}",
            deployment_id=attributes.get("deployment_id"),
        )
    if announcement is not None:
        publish_notify(services, announcement)
    return event


def _is_notification(topic: str, attributes: Mapping[str, str]) -> bool:
    return DEDUPE_KEY_ATTRIBUTE in attributes or topic == topology.dead_letter_topic(topology.NOTIFY)


def _undelivered_notification_announcement(message_id: str, data: bytes, source: str) -> NotifyRequest | None:
    """The one announcement that a notification did not reach every channel, or None when it
    must not be announced (it was about a dead letter itself, or it does not decode)."""
    try:
        undelivered = NotifyRequest.from_json(data)
    except NotifyMessageError as exc:  # permanent: on_notify would have dropped it; nothing to announce
        log.error("dead-lettered notify event %s does not decode (%s); recorded only", message_id, exc)
        return None
    if undelivered.announces_a_dead_letter:
        log.error(
            "notification %s about a dead-lettered event could not be delivered everywhere; "
            "recorded only, so that the notify and dead-letter topics do not feed each other",
            undelivered.dedupe_key,
        )
        return None
    what = " ".join(part for part in (undelivered.app, undelivered.version) if part) or undelivered.dedupe_key
    return NotifyRequest(
        kind="dead_letter",
        app=undelivered.app,
        environment=undelivered.environment,
        status="dead_lettered",
        detail=(
            f"the {undelivered.status.replace('_', ' ')} notification for {what} ran out of retries "
            f"(message {message_id} from {source})"
        ),
        dedupe_key=f"{UNDELIVERED_KEY_PREFIX}{undelivered.dedupe_key}",
        deployment_id=undelivered.deployment_id,
        version=undelivered.version,
        about_notification=undelivered.dedupe_key,
    )
