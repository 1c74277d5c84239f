"""A function process killed with SIGKILL in the middle of a deployment is restarted by the local
stack's supervisor within seconds, and the deployment it was handling still goes live, once.

This is the crash the platform absorbs on Google Cloud (a replaced function instance) and the local
stack must absorb the same way: Pub/Sub redelivers what the dead process had not acknowledged, the
restarted process takes it, and the record carries the deployment on from where it was.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from devstack.processes import port_in_use
from tests.e2e.conftest import Pipeline, new_commit, wait_for

pytestmark = pytest.mark.stack

RESTART_WITHIN_SECONDS = 15
"""Bound for the poll only (the supervisor restarts at once; the server then imports main.py)."""


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
