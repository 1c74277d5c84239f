"""`on_build_succeeded` (Pub/Sub `build-succeeded`): version the build, record it, start or queue it.

Retry discipline: a bad message is permanent, so the use case records and announces it and
this returns normally (acknowledged). Anything transient (Firestore, Pub/Sub) raises, and
the subscription redelivers; a redelivery of an admitted build is a no-op that re-publishes
the next step in case the first attempt crashed before publishing it.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import services
from shared.adapters.pubsub_event import UndecodableEvent, decode_pubsub_event
from shared.logging import get_logger, log_context
from shared.usecases.admit_build import admit_build, reject_build_event

log = get_logger("on_build_succeeded")


@functions_framework.cloud_event
def on_build_succeeded(cloud_event: CloudEvent) -> None:
    pipeline = services()
    try:
        message = decode_pubsub_event(cloud_event)
    except UndecodableEvent as exc:  # permanent: the envelope itself is broken; record it as rejected
        with log_context(event_id=str(cloud_event["id"])):
            reject_build_event(pipeline, b"", {}, str(cloud_event["id"]), str(exc))
        return
    with log_context(
        app=message.attributes.get("app"),
        environment=message.attributes.get("environment"),
        event_id=message.message_id,
    ):
        result = admit_build(pipeline, message.data, message.attributes, message.message_id)
        log.info("build-succeeded handled: %s", result.outcome, extra={"fields": {"version": result.version}})
