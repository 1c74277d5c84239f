"""`on_start_rolling_replace` (Pub/Sub `start-rolling-replace`): create green beside blue.

Retry discipline: an undecodable message or an unknown deployment is permanent (logged,
acknowledged). Compute configuration errors fail the deployment inside the use case.
Transient Compute, Firestore or Pub/Sub errors raise, and the redelivery finds the resources
the first attempt made (names derive from the deployment id).
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.adapters.wiring import services
from shared.domain.messages import InvalidStepMessage, StepMessage
from shared.logging import get_logger, log_context
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import UnknownEnvironment

log = get_logger("on_start_rolling_replace")


@functions_framework.cloud_event
def on_start_rolling_replace(cloud_event: CloudEvent) -> None:
    pipeline = services()
    with log_context(event_id=str(cloud_event["id"])):
        try:
            message = decode_pubsub_event(cloud_event)
            step = StepMessage.from_message(message.data)
        except (UndecodableEvent, InvalidStepMessage) as exc:  # permanent: it will never decode
            log.error("dropping an undecodable start-rolling-replace message: %s", exc)
            return
        with log_context(app=step.app, environment=step.environment, deployment_id=step.deployment_id):
            try:
                start_rolling_replace(pipeline, step)
            except UnknownEnvironment as exc:  # permanent: the configuration no longer has it
                log.error("cannot provision: %s", exc)
