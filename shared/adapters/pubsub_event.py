"""The Pub/Sub message inside the CloudEvent Eventarc delivers, on GCP and in the local stack alike."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


class UndecodableEvent(ValueError):
    """The CloudEvent does not carry a Pub/Sub message: permanent, it will never decode."""


@dataclass(frozen=True)
class PubSubMessage:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    topic: str | None


def decode_pubsub_event(cloud_event: Any) -> PubSubMessage:
    """The message of a `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent."""
    body = getattr(cloud_event, "data", None)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise UndecodableEvent("the event carries no Pub/Sub message")
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError) as exc:  # permanent: never decodes
        raise UndecodableEvent(f"message data is not base64: {exc}") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise UndecodableEvent("message attributes are not a map")
    message_id = str(message.get("messageId") or message.get("message_id") or _event_id(cloud_event) or "")
    source = _attribute(cloud_event, "source") or ""
    topic = source.rsplit("/topics/", 1)[-1] if "/topics/" in source else None
    return PubSubMessage(
        message_id=message_id,
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        topic=topic or None,
    )


def _attribute(cloud_event: Any, name: str) -> str | None:
    try:
        value = cloud_event[name]
    except (KeyError, TypeError):  # permanent: the attribute is absent; report it as such
        return None
    return str(value) if value is not None else None


def _event_id(cloud_event: Any) -> str | None:
    return _attribute(cloud_event, "id")
