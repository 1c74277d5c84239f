"""`watchdog` (Pub/Sub `watchdog-tick`, from Cloud Scheduler): the pipeline's safety net.

Fails deployments past their deadline, re-publishes stalled steps, deletes drained blue
groups and collects templates and groups a crash left behind. Each problem is logged and retried on the next tick, so the tick itself is always
acknowledged: a failing tick would only pile up redeliveries of the same sweep.

One sweep at a time per instance: a tick that arrives while a sweep runs is acknowledged at once.
A sweep reads every unfinished, live and retired deployment and lists every group and template,
so with a hundred environments busy it can outlast the tick interval (seconds locally); sweeps
started side by side would each do the whole work again and race for the same deletions. The
running sweep does what the skipped tick would have done, and the next tick comes soon.
"""

from __future__ import annotations

import threading

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import services
from shared.logging import get_logger, log_context
from shared.usecases.watchdog import run_watchdog

log = get_logger("watchdog")

_sweeping = threading.Lock()


@functions_framework.cloud_event
def watchdog(cloud_event: CloudEvent) -> None:
    with log_context(event_id=str(cloud_event["id"])):
        if not _sweeping.acquire(blocking=False):
            log.info("a sweep is already running in this instance; this tick is left to it")
            return
        try:
            _sweep()
        finally:
            _sweeping.release()


def _sweep() -> None:
    report = run_watchdog(services())
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
