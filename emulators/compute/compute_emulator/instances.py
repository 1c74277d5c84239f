"""Instances are real processes: the artifact's `web:` command in its own process group."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from .clock import new_id, rfc3339_now
from .forkserver import ForkedProcess, ForkServerError, GuestForkServer, GuestProcess, forkable
from .process_groups import group_exists, running_group_members, signal_group

STOP_GRACE_SECONDS = 3.0
INSTANCE_NICENESS = 10
"""Instance processes run at this niceness, in the emulator's session. On Compute Engine a VM's CPU
is its own and never slows the control plane; here instances share the machine's cores with the
emulator, the functions and Google's emulators, and a hundred of them starting (and being probed)
at once took a third of all CPU time, so every API call waited behind them. Under contention they
yield; idle, nothing changes. They stay in the emulator's session because Linux schedules each
session as one group (autogroup): an instance in a session of its own weighed as much as the
whole emulator, whatever its niceness. (Niceness 19 slowed their start past a 3 s cool-down.)"""
_PROCESS_GROUP_REAP_TIMEOUT_SECONDS = 5.0
"""How long a stopping instance waits for its web process to end, and then for every process left in
its group (the forkserver that starts them waits for itself with a bound of its own)."""
_EPHEMERAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
INSTANCE_PORT_SPAN = 8000
_PORT_ATTEMPTS = 50
_claimed_ports: set[int] = set()
"""Ports of instances from their boot to their stop (the emulator's one event loop uses it)."""
GUEST_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""systemd's default PATH, which a Compute Engine startup script runs with."""
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# A single command (no lists, pipes, substitutions), whose first word names a program.
_SIMPLE_COMMAND = re.compile(r"^(?![^ ]*=)[A-Za-z0-9_./+-]+(\s[^;&|`\n]*)?$")
_SHELL_BUILTINS = {"cd", "exec", "export", "set", "source", ".", "ulimit", "umask", "eval", "trap"}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COPY_CHUNK_BYTES = 1024 * 1024
# The Procfile's `web:` line, read as the startup script's sed does (first match wins).
_WEB_LINE = re.compile(r"^\s*web:\s*(.*\S)\s*$", re.MULTILINE)


def guest_path(host_path: str) -> str:
    """The PATH an instance's startup command sees: a VM image's system directories first.

    On Compute Engine a startup script runs with systemd's default PATH, so a Procfile's `python3`
    is the image's interpreter. Locally the emulator's own PATH may put a version manager's shim
    first (pyenv's is a bash script that runs pyenv before the interpreter, doubling the CPU cost
    of every instance start); the host's directories stay after the system's, for what only
    they provide.
    """
    host = [entry for entry in host_path.split(os.pathsep) if entry and entry not in GUEST_SYSTEM_PATH]
    return os.pathsep.join([*GUEST_SYSTEM_PATH, *host])


def shell_command(web_command: str) -> str:
    """The `/bin/sh -c` script for a Procfile command: `exec` it when it is a single command, so the
    app itself is the instance's main process (and dies with the emulator, see `_die_with_parent`)."""
    command = web_command.strip()
    first = command.split(maxsplit=1)[0] if command else ""
    if "$(" in command or first in _SHELL_BUILTINS or not _SIMPLE_COMMAND.fullmatch(command):
        return command
    return f"exec {command}"


def _die_with_parent() -> None:
    """Runs in the child before exec: if the emulator is killed outright (SIGKILL), the kernel
    kills the instance's main process too instead of leaving it orphaned."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_SETPRIV = shutil.which("setpriv") if _LIBC is not None else None


def guest_environment() -> dict[str, str]:
    """The environment a guest's processes start from: the emulator's, with the guest's PATH."""
    env = dict(os.environ)
    env["PATH"] = guest_path(env.get("PATH", ""))
    return env


def dying_with_emulator(argv: list[str]) -> tuple[list[str], Any]:
    """The argv and `preexec_fn` that start `argv` so that it dies with the emulator.

    Where util-linux's `setpriv` is installed it sets the parent-death signal and execs the
    program, so the child needs no Python code between fork and exec and can be spawned with vfork:
    a fork of the whole emulator (page tables copied, then copied-on-write while `prctl` ran in
    Python) cost milliseconds of the event loop per instance, which a hundred instances starting at
    once queue on. Elsewhere, `prctl` in the child as before.
    """
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "KILL", *argv], None
    return argv, _die_with_parent


