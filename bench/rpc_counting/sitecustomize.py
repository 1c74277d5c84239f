"""Count the Firestore and Pub/Sub work a process does, at the gRPC boundary (benchmarks only).

The benchmark starts the pipeline's functions with this directory on PYTHONPATH and
BENCH_RPC_COUNTS_DIR set; Python imports `sitecustomize` at start-up, and this one wraps
`grpc.insecure_channel` (what the Google client libraries use to reach the emulators) with the
counter of `rpc_counter.py` beside it, whose docstring says what is counted. Nothing in the
pipeline's code changes. A delivery is one push request a function answered (2xx acknowledged,
anything else makes Pub/Sub redeliver), counted by wrapping the WSGI app functions-framework
creates. Each process keeps its totals in `<dir>/<pid>.json`, rewritten at most every
`FLUSH_INTERVAL_SECONDS` while they change and when the process exits, with the entry point it
serves (`target`) once functions-framework has built its app, so the work can be told apart per
pipeline step. (Rewriting the file after every call, under one lock, cost a fifth of a busy
function's CPU and queued its threads on each other: the measurement slowed what it measured.)
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

_DIRECTORY = os.environ.get("BENCH_RPC_COUNTS_DIR")
FLUSH_INTERVAL_SECONDS = 0.2
"""Shorter than the quiet period `bench/rpc_counts.py` waits for before it reads the totals."""

if _DIRECTORY:
    import grpc
    from rpc_counter import RpcCounts, counting_insecure_channel

    _lock = threading.Lock()
    """Guards `_deliveries` and `_target`, what this file counts beside the gRPC counter."""
    _deliveries: dict[str, dict[str, int]] = {}
    _target: str | None = None

    _changed = threading.Event()
    _rpc_counts = RpcCounts(on_change=lambda counts: _changed.set())

    def _save() -> None:
        """Write the totals now (the file is replaced whole, so a reader never sees half of it)."""
        with _rpc_counts.lock, _lock:
            document: dict[str, Any] = {
                "firestore_reads": _rpc_counts.firestore_reads,
                "firestore_writes": _rpc_counts.firestore_writes,
                "rpcs": _rpc_counts.rpcs,
                "published": _rpc_counts.published,
                "deliveries": _deliveries,
            }
            if _target is not None:
                document["target"] = _target
            text = json.dumps(document)
        path = os.path.join(str(_DIRECTORY), f"{os.getpid()}.json")
        temporary = f"{path}.{threading.get_ident()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)

    def _flush_while_running() -> None:
        while True:
            _changed.wait()
            _changed.clear()
            _save()
            time.sleep(FLUSH_INTERVAL_SECONDS)

    grpc.insecure_channel = counting_insecure_channel(grpc.insecure_channel, _rpc_counts)

    def _start_flushing() -> None:
        threading.Thread(target=_flush_while_running, name="rpc-counts-flush", daemon=True).start()

    def _hold_locks() -> None:
        _rpc_counts.lock.acquire()
        _lock.acquire()

    def _release_locks() -> None:
        _lock.release()
        _rpc_counts.lock.release()

    def _continue_in_child() -> None:
        _release_locks()
        _start_flushing()

    _start_flushing()
    # The function server forks its worker from this process. A thread does not survive a fork,
    # and a lock the flusher held at that moment would stay held in the child for ever: the locks
    # are taken around the fork, and the child starts a flusher of its own.
    os.register_at_fork(before=_hold_locks, after_in_parent=_release_locks, after_in_child=_continue_in_child)
    atexit.register(_save)

    # ---- push deliveries: wrap the app functions-framework builds, once it is imported ------

    import importlib.abc
    import importlib.machinery
    import sys

    def _count_delivery(target: str, acknowledged: bool) -> None:
        with _lock:
            per_target = _deliveries.setdefault(target, {"acknowledged": 0, "retried": 0})
            per_target["acknowledged" if acknowledged else "retried"] += 1
        _changed.set()

    def _counting_wsgi(wsgi_app: Callable[..., Any], target: str) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("REQUEST_METHOD") != "POST":
                return wsgi_app(environ, start_response)

            def counting_start_response(status: str, headers: Any, *args: Any) -> Any:
                _count_delivery(target, status.startswith("2"))
                return start_response(status, headers, *args)

            return wsgi_app(environ, counting_start_response)

        return app

    def _patch_functions_framework(module: Any) -> None:
        original_create_app = module.create_app

        def create_app(target: str | None = None, *args: Any, **kwargs: Any) -> Any:
            global _target
            app = original_create_app(target, *args, **kwargs)
            name = target or os.environ.get("FUNCTION_TARGET", "function")
            app.wsgi_app = _counting_wsgi(app.wsgi_app, name)
            with _lock:
                _target = name
            _save()
            return app

        module.create_app = create_app

    class _FunctionsFrameworkFinder(importlib.abc.MetaPathFinder):
        """Lets functions_framework import normally, then patches `create_app` before anyone uses it."""

        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname != "functions_framework":
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            original_exec = loader.exec_module

            def exec_module(module: Any) -> None:
                original_exec(module)
                _patch_functions_framework(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _FunctionsFrameworkFinder())
