"""`on_bake_check` (Pub/Sub `bake-check`): watch a live release through its bake window.

While the window is open and green looks fine this raises `NotReadyYet`: the function answers
503 and the subscription redelivers the message after its backoff, which is the poll. A breach
switches traffic back to the previous release at once (see shared/usecases/bake.py). Transient
Compute, Monitoring, Firestore or Pub/Sub errors raise too, and the redelivery resumes from the
record: a recorded verdict is never taken twice.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from functions.step_event import handle_step_event
from shared import topology
from shared.adapters.composition_root import services
from shared.logging import get_logger
from shared.usecases.bake import check_bake

log = get_logger("on_bake_check")


@functions_framework.cloud_event
def on_bake_check(cloud_event: CloudEvent) -> None:
    handle_step_event(
        cloud_event,
        services(),
        check_bake,
        topic=topology.BAKE_CHECK,
        action="verify",
        log=log,
    )
