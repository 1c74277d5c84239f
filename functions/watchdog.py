"""`watchdog` (Pub/Sub `watchdog-tick`, from Cloud Scheduler): the pipeline's safety net.

Fails deployments past their deadline, re-publishes stalled steps, deletes drained blue
groups and collects templates and groups a crash left behind. Each problem is logged and retried on the next tick, so the tick itself is always
acknowledged: a failing tick would only pile up redeliveries of the same sweep.

Leaks are looked for at most every LEAK_COLLECTION_INTERVAL per instance: on Google Cloud, where
Cloud Scheduler ticks every minute, on every tick; locally, where the tick comes every few seconds,
on one tick in ten, since listing every group and template and reading every deployment that needs
one was most of a sweep's work with a hundred environments.

One sweep at a time per instance: a tick that arrives while a sweep runs is acknowledged at once.
A sweep reads every unfinished, baking and retired deployment (and, collecting leaks, lists every
group and template), so with a hundred environments busy it can outlast the tick interval
(seconds locally); sweeps started side by side would each do the whole work again and race for
the same deletions. The running sweep does what the skipped tick would have done, and the next
tick comes soon.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import functions_framework
from cloudevents.http import CloudEvent

from shared.adapters.composition_root import services
from shared.logging import get_logger, log_context
from shared.usecases.watchdog import run_watchdog

log = get_logger("watchdog")

LEAK_COLLECTION_INTERVAL = timedelta(seconds=30)

_sweeping = threading.Lock()
_leaks_looked_for_at: datetime | None = None
"""When this instance last collected leaks; only read and written while `_sweeping` is held."""


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
    global _leaks_looked_for_at
    pipeline = services()
    now = pipeline.clock.now()
    look_for_leaks = _leaks_looked_for_at is None or now - _leaks_looked_for_at >= LEAK_COLLECTION_INTERVAL
    report = run_watchdog(pipeline, look_for_leaks=look_for_leaks)
    if look_for_leaks:
        _leaks_looked_for_at = now
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
