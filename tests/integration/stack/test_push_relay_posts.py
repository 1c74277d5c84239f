"""The push relay keeps its connection to a function server alive between pushes, and a
connection the server closed while idle costs no push."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.push_relay import post


class _Server(ThreadingHTTPServer):
    connections = 0
    close_silently = False
    """Close each connection after its answer without saying so, as a keep-alive timeout does."""
    close_saying_so = False
    """Answer with `Connection: close`, then close."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        if self.server.close_saying_so:
            self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = self.server.close_silently or self.server.close_saying_so

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.shutdown()
        running.server_close()


def _endpoint(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/projects/p/topics/t"


def test_pushes_from_one_thread_share_a_connection(server: _Server) -> None:
    statuses = [post(_endpoint(server), b"{}", 5) for _ in range(5)]
    assert statuses == [204] * 5
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_costs_no_push(server: _Server) -> None:
    server.close_silently = True
    statuses = [post(_endpoint(server), b"{}", 5) for _ in range(3)]
    assert statuses == [204] * 3
    assert server.connections == 3


def test_a_server_that_says_it_closes_gets_a_new_connection_for_the_next_push(server: _Server) -> None:
    server.close_saying_so = True
    statuses = [post(_endpoint(server), b"{}", 5) for _ in range(3)]
    assert statuses == [204] * 3
    assert server.connections == 3


def test_no_server_is_no_answer() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as closed:
        port = closed.server_address[1]
    assert post(f"http://127.0.0.1:{port}/projects/p/topics/t", b"{}", 5) == 0