def spawn_arguments(script: str) -> tuple[list[str], Any]:
    """The argv and `preexec_fn` that start an instance's shell script so that it dies with the emulator."""
    return dying_with_emulator(["/bin/sh", "-c", script])


_forkserver: GuestForkServer | None = None


def guest_forkserver() -> GuestForkServer | None:
    """The emulator's forkserver for Python web processes, or None where it is turned off
    (`COMPUTE_EMULATOR_FORKSERVER=off`: every instance then starts a fresh interpreter)."""
    global _forkserver
    if os.environ.get("COMPUTE_EMULATOR_FORKSERVER", "on") == "off":
        return None
    if _forkserver is None:
        _forkserver = GuestForkServer(dying_with_emulator, guest_environment(), INSTANCE_NICENESS)
    return _forkserver


async def close_guest_forkserver() -> None:
    if _forkserver is not None:
        await _forkserver.close()


def kill_guest_forkserver_now() -> None:
    if _forkserver is not None:
        _forkserver.kill_now()


def watch_children_with_pidfds(loop: asyncio.AbstractEventLoop) -> bool:
    """Have the loop learn of instance exits through pidfds rather than a thread per instance.

    Python 3.11's default child watcher starts a thread for every subprocess and blocks the event
    loop until that thread has run: on a busy machine, a hundred instances starting at once held
    every API call behind thread start-ups. Python 3.12 and later pick pidfds by themselves (and
    deprecate choosing a watcher). Whether pidfds are now in use.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel older than 5.3, or a sandbox that forbids the call: keep the default
        return False
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)
    return True


class BootError(Exception):
    """The instance cannot be created; reported in the MIG's lastAttempt errors and retried.

    Compute Engine reports there what stops it from creating the VM itself; locally, also what
    the emulator cannot do in the guest's place (fetch a gs:// artifact, read a file it may not).
    """


class GuestRefusal(BootError):
    """The instance booted, but its startup refused the release (the startup script's `die`).

    As on Compute Engine, where startup-script failures never reach lastAttempt: the VM runs with
    nothing serving, the refusal is written to the guest attribute `release/error` (read through
    `instances.getGuestAttributes`), and autohealing recreates the VM when its health check fails.
    """


RELEASE_ERROR_ATTRIBUTE = ("release", "error")
"""(namespace, key) of the guest attribute the startup script writes when it refuses a release."""


@dataclass
class ProbeState:
    """What one health check currently thinks of one instance."""

    state: str = "UNKNOWN"  # HEALTHY, UNHEALTHY, UNKNOWN or TIMEOUT
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    last_detail: str = ""


@dataclass
class ReleaseMetadata:
    """What an instance runs, as its template's metadata names it (the startup script's inputs)."""

    artifact_url: str | None
    version: str
    artifact_sha256: str | None = None
    """Metadata `release-artifact-sha256`: what the fetched artifact must hash to."""


@dataclass
class Instance:
    project: str
    zone: str
    name: str
    template_path: str
    release: ReleaseMetadata
    state_dir: Path
    id: str = field(default_factory=new_id)
    creation_timestamp: str = field(default_factory=rfc3339_now)
    status: str = "PROVISIONING"
    current_action: str = "CREATING"
    process: GuestProcess | None = None
    port: int | None = None
    started_at: float | None = None  # loop time the web process started, for initialDelaySec
    last_errors: list[dict[str, str]] = field(default_factory=list)
    guest_attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, key) -> value, what the guest wrote to its metadata server; gone on recreate."""
    probes: dict[str, ProbeState] = field(default_factory=dict)
    probe_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    in_flight: int = 0
    draining: bool = False
    task: asyncio.Task[None] | None = None
    _exit_watch: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return f"projects/{self.project}/zones/{self.zone}/instances/{self.name}"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "instances" / self.project / self.zone / self.name

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.project}.{self.zone}.{self.name}.log"

    def log(self, line: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"[{rfc3339_now()}] compute-emulator: {line}\n")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def is_serving(self) -> bool:
        return self.status == "RUNNING" and self.pid is not None and not self.draining

    async def boot(self) -> None:
        """Unpack the release and start its web process (STAGING -> RUNNING)."""
        self.status = "STAGING"
        self.log(f"staging release {self.release.version!r} from {self.release.artifact_url!r}")
        command = await asyncio.to_thread(self._prepare_work_dir)
        self._release_port()
        self.port = claim_port()
        env = guest_environment()
        env["PORT"] = str(self.port)
        env["RELEASE_VERSION"] = self.release.version
        self.process = await self._start_web_process(command, env)
        self.started_at = asyncio.get_running_loop().time()
        self.status = "RUNNING"
        self.last_errors = []
        how = " (forked from the warm interpreter)" if isinstance(self.process, ForkedProcess) else ""
        self.log(f"web process {self.process.pid} started on port {self.port}{how}: {command}")
        self._exit_watch = asyncio.create_task(self._watch_exit(self.process))

    async def _start_web_process(self, command: str, env: dict[str, str]) -> GuestProcess:
        """The Procfile's web command, started in a process group of its own: forked from the
        warm interpreter when it is `python3 SCRIPT.py`, else through `/bin/sh -c`."""
        app_dir = self.work_dir / "app"
        forkserver = guest_forkserver()
        target = forkable(command, app_dir) if forkserver is not None else None
        if target is not None:
            assert forkserver is not None  # only a forkserver's instance has a target
            script, args = target
            try:
                return await forkserver.spawn(script, args, app_dir, env, self.log_path)
            except ForkServerError as exc:
                self.log(f"{exc}; starting the web process with a fresh interpreter")
        log_handle: IO[Any] = self.log_path.open("ab")
        argv, before_exec = spawn_arguments(shell_command(command))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=app_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_handle,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group, so stopping the instance ends every process it spawned;
                # not its own session (see INSTANCE_NICENESS).
                process_group=0,
                preexec_fn=before_exec,
            )
        finally:
            log_handle.close()
        # Not essential: on failure the instance merely competes with the control plane.
        with contextlib.suppress(OSError):  # the process may already have exited (its exit is watched)
            os.setpriority(os.PRIO_PROCESS, process.pid, INSTANCE_NICENESS)
        return process

    def _prepare_work_dir(self) -> str:
        """Fetch the artifact into the work dir, verify its digest, only then unpack it.

        The check runs on the instance's own copy, the bytes that are unpacked next, as the
        startup script does on Compute Engine: a file swapped at its URL later cannot slip in.
        """
        source = artifact_path(self.release.artifact_url)
        expected = expected_sha256(self.release.artifact_sha256)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True)
        fetched = self.work_dir / "artifact.tar.gz"
        actual = fetch_and_hash(source, fetched)
        if actual != expected:
            fetched.unlink(missing_ok=True)
            raise GuestRefusal(
                f"artifact digest mismatch: {self.release.artifact_url} has sha256 {actual}, "
                f"the release expects {expected}; the instance does not start it"
            )
        self.log(f"artifact verified (sha256 {actual})")
        return unpack(fetched, self.work_dir / "app", self.release.artifact_url or "")

    async def _watch_exit(self, process: GuestProcess) -> None:
        code = await process.wait()
        if self.process is process and self.status == "RUNNING":
            self.log(f"web process {process.pid} exited with code {code}; the instance stays up, unhealthy")

    async def stop(self) -> None:
        """End the whole process tree: SIGTERM to the group, SIGKILL after a grace period."""
        process = self.process
        if process is None:
            self._release_port()
            return
        self.status = "STOPPING"
        group = process.pid
        signal_group(group, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            self.log(f"web process {group} ignored SIGTERM for {STOP_GRACE_SECONDS}s; killing")
        # The leader may be gone while children it spawned still run in its group.
        signal_group(group, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), _PROCESS_GROUP_REAP_TIMEOUT_SECONDS)
        # Orphaned children are reaped by init, not by us: wait until none is left running, so a
        # finished delete really means the processes are gone.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _PROCESS_GROUP_REAP_TIMEOUT_SECONDS
        # A scan of /proc costs milliseconds on a busy machine: only when the group still has
        # members at all, and off the event loop, which every API call and probe shares.
        while group_exists(group) and loop.time() < deadline:
            members: list[int] = await asyncio.to_thread(running_group_members, group)
            if not members:
                break
            signal_group(group, signal.SIGKILL)
            await asyncio.sleep(0.02)
        self.log(f"web process {group} stopped (exit code {process.returncode})")
        self.process = None
        self._release_port()
        self.status = "TERMINATED"

    def _release_port(self) -> None:
        if self.port is not None:
            release_port(self.port)
            self.port = None

    def stop_now(self) -> None:
        """Last-resort synchronous kill, used when the emulator exits."""
        if self.process is not None and self.process.returncode is None:
            signal_group(self.process.pid, signal.SIGKILL)


