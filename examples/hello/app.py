"""The sample app the pipeline deploys: `/` answers the release version, `/healthz` answers 200,
`/static/` serves the packaged assets.

Standard library only, so the artifact runs on any instance with a Python 3 interpreter. It speaks
the little HTTP/1.1 it needs itself, on `socketserver`, rather than through `http.server`: the
local stack runs every instance on one machine, and `http.server` (its imports, and an `email`
header parser per request) cost several times the CPU per start and per health probe, which a
hundred releases at once took from the pipeline.

A file named FAULT beside this one injects a fault into `/` while `/healthz` stays fine, to show
what release verification catches: `always` answers 500 on every `/` (its smoke check fails before
the switch), `half` answers 500 on every other `/` (it passes one smoke check but fails its bake
window under load).
"""

import itertools
import os
import queue
import signal
import socket
import socketserver
import sys
import threading
import time

VERSION = os.environ.get("RELEASE_VERSION", "unknown")
# os.path rather than pathlib: pathlib's imports alone would add a quarter to the app's start.
HERE = os.path.dirname(os.path.realpath(__file__))
STATIC = os.path.join(HERE, "static")
FAULT_FILE = os.path.join(HERE, "FAULT")
FAULT = ""
if os.path.isfile(FAULT_FILE):
    with open(FAULT_FILE, encoding="utf-8") as fault_file:
        FAULT = fault_file.read().strip()
_requests = itertools.count()

MAX_LINE = 8192  # the longest request line or header line read
MAX_HEADERS = 100
MAX_BODY = 1 << 20  # bodies are read only to be discarded, so the connection can be reused
IDLE_SECONDS = 60  # an idle keep-alive connection is closed after this
IDLE_WAKE_SECONDS = 3600.0
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html", ".svg": "image/svg+xml"}
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
# A header value must not carry a line break; the version comes from the environment.
VERSION_HEADER = VERSION if VERSION.isascii() and VERSION.isprintable() else "unknown"


