"""`watchdog` (Pub/Sub `watchdog-tick`, from Cloud Scheduler): the pipeline's safety net.

Fails deployments past their deadline, re-publishes stalled steps, deletes drained blue
groups and collects templates and groups a crash left behind. Each problem is logged and retried on the next tick, so the tick itself is always
acknowledged: a failing tick would only pile up redeliveries of the same sweep.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import services
from shared.logging import get_logger, log_context
from shared.usecases.watchdog import run_watchdog

log = get_logger("watchdog")


@functions_framework.cloud_event
def watchdog(cloud_event: CloudEvent) -> None:
    pipeline = services()
    with log_context(event_id=str(cloud_event["id"])):
        report = run_watchdog(pipeline)
        if (
            report.failed
            or report.kicked
            or report.cleaned
            or report.collected
            or report.expired
            or report.errors
        ):
            log.info(
                "watchdog sweep",
                extra={
                    "fields": {
                        "failed": report.failed,
                        "kicked": report.kicked,
                        "cleaned": report.cleaned,
                        "expired": report.expired,
                        "collected": report.collected,
                        "errors": report.errors,
                    }
                },
            )
