"""Web processes forked from the warm interpreter behave as `/bin/sh -c "exec python3 SCRIPT.py"`
would have started them: the script as `__main__` with its arguments, the instance's directory,
environment and log, a process group of its own, an exit code the instance sees, and death with the
forkserver."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from compute_emulator import forkserver, instances
from compute_emulator.forkserver import ForkedProcess, ForkServerError, GuestForkServer, forkable
from compute_emulator.instances import (
    INSTANCE_NICENESS,
    Instance,
    ReleaseMetadata,
    dying_with_emulator,
    guest_path,
)
from emulator_helpers import build_artifact

_BOUND_SECONDS = 10.0

_REPORTER = """\
import json, os, sys
print(json.dumps({
    "name": __name__,
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "only_given": os.environ.get("FROM_THE_FORKSERVER"),
    "given": os.environ.get("GIVEN"),
    "group": os.getpgrp() == os.getpid(),
    "niceness": os.getpriority(os.PRIO_PROCESS, 0),
    "path0": sys.path[0],
}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def _run(
    scenario: Callable[[GuestForkServer], Coroutine[Any, Any, None]],
    launch: Callable[[list[str]], tuple[list[str], Any]] = dying_with_emulator,
) -> None:
    async def with_server() -> None:
        env = dict(os.environ, FROM_THE_FORKSERVER="yes")
        env["PATH"] = guest_path(env.get("PATH", ""))
        server = GuestForkServer(launch, env, INSTANCE_NICENESS)
        try:
            await asyncio.wait_for(scenario(server), _BOUND_SECONDS * 2)
        finally:
            await server.close()

    asyncio.run(with_server())


def _app(tmp_path: Path, source: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "app.py").write_text(source)
    return app


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python3 app.py", ("app.py", [])),
        ("python3 app.py --healthz-status 500", ("app.py", ["--healthz-status", "500"])),
        ("python3 missing.py", None),
        ("python3 -c 'print(1)'", None),
        ("python3 -m http.server", None),
        ("python app.py", None),
        ("gunicorn app:app", None),
        ("python3 app.py | tee log", None),
        ("python3 app.py $PORT", None),
        ("cd web && python3 app.py", None),
    ],
)
def test_only_a_plain_python3_script_of_the_app_is_forked(
    tmp_path: Path, command: str, expected: tuple[str, list[str]] | None
) -> None:
    app = _app(tmp_path, "")
    target = forkable(command, app)
    if expected is None:
        assert target is None
    else:
        assert target == (app / expected[0], expected[1])


def test_a_forked_process_runs_the_script_as_main_with_its_own_directory_environment_group_and_log(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path, _REPORTER)
    log = tmp_path / "instance.log"

    async def scenario(server: GuestForkServer) -> None:
        process = await server.spawn(
            app / "app.py", ["3"], app, {"GIVEN": "value", "PATH": "/usr/bin:/bin"}, log
        )
        assert isinstance(process, ForkedProcess)
        assert await process.wait() == 3
        assert process.returncode == 3

    _run(scenario)
    report, stderr_line = log.read_text().splitlines()
    seen = json.loads(report)
    assert seen == {
        "name": "__main__",
        "argv": [str(app / "app.py"), "3"],
        "cwd": str(app),
        "only_given": None,
        "given": "value",
        "group": True,
        # The instances' niceness, unless the tests themselves run nicer than that already.
        "niceness": max(INSTANCE_NICENESS, os.getpriority(os.PRIO_PROCESS, 0)),
        "path0": str(app),
    }
    assert stderr_line == "to stderr"


def _exit_code_and_log(tmp_path: Path, source: str) -> tuple[int, str]:
    """Fork one web process running `source`; its exit code and what it wrote to its log."""
    app = _app(tmp_path, source)
    log = tmp_path / "instance.log"
    codes: list[int] = []

    async def scenario(server: GuestForkServer) -> None:
        process = await server.spawn(app / "app.py", [], app, {}, log)
        codes.append(await process.wait())

    _run(scenario)
    return codes[0], log.read_text()


def test_an_uncaught_exception_is_printed_to_the_log_and_exits_1(tmp_path: Path) -> None:
    code, text = _exit_code_and_log(tmp_path, "raise RuntimeError('the release is broken')\n")
    assert code == 1
    assert "Traceback" in text and "RuntimeError: the release is broken" in text


