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

import dataclasses
import functools
import os

import functions_framework
from cloudevents.http import CloudEvent
from google.cloud import firestore

from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.config import ENV_NOTIFICATIONS_FILE, ENV_PROJECT, PipelineConfig, load_pipeline_config
from shared.logging import get_logger, log_context
from shared.notifications.delivery import DeliveryReport, deliver, without_channels_that_failed
from shared.notifications.firestore import FirestoreNotificationFacts, FirestoreNotificationLedger
from shared.notifications.senders import senders_for
from shared.notify_message import NotifyMessageError, NotifyRequest

log = get_logger("notify")


@functools.cache
def _config() -> PipelineConfig:
    # Loaded once per instance (cold start); a bad file fails here with the key named.
    return load_pipeline_config()


@functools.cache
def _firestore() -> firestore.Client:
    return firestore.Client(project=os.environ.get(ENV_PROJECT) or None)


def handle(
    request: NotifyRequest, firestore_client: firestore.Client, config: PipelineConfig
) -> DeliveryReport:
    notification = FirestoreNotificationFacts(firestore_client, config).notification_for(request)
    ledger = FirestoreNotificationLedger(firestore_client)
    senders = senders_for(
        config,
        notification.app,
        notification.environment,
        notifications_file=os.environ.get(ENV_NOTIFICATIONS_FILE) or None,
        # Operational: the operations channels get it too (an exhausted event, collected leaks).
        operational=notification.kind in ("dead_letter", "leaks_collected"),
    )
    if request.about_notification:
        # Announcing that a notification ran out of retries: not on the channels that failed it.
        senders, left_out = without_channels_that_failed(
            senders, ledger.channel_states(request.about_notification)
        )
        if left_out:
            notification = dataclasses.replace(
                notification, detail=f"{notification.detail}; not delivered to {', '.join(left_out)}"
            )
    return deliver(notification, senders, ledger)


@functions_framework.cloud_event
def on_notify(event: CloudEvent) -> None:
    event_id = event.get("id")
    with log_context(event_id=event_id):
        try:
            request = NotifyRequest.from_json(decode_pubsub_event(event).data)
        except (UndecodableEvent, NotifyMessageError) as exc:
            # Permanent: redelivering the same bytes cannot help; acknowledge and leave a trace.
            log.error("malformed notify event dropped", extra={"fields": {"error": str(exc)}})
            return
        with log_context(
            app=request.app, environment=request.environment, deployment_id=request.deployment_id
        ):
            # UndeliveredChannelsError and Firestore errors propagate: transient, Pub/Sub redelivers.
            handle(request, _firestore(), _config())
