"""`on_notify` (Pub/Sub `notify`): tell the environment's channels about an outcome, once each.

Decoupled from the deployment chain: a deployment publishes `notify` and moves on, so a chat
outage can delay a message but never fails or blocks a release. Retry discipline:
- a malformed notify event is permanent: logged and acknowledged;
- a channel still missing the message is transient: raise, Pub/Sub redelivers with backoff and
  only the undelivered channels are tried again; after the subscription's maximum attempts the
  event goes to the dead-letter topic and `on_dead_letter` announces it once, here, on the
  channels that did take it (a notification about a dead letter is only recorded, so the cycle
  ends; see shared/usecases/dead_letter.py).
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import notify_services
from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.domain.notify_message import NotifyMessageError, NotifyRequest
from shared.logging import get_logger, log_context
from shared.usecases.notify import notify_team

log = get_logger("notify")


@functions_framework.cloud_event
def on_notify(event: CloudEvent) -> None:
    services = notify_services()
    with log_context(event_id=event.get("id")):
        try:
            request = NotifyRequest.from_json(decode_pubsub_event(event).data)
        except (UndecodableEvent, NotifyMessageError) as exc:
            # Permanent: redelivering the same bytes cannot help; acknowledge and leave a trace.
            log.error("malformed notify event dropped", extra={"fields": {"error": str(exc)}})
            return
        with log_context(
            app=request.app, environment=request.environment, deployment_id=request.deployment_id
        ):
            # UndeliveredChannelsError and the store's errors propagate: transient, Pub/Sub redelivers.
            notify_team(services, request)