def artifact_path(url: str | None) -> str:
    if not url:
        raise GuestRefusal("the instance template has no 'release-artifact' metadata item; nothing to run")
    parsed = urlparse(url)
    if parsed.scheme == "gs":
        raise BootError(
            f"cannot fetch {url}: the local Compute emulator has no Cloud Storage; "
            "use a file:/// URL to a local tar.gz artifact"
        )
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise BootError(f"cannot fetch {url}: only file:/// artifact URLs are supported locally")
    path = unquote(parsed.path)
    if not Path(path).is_file():
        # Refused by the guest, as the startup script refuses a file:// or gs:// artifact that
        # is not there: it will not appear by itself.
        raise GuestRefusal(f"artifact {url} does not exist")
    return path


def expected_sha256(value: str | None) -> str:
    """The template's digest, or BootError: an artifact is never run unverified."""
    if not value:
        raise GuestRefusal(
            "the instance template has no 'release-artifact-sha256' metadata item; "
            "an artifact is never run without its digest"
        )
    if not _SHA256.fullmatch(value):
        raise GuestRefusal(f"release-artifact-sha256 {value!r} is not a SHA-256 (64 lowercase hex)")
    return value


def unpack(artifact: Path, destination: Path, url: str) -> str:
    """Unpack a verified artifact (CONTRACT §7) and return its Procfile's `web:` command.

    The emulator's own reading of the contract, as the startup script has its own: the emulator
    shares no code with the pipeline it stands in front of.
    """
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(artifact, mode="r:gz") as tar:
            # The "data" filter refuses absolute paths, `..`, links out of the tree and devices.
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, OSError) as exc:  # permanent for this release: tar fails on the VM too
        raise GuestRefusal(f"artifact {url} cannot be unpacked: {exc}") from exc
    procfile = destination / "Procfile"
    if not procfile.is_file():
        raise GuestRefusal(f"artifact {url} has no Procfile at its root")
    web = _WEB_LINE.search(procfile.read_text(encoding="utf-8", errors="replace"))
    if web is None:
        raise GuestRefusal(f"artifact {url}: Procfile has no web: line")
    return web.group(1)


