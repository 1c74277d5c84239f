"""`on_start_rolling_replace` (Pub/Sub `start-rolling-replace`): create green beside blue.

Retry discipline: an undecodable message or an unknown deployment is permanent (logged,
acknowledged). Compute configuration errors fail the deployment inside the use case.
Transient Compute, Firestore or Pub/Sub errors raise, and the redelivery finds the resources
the first attempt made (names derive from the deployment id).
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from functions.step_event import handle_step_event
from shared import topology
from shared.adapters.composition_root import services
from shared.logging import get_logger
from shared.usecases.provision import start_rolling_replace

log = get_logger("on_start_rolling_replace")


@functions_framework.cloud_event
def on_start_rolling_replace(cloud_event: CloudEvent) -> None:
    handle_step_event(
        cloud_event,
        services(),
        start_rolling_replace,
        topic=topology.START_ROLLING_REPLACE,
        action="provision",
        log=log,
    )
