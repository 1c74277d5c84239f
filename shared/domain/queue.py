"""One deployment per environment at a time; while it runs, the newest build waits.

"Newest HEAD wins": a build that arrives while the environment is busy replaces whatever
was queued before it (those are cancelled), so the environment goes straight from the
running release to the latest one and never deploys a stale build in between. The same holds
while the environment is free but outside its deploy windows: the newest waits, alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    takes_lock: bool
    queue: tuple[str, ...]
    cancelled: tuple[str, ...]


def admit(
    active_deployment_id: str | None, queue: Sequence[str], new_deployment_id: str, *, may_start: bool
) -> Admission:
    """Where a new deployment goes: it takes a free lock, or it queues and supersedes the queued.

    `may_start` says whether the environment's deploy windows let it start now (a rollback
    always may). A free environment with a deployment waiting for its window is taken by a
    newcomer that may start, and the waiting one is superseded all the same.

    >>> admit(None, [], "d1", may_start=True)
    Admission(takes_lock=True, queue=(), cancelled=())
    >>> admit("d1", ["d2"], "d3", may_start=True)
    Admission(takes_lock=False, queue=('d3',), cancelled=('d2',))
    >>> admit(None, [], "d1", may_start=False)
    Admission(takes_lock=False, queue=('d1',), cancelled=())
    >>> admit(None, ["d1"], "d2", may_start=True)
    Admission(takes_lock=True, queue=(), cancelled=('d1',))
    """
    superseded = tuple(d for d in queue if d != new_deployment_id)
    if active_deployment_id is None and may_start:
        return Admission(takes_lock=True, queue=(), cancelled=superseded)
    return Admission(takes_lock=False, queue=(new_deployment_id,), cancelled=superseded)


@dataclass(frozen=True)
class NextInLine:
    """Who takes the environment when its deployment ends, and who still waits behind it."""

    next_deployment_id: str | None
    queue: tuple[str, ...]


def release_lock(queue: Sequence[str]) -> NextInLine:
    """When the running deployment ends, the oldest waiting one (there is at most one) goes next.

    >>> release_lock(["d3"])
    NextInLine(next_deployment_id='d3', queue=())
    >>> release_lock([])
    NextInLine(next_deployment_id=None, queue=())
    """
    if not queue:
        return NextInLine(next_deployment_id=None, queue=())
    return NextInLine(next_deployment_id=queue[0], queue=tuple(queue[1:]))
