"""The load generator counts what users would see, per phase, against a real local HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.load import LoadGenerator, Sample, percentile, summarize, under_load


@dataclass
class VersionServer:
    url: str
    version: str = "1.0.0"
    failing: bool = False


@pytest.fixture
def server() -> Iterator[VersionServer]:
    state = VersionServer(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body = (503, b"no backend\n") if state.failing else (200, f"{state.version}\n".encode())
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{http.server_address[1]}/"
    try:
        yield state
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=5)


def wait_for_requests(load: LoadGenerator, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(load.counts()) < count:
        assert time.monotonic() < deadline, "the load generator sent too few requests"
        time.sleep(0.01)


def test_requests_are_counted_per_phase_with_the_version_that_answered(server: VersionServer) -> None:
    with LoadGenerator(server.url, workers=2) as load:
        wait_for_requests(load, 20)
        load.phase("during")
        server.version = "1.1.0"
        start = sum(load.counts())
        wait_for_requests(load, start + 20)
        load.phase("after")
        start = sum(load.counts())
        wait_for_requests(load, start + 20)
    report = load.report()

    assert report.failed == 0
    assert set(report.phases) == {"before", "during", "after"}
    assert set(report.phases["after"].versions) == {"1.1.0"}
    assert report.version_sequence[0][0] == "1.0.0"
    assert report.version_sequence[-1][0] == "1.1.0"
    assert report.total.p50_ms is not None


def test_failed_requests_are_counted_and_kept_as_examples(server: VersionServer) -> None:
    server.failing = True
    with LoadGenerator(server.url, workers=1) as load:
        wait_for_requests(load, 5)
    report = load.report()

    assert report.served == 0
    assert report.failed >= 5
    assert report.total.failures[0].error == "HTTP 503"


def test_an_unreachable_url_is_a_failure_not_a_crash() -> None:
    with LoadGenerator("http://127.0.0.1:9/", workers=1, request_timeout_seconds=0.5) as load:
        wait_for_requests(load, 3)

    assert load.report().failed >= 3


def test_the_generator_stops_by_itself_at_its_bound(server: VersionServer) -> None:
    load = LoadGenerator(server.url, workers=1, max_seconds=0.3).start()
    assert load.running
    deadline = time.monotonic() + 10
    while load.running and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not load.running, "the generator is still sending 10 s after its 0.3 s bound"
    assert 0.3 <= load.elapsed() < 10
    settled = sum(load.counts())
    assert settled > 0
    assert load.stop().total.requests == settled


def test_summaries_split_version_runs_and_percentiles() -> None:
    samples = [
        Sample(at=0.0, phase="before", latency_seconds=0.010, ok=True, version="1"),
        Sample(at=0.1, phase="during", latency_seconds=0.020, ok=True, version="2"),
        Sample(at=0.2, phase="during", latency_seconds=0.030, ok=True, version="1"),
        Sample(at=0.3, phase="after", latency_seconds=0.040, ok=False, version=None, error="HTTP 502"),
    ]
    report = summarize(samples)

    assert [v for v, _, _ in report.version_sequence] == ["1", "2", "1"]
    assert report.phases["during"].served == 2
    assert report.phases["after"].failed == 1
    assert percentile([0.010, 0.020, 0.030], 0.5) == 0.020


def test_under_load_labels_the_traffic_before_during_and_after_the_change(server: VersionServer) -> None:
    def release() -> str:
        server.version = "2.0.0"
        return "released"

    result, report = under_load(server.url, release, settle_seconds=0.3)
    assert result == "released"
    assert set(report.phases) <= {"before", "during", "after"}
    # Labelled when sent, so a request of `before` may still be in flight when the change lands;
    # one of `after` went out once `act` had returned, and meets the new version only.
    after = report.phases.get("after")
    assert after is None or set(after.versions) == {"2.0.0"}
    assert report.versions_seen() <= {"1.0.0", "2.0.0"}
    assert report.failed == 0
