"""`on_notify` (Pub/Sub `notify`): tell the environment's channels about an outcome, once each.

Decoupled from the deployment chain: a deployment publishes `notify` and moves on, so a chat
outage can delay a message but never fails or blocks a release. Retry discipline:
- a malformed notify event is permanent: logged and acknowledged;
- a channel still missing the message is transient: raise, Pub/Sub redelivers with backoff and
  only the undelivered channels are tried again; after the subscription's maximum attempts the
  event goes to the dead-letter topic and `on_dead_letter` announces it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from google.cloud import firestore

from shared.config import ENV_NOTIFICATIONS_FILE, ENV_PROJECT, PipelineConfig, load_pipeline_config
from shared.logging import get_logger, log_context
from shared.notifications.delivery import DeliveryReport, deliver
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


def decode_pubsub_data(event: CloudEvent) -> bytes:
    """The message bytes of a Pub/Sub CloudEvent (Eventarc's shape, and functions-framework's
    conversion of a raw push)."""
    data: Any = event.data
    message = data.get("message") if isinstance(data, dict) else None
    encoded = message.get("data") if isinstance(message, dict) else None
    if not isinstance(encoded, str):
        raise NotifyMessageError("event carries no Pub/Sub message data")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:  # permanent: these bytes never decode
        raise NotifyMessageError(f"Pub/Sub message data is not base64: {exc}") from exc


def handle(
    request: NotifyRequest, firestore_client: firestore.Client, config: PipelineConfig
) -> DeliveryReport:
    notification = FirestoreNotificationFacts(firestore_client, config).notification_for(request)
    senders = senders_for(
        config,
        notification.app,
        notification.environment,
        notifications_file=os.environ.get(ENV_NOTIFICATIONS_FILE) or None,
    )
    return deliver(notification, senders, FirestoreNotificationLedger(firestore_client))


@functions_framework.cloud_event
def on_notify(event: CloudEvent) -> None:
    event_id = event.get("id")
    with log_context(event_id=event_id):
        try:
            request = NotifyRequest.from_json(decode_pubsub_data(event))
        except NotifyMessageError as exc:
            # Permanent: redelivering the same bytes cannot help; acknowledge and leave a trace.
            log.error("malformed notify event dropped", extra={"fields": {"error": str(exc)}})
            return
        with log_context(
            app=request.app, environment=request.environment, deployment_id=request.deployment_id
        ):
            # UndeliveredChannelsError and Firestore errors propagate: transient, Pub/Sub redelivers.
            handle(request, _firestore(), _config())
