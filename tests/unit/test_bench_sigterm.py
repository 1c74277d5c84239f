"""A benchmark ended by SIGTERM still runs its clean-up, so its private stack is stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

BENCHMARK_LIKE = """
import pathlib, sys, time
from bench.__main__ import stop_on_sigterm
stop_on_sigterm()
try:
    print("started", flush=True)
    time.sleep(60)
finally:
    pathlib.Path(sys.argv[1]).write_text("stack stopped")
"""


def test_sigterm_runs_the_benchmarks_clean_up(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    process = subprocess.Popen(
        [sys.executable, "-c", BENCHMARK_LIKE, str(marker)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        process.kill()
    assert marker.read_text() == "stack stopped"
