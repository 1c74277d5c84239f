"""Process groups, the unit an instance is stopped as: signalling one and telling whether it has
members left. An instance's web process leads a group of its own, whatever started it (a shell or
the forkserver), so everything it spawned ends with it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def signal_group(group: int, signum: int) -> None:
    """Send `signum` to every process of `group`; a group that is gone already is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def group_exists(group: int) -> bool:
    """Whether any process (zombies included) is still in the group: one system call, no scan."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_group_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies (Linux /proc; elsewhere, a signal probe)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return [group] if group_exists(group) else []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            members.append(int(entry.name))
    return members
