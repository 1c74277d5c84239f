"""Count the Firestore and Pub/Sub work a process does, at the gRPC boundary (benchmarks only).

The benchmark starts the pipeline's functions with this directory on PYTHONPATH and
BENCH_RPC_COUNTS_DIR set; Python imports `sitecustomize` at start-up, and this one wraps
`grpc.insecure_channel` (what the Google client libraries use to reach the emulators) with an
interceptor. Nothing in the pipeline's code changes. Counts follow Firestore's billing units:
- a read is a document returned by a get, batch get or query (an empty query counts one);
- a write is a document write in a commit or batch write (a transaction's commit that Firestore
  aborted for contention is counted apart, as `<method> aborted`);
- a Pub/Sub message is one message in a Publish request, per topic;
- a delivery is one push request a function answered (2xx acknowledged, anything else makes
  Pub/Sub redeliver), counted by wrapping the WSGI app functions-framework creates.
Each process keeps its totals in `<dir>/<pid>.json`, rewritten after every counted call, with the
entry point it serves (`target`) once functions-framework has built its app, so the work can be
told apart per pipeline step.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DIRECTORY = os.environ.get("BENCH_RPC_COUNTS_DIR")

if _DIRECTORY:
    import grpc

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

    def _count(
        method: str, reads: int = 0, writes: int = 0, topic: str | None = None, messages: int = 0
    ) -> None:
        with _lock:
            _counts["rpcs"][method] = _counts["rpcs"].get(method, 0) + 1
            _counts["firestore_reads"] += reads
            _counts["firestore_writes"] += writes
            if topic:
                _counts["published"][topic] = _counts["published"].get(topic, 0) + messages
            _save()

    def _has(message: Any, field: str) -> bool:
        raw = getattr(message, "_pb", message)
        try:
            return bool(raw.HasField(field))
        except (ValueError, AttributeError):  # not a message field: treat as absent
            return False

    class _CountingStream:
        """Passes a streaming call through, counting each response; the call's methods still work."""

        def __init__(self, call: Any, on_response: Callable[[Any], None], on_end: Callable[[], None]) -> None:
            self._call = call
            self._on_response = on_response
            self._on_end = on_end

        def __iter__(self) -> Iterator[Any]:
            return self

        def __next__(self) -> Any:
            try:
                response = next(self._call)
            except StopIteration:
                self._on_end()
                raise
            self._on_response(response)
            return response

        def __getattr__(self, name: str) -> Any:
            return getattr(self._call, name)

    class _Counter(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            method = details.method
            if method.endswith("/Commit") and getattr(request, "transaction", b""):
                # A transaction's commit: Firestore answers ABORTED on contention and the client
                # runs the transaction again, so those are counted apart (writes only if it held).
                outcome = continuation(details, request)
                aborted = outcome.exception() is not None and outcome.code() == grpc.StatusCode.ABORTED
                if aborted:
                    _count(f"{method} aborted")
                else:
                    _count(method, writes=len(getattr(request, "writes", [])))
                return outcome
            if method.endswith("/Commit") or method.endswith("/BatchWrite"):
                _count(method, writes=len(getattr(request, "writes", [])))
            elif method.endswith("/Publish") and "pubsub" in method:
                topic = str(getattr(request, "topic", "")).rsplit("/", 1)[-1]
                _count(method, topic=topic, messages=len(getattr(request, "messages", [])))
            elif "firestore" in method or "pubsub" in method:
                _count(method)
            return continuation(details, request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            method = details.method
            call = continuation(details, request)
            if method.endswith("/BatchGetDocuments"):
                return _CountingStream(
                    call, lambda r: _count(method, reads=1) if _has(r, "found") else None, lambda: None
                )
            if method.endswith("/RunQuery") or method.endswith("/RunAggregationQuery"):
                returned = [0]

                def on_response(response: Any) -> None:
                    if _has(response, "document") or _has(response, "result"):
                        returned[0] += 1
                        _count(method, reads=1)

                def on_end() -> None:
                    if returned[0] == 0:
                        _count(method, reads=1)  # an empty query is billed one read

                return _CountingStream(call, on_response, on_end)
            return call

    _original_insecure_channel = grpc.insecure_channel

    def _counting_insecure_channel(target: str, *args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(_original_insecure_channel(target, *args, **kwargs), _Counter())

    grpc.insecure_channel = _counting_insecure_channel

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
