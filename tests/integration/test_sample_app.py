"""The sample app (examples/hello) as an instance runs it: its own process, spoken to over HTTP."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest

from devstack.processes import http_ok
from tests.sample_app import APP, launch

StartApp = Callable[[], int]


@pytest.fixture
def start_app() -> Iterator[StartApp]:
    """Starts the app and answers its port (its FAULT files: tests/unit/test_demo.py)."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        process, port = launch()
        started.append(process)
        return port

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def get(
    connection: http.client.HTTPConnection, path: str, method: str = "GET"
) -> tuple[int, bytes, dict[str, str]]:
    connection.request(method, path)
    response = connection.getresponse()
    return response.status, response.read(), {name.lower(): value for name, value in response.getheaders()}


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` bytes and read until the app closes the connection (bounded by a timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


def test_it_answers_its_version_health_and_assets(start_app: StartApp) -> None:
    port = start_app()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    status, body, headers = get(connection, "/")
    assert (status, body) == (200, b"1.4.2\n")
    assert headers["x-release-version"] == "1.4.2"
    assert headers["content-type"] == "text/plain"
    assert get(connection, "/?from=probe")[:2] == (200, b"1.4.2\n")
    assert get(connection, "/healthz")[:2] == (200, b"ok\n")
    status, body, headers = get(connection, "/static/app.css")
    assert (status, body) == (200, (APP / "static" / "app.css").read_bytes())
    assert headers["content-type"] == "text/css"
    assert get(connection, "/nothing-here")[0] == 404


def test_a_connection_is_kept_for_the_next_request_unless_the_client_closes_it(start_app: StartApp) -> None:
    port = start_app()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    get(connection, "/")
    first_socket = connection.sock
    assert get(connection, "/healthz")[0] == 200
    assert connection.sock is first_socket  # http.client reopens when the server closes

    # HTTP/1.0 and `Connection: close` end the connection after the answer.
    assert raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\n1.4.2\n")
    closed = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in closed and closed.endswith(b"ok\n")


def test_connections_open_at_once_are_all_served_and_their_workers_serve_later_ones(
    start_app: StartApp,
) -> None:
    """Workers are reused: every connection open at once has its own, and once they close the
    next connections are answered by the idle ones (a reserved worker that never came would
    leave a connection unanswered until the timeout)."""
    port = start_app()
    kept = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(6)]
    for round_ in range(3):
        for connection in kept:  # each still open, answered in turn while the others wait
            assert get(connection, "/")[:2] == (200, b"1.4.2\n"), round_
    for connection in kept:
        connection.close()
    for _ in range(20):
        closed = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert closed.endswith(b"ok\n")


def test_assets_cannot_reach_outside_the_static_folder(start_app: StartApp) -> None:
    port = start_app()
    answer = raw_exchange(port, b"GET /static/../app.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert b"socketserver" not in answer


def test_head_answers_headers_only_and_other_methods_are_refused(start_app: StartApp) -> None:
    port = start_app()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    status, body, headers = get(connection, "/", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "6")

    connection.request("POST", "/", body=b"x" * 5000)
    response = connection.getresponse()
    assert (response.status, response.getheader("Allow")) == (405, "GET, HEAD")
    response.read()
    # The body was read past, so the same connection serves the next request.
    assert get(connection, "/")[:2] == (200, b"1.4.2\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/2.0\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nContent-Length: many\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
    ],
)
def test_a_request_it_cannot_read_gets_a_clear_status_and_a_closed_connection(
    start_app: StartApp, request_bytes: bytes, status: bytes
) -> None:
    port = start_app()
    answer = raw_exchange(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close" in answer
    assert http_ok(f"http://127.0.0.1:{port}/healthz")()  # and the app still serves


def test_sigterm_stops_it_cleanly() -> None:
    process, port = launch(version="2.0.0")
    try:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert output.decode().strip() == f"hello 2.0.0 listening on {port}"
