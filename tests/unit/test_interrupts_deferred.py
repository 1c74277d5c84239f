"""Signals in the local stack: a Ctrl-C during a step that must not be cut in half (start a service,
record it) waits for the step's end, the processes started meanwhile still answer Ctrl-C
themselves, and a background service's loop is asked to stop by SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack import stack as stack_module
from devstack.processes import interrupts_deferred, start_service, stop_requested
from devstack.services import PUBSUB
from devstack.stack import Stack
from devstack.stack_state import StackState

CHILD_REPORT = (
    "import signal;"
    " print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),"
    " signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
)
"""A child's view of SIGINT: its blocked signals, and whether Ctrl-C would interrupt it."""


@pytest.fixture(autouse=True)
def signal_handlers_restored() -> Iterator[None]:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C as at a terminal: started in the background by a shell without job control, this
    # process (and each one it starts) would have inherited SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_ctrl_c_inside_the_block_interrupts_only_once_the_block_is_done() -> None:
    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        done.append("the rest of the block")
    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is before


def test_a_block_without_ctrl_c_leaves_the_handler_as_it_was() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interrupts_deferred():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


def test_a_process_started_inside_the_block_blocks_nothing_and_answers_ctrl_c() -> None:
    with interrupts_deferred():
        report = subprocess.run(
            [sys.executable, "-c", CHILD_REPORT], capture_output=True, text=True, timeout=30, check=True
        )
    assert report.stdout.split() == ["[]", "True"]


def test_a_ctrl_c_right_after_a_service_started_still_finds_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start_then_ctrl_c(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = start_service(*args, **kwargs)
        started.append(process)
        signal.raise_signal(signal.SIGINT)  # the worst moment: running, not yet recorded
        return process

    monkeypatch.setattr(stack_module, "start_service", start_then_ctrl_c)
    stack = Stack(tmp_path)
    stack._state = StackState(project="demo", started_at=datetime.now(UTC).isoformat())
    # Reads its stdin, which is /dev/null, so it ends by itself.
    argv = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    try:
        with pytest.raises(KeyboardInterrupt):
            stack._launch(PUBSUB, argv, ready=lambda: True)
    finally:
        for process in started:
            process.wait(timeout=30)
    saved = StackState.load(stack.state_file)
    assert saved is not None
    assert [(s.name, s.pid) for s in saved.services] == [(PUBSUB, started[0].pid)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_background_service_is_asked_to_stop_by_sigterm_and_by_ctrl_c(signum: int) -> None:
    stopping = stop_requested()
    assert not stopping.is_set()
    signal.raise_signal(signum)
    assert stopping.is_set()
