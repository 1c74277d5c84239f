"""The emulator's side of `guest_forkserver.py`: web processes forked from a warm interpreter.

An instance whose Procfile says `python3 SCRIPT.py [ARGS]` is started by asking the guest's
forkserver for a fork that runs SCRIPT as `__main__`, with the instance's directory, environment
and log, in a process group of its own, as `/bin/sh -c "exec python3 SCRIPT.py"` would have started
it. Anything else (another interpreter, shell syntax, a script that is not there) starts as before.
What differs from a fresh interpreter is what a fork shares: the modules the forkserver imported,
and the hash seed of `str` hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .process_groups import signal_group

LOG = logging.getLogger(__name__)
_SERVER_SCRIPT = Path(__file__).with_name("guest_forkserver.py")
_START_TIMEOUT_SECONDS = 10.0
_SPAWN_TIMEOUT_SECONDS = 10.0
_FORKSERVER_REAP_TIMEOUT_SECONDS = 2.0
"""A killed forkserver is gone within this; every boot waiting on its start waits for it too."""
START_RETRY_SECONDS = 60.0
"""After a forkserver failed to start (a guest `python3` too old for it, say), boots start their
web process the other way for this long before a start is tried again, rather than each waiting
up to _START_TIMEOUT_SECONDS for the same failure."""
_SHELL_SPECIALS = set("$`\\\"'|&;<>(){}*?[]~#\n")


class GuestProcess(Protocol):
    """What an instance needs of its web process: `asyncio`'s subprocess, or a forked one."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class ForkServerError(Exception):
    """The forkserver cannot start a process (it is gone, or refused); start it the old way."""


def forkable(command: str, cwd: Path) -> tuple[Path, list[str]] | None:
    """The script and arguments of a Procfile command the forkserver can start, or None.

    Only `python3 SCRIPT.py [ARGS]` with plain words, SCRIPT a file in the app: the interpreter the
    forkserver itself is, run the way it runs it.
    """
    if any(character in _SHELL_SPECIALS for character in command):
        return None
    words = command.split()
    if len(words) < 2 or words[0] != "python3" or words[1].startswith("-") or not words[1].endswith(".py"):
        return None
    script = (cwd / words[1]).resolve()
    if not script.is_file():
        return None
    return script, words[2:]


class ForkedProcess:
    """An instance's web process started by the forkserver: what `Instance` needs of a process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()

    def _set_exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class GuestForkServer:
    """One forkserver per emulator, started at its first use and again after it died."""

    def __init__(
        self, launch: Callable[[list[str]], tuple[list[str], Any]], env: dict[str, str], niceness: int
    ) -> None:
        """`launch` turns an argv into the argv and `preexec_fn` that make a process die with the
        emulator (`instances.dying_with_emulator`); `env` is the guest's environment."""
        self._launch = launch
        self._env = env
        self._niceness = niceness
        self._process: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._start_failed: tuple[float, str] | None = None
        """When the last start failed (the loop's clock) and why, until one succeeds."""
        self.starts = 0
        self.start_attempts = 0

    async def spawn(
        self, script: Path, args: list[str], cwd: Path, env: dict[str, str], log: Path
    ) -> ForkedProcess:
        """Fork a web process running `script`; ForkServerError when the forkserver cannot."""
        process = await self._running()
        assert process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        request = {
            "id": request_id,
            "script": str(script),
            "args": args,
            "cwd": str(cwd),
            "env": env,
            "log": str(log),
        }
        try:
            # One bound for both: a forkserver that stopped reading fills the pipe, and then the
            # write waits as long as the answer would.
            async with asyncio.timeout(_SPAWN_TIMEOUT_SECONDS):
                process.stdin.write((json.dumps(request) + "\n").encode())
                await process.stdin.drain()
                answer = await reply
        except (OSError, TimeoutError) as exc:
            raise ForkServerError(
                f"the forkserver did not start the process: {str(exc) or type(exc).__name__}"
            ) from exc
        finally:
            self._replies.pop(request_id, None)
        child = answer.get("process")
        if not isinstance(child, ForkedProcess):
            raise ForkServerError(str(answer.get("error", answer)))
        return child

    @property
    def pid(self) -> int | None:
        """The forkserver's process id while it runs (its forks are its children)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _running(self) -> asyncio.subprocess.Process:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._process is not None and self._process.returncode is None:
                return self._process
            loop = asyncio.get_running_loop()
            if self._start_failed is not None and loop.time() < self._start_failed[0] + START_RETRY_SECONDS:
                raise ForkServerError(
                    f"{self._start_failed[1]}; not tried again for {START_RETRY_SECONDS:.0f} s"
                )
            try:
                process = await self._start()
            except ForkServerError as exc:
                # Counted from the failure, which can take the start's whole bound to show.
                self._start_failed = (loop.time(), str(exc))
                raise
            self._start_failed = None
            return process

    async def _start(self) -> asyncio.subprocess.Process:
        argv, before_exec = self._launch(["python3", str(_SERVER_SCRIPT)])
        self.start_attempts += 1
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self._env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd="/",
                # Its own group: stopping an instance signals the instance's group, never this one.
                process_group=0,
                preexec_fn=before_exec,
            )
        except OSError as exc:
            raise ForkServerError(f"the forkserver cannot start: {exc}") from exc
        assert process.stdout is not None
        with contextlib.suppress(OSError):  # its forks inherit it: instances yield to the control plane
            os.setpriority(os.PRIO_PROCESS, process.pid, self._niceness)
        try:
            ready = await asyncio.wait_for(process.stdout.readline(), _START_TIMEOUT_SECONDS)
        except TimeoutError:
            ready = b""
        except asyncio.CancelledError:  # the boot that started it was called off: nothing owns it now
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # the event loop's child watcher reaps it
            raise
        if not ready.startswith(b'{"ready"'):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(TimeoutError):  # reaped, so no zombie or open pipe is left
                await asyncio.wait_for(process.wait(), _FORKSERVER_REAP_TIMEOUT_SECONDS)
            raise ForkServerError(f"the forkserver did not start: {ready[:200]!r}")
        self._process = process
        self.starts += 1
        self._reader_task = asyncio.create_task(self._read(process), name="guest forkserver replies")
        return process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                self._dispatch(json.loads(line))
            except Exception:  # one unreadable line must not stop hearing of the others
                LOG.exception("guest forkserver: cannot read %r", line[:200])
        await process.wait()
        # Its children die with it (their parent-death signal): each is reported as killed.
        for child in self._children.values():
            child._set_exit(-signal.SIGKILL)
        self._children.clear()
        for reply in self._replies.values():
            if not reply.done():
                reply.set_result({"error": f"the forkserver exited with code {process.returncode}"})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            child = self._children.pop(int(message["exit"]), None)
            if child is not None:
                child._set_exit(int(message["code"]))
            return
        reply = self._replies.get(message.get("id", -1))
        if "pid" in message:
            # Tracked from its announcement on, before `spawn` resumes, so an exit reported right
            # after is never missed.
            child = ForkedProcess(int(message["pid"]))
            if reply is None or reply.done():
                # Its `spawn` gave up waiting and started the instance another way: this late
                # fork must not run beside that one (on the same port).
                signal_group(child.pid, signal.SIGKILL)
            self._children[child.pid] = child
            message = {**message, "process": child}
        if reply is not None and not reply.done():
            reply.set_result(message)

    async def close(self) -> None:
        """End the forkserver (its children die with it) and wait for it, bounded."""
        process = self._process
        self._process = None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    def kill_now(self) -> None:
        """Last-resort synchronous kill, used when the emulator exits."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
