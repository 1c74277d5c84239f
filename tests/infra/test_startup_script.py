"""The instances' startup script, run for real: real bash, curl and tar against a metadata
server on 127.0.0.1 and a temporary root. Only systemctl, nginx and useradd are stand-ins
(PATH shims that record their calls), since the test must not touch the machine's services
or users. The generated launcher is then started to show the unpacked release really serves.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

from shared.artifact import build_artifact

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "terraform" / "modules" / "environment" / "startup.sh"
SAMPLE_APP = REPO / "examples" / "hello"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("bash", "curl", "tar", "python3")),
    reason="needs bash, curl, tar and python3",
)


class LoopbackServer:
    """An HTTP server on a free port of 127.0.0.1, serving from a thread while in a `with` block."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class MetadataServer(LoopbackServer):
    """Serves instance attributes the way the metadata server does, header check included."""

    def __init__(self) -> None:
        self.attributes: dict[str, str] = {}
        self.guest_attributes: dict[str, str] = {}
        self.guest_attributes_enabled = True
        """False: as without `enable-guest-attributes=TRUE` in the metadata, writes are refused."""
        self.watch_polls = 0
        """How many `wait_for_change` requests (a watcher's long polls) have been answered."""
        attributes = self.attributes
        guest_attributes = self.guest_attributes
        server = self
        guest_prefix = "/computeMetadata/v1/instance/guest-attributes/"

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                # Guest attributes: the guest writes `namespace/key` with the value as the body.
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._answer(403, "Missing Metadata-Flavor:Google header")
                elif not server.guest_attributes_enabled:
                    self._answer(403, "Guest attributes endpoint access is disabled.")
                elif self.path.startswith(guest_prefix) and self.path.count("/") == 6:
                    guest_attributes[self.path[len(guest_prefix) :]] = body
                    self._answer(200, "")
                else:
                    self._answer(404, "not found")

            def do_DELETE(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._answer(403, "Missing Metadata-Flavor:Google header")
                elif guest_attributes.pop(self.path[len(guest_prefix) :], None) is not None:
                    self._answer(200, "")
                else:
                    self._answer(404, "not found")

            def do_GET(self) -> None:
                # Query parameters (wait_for_change, last_etag) are accepted and ignored: this
                # server answers at once, which the watcher must tolerate without spinning.
                prefix = "/computeMetadata/v1/instance/attributes/"
                path, _, query = self.path.partition("?")
                if "wait_for_change=true" in query:
                    server.watch_polls += 1
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._answer(403, "Missing Metadata-Flavor:Google header")
                elif path.startswith(prefix) and path[len(prefix) :] in attributes:
                    self._answer(200, attributes[path[len(prefix) :]])
                elif path == "/computeMetadata/v1/instance/service-accounts/default/token":
                    self._answer(200, json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3599}))
                else:
                    self._answer(404, "not found")

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("ETag", hashlib.sha1(data).hexdigest()[:16])
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.origin}/computeMetadata/v1"


ACCESS_TOKEN = "instance-token"


