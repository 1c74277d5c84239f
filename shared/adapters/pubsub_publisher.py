"""The Publisher port on Pub/Sub. PUBSUB_EMULATOR_HOST, when set, points it at the emulator."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from shared.ports import TransientError

PUBLISH_TIMEOUT_SECONDS = 30.0


class PublishFailed(TransientError):
    """The message may not have reached Pub/Sub; the step is retried (its effects are idempotent)."""


class PubSubPublisher:
    def __init__(self, project: str, client: pubsub_v1.PublisherClient | None = None) -> None:
        self.project = project
        self._client = client or pubsub_v1.PublisherClient()

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        path = self._client.topic_path(self.project, topic)
        try:
            future = self._client.publish(path, data, **dict(attributes))
            return str(future.result(timeout=PUBLISH_TIMEOUT_SECONDS))
        except (google_exceptions.GoogleAPIError, concurrent.futures.TimeoutError) as exc:  # transient
            raise PublishFailed(f"publishing to {topic} failed: {exc}") from exc
