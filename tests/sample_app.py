"""Starting the sample app (examples/hello, or a copy of it) as an instance runs it, for tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack.processes import free_port, http_answers, wait_until

APP = Path(__file__).resolve().parents[1] / "examples" / "hello"
START_TIMEOUT_SECONDS = 10


def launch(
    app_dir: Path = APP, version: str = "1.4.2", *, output: int | None = subprocess.PIPE
) -> tuple[subprocess.Popen[bytes], int]:
    """The app of `app_dir` started on a free port, once it answers HTTP (whatever the status: a
    broken copy answers 500): its process and port. A process that never answers is killed.
    `output` None lets its output through (a faulty copy's traceback shows in a failing test)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=app_dir,
        env={"PORT": str(port), "RELEASE_VERSION": version},
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            http_answers(f"http://127.0.0.1:{port}/healthz"), START_TIMEOUT_SECONDS, "the sample app", process
        )
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process, port