def test_copies_of_one_script_each_name_their_own_file_in_tracebacks(tmp_path: Path) -> None:
    # Compiled once for both (same source), yet each copy's traceback names its own path.
    source = (
        "import os, sys\nprint(__file__, flush=True)\ndef fail():\n    raise RuntimeError('boom')\nfail()\n"
    )
    first, second = _app(tmp_path / "a", source), _app(tmp_path / "b", source)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]

    async def scenario(server: GuestForkServer) -> None:
        for app, log in zip((first, second), logs, strict=True):
            process = await server.spawn(app / "app.py", [], app, {}, log)
            assert await process.wait() == 1

    _run(scenario)
    for app, log in zip((first, second), logs, strict=True):
        text = log.read_text()
        assert text.splitlines()[0] == str(app / "app.py")
        assert f'File "{app / "app.py"}", line 5, in <module>' in text
        assert f'File "{app / "app.py"}", line 4, in fail' in text
        assert "RuntimeError: boom" in text


def test_a_script_that_is_not_python_fails_as_the_interpreter_would(tmp_path: Path) -> None:
    code, text = _exit_code_and_log(tmp_path, "def broken(:\n")
    assert code == 1
    assert "SyntaxError" in text


def test_the_process_exits_as_the_interpreter_does_after_its_threads_and_atexit_handlers(
    tmp_path: Path,
) -> None:
    # Main code that returns with a non-daemon thread still serving must not end the process.
    code, text = _exit_code_and_log(
        tmp_path,
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "def serve():\n    time.sleep(0.3)\n    print('thread done', flush=True)\n"
        "threading.Thread(target=serve).start()\n",
    )
    assert code == 0
    assert text.splitlines() == ["thread done", "atexit ran"]


def test_a_script_the_compiler_cannot_handle_fails_alone_and_the_forkserver_serves_on(tmp_path: Path) -> None:
    # Deep enough to exhaust the compiler's recursion: a RecursionError, not a SyntaxError.
    broken = _app(tmp_path / "broken", "x = " + "+".join(["1"] * 100_000) + "\n")
    sound = _app(tmp_path / "sound", "print('fine', flush=True)\n")
    logs = [tmp_path / "broken.log", tmp_path / "sound.log"]

    async def scenario(server: GuestForkServer) -> None:
        failed = await server.spawn(broken / "app.py", [], broken, {}, logs[0])
        assert await failed.wait() == 1
        served = await server.spawn(sound / "app.py", [], sound, {}, logs[1])
        assert await served.wait() == 0
        assert server.starts == 1

    _run(scenario)
    assert "RecursionError" in logs[0].read_text()
    assert logs[1].read_text() == "fine\n"


