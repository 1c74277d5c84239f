"""The Publisher port on Pub/Sub. PUBSUB_EMULATOR_HOST, when set, points it at the emulator.

Each message goes out in a Publish call of its own, through the generated (GAPIC) client. A step
publishes one message and must know it was accepted before it acknowledges its own, so the
batching client (`google.cloud.pubsub_v1.PublisherClient`) would only add its costs: a batch
thread, futures and a 10 ms batching window per message. Measured against the Pub/Sub emulator:
2.6 ms of CPU and 15 ms per publish through the batching client, 0.5 ms and 1 ms this way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.pubsub_v1 import PublisherClient
from google.pubsub_v1.types import PubsubMessage

from shared.ports import TransientError

PUBLISH_TIMEOUT_SECONDS = 30.0
"""The whole publish, the client's retries of transient errors included."""

ENV_PUBSUB_EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"


class PublishFailed(TransientError):
    """The message may not have reached Pub/Sub; the step is retried (its effects are idempotent)."""


def publisher_client() -> PublisherClient:
    """Pub/Sub's publisher API, or the emulator's at PUBSUB_EMULATOR_HOST (anonymously, as
    Google's batching client does there)."""
    emulator_host = os.environ.get(ENV_PUBSUB_EMULATOR_HOST)
    if emulator_host:
        return PublisherClient(
            client_options={"api_endpoint": emulator_host}, credentials=AnonymousCredentials()
        )
    return PublisherClient()


class PubSubPublisher:
    def __init__(self, project: str, client: PublisherClient | None = None) -> None:
        self.project = project
        self._client = client or publisher_client()

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        path = PublisherClient.topic_path(self.project, topic)
        message = PubsubMessage(data=data, attributes=dict(attributes))
        try:
            response = self._client.publish(topic=path, messages=[message], timeout=PUBLISH_TIMEOUT_SECONDS)
        except google_exceptions.GoogleAPIError as exc:  # transient: unavailable, deadline, retries spent
            raise PublishFailed(f"publishing to {topic} failed: {exc}") from exc
        return str(response.message_ids[0])
