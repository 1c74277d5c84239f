"""Test-only functions source: every entry point of the topology, each recording what it receives.

Each delivery is appended as one JSON line to $ECHO_RECORD_FILE. A message whose attributes carry
`fail=yes` (or `fail_until=<epoch seconds>`, until then) makes the function raise, so functions-framework answers 500 and Pub/Sub redelivers
(and finally dead-letters) it, exactly as with the real functions. `hold_seconds=S` makes it answer only
after S seconds (at most 10), so deliveries overlap.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import time
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent


class EchoFailure(RuntimeError):
    """Raised on request, to exercise redelivery and dead-lettering."""


def _record(entry_point: str, entry: dict[str, Any]) -> None:
    line = json.dumps({"entry_point": entry_point, "at": time.time(), **entry}, sort_keys=True)
    with open(os.environ["ECHO_RECORD_FILE"], "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line + "\n")


def _echo(entry_point: str, event: CloudEvent) -> None:
    message = event.data.get("message", {}) if isinstance(event.data, dict) else {}
    attributes = message.get("attributes") or {}
    data = base64.b64decode(message.get("data") or b"").decode("utf-8", errors="replace")
    _record(
        entry_point,
        {
            "attributes": attributes,
            "data": data,
            "message_id": message.get("messageId") or message.get("message_id"),
            "subscription": event.data.get("subscription") if isinstance(event.data, dict) else None,
            "message_fields": sorted(message),
            # The CloudEvent's own attributes, to compare with what Eventarc sets on GCP.
            "event": {name: event.get(name) for name in ("type", "source", "subject", "id", "time")},
        },
    )
    time.sleep(min(10.0, float(attributes.get("hold_seconds", 0))))
    if attributes.get("fail") == "yes":
        raise EchoFailure(f"{entry_point}: failing as asked")
    if time.time() < float(attributes.get("fail_until", 0)):
        raise EchoFailure(f"{entry_point}: failing until {attributes['fail_until']} as asked")


@functions_framework.cloud_event
def on_build_succeeded(event: CloudEvent) -> None:
    _echo("on_build_succeeded", event)


@functions_framework.cloud_event
def on_start_rolling_replace(event: CloudEvent) -> None:
    _echo("on_start_rolling_replace", event)


@functions_framework.cloud_event
def on_cool_down_complete(event: CloudEvent) -> None:
    _echo("on_cool_down_complete", event)


@functions_framework.cloud_event
def on_bake_check(event: CloudEvent) -> None:
    _echo("on_bake_check", event)


@functions_framework.cloud_event
def on_notify(event: CloudEvent) -> None:
    _echo("on_notify", event)


@functions_framework.cloud_event
def watchdog(event: CloudEvent) -> None:
    _echo("watchdog", event)


@functions_framework.cloud_event
def on_dead_letter(event: CloudEvent) -> None:
    _echo("on_dead_letter", event)


@functions_framework.http
def rollback(request: flask.Request) -> flask.Response:
    _record("rollback", {"method": request.method, "body": request.get_data(as_text=True)})
    return flask.jsonify({"echo": "rollback"})


@functions_framework.http
def promote(request: flask.Request) -> flask.Response:
    _record("promote", {"method": request.method, "body": request.get_data(as_text=True)})
    return flask.jsonify({"echo": "promote"})


@functions_framework.http
def approve(request: flask.Request) -> flask.Response:
    _record("approve", {"method": request.method, "body": request.get_data(as_text=True)})
    return flask.jsonify({"echo": "approve"})


@functions_framework.http
def dashboard(request: flask.Request) -> flask.Response:
    _record("dashboard", {"method": request.method, "body": request.get_data(as_text=True)})
    return flask.jsonify({"echo": "dashboard"})