class StorageServer(LoopbackServer):
    """The Cloud Storage JSON API's media download: GET /storage/v1/b/B/o/O?alt=media, bearer token
    required; `objects` maps "B/O" to (status, body), anything else is a 404."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, bytes]] = {}
        objects = self.objects

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                prefix = "/storage/v1/b/"
                bucket, _, name = path[len(prefix) :].partition("/o/")
                if self.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
                    status, body = 401, b"no token"
                elif not path.startswith(prefix) or query != "alt=media":
                    status, body = 400, b"bad request"
                else:
                    status, body = objects.get(
                        f"{bucket}/{urllib.parse.unquote(name)}", (404, b"No such object")
                    )
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.origin


@dataclass
class Instance:
    """A temporary root, the shims, and how to boot the script in them."""

    root: Path
    shims: Path
    calls: Path
    metadata: MetadataServer
    runs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    storage_url: str = "http://127.0.0.1:9"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.shims}{os.pathsep}{os.environ.get('PATH', '')}",
            "RELEASE_METADATA_URL": self.metadata.url,
            "RELEASE_STORAGE_URL": self.storage_url,
            "RELEASE_ROOT": str(self.root),
        }

    def boot(self) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", str(SCRIPT)], env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        self.runs.append(result)
        return result

    def recorded_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("systemctl", "nginx", "useradd"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        shim.chmod(0o755)
    # Installing packages would touch the machine: make it an error if the script tries.
    apt = shims / "apt-get"
    apt.write_text('#!/bin/sh\necho "apt-get must not run here" >&2\nexit 1\n')
    apt.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    with MetadataServer() as metadata:
        yield Instance(root=root, shims=shims, calls=calls, metadata=metadata)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release(instance: Instance, tmp_path: Path, version: str) -> Path:
    artifact = build_artifact(SAMPLE_APP, tmp_path / "dist")
    instance.metadata.attributes.update(
        {
            "release-artifact": artifact.as_uri(),
            "release-artifact-sha256": sha256(artifact),
            "release-version": version,
            "release-port": "8080",
        }
    )
    return artifact


def booted(instance: Instance, tmp_path: Path, version: str) -> Path:
    """The sample app's artifact as release `version`, after a boot that applied it."""
    artifact = release(instance, tmp_path, version)
    assert instance.boot().returncode == 0, instance.runs[-1].stderr
    return artifact


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_first_boot_unpacks_the_artifact_and_writes_unit_env_and_nginx(
    instance: Instance, tmp_path: Path
) -> None:
    release(instance, tmp_path, "1.2.3")

    result = instance.boot()

    assert result.returncode == 0, result.stderr
    unpacked = instance.root / "opt/release/releases/1.2.3"
    assert (unpacked / "Procfile").read_text().strip() == "web: python3 app.py"
    assert (unpacked / "app.py").is_file() and (unpacked / "static/app.css").is_file()
    assert os.readlink(instance.root / "opt/release/current") == "releases/1.2.3"
    assert (instance.root / "etc/release/app.env").read_text().splitlines() == [
        "PORT=8080",
        "RELEASE_VERSION=1.2.3",
    ]
    unit = (instance.root / "etc/systemd/system/release-app.service").read_text()
    assert "EnvironmentFile=/etc/release/app.env" in unit
    assert "ExecStart=/opt/release/web.sh" in unit
    assert "User=release" in unit
    assert "exec python3 app.py" in (instance.root / "opt/release/web.sh").read_text()
    assert (
        "proxy_pass http://127.0.0.1:8080;" in (instance.root / "etc/nginx/conf.d/release.conf").read_text()
    )
    calls = instance.recorded_calls()
    if not user_exists("release"):
        assert "useradd --system --home-dir /opt/release --shell /usr/sbin/nologin release" in calls
    assert calls[-6:] == [
        "systemctl enable release-app nginx",
        "systemctl restart release-app",
        "nginx -t",
        "systemctl restart nginx",
        "systemctl daemon-reload",
        "systemctl enable --now release-watch",
    ]
    watcher = (instance.root / "etc/systemd/system/release-watch.service").read_text()
    assert "ExecStart=/opt/release/bin/release-apply watch" in watcher
    assert (instance.root / "opt/release/bin/release-apply").read_bytes() == SCRIPT.read_bytes()


def test_a_new_release_switches_and_restarts_both_and_the_same_release_restarts_nothing(
    instance: Instance, tmp_path: Path
) -> None:
    booted(instance, tmp_path, "1.2.3")
    instance.metadata.attributes["release-version"] = "1.3.0"

    assert instance.boot().returncode == 0, instance.runs[-1].stderr
    assert os.readlink(instance.root / "opt/release/current") == "releases/1.3.0"
    assert "RELEASE_VERSION=1.3.0" in (instance.root / "etc/release/app.env").read_text()
    assert instance.recorded_calls()[-4:-2] == ["nginx -t", "systemctl restart nginx"]
    assert "switching 1.2.3 -> 1.3.0" in instance.runs[-1].stderr

    before = len(instance.recorded_calls())
    assert instance.boot().returncode == 0
    again = instance.recorded_calls()[before:]
    assert not any("restart" in call for call in again), again
    assert "systemctl start release-app nginx" in again


