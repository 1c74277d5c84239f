"""Starts instances' Python web processes as forks of one interpreter that has already started.

Run by the guest's `python3` (the one a Procfile's `python3 app.py` names), standard library only:
it never imports the emulator. Every instance on the local machine used to pay for a whole
interpreter start (about 20 ms of CPU: the interpreter, its `site`, the app's imports), and a
hundred releases at once started a hundred of them while the pipeline competed for the same two
cores. A fork of this process costs under a millisecond and finds the usual server modules imported.

Protocol, one JSON object per line. The emulator writes requests to stdin:
    {"id": 7, "script": "/abs/app.py", "args": [], "cwd": "/abs", "env": {...}, "log": "/abs/x.log"}
and reads from stdout `{"id": 7, "pid": 1234}` (or `{"id": 7, "error": "..."}`) and later, when
that process ends, `{"exit": 1234, "code": 0}` (a negative code is the signal that ended it,
as `asyncio`'s `returncode` says). The server ends when stdin closes; its children die with it.
"""

import contextlib
import ctypes
import importlib
import json
import os
import runpy
import selectors
import signal
import sys
import traceback

PRELOADED = ("itertools", "queue", "socket", "socketserver", "threading", "time")
"""Imported once here so that no web process pays for them: what a standard-library web server
imports (the sample app's `socketserver` and threads among them). Not `random` or anything else
that keeps a secret state, which every fork would share."""

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_READ_CHUNK = 65536


def _send(message: dict) -> None:
    """One line to the emulator; written whole with os.write so no buffer is copied into a fork."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _become_web_process(
    request: dict, server_pid: int, wake_read: int, wake_write: int, selector: selectors.BaseSelector
) -> None:
    """In the forked child: take the shape `/bin/sh -c "exec python3 app.py"` would have, then run
    the script as `__main__`. Never returns."""
    code = 1
    try:
        selector.close()
        os.close(wake_read)
        os.close(wake_write)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own process group, so stopping the instance ends all it spawned
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with this server
        if os.getppid() != server_pid:  # the server died before the signal was armed
            os._exit(1)
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        script = request["script"]
        sys.argv = [script, *request["args"]]
        sys.path[0] = os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit_request:
        status = exit_request.code
        if status is None or isinstance(status, int):
            code = status or 0
        else:  # sys.exit("message"): printed, exit status 1, as the interpreter does
            print(status, file=sys.stderr)
            code = 1
    except BaseException:  # as an interpreter does: print it, exit 1
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream cannot stop the exit
                stream.flush()
        os._exit(code & 0xFF)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _handle(line: bytes, wake_read: int, wake_write: int, selector: selectors.BaseSelector) -> None:
    try:
        request = json.loads(line)
        request_id = request["id"]
    except (ValueError, KeyError, TypeError):
        _send({"error": f"not a request: {line[:200]!r}"})
        return
    server_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        _send({"id": request_id, "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        _become_web_process(request, server_pid, wake_read, wake_write, selector)
    # The child makes its group too; setting it here as well means the group exists before the
    # emulator hears of the pid, so a stop right after the start cannot miss it.
    with contextlib.suppress(OSError):  # it already exited (its exit is reported)
        os.setpgid(pid, pid)
    _send({"id": request_id, "pid": pid})


def main() -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    # SIGCHLD wakes the loop through a pipe, so a child's exit is reported without polling.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "requests")
    selector.register(wake_read, selectors.EVENT_READ, "children")
    pending = b""
    _send({"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.data == "children":
                try:
                    while os.read(wake_read, _READ_CHUNK):
                        pass
                except BlockingIOError:
                    pass
                _reap()
                continue
            chunk = os.read(0, _READ_CHUNK)
            if not chunk:  # the emulator closed the pipe: end, and the children with us
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    _handle(line, wake_read, wake_write, selector)
        _reap()


if __name__ == "__main__":
    main()
