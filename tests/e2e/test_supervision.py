"""A function process killed with SIGKILL in the middle of a deployment is restarted by the local
stack's supervisor within seconds, and the deployment it was handling still goes live, once.

This is the crash the platform absorbs on Google Cloud (a replaced function instance) and the local
stack must absorb the same way: Pub/Sub redelivers what the dead process had not acknowledged, the
restarted process takes it, and the record carries the deployment on from where it was.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from devstack.processes import port_in_use
from devstack.services import PUSH_RELAY
from devstack.subscriptions import push_subscription_name
from shared import topology
from tests.e2e.conftest import Pipeline, new_commit, wait_for

pytestmark = pytest.mark.stack

RESTART_WITHIN_SECONDS = 15
"""Bound for the poll only (the supervisor restarts at once; the server then imports main.py)."""
RELEASES_TO_CATCH_A_HELD_POLL = 12
"""Releases the relay test makes at most until the relay holds one's cool-down poll: it held the
poll of 5 releases out of 10 (1, 2, 2 or 4 releases until one), so twelve all missing is a chance
of about 1 in 4000."""
MIN_HOLD_SECONDS = 0.5
HELD_AFTER_SECONDS = 0.5
"""How long after the relay says it holds a cool-down poll it is killed in the relay test (at most
half the time it holds it)."""


def test_a_function_killed_during_the_cool_down_is_restarted_and_the_deployment_goes_live(
    pipeline: Pipeline,
) -> None:
    stack = pipeline.stack
    victim = stack.service("function-on_cool_down_complete")
    deployment_id = pipeline.publish_build(
        "staging", new_commit(), f"ci-supervised-{time.time_ns()}", messages=["fix: survive a crash"]
    )
    cooling = pipeline.wait_status(deployment_id, "cooling_down", "switching", "live", "failed", timeout=60)
    assert cooling["status"] == "cooling_down", f"expected to catch the cool-down, got {cooling['status']}"

    # The handler of the step in flight dies without any chance to clean up.
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def back() -> bool:
        record = stack.service(victim.name)
        return record.pid != victim.pid and record.alive and port_in_use(record.port or 0)

    wait_for(back, RESTART_WITHIN_SECONDS, "the killed function to be restarted and listening", 0.1)
    back_after = time.monotonic() - killed_at
    record = stack.service(victim.name)
    assert record.restarts == victim.restarts + 1 and record.port == victim.port
    print(f"function-on_cool_down_complete back after {back_after:.1f} s")

    live = pipeline.wait_status(deployment_id, "live", "failed", timeout=60)
    story = [(h["status"], h.get("detail")) for h in live["history"]]
    assert live["status"] == "live", f"the deployment did not survive the crash: {story}"
    assert live.get("last_kick_at") is None, f"carried on only by the watchdog's re-publish: {story}"
    assert [status for status, _ in story].count("live") == 1
    wait_for(lambda: pipeline.serving("staging") == live["version"], 10, "staging to serve the new version")

    def live_notifications() -> list[object]:
        return [
            n
            for n in pipeline.notifications()
            if n["deployment_id"] == deployment_id and n["status"] == "live"
        ]

    wait_for(live_notifications, 15, "the live notification")
    assert len(live_notifications()) == 1


def test_the_push_relay_killed_during_the_cool_down_is_restarted_and_the_deployment_goes_live(
    pipeline: Pipeline,
) -> None:
    """The relay holds a cool-down's poll between its deliveries. Killed, it takes that with it: the
    message must come back when its next delivery was due, not when its pull's lease ends (a
    minute, past the local 30 s deadline), and must not be taken by one of the dead relay's pulls,
    which the emulator goes on serving (`PULL_TIMEOUT_SECONDS`). With ten-second pulls this failed
    one run in six; with leases sent after the pull's, four runs in four (then not yet knowing
    whether the relay, not the emulator, had delivered the poll). (A kill in the
    milliseconds between a pull's answer and the emulator taking the relay's short lease still
    leaves the message for a minute: the pause below keeps the kill out of that window.)"""
    stack = pipeline.stack
    relay = stack.service(PUSH_RELAY)
    relay_log = Path(relay.log)
    provision_log = Path(stack.service("function-on_start_rolling_replace").log)
    # The emulator's own push loops deliver some cool-down polls too (in the runs looked at, one
    # that took a poll's first delivery also took its redeliveries): such a release leaves the
    # relay nothing to lose. So releases go out until the relay holds one's poll (about half do).
    for attempt in range(1, RELEASES_TO_CATCH_A_HELD_POLL + 1):
        deployment_id, held_for = _release_and_watch_its_poll(pipeline, relay_log, provision_log)
        if held_for is not None:
            print(f"the relay held the poll of release {attempt}")
            break
    else:
        raise AssertionError(f"the relay held none of {RELEASES_TO_CATCH_A_HELD_POLL} releases' polls")
    # Placing the fault, not waiting for a condition: by then the answered poll is held on its short
    # lease, past the window between its pull and that lease, and its next delivery is not due yet.
    time.sleep(min(HELD_AFTER_SECONDS, held_for / 2))
    relay = stack.service(PUSH_RELAY)  # as it is now: the one that holds the poll
    os.kill(relay.pid, signal.SIGKILL)

    def back() -> bool:
        record = stack.service(PUSH_RELAY)
        return record.pid != relay.pid and record.alive

    wait_for(back, RESTART_WITHIN_SECONDS, "the killed relay to be restarted", 0.1)
    live = pipeline.wait_status(deployment_id, "live", "failed", timeout=60)
    story = [(h["status"], h.get("detail")) for h in live["history"]]
    assert live["status"] == "live", f"the deployment did not survive the relay's death: {story}"
    # Carried on by Pub/Sub's redelivery, not rescued at the deadline by the watchdog's re-publish.
    assert live.get("last_kick_at") is None, f"carried on only by the watchdog's re-publish: {story}"


def _release_and_watch_its_poll(
    pipeline: Pipeline, relay_log: Path, provision_log: Path
) -> tuple[str, float | None]:
    """Release to staging and watch its cool-down poll: the deployment, and how long the relay
    said it holds the poll, as soon as it says so; None if the release went live without that."""
    # Only what the relay says from now on: its log outlives stacks, whose message ids restart at 1.
    said_before = relay_log.stat().st_size if relay_log.exists() else 0
    deployment_id = pipeline.publish_build(
        "staging", new_commit(), f"ci-relay-killed-{time.time_ns()}", messages=["fix: survive the relay"]
    )
    cooling = pipeline.wait_status(deployment_id, "cooling_down", "switching", "live", "failed", timeout=60)
    assert cooling["status"] == "cooling_down", f"expected to catch the cool-down, got {cooling['status']}"
    poll_id = wait_for(
        lambda: _poll_message_id(provision_log, deployment_id), 10, "the cool-down's poll to be published"
    )

    def held_or_over() -> float | str | None:
        held = _held_by_relay(relay_log, said_before, poll_id)
        if held is not None:
            return held
        record = pipeline.deployment(deployment_id)
        return record["status"] if record and record["status"] in ("live", "failed") else None

    outcome = wait_for(held_or_over, 30, f"the relay to hold poll {poll_id} or the release to end", 0.05)
    if isinstance(outcome, float):
        return deployment_id, outcome
    assert outcome == "live", f"{deployment_id} ended {outcome} with the relay untouched"
    return deployment_id, None


def _poll_message_id(provision_log: Path, deployment_id: str) -> str | None:
    """The Pub/Sub message id of the deployment's cool-down poll, from the log of the step that
    published it; None before it is published."""
    for line in provision_log.read_text(encoding="utf-8", errors="replace").splitlines():
        if deployment_id not in line or "published cool-down-complete" not in line:
            continue
        entry = json.loads(line)
        if entry.get("step_for") == deployment_id:
            return str(entry["message_id"])
    return None


def _held_by_relay(relay_log: Path, offset: int, message_id: str) -> float | None:
    """For how long the relay said, past `offset` in its log, it holds `message_id` after an
    answered delivery, the first time it was for half a second or more (a push that took its
    whole backoff is held for 0 s); None if it has not."""
    if not relay_log.exists():
        return None
    with relay_log.open("rb") as log:
        log.seek(offset)
        said = log.read().decode("utf-8", errors="replace")
    subscription = push_subscription_name(topology.COOL_DOWN_COMPLETE, "on_cool_down_complete")
    holds = re.findall(
        rf"{re.escape(subscription)}: message {re.escape(message_id)} answered \d+; held for ([0-9.]+) s",
        said,
    )
    return next((float(held) for held in holds if float(held) >= MIN_HOLD_SECONDS), None)