def test_the_generated_launcher_serves_the_release(instance: Instance, tmp_path: Path) -> None:
    booted(instance, tmp_path, "2.0.0")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "RELEASE_VERSION": "2.0.0"}
    server = subprocess.Popen(
        [str(instance.root / "opt/release/web.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.read().decode().strip() == "2.0.0"
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_until(condition: Callable[[], bool], watcher: subprocess.Popen[str], failure: str) -> None:
    """Polls `condition` for at most 20 s while the watcher keeps running."""
    deadline = time.monotonic() + 20
    while not condition():
        assert watcher.poll() is None, "the watcher exited"
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def test_the_watcher_applies_a_release_whose_metadata_changes(instance: Instance, tmp_path: Path) -> None:
    booted(instance, tmp_path, "1.2.3")
    watcher = subprocess.Popen(
        ["bash", str(instance.root / "opt/release/bin/release-apply"), "watch"],
        env=instance.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    env_file = instance.root / "etc/release/app.env"
    try:
        # A few long polls of the unchanged version: nothing may happen.
        wait_until(lambda: instance.metadata.watch_polls >= 3, watcher, "the watcher did not poll")
        assert env_file.read_text().endswith("RELEASE_VERSION=1.2.3\n")
        calls_before = len(instance.recorded_calls())
        instance.metadata.attributes["release-version"] = "1.2.4"
        # The apply ends by restarting nginx; only then is the switch complete.
        wait_until(
            lambda: "systemctl restart nginx" in instance.recorded_calls()[calls_before:],
            watcher,
            "the watcher did not apply the new release",
        )
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    assert "RELEASE_VERSION=1.2.4" in env_file.read_text()
    assert "systemctl restart release-app" in instance.recorded_calls()[calls_before:]
    assert os.readlink(instance.root / "opt/release/current") == "releases/1.2.4"


def test_missing_metadata_fails_the_boot_with_a_reason(instance: Instance) -> None:
    instance.metadata.attributes["release-version"] = "1.0.0"

    result = instance.boot()

    assert result.returncode != 0
    assert "instance metadata release-artifact is missing" in result.stderr
    assert not (instance.root / "etc/systemd/system/release-app.service").exists()


def test_an_artifact_without_procfile_is_refused(instance: Instance, tmp_path: Path) -> None:
    source = tmp_path / "no-procfile"
    source.mkdir()
    (source / "app.py").write_text("print('hi')\n")
    bad = tmp_path / "bad.tar.gz"
    subprocess.run(["tar", "-czf", str(bad), "-C", str(source), "."], check=True)
    instance.metadata.attributes.update(
        {"release-artifact": bad.as_uri(), "release-artifact-sha256": sha256(bad), "release-version": "1.0.1"}
    )

    result = instance.boot()

    assert result.returncode != 0
    assert "has no Procfile" in result.stderr
    assert not (instance.root / "opt/release/releases/1.0.1").exists()
    assert instance.recorded_calls() == [] or all("restart" not in call for call in instance.recorded_calls())


def test_an_artifact_whose_digest_does_not_match_is_never_unpacked_nor_started(
    instance: Instance, tmp_path: Path
) -> None:
    release(instance, tmp_path, "1.0.2")
    # Another artifact at the same URL than the one the release was built from: still a valid
    # app, so only the digest check can stop it.
    tampered_source = tmp_path / "tampered"
    shutil.copytree(SAMPLE_APP, tampered_source)
    (tampered_source / "TAMPERED").write_text("not what CI built\n")
    tampered = build_artifact(tampered_source, tmp_path / "elsewhere")
    instance.metadata.attributes["release-artifact"] = tampered.as_uri()

    result = instance.boot()

    assert result.returncode != 0
    assert "artifact digest mismatch" in result.stderr
    assert (
        sha256(tampered) in result.stderr
        and instance.metadata.attributes["release-artifact-sha256"] in result.stderr
    )
    assert not list(instance.root.rglob("TAMPERED")), (
        "the artifact was unpacked before its digest was checked"
    )
    assert not list(instance.root.rglob("Procfile"))
    assert not (instance.root / "etc/systemd/system/release-app.service").exists()
    assert all("release-app" not in call for call in instance.recorded_calls())


def test_a_refused_release_is_reported_in_a_guest_attribute_and_a_started_one_clears_it(
    instance: Instance, tmp_path: Path
) -> None:
    artifact = release(instance, tmp_path, "1.0.5")
    good_digest = instance.metadata.attributes["release-artifact-sha256"]
    instance.metadata.attributes["release-artifact-sha256"] = "0" * 64

    assert instance.boot().returncode != 0
    # What Compute Engine never reports about a startup script, the guest reports itself.
    error = instance.metadata.guest_attributes.get("release/error", "")
    assert error.startswith("artifact digest mismatch: ")
    assert artifact.as_uri() in error and sha256(artifact) in error and "0" * 64 in error

    instance.metadata.attributes["release-artifact-sha256"] = good_digest
    assert instance.boot().returncode == 0, instance.runs[-1].stderr
    assert "release/error" not in instance.metadata.guest_attributes


def test_a_boot_without_guest_attributes_still_fails_with_its_reason(
    instance: Instance, tmp_path: Path
) -> None:
    release(instance, tmp_path, "1.0.6")
    instance.metadata.attributes["release-artifact-sha256"] = "0" * 64
    instance.metadata.guest_attributes_enabled = False

    result = instance.boot()

    assert result.returncode == 1
    assert "artifact digest mismatch" in result.stderr
    assert "could not write the guest attribute release/error" in result.stderr


@pytest.mark.parametrize("digest", [None, "not-a-digest", "A" * 64])
def test_a_release_without_a_valid_digest_is_refused(
    instance: Instance, tmp_path: Path, digest: str | None
) -> None:
    release(instance, tmp_path, "1.0.3")
    if digest is None:
        del instance.metadata.attributes["release-artifact-sha256"]
    else:
        instance.metadata.attributes["release-artifact-sha256"] = digest

    result = instance.boot()

    assert result.returncode != 0
    assert "release-artifact-sha256" in result.stderr
    assert not (instance.root / "opt/release/releases/1.0.3").exists()


def test_an_unpacked_release_is_verified_again_if_its_digest_changes(
    instance: Instance, tmp_path: Path
) -> None:
    booted(instance, tmp_path, "1.0.4")
    instance.metadata.attributes["release-artifact-sha256"] = "0" * 64

    result = instance.boot()

    assert result.returncode != 0 and "artifact digest mismatch" in result.stderr


def test_an_artifact_that_does_not_exist_is_refused_and_reported(instance: Instance, tmp_path: Path) -> None:
    artifact = release(instance, tmp_path, "1.0.7")
    missing = tmp_path / "gone.tar.gz"
    instance.metadata.attributes["release-artifact"] = missing.as_uri()

    assert instance.boot().returncode == 1
    assert (
        instance.metadata.guest_attributes["release/error"] == f"artifact {missing.as_uri()} does not exist"
    )
    assert artifact.exists()


def test_a_gs_artifact_is_downloaded_with_the_instance_token_and_a_missing_one_reported(
    instance: Instance, tmp_path: Path
) -> None:
    artifact = release(instance, tmp_path, "1.0.8")
    with StorageServer() as storage:
        instance.storage_url = storage.url
        storage.objects["hello-artifacts/hello/a b.tar.gz"] = (200, artifact.read_bytes())
        instance.metadata.attributes["release-artifact"] = "gs://hello-artifacts/hello/a b.tar.gz"
        assert instance.boot().returncode == 0, instance.runs[-1].stderr
        assert (instance.root / "opt/release/releases/1.0.8/Procfile").is_file()
        assert "release/error" not in instance.metadata.guest_attributes

        # Gone from the bucket (e.g. deleted by a lifecycle rule): it will not come back, say so.
        instance.metadata.attributes.update(
            {"release-version": "1.0.9", "release-artifact": "gs://hello-artifacts/hello/gone.tar.gz"}
        )
        assert instance.boot().returncode == 1
        error = instance.metadata.guest_attributes["release/error"]
        assert error.startswith("cannot fetch artifact gs://hello-artifacts/hello/gone.tar.gz: HTTP 404")

        # A failure that may pass (any other status) is not reported: a new VM tries again.
        del instance.metadata.guest_attributes["release/error"]
        storage.objects["hello-artifacts/hello/gone.tar.gz"] = (400, b"try later")
        result = instance.boot()
        assert result.returncode == 1
        assert "failed (HTTP 400)" in result.stderr
        assert "release/error" not in instance.metadata.guest_attributes