class BadRequest(Exception):
    """A request this app cannot read; answered with `status`, then the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ClientGone(Exception):
    """The client closed the connection in the middle of a request."""


def fault_now() -> bool:
    """Whether this request to `/` fails (`next` on a count is atomic under the GIL)."""
    if FAULT == "always":
        return True
    return FAULT == "half" and next(_requests) % 2 == 1


def route(path: str) -> tuple[int, bytes, str]:
    """Status, body and content type of a GET of `path`."""
    if path == "/healthz":
        return 200, b"ok\n", "text/plain"
    if path == "/" and fault_now():
        return 500, b"injected fault\n", "text/plain"
    if path == "/":
        return 200, f"{VERSION}\n".encode(), "text/plain"
    if path.startswith("/static/"):
        asset = os.path.realpath(os.path.join(STATIC, path[len("/static/") :]))
        # Resolved first, so `/static/../app.py` cannot reach outside the assets.
        if asset.startswith(STATIC + os.sep) and os.path.isfile(asset):
            with open(asset, "rb") as content:
                body = content.read()
            return 200, body, CONTENT_TYPES.get(os.path.splitext(asset)[1], "application/octet-stream")
    return 404, b"not found\n", "text/plain"


def tokens(value: bytes) -> set[bytes]:
    """The comma-separated tokens of a header such as Connection, lower-cased."""
    return {token.strip().lower() for token in value.split(b",")}


class Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_SECONDS
    disable_nagle_algorithm = True

    def handle(self) -> None:
        try:
            while self.answer_one():
                pass
        except (OSError, ClientGone):  # reset, closed or idle past IDLE_SECONDS: nothing to answer
            pass

    def answer_one(self) -> bool:
        """Read one request and answer it; whether the connection stays open for the next one."""
        line = self.rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):  # a stray line break before a request is allowed (RFC 9112 2.2)
            line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        try:
            method, target, keep_alive = self.read_request(line)
        except BadRequest as refused:
            self.respond(refused.status, f"{REASONS[refused.status].lower()}\n".encode(), "text/plain", False)
            return False
        if method not in (b"GET", b"HEAD"):
            self.respond(405, b"method not allowed\n", "text/plain", keep_alive, allow="GET, HEAD")
            return keep_alive
        status, body, content_type = route(target.partition(b"?")[0].decode("latin-1"))
        self.respond(status, body, content_type, keep_alive, send_body=method == b"GET")
        return keep_alive

    def read_request(self, line: bytes) -> tuple[bytes, bytes, bool]:
        """Method, target and whether to keep the connection, with the headers and any body read."""
        if len(line) > MAX_LINE:
            raise BadRequest(414)
        parts = line.split()
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
            raise BadRequest(400)
        method, target, version = parts
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS + 1):
            header = self.rfile.readline(MAX_LINE + 1)
            if not header:
                raise ClientGone
            if len(header) > MAX_LINE:
                raise BadRequest(431)
            if header in (b"\r\n", b"\n"):
                break
            name, colon, value = header.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadRequest(400)
            headers[name.lower()] = value.strip()
        else:
            raise BadRequest(431)
        if b"transfer-encoding" in headers:
            raise BadRequest(501)  # no chunked bodies: a GET or HEAD has none
        length_text = headers.get(b"content-length", b"0")
        if not length_text.isdigit():
            raise BadRequest(400)
        length = int(length_text)
        if length > MAX_BODY:
            raise BadRequest(413)
        if length and len(self.rfile.read(length)) < length:
            raise ClientGone
        connection = tokens(headers.get(b"connection", b""))
        keep_alive = b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
        return method, target, keep_alive

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str,
        keep_alive: bool,
        *,
        send_body: bool = True,
        allow: str = "",
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {REASONS[status]}",
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}",
            "Server: hello",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"X-Release-Version: {VERSION_HEADER}",
        ]
        if allow:
            head.append(f"Allow: {allow}")
        if not keep_alive:
            head.append("Connection: close")
        # One write per response: a header and a body written apart on a keep-alive connection
        # stall ~40 ms on Nagle's algorithm and the client's delayed ACK.
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body if send_body else b""))


class Server(socketserver.TCPServer):
    """Serves each connection on a worker thread, reusing idle workers rather than starting a
    thread per connection: health checks open a connection every second, and a thread's start
    was half the CPU of answering one. A worker waits for the next connection once its own
    closes; there are as many as connections were ever open at once."""

    allow_reuse_address = True
    request_queue_size = 128  # a load balancer opens many connections at once

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(address, handler)
        self.waiting: queue.SimpleQueue[tuple[socket.socket, tuple[str, int]]] = queue.SimpleQueue()
        self.idle_workers = 0
        self.idle_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self.idle_lock:
            start_worker = self.idle_workers == 0
            if not start_worker:
                self.idle_workers -= 1
        if start_worker:
            # Started before the connection is queued: if it cannot start, the server closes the
            # connection, and no queued connection is left waiting for a worker counted as idle.
            threading.Thread(target=self.work, daemon=True).start()
        self.waiting.put((request, client_address))

    def work(self) -> None:
        while True:
            request, client_address = self.waiting.get()
            try:
                self.finish_request(request, client_address)
            except Exception:  # one connection's failure must not end the worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self.idle_lock:
                self.idle_workers += 1


def main() -> None:
    server = Server(("127.0.0.1", int(os.environ["PORT"])), Handler)
    # A graceful stop on SIGTERM, as systemd and the Compute emulator send it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello {VERSION} listening on {server.server_address[1]}", flush=True)
    # Nothing here calls `shutdown()`, which is all the poll interval is for (SIGTERM interrupts
    # the wait by itself): waking twice a second by default was 0.2 ms of CPU a second per
    # instance, as much as its health probes, and a local stack runs hundreds of instances.
    server.serve_forever(poll_interval=IDLE_WAKE_SECONDS)


if __name__ == "__main__":
    main()
