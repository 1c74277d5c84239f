"""Stopping a service ends its whole tree, even children that left its session, and nothing else."""

from __future__ import annotations

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
