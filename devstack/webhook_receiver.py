"""A local webhook endpoint for the pipeline's generic JSON `webhook` notification channel.

It appends every POSTed body to a JSON-lines file, so a person (or a test) can see exactly what a
chat channel would have received. `GET /healthz` answers 200.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

MAX_BODY_BYTES = 1 << 20


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], record_file: Path) -> None:
        super().__init__(address, _ReceiverHandler)
        self.record_file = record_file
        self.write_lock = threading.Lock()


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(413)
            return
        raw = self.rfile.read(length)
        try:
            body: object = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = raw.decode("utf-8", errors="replace")
        line = json.dumps({"path": self.path, "body": body}, sort_keys=True)
        with self.server.write_lock, open(self.server.record_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self._reply(200)

    def _reply(self, status: int) -> None:
        body = b"{}" if status == 200 else b'{"error": "not found"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"webhook-receiver: {format % args}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record-file", type=Path, required=True)
    args = parser.parse_args(argv)
    args.record_file.parent.mkdir(parents=True, exist_ok=True)
    server = _ReceiverServer((args.host, args.port), args.record_file)

    def shut_down(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    main()
