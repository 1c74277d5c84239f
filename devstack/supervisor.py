"""`python -m devstack.supervisor --state-dir DIR`: restarts the local stack's processes that die.

On Google Cloud the platform replaces a crashed function instance; locally this process does the
same for every service the stack's state file marks as restartable: it polls each recorded process
(pid plus start time, so a reused pid is never mistaken for ours), and when one has died it ends
what the dead process left in its process group (a server's worker still holding the port), starts
the same command again with the same port and environment, and records the new pid and the restart
count in the state file. The restart is announced in the supervisor's log and in the service's own
log, and `make status` shows the count.

Restarts back off: the first comes at once, and each further one that follows a short life waits
twice as long as the one before, up to `MAX_BACKOFF_SECONDS`; a process that stayed up for
`STABLE_SECONDS` starts the count again. Services that keep their data in memory (Google's
emulators, the Compute emulator) are not restarted: a fresh one would answer health checks while
every record, subscription or resource was gone, which is worse than a service shown as stopped.

The supervisor changes the state file only while holding the stack's lock, the same one `up` and
`down` take, and `down` stops it before anything else, so it never restarts what `down` is ending.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import (
    KILL_SETTLE_SECONDS,
    ServiceError,
    process_start_time,
    process_state,
    start_service,
    stop_requested,
)
from devstack.services import SUPERVISOR
from devstack.stack_state import LOCK_FILE, STATE_FILE, ServiceRecord, StackState

POLL_SECONDS = 0.5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 30.0
"""A process that lived this long before dying is restarted at once, as if for the first time."""


def backoff_seconds(quick_deaths: int) -> float:
    """The wait before a restart, given how many restarts in a row were followed by a quick death.

    >>> [backoff_seconds(n) for n in range(7)]
    [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    """
    if quick_deaths <= 0:
        return 0.0
    return min(FIRST_BACKOFF_SECONDS * 2 ** (quick_deaths - 1), MAX_BACKOFF_SECONDS)


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def group_members(group_id: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `group_id`."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == group_id and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def end_leftovers(dead_leader: int) -> list[int]:
    """SIGKILL what remains of the process group a dead service led; returns the pids signalled.

    Each service runs in a session of its own whose group id is its first pid. Linux does not hand
    out a pid that is still some group's id, so while members remain, the group is ours. If a
    process with the leader's pid exists again, the pid was reused after the group emptied, and
    nothing is touched.
    """
    if process_start_time(dead_leader) is not None and process_state(dead_leader) not in ("Z", "X"):
        return []
    members = group_members(dead_leader)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_SETTLE_SECONDS
    while members and time.monotonic() < deadline and group_members(dead_leader):
        time.sleep(0.02)
    return members


@dataclass
class _Watch:
    """What the supervisor remembers about one service between polls."""

    quick_deaths: int = 0
    restart_due: float | None = None
    """Monotonic time of the pending restart, once the death has been seen."""
    last_start: float = float("-inf")
    """Monotonic time we last started it; a process `up` started counts as long-lived."""
    announced_down: bool = False


class Supervisor:
    """Watches the services of one state directory; `tick()` does one round."""

    def __init__(self, state_dir: Path, log: Callable[[str], None]) -> None:
        self.state_dir = state_dir
        self.log = log
        self._watches: dict[str, _Watch] = {}
        self._children: list[subprocess.Popen[bytes]] = []

    @contextlib.contextmanager
    def _lock(self) -> Iterator[bool]:
        """The stack's lock if it is free right now; never waits (so a SIGTERM is seen at once)."""
        with open(self.state_dir / LOCK_FILE, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # `up` or `down` holds it: look again at the next poll.
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def tick(self) -> bool:
        """One round: restart what has died and is due. False once the stack has gone."""
        # Restarted services are our children: collect their exit status so they leave no zombie.
        self._children = [child for child in self._children if child.poll() is None]
        with self._lock() as locked:
            if not locked:
                return True
            state = StackState.load(self.state_dir / STATE_FILE)
            if state is None:
                return False
            if not state.complete:
                return True
            changed = False
            for record in state.services:
                if record.name == SUPERVISOR:
                    continue
                changed = self._look_after(record) or changed
            if changed:
                state.save(self.state_dir / STATE_FILE)
        return True

    def _look_after(self, record: ServiceRecord) -> bool:
        watch = self._watches.setdefault(record.name, _Watch())
        if record.alive:
            return False
        if not record.restart or not record.argv:
            if not watch.announced_down:
                watch.announced_down = True
                self.log(
                    f"{record.name} (pid {record.pid}) has exited; not restarted: it kept its data in "
                    "memory, so a new one would start empty (make down; make up)"
                )
            return False
        now = time.monotonic()
        if watch.restart_due is None:
            lived = now - watch.last_start
            watch.quick_deaths = watch.quick_deaths + 1 if lived < STABLE_SECONDS else 0
            delay = backoff_seconds(watch.quick_deaths)
            watch.restart_due = now + delay
            self.log(f"{record.name} (pid {record.pid}) has exited; restarting in {delay:g} s")
        if now < watch.restart_due:
            return False
        leftovers = end_leftovers(record.pid)
        if leftovers:
            self.log(f"{record.name}: ended what its dead process left behind: pids {leftovers}")
        log_path = Path(record.log)
        restart_number = record.restarts + 1
        try:
            process = start_service(
                record.name,
                record.argv,
                log_path,
                env=record.env,
                cwd=Path(record.cwd) if record.cwd else None,
                banner=f"{record.name} restarted by the supervisor {_now_text()}"
                f" (restart {restart_number}; pid {record.pid} had exited)",
            )
        except ServiceError as exc:  # transient as far as we can tell: try again after the next backoff
            self.log(f"{record.name}: restart failed: {exc}")
            watch.restart_due = None
            watch.last_start = now
            return False
        self._children.append(process)
        old_pid = record.pid
        record.pid = process.pid
        record.start_time = process_start_time(process.pid)
        record.restarts = restart_number
        record.last_restart_at = _now_text()
        watch.restart_due = None
        watch.last_start = now
        self.log(f"{record.name} restarted: pid {old_pid} -> {process.pid} (restart {restart_number})")
        return True


def run(state_dir: Path, poll: float = POLL_SECONDS) -> None:
    stopping = stop_requested()

    def log(line: str) -> None:
        sys.stdout.write(f"{_now_text()} supervisor: {line}\n")
        sys.stdout.flush()

    supervisor = Supervisor(state_dir, log)
    log(f"watching the stack in {state_dir} every {poll:g} s")
    while not stopping.is_set():
        if not supervisor.tick():
            log("the stack's state file is gone; stopping")
            return
        stopping.wait(poll)
    log("stopping")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.supervisor", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--poll", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    run(args.state_dir.resolve(), args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