def test_a_signal_is_reported_as_a_negative_code_and_children_die_with_the_forkserver(tmp_path: Path) -> None:
    app = _app(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    log = tmp_path / "instance.log"

    async def scenario(server: GuestForkServer) -> None:
        killed = await server.spawn(app / "app.py", [], app, {}, log)
        os.killpg(killed.pid, signal.SIGKILL)
        assert await killed.wait() == -signal.SIGKILL
        orphaned = await server.spawn(app / "app.py", [], app, {}, log)
        server.kill_now()  # the forkserver dies: its children die with it, and are reported so
        assert await orphaned.wait() == -signal.SIGKILL
        await _until_gone(orphaned.pid)
        # The next instance starts a new forkserver.
        again = await server.spawn(app / "app.py", [], app, {}, log)
        assert server.starts == 2
        os.killpg(again.pid, signal.SIGTERM)
        assert await again.wait() == -signal.SIGTERM

    _run(scenario)


def test_a_fork_announced_after_its_spawn_gave_up_is_killed_not_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The instance is then started another way: a late fork would run beside it, on its port.
    app = _app(tmp_path, "import time\ntime.sleep(60)\n")
    log = tmp_path / "instance.log"

    async def scenario(server: GuestForkServer) -> None:
        alive = await server.spawn(app / "app.py", [], app, {}, log)  # starts the forkserver
        monkeypatch.setattr(forkserver, "_SPAWN_TIMEOUT_SECONDS", 0.0)
        with pytest.raises(ForkServerError, match="did not start the process: TimeoutError"):
            await server.spawn(app / "app.py", [], app, {}, log)
        monkeypatch.undo()
        # Requests are answered in order: once this one is, the late fork has been announced.
        later = await server.spawn(app / "app.py", [], app, {}, log)
        assert server.pid is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _BOUND_SECONDS
        while _children(server.pid) != sorted([alive.pid, later.pid]):
            assert loop.time() < deadline, f"forks left running: {_children(server.pid)}"
            await asyncio.sleep(0.02)
        for process in (alive, later):
            os.killpg(process.pid, signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL

    _run(scenario)


def test_a_forkserver_that_cannot_start_is_not_tried_again_at_every_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A guest whose python3 cannot run the forkserver: every boot would wait for the same failure.
    app = _app(tmp_path, "")
    launched: list[list[str]] = []

    def failing_launch(argv: list[str]) -> tuple[list[str], Any]:
        launched.append(argv)
        return ["python3", "-c", "raise SystemExit(3)"], None

    async def scenario(server: GuestForkServer) -> None:
        with pytest.raises(ForkServerError, match="did not start"):
            await server.spawn(app / "app.py", [], app, {}, tmp_path / "log")
        with pytest.raises(ForkServerError, match="not tried again for 60 s"):
            await server.spawn(app / "app.py", [], app, {}, tmp_path / "log")
        assert (len(launched), server.start_attempts, server.starts) == (1, 1, 0)
        monkeypatch.setattr(forkserver, "START_RETRY_SECONDS", 0.0)  # the wait is over
        with pytest.raises(ForkServerError, match="did not start"):
            await server.spawn(app / "app.py", [], app, {}, tmp_path / "log")
        assert (len(launched), server.start_attempts) == (2, 2)

    _run(scenario, failing_launch)


def test_the_wait_before_another_start_counts_from_the_failure_not_from_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A start that fails slowly (up to its bound) must not use up the wait while it fails.
    app = _app(tmp_path, "")
    launched: list[list[str]] = []

    def slowly_failing_launch(argv: list[str]) -> tuple[list[str], Any]:
        launched.append(argv)
        return ["python3", "-c", "import time; time.sleep(1.0); raise SystemExit(3)"], None

    monkeypatch.setattr(forkserver, "START_RETRY_SECONDS", 0.5)

    async def scenario(server: GuestForkServer) -> None:
        with pytest.raises(ForkServerError, match="did not start"):
            await server.spawn(app / "app.py", [], app, {}, tmp_path / "log")
        with pytest.raises(ForkServerError, match="not tried again"):
            await server.spawn(app / "app.py", [], app, {}, tmp_path / "log")
        assert len(launched) == 1

    _run(scenario, slowly_failing_launch)


def test_a_forkserver_start_called_off_leaves_no_process_behind(tmp_path: Path) -> None:
    app = _app(tmp_path, "")
    started = tmp_path / "started"

    def hanging_launch(argv: list[str]) -> tuple[list[str], Any]:
        # Says it runs, then never answers "ready".
        return [
            "python3",
            "-c",
            f"import os, time; open({str(started)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
        ], None

    async def scenario(server: GuestForkServer) -> None:
        boot = asyncio.create_task(server.spawn(app / "app.py", [], app, {}, tmp_path / "log"))
        while not started.exists() or not started.read_text():  # bounded by _run
            await asyncio.sleep(0.02)
        boot.cancel()
        with pytest.raises(asyncio.CancelledError):
            await boot
        await _until_gone(int(started.read_text()))  # killed and reaped

    _run(scenario, hanging_launch)


def _children(pid: int) -> list[int]:
    """The live (not yet reaped, not zombie) children of `pid`, from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(int(child))
    return sorted(found)


async def _until_gone(pid: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BOUND_SECONDS
    while loop.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"process {pid} still runs {_BOUND_SECONDS:.0f} s later")


def _instance(tmp_path: Path) -> Instance:
    source = tmp_path / "source"
    _app(tmp_path, "")
    source.mkdir()
    (source / "Procfile").write_text("web: python3 app.py\n")
    (source / "app.py").write_text("import os\nprint('version', os.environ['RELEASE_VERSION'], flush=True)\n")
    artifact = build_artifact(source, tmp_path / "dist")
    return Instance(
        project="p",
        zone="z",
        name="vm",
        template_path="projects/p/global/instanceTemplates/t",
        release=ReleaseMetadata(
            artifact_url=f"file://{artifact}",
            version="1.2.3",
            artifact_sha256=hashlib.sha256(artifact.read_bytes()).hexdigest(),
        ),
        state_dir=tmp_path / "state",
    )


@pytest.mark.parametrize(("setting", "forked"), [("on", True), ("off", False)])
def test_an_instance_forks_its_python_web_process_unless_the_forkserver_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, forked: bool
) -> None:
    monkeypatch.setenv("COMPUTE_EMULATOR_FORKSERVER", setting)
    monkeypatch.setattr(instances, "_forkserver", None)  # its own, in this test's event loop
    instance = _instance(tmp_path)

    async def scenario() -> None:
        try:
            await instance.boot()
            assert instance.process is not None
            assert isinstance(instance.process, ForkedProcess) is forked
            assert await asyncio.wait_for(instance.process.wait(), _BOUND_SECONDS) == 0
            await instance.stop()
        finally:
            await instances.close_guest_forkserver()

    asyncio.run(scenario())
    log = instance.log_path.read_text()
    assert "version 1.2.3" in log
    assert ("(forked from the warm interpreter)" in log) is forked
    assert instance.status == "TERMINATED"