def fetch_and_hash(source: str, destination: Path) -> str:
    """Copy `source` to `destination` and return the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as reader, destination.open("wb") as writer:
            for chunk in iter(lambda: reader.read(_COPY_CHUNK_BYTES), b""):
                digest.update(chunk)
                writer.write(chunk)
    except OSError as exc:  # reported in lastAttempt; the group retries the boot with backoff
        raise BootError(f"cannot fetch {source}: {exc}") from exc
    return digest.hexdigest()


def instance_port_range(ephemeral_range: str | None = None) -> range:
    """Where instances' ports are chosen: the span of INSTANCE_PORT_SPAN ports that ends that many
    below the kernel's ephemeral range.

    On Compute Engine every VM has an address of its own; here every instance listens on
    127.0.0.1, so ports are what keeps them apart. A port chosen inside the ephemeral range (a
    `bind` to port 0) stays free only until an outgoing connection takes it, and the web process
    binds it only once its interpreter has started. The span just below the ephemeral range is
    left to whoever runs the emulator (the local stack chooses its services' ports there).

    >>> instance_port_range("32768 60999")
    range(16768, 24768)
    >>> instance_port_range("9000 60999")
    range(1024, 1024)
    """
    try:
        text = ephemeral_range if ephemeral_range is not None else _EPHEMERAL_PORT_RANGE.read_text()
        lowest_ephemeral = int(text.split()[0])
    except (OSError, ValueError, IndexError):  # not Linux, or unreadable: the kernels' usual start
        lowest_ephemeral = 32768
    high = max(1024, lowest_ephemeral - INSTANCE_PORT_SPAN)
    return range(max(1024, high - INSTANCE_PORT_SPAN), high)


def claim_port() -> int:
    """A port for an instance's web process, free now and held by no other instance until released.

    Two instances starting at once could otherwise be given the same free port: the second web
    process then fails to bind, while probes of its port reach the first and find it healthy.
    """
    candidates = instance_port_range()
    for _ in range(_PORT_ATTEMPTS if candidates else 0):
        port = random.choice(candidates)
        if port not in _claimed_ports and _bindable(port):
            _claimed_ports.add(port)
            return port
    for _ in range(_PORT_ATTEMPTS):  # no room below the ephemeral range: any free port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _claimed_ports:
            _claimed_ports.add(port)
            return port
    raise BootError("no free port for the instance's web process")


def release_port(port: int) -> None:
    _claimed_ports.discard(port)


def _bindable(port: int) -> bool:
    for address in ("127.0.0.1", "0.0.0.0"):  # a web process may bind either
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:  # in use, or lingering
                return False
    return True
