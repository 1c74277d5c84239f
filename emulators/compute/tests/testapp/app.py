"""A web process for emulator tests: like the sample app, plus a slow path and a broken-health mode.

`python3 app.py [--healthz-status CODE]`: `/` answers RELEASE_VERSION, `/slow?ms=N` answers it after
N milliseconds (to keep requests in flight), `/healthz` answers CODE (200 unless told otherwise).
"""

import argparse
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

VERSION = os.environ.get("RELEASE_VERSION", "unknown")


def make_handler(healthz_status: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/healthz":
                self._send(healthz_status, b"health\n")
            elif url.path == "/slow":
                milliseconds = int(parse_qs(url.query).get("ms", ["100"])[0])
                time.sleep(milliseconds / 1000)
                self._send(200, f"{VERSION}\n".encode())
            elif url.path == "/":
                self._send(200, f"{VERSION}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--healthz-status", type=int, default=200)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), make_handler(args.healthz_status))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
