"""What the step functions (`start-rolling-replace`, `cool-down-complete`) do around their use
case: decode the internal step message, bind the log context, run the step, map its errors.

Retry discipline, the same for every step: a message that does not decode, or an environment
the configuration no longer has, is permanent (logged, acknowledged); `NotReadyYet` and every
other error raise, so Pub/Sub redelivers after its backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cloudevents.http import CloudEvent
from werkzeug.exceptions import ServiceUnavailable

from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.domain.messages import InvalidStepMessage, StepMessage
from shared.logging import log_context
from shared.usecases.services import NotReadyYet, Services, UnknownEnvironment

Step = Callable[[Services, StepMessage], object]


class StepNotReady(ServiceUnavailable):
    """Answers 503 so Pub/Sub redelivers after its backoff.

    An HTTP exception, not a plain one: the web framework under functions-framework turns it
    into its response without logging a traceback, and not-ready is the expected state for a
    whole cool-down, so each poll leaves one structured info line instead of a stack dump.
    """


def handle_step_event(
    cloud_event: CloudEvent,
    pipeline: Services,
    step: Step,
    *,
    topic: str,
    action: str,
    log: logging.Logger,
) -> None:
    """Run `step` for the step message in `cloud_event`.

    `topic` names the message in the log line about an undecodable one; `action` completes
    "cannot ..." when the environment is unknown. The caller passes its own `services()` so
    each entry point keeps its own (and tests can replace it per module).
    """
    with log_context(event_id=str(cloud_event["id"])):
        try:
            message = decode_pubsub_event(cloud_event)
            step_message = StepMessage.from_message(message.data)
        except (UndecodableEvent, InvalidStepMessage) as exc:  # permanent: it will never decode
            log.error("dropping an undecodable %s message: %s", topic, exc)
            return
        with log_context(
            app=step_message.app,
            environment=step_message.environment,
            deployment_id=step_message.deployment_id,
        ):
            try:
                step(pipeline, step_message)
            except NotReadyYet as exc:  # transient by design: redelivered after the backoff
                log.info("not ready yet: %s", exc)
                raise StepNotReady(f"not ready yet: {exc}") from exc
            except UnknownEnvironment as exc:  # permanent: the configuration no longer has it
                log.error("cannot %s: %s", action, exc)
