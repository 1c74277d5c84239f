"""`on_cool_down_complete` (Pub/Sub `cool-down-complete`): switch traffic once green is ready.

Until green is healthy and the cool-down is over this raises `NotReadyYet`: the function
answers 503 and the subscription's exponential backoff redelivers the message later. That
backoff is the timer; no function ever sleeps through a cool-down.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from functions.step_event import handle_step_event
from shared import topology
from shared.adapters.composition_root import services
from shared.logging import get_logger
from shared.usecases.switch import complete_cool_down

log = get_logger("on_cool_down_complete")


@functions_framework.cloud_event
def on_cool_down_complete(cloud_event: CloudEvent) -> None:
    handle_step_event(
        cloud_event,
        services(),
        complete_cool_down,
        topic=topology.COOL_DOWN_COMPLETE,
        action="switch",
        log=log,
    )
