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

import atexit
import builtins
import contextlib
import ctypes
import hashlib
import importlib
import importlib.machinery
import json
import os
import runpy
import selectors
import signal
import sys
import threading
import traceback
import types

PRELOADED = ("itertools", "queue", "socket", "socketserver", "time")
"""Imported once here so that no web process pays for them: what a standard-library web server
imports (the sample app's `socketserver` among them; `threading` is imported above). Not `random` or anything else
that keeps a secret state, which every fork would share."""

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_READ_CHUNK = 65536
_COMPILED_LIMIT = 64
_compiled_by_source: dict[bytes, types.CodeType] = {}
"""Scripts compiled in this server, by the SHA-256 of their source: a hundred instances of one
release each have their own copy of the same file, and compiling it was 3 ms of each one's start."""


def _compiled(script: str) -> types.CodeType | None:
    """`script` compiled, from the cache when its source was compiled before (with this path in its
    tracebacks); None when it cannot be read or compiled, for `runpy` to report as Python would."""
    try:
        with open(script, "rb") as source_file:
            source = source_file.read()
    except OSError:
        return None
    key = hashlib.sha256(source).digest()
    code = _compiled_by_source.get(key)
    if code is None:
        try:
            code = compile(source, script, "exec", dont_inherit=True)
        except Exception:  # SyntaxError, or RecursionError/MemoryError on a pathological file:
            return None  # the child compiles again through runpy and fails as `python3` would
        if len(_compiled_by_source) >= _COMPILED_LIMIT:
            del _compiled_by_source[next(iter(_compiled_by_source))]
        _compiled_by_source[key] = code
    return _with_filename(code, script)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    """`code` and every function and class body in it, naming `filename` as their source."""
    if code.co_filename == filename:
        return code
    constants = tuple(
        _with_filename(constant, filename) if isinstance(constant, types.CodeType) else constant
        for constant in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=constants)


def _run_as_main(script: str, compiled: types.CodeType | None) -> None:
    """What `python3 script` does with the file: run it in a fresh `__main__` module."""
    if compiled is None:  # unreadable or not Python: let runpy raise what the interpreter would
        runpy.run_path(script, run_name="__main__")
        return
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    exec(compiled, main.__dict__)


def _send(message: dict) -> None:
    """One line to the emulator; written whole with os.write so no buffer is copied into a fork."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _become_web_process(
    request: dict,
    compiled: types.CodeType | None,
    server_pid: int,
    wake_read: int,
    wake_write: int,
    selector: selectors.BaseSelector,
) -> None:
    """In the forked child: take the shape `/bin/sh -c "exec python3 app.py"` would have, then run
    the script as `__main__`. Never returns."""
    code = 1
    try:
        selector.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)
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
        _run_as_main(script, compiled)
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
        # What the interpreter does before it exits: wait for non-daemon threads (an app may
        # return from its main code with a server thread running), then run atexit handlers.
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
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
    compiled = _compiled(str(request.get("script", "")))
    try:
        pid = os.fork()
    except OSError as exc:
        _send({"id": request_id, "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        _become_web_process(request, compiled, server_pid, wake_read, wake_write, selector)
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
                    try:
                        _handle(line, wake_read, wake_write, selector)
                    except Exception as exc:  # one bad request must not end every instance
                        _send({"error": f"request failed: {exc!r}"})
        _reap()


if __name__ == "__main__":
    main()
