"""The sample app's releases, as the demo, the benches and the chaos run publish them: a commit id
per build, their build-succeeded message, the variants (a feature, a broken health check, a fault
in `/`), and the version a URL serves.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import requests

from releasectl.remote import build_message

SAMPLE_APP = Path(__file__).resolve().parent.parent / "examples" / "hello"


UNHEALTHY_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"broken release\\n")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
"""An app that answers 500 to everything, its health check included: it starts, never serves."""


class DemoFailure(Exception):
    """A step did not behave; the demo stops there and reports."""


def fake_commit(label: str) -> str:
    """A unique, valid 40-hex commit id for a demo build."""
    return hashlib.sha1(label.encode()).hexdigest()


def local_build_message(
    *,
    app: str,
    environment: str,
    build_id: str,
    artifact: str,
    artifact_sha256: str,
    commit_message: str,
    **optional: str,
) -> tuple[bytes, dict[str, str]]:
    """The build-succeeded message of a local build: one commit, named after the build id, whose
    message decides the version bump; `optional` holds the message's optional string fields."""
    return build_message(
        app=app,
        environment=environment,
        commit=fake_commit(build_id),
        build_id=build_id,
        artifact=artifact,
        artifact_sha256=artifact_sha256,
        commit_messages=[commit_message],
        **optional,
    )


def served_version(url: str) -> str | None:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:  # transient: the load balancer may be between backends
        return None
    return response.text.strip() if response.status_code == 200 else None


def wait_for_version(url: str, version: str, timeout: float) -> float | None:
    """Seconds until `url` answers `version`, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if served_version(url) == version:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def _copy(source: Path, into: Path) -> Path:
    target = into / "hello"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def feature_copy(source: Path, into: Path) -> Path:
    """The sample app plus one file, so the feature release is a different artifact."""
    target = _copy(source, into)
    (target / "CHANGELOG").write_text("A greeting for everyone.\n", encoding="utf-8")
    return target


def broken_copy(source: Path, into: Path) -> Path:
    """The sample app with a health check that answers 500: it runs, but is never healthy."""
    target = _copy(source, into)
    app = target / "app.py"
    text = app.read_text(encoding="utf-8")
    healthy = 'return 200, b"ok\\n", "text/plain"'
    if healthy not in text:
        raise DemoFailure("cannot break the sample app: its health-check line changed")
    app.write_text(text.replace(healthy, 'return 500, b"broken\\n", "text/plain"', 1), encoding="utf-8")
    return target


def unhealthy_app(into: Path) -> Path:
    """A directory holding `UNHEALTHY_APP` and the Procfile that runs it, for `build_artifact`."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "app.py").write_text(UNHEALTHY_APP, encoding="utf-8")
    (into / "Procfile").write_text("web: python3 app.py\n", encoding="utf-8")
    return into


def faulty_copy(source: Path, into: Path, fault: str) -> Path:
    """The sample app with a FAULT marker (see examples/hello/app.py): `/` fails, /healthz does not."""
    target = _copy(source, into)
    (target / "FAULT").write_text(f"{fault}\n", encoding="utf-8")
    return target
