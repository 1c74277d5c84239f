"""A stack for the length of a block: the one already running (`make up`), or one started for it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from devstack.processes import ServiceError, wait_until
from devstack.services import START_TIMEOUT_SECONDS
from devstack.stack import (
    DEFAULT_STATE_DIR,
    RESTART_GRACE_SECONDS,
    Stack,
    StackAlreadyRunning,
    StackState,
    ports_from_environment,
)


@contextlib.contextmanager
def running_stack(
    state_dir: Path = DEFAULT_STATE_DIR, progress: Callable[[str], None] | None = None
) -> Iterator[Stack]:
    """The stack of `state_dir` for the duration of the block.

    If it already runs (`make up`), it is used and left running; otherwise it is started here
    and stopped at the end, whatever happens in the block.
    """
    stack = Stack(state_dir, fixed_ports=ports_from_environment(), progress=progress)
    if stack.is_running():
        yield _attach_to_complete(stack)
        return
    try:
        stack.start()
    except StackAlreadyRunning:
        # Started by someone else between the check and the start: theirs to stop.
        yield _attach_to_complete(stack)
        return
    try:
        yield stack
    finally:
        stack.stop()


def _attach_to_complete(stack: Stack) -> Stack:
    """Attach to a running stack once it has finished starting (bounded), and all of it runs."""

    def complete() -> bool:
        state = StackState.load(stack.state_file)
        return bool(state and state.complete)

    wait_until(complete, START_TIMEOUT_SECONDS * 2, f"the stack in {stack.state_dir} to finish starting")

    def all_running() -> bool:
        stack.load()
        return all(service.alive for service in stack.services())

    # A service that died may be between its death and the supervisor's restart: give it a while.
    with contextlib.suppress(ServiceError):
        wait_until(all_running, RESTART_GRACE_SECONDS, "every service of the stack")
    stack.load()
    down = [service.name for service in stack.services() if not service.alive]
    if down:
        raise ServiceError(
            f"the stack in {stack.state_dir} runs without {', '.join(down)}; restart it (make down; make up)"
        )
    return stack
