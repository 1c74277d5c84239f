"""Count the Firestore and Pub/Sub work done over gRPC channels, in Firestore's billing units.

One counter for every place that measures the pipeline's Firestore work: the benchmarks' function
processes (through `sitecustomize` in this directory) and the test that holds an ordinary
deployment to its budget (tests/integration/pipeline/test_firestore_budget.py). Counts:
- a read is a document returned by a get, batch get or query (an empty query counts one);
- a write is a document write in a commit or batch write (a transaction's commit that Firestore
  aborted for contention is counted apart, as `<method> aborted`);
- a Pub/Sub message is one message in a Publish request, per topic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc


class RpcCounts:
    """Running totals, safe to update from many threads; `on_change` runs (under the lock) after
    every counted call."""

    def __init__(self, on_change: Callable[[RpcCounts], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.firestore_reads = 0
        self.firestore_writes = 0
        self.rpcs: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self._on_change = on_change

    def count(
        self, method: str, reads: int = 0, writes: int = 0, topic: str | None = None, messages: int = 0
    ) -> None:
        with self.lock:
            self.rpcs[method] = self.rpcs.get(method, 0) + 1
            self.firestore_reads += reads
            self.firestore_writes += writes
            if topic:
                self.published[topic] = self.published.get(topic, 0) + messages
            if self._on_change is not None:
                self._on_change(self)

    @property
    def firestore_operations(self) -> int:
        with self.lock:
            return self.firestore_reads + self.firestore_writes


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


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, counts: RpcCounts) -> None:
        self.counts = counts

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        count = self.counts.count
        method = details.method
        if method.endswith("/Commit") and getattr(request, "transaction", b""):
            # A transaction's commit: Firestore answers ABORTED on contention and the client
            # runs the transaction again, so those are counted apart (writes only if it held).
            outcome = continuation(details, request)
            aborted = outcome.exception() is not None and outcome.code() == grpc.StatusCode.ABORTED
            if aborted:
                count(f"{method} aborted")
            else:
                count(method, writes=len(getattr(request, "writes", [])))
            return outcome
        if method.endswith("/GetDocument"):
            # Billed like a batch get: a read when a document comes back (NOT_FOUND is none here).
            outcome = continuation(details, request)
            count(method, reads=1 if outcome.exception() is None else 0)
            return outcome
        if method.endswith("/Commit") or method.endswith("/BatchWrite"):
            count(method, writes=len(getattr(request, "writes", [])))
        elif method.endswith("/Publish") and "pubsub" in method:
            topic = str(getattr(request, "topic", "")).rsplit("/", 1)[-1]
            count(method, topic=topic, messages=len(getattr(request, "messages", [])))
        elif "firestore" in method or "pubsub" in method:
            count(method)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        count = self.counts.count
        method = details.method
        call = continuation(details, request)
        if method.endswith("/BatchGetDocuments"):
            return _CountingStream(
                call, lambda r: count(method, reads=1) if _has(r, "found") else None, lambda: None
            )
        if method.endswith("/RunQuery") or method.endswith("/RunAggregationQuery"):
            returned = [0]

            def on_response(response: Any) -> None:
                if _has(response, "document") or _has(response, "result"):
                    returned[0] += 1
                    count(method, reads=1)

            def on_end() -> None:
                if returned[0] == 0:
                    count(method, reads=1)  # an empty query is billed one read

            return _CountingStream(call, on_response, on_end)
        return call


def counting_insecure_channel(
    original: Callable[..., grpc.Channel], counts: RpcCounts
) -> Callable[..., grpc.Channel]:
    """`grpc.insecure_channel` (what the Google client libraries use to reach the emulators),
    with every channel it makes counted into `counts`."""

    def insecure_channel(target: str, *args: Any, **kwargs: Any) -> grpc.Channel:
        return grpc.intercept_channel(original(target, *args, **kwargs), CountingInterceptor(counts))

    return insecure_channel


@contextlib.contextmanager
def counting_emulator_channels(counts: RpcCounts) -> Iterator[RpcCounts]:
    """Within the block, channels the client libraries open to an emulator are counted into `counts`
    (a client opens its channel at its first call)."""
    original = grpc.insecure_channel
    grpc.insecure_channel = counting_insecure_channel(original, counts)
    try:
        yield counts
    finally:
        grpc.insecure_channel = original
