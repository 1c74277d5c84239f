"""The sample app the pipeline deploys: `/` answers the release version, `/healthz` answers 200.

Standard library only, so the artifact runs on any instance with a Python 3 interpreter.

A file named FAULT beside this one injects a fault into `/` while `/healthz` stays fine, to show
what release verification catches: `always` answers 500 on every `/` (its smoke check fails before
the switch), `half` answers 500 on every other `/` (it passes one smoke check but fails its bake
window under load).
"""

import itertools
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = os.environ.get("RELEASE_VERSION", "unknown")
STATIC = Path(__file__).resolve().parent / "static"
FAULT_FILE = Path(__file__).resolve().parent / "FAULT"
FAULT = FAULT_FILE.read_text(encoding="utf-8").strip() if FAULT_FILE.is_file() else ""
_requests = itertools.count()


def fault_now() -> bool:
    """Whether this request to `/` fails (`next` on a count is atomic under the GIL)."""
    if FAULT == "always":
        return True
    return FAULT == "half" and next(_requests) % 2 == 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer each response and send it in one write (flushed after every request): separate
    # header and body writes on a keep-alive connection stall ~40 ms on Nagle + delayed ACK.
    wbufsize = 64 * 1024

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif self.path == "/" and fault_now():
            self._send(500, b"injected fault\n", "text/plain")
        elif self.path == "/":
            self._send(200, f"{VERSION}\n".encode(), "text/plain")
        elif self.path.startswith("/static/") and (STATIC / self.path[len("/static/") :]).is_file():
            self._send(200, (STATIC / self.path[len("/static/") :]).read_bytes(), "text/css")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Release-Version", VERSION)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    # A graceful stop on SIGTERM, as systemd and the Compute emulator send it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello {VERSION} listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
