"""The Publisher port on Pub/Sub. PUBSUB_EMULATOR_HOST, when set, points it at the emulator.

Each message goes out in a Publish call of its own, through the generated (GAPIC) client. A step
publishes one message and must know it was accepted before it acknowledges its own, so the
batching client (`google.cloud.pubsub_v1.PublisherClient`) would only add its costs: a batch
thread, futures and a 10 ms batching window per message (`python -m bench publish` prints both
ways' CPU and time per publish).
"""

from __future__ import annotations

from collections.abc import Mapping

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as retries
from google.pubsub_v1 import PublisherClient
from google.pubsub_v1.types import PubsubMessage

from shared.ports import TransientError

PUBLISH_TIMEOUT_SECONDS = 30.0
"""The whole publish, retries of transient errors included. The generated client's own default
retries for up to 600 s, longer than any function may run: a Pub/Sub outage would end the
function by its timeout instead of failing the step with an error it can answer."""

ATTEMPT_SHARE = 3
"""Each attempt may take a third of the whole, so a slow one still leaves room for a retry and the
last one ends within about a third past the limit."""


class PublishFailed(TransientError):
    """The message may not have reached Pub/Sub; the step is retried (its effects are idempotent)."""


def publish_retry(timeout: float) -> retries.Retry:
    """The generated client's retry of a Publish (same codes, same backoff), bounded by `timeout`:
    it gives up instead of sleeping past it."""
    return retries.Retry(
        initial=0.1,
        maximum=60.0,
        multiplier=4,
        predicate=retries.if_exception_type(
            google_exceptions.Aborted,
            google_exceptions.Cancelled,
            google_exceptions.DeadlineExceeded,
            google_exceptions.InternalServerError,
            google_exceptions.ResourceExhausted,
            google_exceptions.ServiceUnavailable,
            google_exceptions.Unknown,
        ),
        timeout=timeout,
    )


class PubSubPublisher:
    def __init__(
        self, project: str, client: PublisherClient | None = None, *, timeout: float = PUBLISH_TIMEOUT_SECONDS
    ) -> None:
        """`client` defaults to the generated client, which itself turns to an insecure channel
        without credentials at PUBSUB_EMULATOR_HOST, as Google's batching client does."""
        self.project = project
        self._client = client or PublisherClient()
        self._retry = publish_retry(timeout)
        self._attempt_timeout = timeout / ATTEMPT_SHARE

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        path = PublisherClient.topic_path(self.project, topic)
        message = PubsubMessage(data=data, attributes=dict(attributes))
        try:
            response = self._client.publish(
                topic=path, messages=[message], retry=self._retry, timeout=self._attempt_timeout
            )
        except google_exceptions.GoogleAPIError as exc:
            # Transient for the step whatever the cause (retries spent, or a refusal such as a
            # missing topic): it is redelivered until its dead-letter policy takes it, so a
            # message is never dropped here.
            raise PublishFailed(f"publishing to {topic} failed: {exc}") from exc
        return str(response.message_ids[0])
