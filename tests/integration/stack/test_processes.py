"""Stopping a service ends its whole tree, even children that left its session, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from devstack.processes import (
    descendants,
    process_matches,
    process_start_time,
    start_service,
    stop_process_tree,
    wait_until,
)

# A parent that starts a child in a session of its own (as the Compute emulator starts instances)
# and ignores SIGTERM, so only the escalation can end it.
PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_stop_process_tree_ends_children_in_other_sessions(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    parent = start_service("parent", [sys.executable, "-c", PARENT], log)
    wait_until(lambda: bool(log.read_text().strip()), 10, "parent", parent, log)
    child_pid = int(log.read_text().split()[0])
    tree = descendants(parent.pid)
    assert child_pid in {pid for pid, _ in tree}
    started = time.monotonic()
    stop_process_tree(parent.pid, process_start_time(parent.pid), grace=1.0)
    assert time.monotonic() - started < 5
    assert not process_matches(parent.pid, None)
    assert all(not process_matches(pid, start) for pid, start in tree)


def test_a_recorded_pid_now_naming_another_process_is_left_alone() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        start = process_start_time(bystander.pid)
        assert start is not None
        # The record says the pid started at another time: it is not ours to stop.
        stop_process_tree(bystander.pid, start - 1, grace=0.5)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def _autogroup_niceness(pid: int) -> int | None:
    """The niceness of the scheduling group of `pid`'s session; None where the kernel has none."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[-1])
    except (OSError, ValueError):
        return None


def test_a_service_started_with_a_niceness_runs_at_it_with_its_whole_session(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    sleeper = start_service("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log, niceness=5)
    plain = start_service("plain", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "p.log")
    try:
        assert os.getpriority(os.PRIO_PROCESS, sleeper.pid) == 5
        assert os.getpriority(os.PRIO_PROCESS, plain.pid) == 0
        if _autogroup_niceness(os.getpid()) is not None:
            assert _autogroup_niceness(sleeper.pid) == 5
            assert _autogroup_niceness(plain.pid) == 0
    finally:
        for process in (sleeper, plain):
            stop_process_tree(process.pid, process_start_time(process.pid), grace=1.0)
