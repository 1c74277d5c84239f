"""The benchmarks' RPC counting (bench/rpc_counting/sitecustomize.py) in a process that forks a
worker, as the function server does: the worker's counts still reach its file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

COUNTING_DIR = Path(__file__).resolve().parents[2] / "bench" / "rpc_counting"

# The parent holds the counting lock while it forks (the moment a flush could be writing), then
# the child counts one call and waits, bounded, for its file to show it.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import sitecustomize

    sitecustomize._lock.acquire()
    threading.Timer(0.05, sitecustomize._lock.release).start()
    pid = os.fork()
    if pid == 0:
        sitecustomize._rpc_counts.count("google.firestore.v1.Firestore/Commit", writes=2)
        path = os.path.join(os.environ["BENCH_RPC_COUNTS_DIR"], f"{os.getpid()}.json")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(path, encoding="utf-8") as handle:
                    if json.load(handle)["firestore_writes"] == 2:
                        os._exit(0)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_worker_flushes_its_own_counts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(COUNTING_DIR), "BENCH_RPC_COUNTS_DIR": str(tmp_path)}
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, timeout=30, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    files = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in tmp_path.glob("*.json")}
    assert [counts["firestore_writes"] for counts in files.values() if counts["firestore_writes"]] == [2]


def test_the_counts_name_the_entry_point_the_process_serves(tmp_path: Path) -> None:
    source = tmp_path / "main.py"
    source.write_text("def hello(request):\n    return 'ok'\n", encoding="utf-8")
    script = f"import functions_framework\nfunctions_framework.create_app('hello', {str(source)!r})\n"
    counts = tmp_path / "counts"
    counts.mkdir()
    env = {**os.environ, "PYTHONPATH": str(COUNTING_DIR), "BENCH_RPC_COUNTS_DIR": str(counts)}
    finished = subprocess.run(
        [sys.executable, "-c", script], env=env, timeout=60, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    (document,) = [json.loads(path.read_text(encoding="utf-8")) for path in counts.glob("*.json")]
    assert document["target"] == "hello"
    assert document["deliveries"] == {} and document["firestore_reads"] == 0
