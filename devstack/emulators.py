"""Locate and start Google's Pub/Sub and Firestore emulators.

They come from the Cloud CLI install (its `platform/` directory). `EMULATORS_DIR` overrides
that with a directory of the same layout (`pubsub-emulator/`, `cloud-firestore-emulator/`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import ServiceError, http_ok, start_service, wait_until

ENV_EMULATORS_DIR = "EMULATORS_DIR"
START_TIMEOUT_SECONDS = 60.0
EMULATOR_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""How the emulators' JVMs run here: a local stack lives minutes, on a few cores, beside the
functions it serves. With the JVM's defaults its optimising compiler (C2) and parallel garbage
collector spent more CPU than the requests themselves: at K = 100 releases at once, Firestore took
0.04 CPU s per deployment and Pub/Sub 0.02; with the quick compiler (C1) alone and the serial
collector, 0.01 each, and the median release went live in 5.2 s instead of 8.0 (`python -m bench
scale`). The emulators' peak throughput, which only long runs reach, is not what a dev stack needs."""


def emulator_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables an emulator starts with beside the caller's: the JVM options above after
    any the caller set (`JAVA_TOOL_OPTIONS` is read by every JVM, whatever launcher starts it).

    >>> emulator_environment({"JAVA_TOOL_OPTIONS": "-Xmx1g"})["JAVA_TOOL_OPTIONS"]
    '-Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1'
    """
    options = " ".join((environ.get("JAVA_TOOL_OPTIONS", ""), *EMULATOR_JVM_OPTIONS)).strip()
    return {"JAVA_TOOL_OPTIONS": options}


def emulators_dir() -> Path:
    override = os.environ.get(ENV_EMULATORS_DIR)
    if override:
        return Path(override)
    candidates = [Path("/usr/lib/google-cloud-sdk/platform"), Path("/usr/share/google-cloud-sdk/platform")]
    gcloud = shutil.which("gcloud")
    if gcloud:
        # gcloud lives in <sdk>/bin/gcloud, usually behind a symlink.
        candidates.insert(0, Path(gcloud).resolve().parent.parent / "platform")
    for candidate in candidates:
        if (candidate / "pubsub-emulator").is_dir() and (candidate / "cloud-firestore-emulator").is_dir():
            return candidate
    raise ServiceError(
        "Pub/Sub and Firestore emulators not found. Install them with "
        "`gcloud components install pubsub-emulator cloud-firestore-emulator` (or the Debian packages "
        f"google-cloud-cli-pubsub-emulator and google-cloud-cli-firestore-emulator), or set {ENV_EMULATORS_DIR}."
    )


def pubsub_command(port: int, host: str = "127.0.0.1") -> list[str]:
    launcher = emulators_dir() / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    return [str(launcher), f"--host={host}", f"--port={port}"]


def firestore_command(port: int, host: str = "127.0.0.1") -> list[str]:
    launcher = emulators_dir() / "cloud-firestore-emulator" / "cloud_firestore_emulator"
    return [str(launcher), f"--host={host}", f"--port={port}"]


def pubsub_ready_url(host: str, project: str) -> str:
    # The REST facade answers GET /v1/projects/P/topics once the server is up.
    return f"http://{host}/v1/projects/{project}/topics"


def firestore_ready_url(host: str) -> str:
    return f"http://{host}/"


@dataclass
class RunningEmulator:
    name: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path


def start_pubsub(port: int, log_path: Path, project: str) -> RunningEmulator:
    process = start_service("pubsub-emulator", pubsub_command(port), log_path, env=emulator_environment())
    host = f"127.0.0.1:{port}"
    wait_until(
        http_ok(pubsub_ready_url(host, project)),
        START_TIMEOUT_SECONDS,
        "Pub/Sub emulator",
        process,
        log_path,
        interval=0.25,
    )
    return RunningEmulator("pubsub", host, process, log_path)


def start_firestore(port: int, log_path: Path) -> RunningEmulator:
    process = start_service(
        "firestore-emulator", firestore_command(port), log_path, env=emulator_environment()
    )
    host = f"127.0.0.1:{port}"
    wait_until(
        http_ok(firestore_ready_url(host)),
        START_TIMEOUT_SECONDS,
        "Firestore emulator",
        process,
        log_path,
        0.25,
    )
    return RunningEmulator("firestore", host, process, log_path)
