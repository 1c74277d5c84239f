"""Count the Firestore and Pub/Sub work a process does, at the gRPC boundary (benchmarks only).

The benchmark starts the pipeline's functions with this directory on PYTHONPATH and
BENCH_RPC_COUNTS_DIR set; Python imports `sitecustomize` at start-up, and this one wraps
`grpc.insecure_channel` (what the Google client libraries use to reach the emulators) with the
counter of `rpc_counter.py` beside it, whose docstring says what is counted. Nothing in the
pipeline's code changes. A delivery is one push request a function answered (2xx acknowledged,
anything else makes Pub/Sub redeliver), counted by wrapping the WSGI app functions-framework
creates. Each process keeps its totals in `<dir>/<pid>.json`, rewritten after every counted call,
with the entry point it serves (`target`) once functions-framework has built its app, so the work
can be told apart per pipeline step.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

_DIRECTORY = os.environ.get("BENCH_RPC_COUNTS_DIR")

if _DIRECTORY:
    import grpc
    from rpc_counter import RpcCounts, counting_insecure_channel

    _lock = threading.Lock()
    _counts: dict[str, Any] = {
        "firestore_reads": 0,
        "firestore_writes": 0,
        "rpcs": {},
        "published": {},
        "deliveries": {},
    }

    def _save() -> None:
        path = os.path.join(str(_DIRECTORY), f"{os.getpid()}.json")
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_counts, handle)
        os.replace(temporary, path)

    def _on_rpc(counts: RpcCounts) -> None:
        with _lock:
            _counts["firestore_reads"] = counts.firestore_reads
            _counts["firestore_writes"] = counts.firestore_writes
            _counts["rpcs"] = dict(counts.rpcs)
            _counts["published"] = dict(counts.published)
            _save()

    grpc.insecure_channel = counting_insecure_channel(grpc.insecure_channel, RpcCounts(on_change=_on_rpc))

    # ---- push deliveries: wrap the app functions-framework builds, once it is imported ------

    import importlib.abc
    import importlib.machinery
    import sys

    def _count_delivery(target: str, acknowledged: bool) -> None:
        with _lock:
            per_target = _counts["deliveries"].setdefault(target, {"acknowledged": 0, "retried": 0})
            per_target["acknowledged" if acknowledged else "retried"] += 1
            _save()

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
            app = original_create_app(target, *args, **kwargs)
            name = target or os.environ.get("FUNCTION_TARGET", "function")
            app.wsgi_app = _counting_wsgi(app.wsgi_app, name)
            with _lock:
                _counts["target"] = name
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
