"""A bounded background load generator: steady GETs against a URL, counting what users would see.

Used by `make demo`, the benchmarks and end-to-end tests to prove zero downtime: every request is
recorded with its latency, its outcome and the version that answered (the sample app's body), in
named phases (`before`, `during`, `after`) so each part of a release can be judged on its own.

    with LoadGenerator(url) as load:
        load.phase("during")
        ...
    report = load.report()
    assert report.failed == 0
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import requests

T = TypeVar("T")

DEFAULT_WORKERS = 4
DEFAULT_REQUEST_TIMEOUT_SECONDS = 5.0
DEFAULT_PAUSE_SECONDS = 0.01
"""Between two requests of one worker: steady traffic that leaves the machine room to breathe."""
DEFAULT_MAX_SECONDS = 900.0
"""Hard bound: the generator stops by itself even if nobody calls stop()."""
MAX_FAILURE_SAMPLES = 20


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since the generator started."""
    phase: str
    latency_seconds: float
    ok: bool
    version: str | None
    error: str | None = None


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (`fraction` in 0..1) of `values`.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    >>> percentile([], 0.99) is None
    True
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass
class PhaseStats:
    name: str
    served: int = 0
    failed: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: list[Sample] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None

    @property
    def requests(self) -> int:
        return self.served + self.failed

    @property
    def p50_ms(self) -> float | None:
        value = percentile(self.latencies, 0.50)
        return None if value is None else value * 1000

    @property
    def p99_ms(self) -> float | None:
        value = percentile(self.latencies, 0.99)
        return None if value is None else value * 1000

    @property
    def mean_ms(self) -> float | None:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else None


@dataclass
class LoadReport:
    total: PhaseStats
    phases: dict[str, PhaseStats]
    version_sequence: list[tuple[str, float, float]]
    """Consecutive runs of the same version answering: (version, first seen, last seen)."""

    @property
    def served(self) -> int:
        return self.total.served

    @property
    def failed(self) -> int:
        return self.total.failed

    def versions_seen(self) -> set[str]:
        return set(self.total.versions)


def summarize(samples: Iterable[Sample]) -> LoadReport:
    total = PhaseStats("total")
    phases: dict[str, PhaseStats] = {}
    sequence: list[tuple[str, float, float]] = []
    for sample in sorted(samples, key=lambda s: s.at):
        for stats in (total, phases.setdefault(sample.phase, PhaseStats(sample.phase))):
            stats.first_at = sample.at if stats.first_at is None else stats.first_at
            stats.last_at = sample.at
            if sample.ok:
                stats.served += 1
                stats.latencies.append(sample.latency_seconds)
                if sample.version:
                    stats.versions[sample.version] += 1
            else:
                stats.failed += 1
                if len(stats.failures) < MAX_FAILURE_SAMPLES:
                    stats.failures.append(sample)
        if sample.ok and sample.version:
            if sequence and sequence[-1][0] == sample.version:
                sequence[-1] = (sample.version, sequence[-1][1], sample.at)
            else:
                sequence.append((sample.version, sample.at, sample.at))
    return LoadReport(total=total, phases=phases, version_sequence=sequence)


class LoadGenerator:
    """`workers` threads GET `url` until stop() or `max_seconds`; a 200 counts as served."""

    def __init__(
        self,
        url: str,
        *,
        workers: int = DEFAULT_WORKERS,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        pause_seconds: float = DEFAULT_PAUSE_SECONDS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        phase: str = "before",
    ) -> None:
        self.url = url
        self.workers = workers
        self.request_timeout_seconds = request_timeout_seconds
        self.pause_seconds = pause_seconds
        self.max_seconds = max_seconds
        self._phase = phase
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self._started = time.monotonic()
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"load-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            # A worker finishes its request in flight: at most the request timeout plus a pause.
            thread.join(timeout=self.request_timeout_seconds + 5)
        return self.report()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ---- while running ----------------------------------------------------------------------
    def phase(self, name: str) -> None:
        """Label the requests sent from now on."""
        with self._lock:
            self._phase = name

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def running(self) -> bool:
        """Whether any worker is still sending (false once stopped or past `max_seconds`)."""
        return any(thread.is_alive() for thread in self._threads)

    def report(self) -> LoadReport:
        with self._lock:
            samples = list(self._samples)
        return summarize(samples)

    def counts(self) -> tuple[int, int]:
        """(served, failed) so far, for progress lines."""
        with self._lock:
            served = sum(1 for s in self._samples if s.ok)
            return served, len(self._samples) - served

    def _work(self) -> None:
        session = requests.Session()
        deadline = self._started + self.max_seconds
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    phase = self._phase
                sent = time.monotonic()
                try:
                    response = session.get(self.url, timeout=self.request_timeout_seconds)
                    latency = time.monotonic() - sent
                    ok = response.status_code == 200
                    sample = Sample(
                        at=sent - self._started,
                        phase=phase,
                        latency_seconds=latency,
                        ok=ok,
                        version=response.text.strip() if ok else None,
                        error=None if ok else f"HTTP {response.status_code}",
                    )
                except requests.RequestException as exc:  # a failed request is data here, not an error
                    sample = Sample(
                        at=sent - self._started,
                        phase=phase,
                        latency_seconds=time.monotonic() - sent,
                        ok=False,
                        version=None,
                        error=type(exc).__name__,
                    )
                with self._lock:
                    self._samples.append(sample)
                self._stop.wait(self.pause_seconds)
        finally:
            session.close()


def under_load(url: str, act: Callable[[], T], settle_seconds: float) -> tuple[T, LoadReport]:
    """Run `act` while steady load reaches `url`, with `settle_seconds` of load before it and after
    it (phases `before`, `during`, `after`) so the change is judged against traffic on both sides.
    Returns what `act` returned and what the load saw."""
    with LoadGenerator(url) as load:
        time.sleep(settle_seconds)  # not a poll: the traffic users had before the change
        load.phase("during")
        result = act()
        load.phase("after")
        time.sleep(settle_seconds)
    return result, load.report()
