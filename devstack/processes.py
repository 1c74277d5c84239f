"""Start, await and stop background services as process groups, with bounded waits."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

KILL_SETTLE_SECONDS = 2.0
"""How long to wait for SIGKILLed processes to disappear."""


class ServiceError(RuntimeError):
    """A service did not start, or did not become ready in time."""


EPHEMERAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
SERVICE_PORT_SPAN = 8000
"""How many ports below the kernel's ephemeral range the local services choose from."""
FREE_PORT_ATTEMPTS = 50


def service_port_range(ephemeral_range: str | None = None) -> range:
    """Where a local service's port is chosen: just below the kernel's ephemeral range.

    A port chosen inside that range (a `bind` to port 0) stays free only until something else
    needs one: every outgoing connection draws its port from that range, and a function server
    binds seconds after its port was chosen. Below the range only an explicit choice like this one
    can take a port (the Compute emulator chooses its instances' ports in the span below this one).

    >>> service_port_range("32768 60999")
    range(24768, 32768)
    >>> service_port_range("2000 60999")
    range(1024, 2000)
    """
    try:
        text = ephemeral_range if ephemeral_range is not None else EPHEMERAL_PORT_RANGE.read_text()
        lowest_ephemeral = int(text.split()[0])
    except (OSError, ValueError, IndexError):  # not Linux, or unreadable: the kernels' usual start
        lowest_ephemeral = 32768
    return range(max(1024, lowest_ephemeral - SERVICE_PORT_SPAN), lowest_ephemeral)


def free_port() -> int:
    """A port nothing listens on or holds now, outside the ephemeral range where one can be found."""
    candidates = service_port_range()
    for _ in range(FREE_PORT_ATTEMPTS if candidates else 0):
        port = random.choice(candidates)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:  # in use (or lingering): try another
            return False
    # Also free on the wildcard address, where the Java emulators and function servers may bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def environment_applied(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in this process's environment for the block (so the Google clients it builds
    find a stack's emulators), then put back each variable as it was, unset ones unset again.

    >>> with environment_applied({"DEVSTACK_EXAMPLE_VARIABLE": "inside"}):
    ...     os.environ["DEVSTACK_EXAMPLE_VARIABLE"]
    'inside'
    >>> "DEVSTACK_EXAMPLE_VARIABLE" in os.environ
    False
    """
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop_requested() -> threading.Event:
    """An event that SIGTERM (`make down`) or SIGINT sets: a background service's main loop runs
    until it is set, then ends cleanly instead of dying mid-step."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopping


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back a Ctrl-C (SIGINT) that arrives inside the block, and deliver it once the block
    is done: for steps that must not be cut in half, such as starting a process and recording it.

    The signal is caught, not blocked: a blocked signal mask would be inherited by every process
    started inside the block, and those must still answer SIGINT. Python delivers signals to the
    main thread only, so in any other thread this holds nothing back (nor where a handler set
    outside Python, which could not be put back, owns the signal).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    arrived: list[FrameType | None] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(frame)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if arrived:
            if callable(previous):
                previous(signal.SIGINT, arrived[0])  # the usual handler raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def start_service(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    banner: str = "",
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so the whole tree can be stopped), logging to `log_path`
    after a `banner` line: logs are kept across runs, and the banner tells one run from the next."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        if banner:
            log.write(f"\n===== {banner} =====\n".encode())
            log.flush()  # before the process writes to the same file
        try:
            return subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"{name}: cannot start {argv[0]}: {exc}") from exc


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check` until it holds; fail early if `process` exits, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{what}: exited with code {process.returncode}{_log_tail(log_path)}")
        time.sleep(interval)
    raise ServiceError(f"{what}: not ready after {timeout:.0f} s{_log_tail(log_path)}")


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return check


def _log_tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_path.name} ---\n" + "\n".join(tail)


def stop_process_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the group led by `pid`, then SIGKILL whatever is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid):
            break
        _reap(pid)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_SETTLE_SECONDS
    while time.monotonic() < deadline and group_alive(pid):
        _reap(pid)
        time.sleep(0.02)
    _reap(pid)


def group_alive(pid: int) -> bool:
    """True while any member of the process group led by `pid` still runs.

    Zombies do not count: once our parent process has exited, an exited member may wait a while
    for a reaper, and waiting for it would only stretch every stop to the full grace period.
    """
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A live member: its process group (fields after the name: state, ppid, pgrp) is `pid`.
    return any(int(fields[2]) == pid and fields[0] not in ("Z", "X") for _member, fields in _process_stats())


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; a zombie still "exists" for killpg.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def http_answers(url: str) -> Callable[[], bool]:
    """Ready once the server answers HTTP at all: any status, even 4xx/5xx, proves it is listening."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return check


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it does not exist.

    A pid alone can be reused by an unrelated process after ours exits; pid plus start time
    cannot, so the stack records both and only ever signals a process that still matches.
    """
    fields = _stat_fields(pid)
    # After the name: state is field 3, so starttime (field 22) is at index 22 - 3 = 19.
    return int(fields[19]) if fields is not None else None


def process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields is not None else None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None if the
    process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:  # the process ended: nothing to read
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return stat[stat.rindex(")") + 2 :].split()


def _process_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields after the command name) of every process now running."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            yield int(entry.name), fields


def process_matches(pid: int, start_time: int | None) -> bool:
    """True if `pid` still runs (not a zombie) and is the same process that was recorded."""
    current = process_start_time(pid)
    if current is None or process_state(pid) in ("Z", "X"):
        return False
    return start_time is None or current == start_time


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every live descendant of `pid` as (pid, start_time), found through /proc's parent links."""
    children: dict[int, list[int]] = {}
    for child, fields in _process_stats():
        children.setdefault(int(fields[1]), []).append(child)
    found: list[tuple[int, int]] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        start = process_start_time(child)
        if start is not None:
            found.append((child, start))
        pending.extend(children.get(child, []))
    return found


def stop_process_tree(pid: int, start_time: int | None, grace: float = 5.0) -> None:
    """Stop the process group led by `pid` and every descendant, even those in other sessions.

    Descendants are listed before signalling: once their parent exits they are re-parented and
    could no longer be found. Each is killed only if its pid still names the same process.
    """
    if not process_matches(pid, start_time):
        _reap(pid)
        return
    tree = descendants(pid)
    stop_process_group(pid, grace)
    leftovers = [(child, start) for child, start in tree if process_matches(child, start)]
    if leftovers:
        for child, _ in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + min(grace, 2.0)
        while time.monotonic() < deadline and any(process_matches(c, s) for c, s in leftovers):
            time.sleep(0.05)
        for child, start in leftovers:
            if process_matches(child, start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
        # SIGKILL is delivered asynchronously; return only once they are really gone.
        deadline = time.monotonic() + KILL_SETTLE_SECONDS
        while time.monotonic() < deadline and any(process_matches(c, s) for c, s in leftovers):
            time.sleep(0.02)
