"""Deploy freezes on the local stack, whose functions run on the wall clock.

The stack of this module has its own pipeline file: `staging` is frozen for 35 s out of every
43 s for the next quarter of an hour, so whenever a step runs there is a freeze about to end and
an open gap about to begin. A build published in a freeze waits `queued`, its history says until
when, and the stack's own watchdog starts it in the gap; a rollback published in a freeze starts
at once. The tests run in file order: the rollback goes back to the first test's first release.
Bounded polls only; no test sleeps a fixed time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1, firestore, pubsub_v1  # type: ignore[attr-defined]

from devstack.processes import environment_applied
from devstack.stack import DEFAULT_PIPELINE_TEMPLATE, Stack
from shared.artifact import build_artifact
from shared.domain.windows import rfc3339
from tests.conftest import TEST_PROJECT
from tests.e2e.conftest import REPO_ROOT, Pipeline, new_commit, wait_for

pytestmark = pytest.mark.stack

FROZEN = timedelta(seconds=35)
PERIOD = timedelta(seconds=43)
"""Each period: a freeze of FROZEN, then an open gap of 8 s (the scheduler ticks every 3 s)."""
PERIODS = 21
MARGIN_SECONDS = 20
"""What is left of a freeze when the test publishes into it: time for the message to arrive."""
REASON = "e2e freeze"
WAITING_LINE = re.compile(r"deploy freeze \(e2e freeze\): waiting until (\S+Z) \(")


class Freezes:
    """The schedule written into the stack's pipeline file."""

    def __init__(self, first_start: datetime) -> None:
        self.ranges = [(first_start + k * PERIOD, first_start + k * PERIOD + FROZEN) for k in range(PERIODS)]

    def toml(self) -> str:
        items = ", ".join(
            f'{{ start = "{rfc3339(start)}", end = "{rfc3339(end)}", reason = "{REASON}" }}'
            for start, end in self.ranges
        )
        return f"freezes = [{items}]\n"

    def covering(self, at: datetime) -> tuple[datetime, datetime] | None:
        return next(((start, end) for start, end in self.ranges if start <= at < end), None)

    def wait_until_frozen_for(self, seconds: float) -> datetime:
        """Wait (bounded) until inside a freeze with at least `seconds` left; its end."""

        def frozen_long_enough() -> datetime | None:
            now = datetime.now(UTC)
            found = self.covering(now)
            return found[1] if found and found[1] - now >= timedelta(seconds=seconds) else None

        return wait_for(frozen_long_enough, PERIOD.total_seconds() + 5, "a freeze with time left", 0.2)

    def wait_until_open(self) -> None:
        wait_for(lambda: self.covering(datetime.now(UTC)) is None, PERIOD.total_seconds() + 5, "an open gap")


@pytest.fixture(scope="module")
def freezes() -> Freezes:
    return Freezes(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5))


@pytest.fixture(scope="module")
def frozen_pipeline(freezes: Freezes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A stack of its own whose `hello` environments have the freeze schedule (app defaults)."""
    tmp = tmp_path_factory.mktemp("deploy-windows")
    template = DEFAULT_PIPELINE_TEMPLATE.read_text(encoding="utf-8")
    defaults = "[apps.hello.defaults]\n"
    assert defaults in template
    (tmp / "pipeline.toml").write_text(
        template.replace(defaults, defaults + freezes.toml()), encoding="utf-8"
    )
    stack = Stack(
        tmp / "stack", project=TEST_PROJECT, fixed_ports={}, pipeline_template=tmp / "pipeline.toml"
    )
    stack.start()
    assert stack.config is not None
    try:
        with environment_applied(stack.env):
            artifact = build_artifact(REPO_ROOT / "examples" / "hello", tmp / "dist")
            yield Pipeline(
                stack=stack,
                config=stack.config,
                publisher=pubsub_v1.PublisherClient(),
                db=firestore.Client(project=TEST_PROJECT),
                groups=compute_v1.RegionInstanceGroupManagersClient(
                    credentials=AnonymousCredentials(),
                    client_options=ClientOptions(api_endpoint=f"http://{stack.env['COMPUTE_EMULATOR_HOST']}"),
                ),
                project=TEST_PROJECT,
                artifacts={"hello": f"file://{artifact}"},
            )
    finally:
        stack.stop()


def entry(doc: dict[str, Any], status: str) -> dict[str, Any]:
    return next(h for h in doc["history"] if h["status"] == status)


def test_a_build_published_in_a_freeze_waits_queued_and_starts_when_it_ends(
    frozen_pipeline: Pipeline, freezes: Freezes
) -> None:
    # A first release, published in an open gap, so the next one has something to replace.
    freezes.wait_until_open()
    first = frozen_pipeline.publish_build("staging", new_commit(), "w-1")
    assert frozen_pipeline.wait_status(first, "live", "failed", timeout=150)["status"] == "live"

    freezes.wait_until_frozen_for(MARGIN_SECONDS)
    second = frozen_pipeline.publish_build("staging", new_commit(), "w-2", messages=["feat: later"])

    def waiting_line() -> re.Match[str] | None:
        doc = frozen_pipeline.deployment(second) or {"history": []}
        return next((m for h in doc["history"] if (m := WAITING_LINE.match(h.get("detail") or ""))), None)

    line = wait_for(waiting_line, 30, "the waiting line in the history")
    doc = frozen_pipeline.deployment(second)
    assert doc is not None
    admitted_at = entry(doc, "queued")["at"]
    freeze = freezes.covering(admitted_at)
    assert freeze is not None, "admitted outside every freeze"
    assert line.group(1) == rfc3339(freeze[1]), "the line names the end of the freeze it waits in"

    live = frozen_pipeline.wait_status(second, "live", "failed", timeout=150)
    assert live["status"] == "live" and live["version"] == "1.1.0"
    started_at = entry(live, "provisioning")["at"]
    assert started_at >= freeze[1], "started before its freeze ended"
    assert freezes.covering(started_at) is None, "started inside a freeze"


def test_a_rollback_published_in_a_freeze_starts_at_once(frozen_pipeline: Pipeline, freezes: Freezes) -> None:
    freeze_end = freezes.wait_until_frozen_for(MARGIN_SECONDS)
    answer = frozen_pipeline.rollback(
        {"app": "hello", "environment": "staging", "reason": "broken in the freeze"}, frozen_pipeline.token()
    )
    assert answer.status_code == 202, answer.text
    rollback = answer.json()["deployment_id"]

    started = frozen_pipeline.wait_status(
        rollback, "provisioning", "cooling_down", "switching", "live", timeout=30
    )
    started_at = entry(started, "provisioning")["at"]
    assert started_at < freeze_end and freezes.covering(started_at) is not None
    live = frozen_pipeline.wait_status(rollback, "live", "failed", timeout=120)
    assert live["status"] == "live" and live["version"] == "1.0.0" and live["rollback_of"]
