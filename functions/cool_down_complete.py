"""`on_cool_down_complete` (Pub/Sub `cool-down-complete`): switch traffic once green is ready.

Until green is healthy and the cool-down is over this raises `NotReadyYet`: the function
answers 500 and the subscription's exponential backoff redelivers the message later. That
backoff is the timer; no function ever sleeps through a cool-down.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.adapters.wiring import services
from shared.domain.messages import InvalidStepMessage, StepMessage
from shared.logging import get_logger, log_context
from shared.usecases.services import NotReadyYet, UnknownEnvironment
from shared.usecases.switch import complete_cool_down

log = get_logger("on_cool_down_complete")


@functions_framework.cloud_event
def on_cool_down_complete(cloud_event: CloudEvent) -> None:
    pipeline = services()
    with log_context(event_id=str(cloud_event["id"])):
        try:
            message = decode_pubsub_event(cloud_event)
            step = StepMessage.from_message(message.data)
        except (UndecodableEvent, InvalidStepMessage) as exc:  # permanent: it will never decode
            log.error("dropping an undecodable cool-down-complete message: %s", exc)
            return
        with log_context(app=step.app, environment=step.environment, deployment_id=step.deployment_id):
            try:
                complete_cool_down(pipeline, step)
            except NotReadyYet as exc:  # transient by design: redelivered after the backoff
                log.info("not ready yet: %s", exc)
                raise
            except UnknownEnvironment as exc:  # permanent: the configuration no longer has it
                log.error("cannot switch: %s", exc)
