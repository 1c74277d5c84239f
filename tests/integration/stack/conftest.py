"""A session stack serving the test-only echo functions, so the push subscriptions are tested on their own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import Stack
from shared.topology import PUBSUB_TRIGGERS, Trigger
from tests.conftest import TEST_PROJECT

ECHO_SOURCE = Path(__file__).resolve().parent / "echo_functions.py"
RECORD_FILE = "echo.jsonl"

DEAD_LETTER_PROBE = Trigger("dead-letter-probe", "on_notify", 1, 1, 5)
"""An extra trigger with the shortest policy, so a dead-lettering takes seconds, not minutes."""


class EchoStack:
    """A started stack whose functions append what they receive to a JSON-lines file."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.record_file = stack.state_dir / RECORD_FILE

    def records(self) -> list[dict[str, Any]]:
        if not self.record_file.exists():
            return []
        lines = self.record_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for_records(
        self, matches: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [record for record in self.records() if matches(record)]
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(
            f"after {timeout:.0f} s only {len(found)} of {count} matching deliveries: {found}"
        )


@pytest.fixture(scope="session")
def echo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    state_dir = tmp_path_factory.mktemp("echo-stack")
    stack = Stack(
        state_dir,
        project=TEST_PROJECT,
        functions_source=ECHO_SOURCE,
        fixed_ports={},
        triggers=(*PUBSUB_TRIGGERS, DEAD_LETTER_PROBE),
        extra_function_env={"ECHO_RECORD_FILE": str(state_dir / RECORD_FILE)},
        scheduler_interval=1.0,
    )
    stack.start()
    try:
        yield EchoStack(stack)
    finally:
        stack.stop()
