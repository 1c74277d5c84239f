"""Shared fixtures: Google's emulators and the whole local stack, started once per session on free ports.

Each fixture starts its own processes in a temporary directory (never those of a running `make up`
stack) and stops them at the end of the session.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.emulators import EMULATOR_JVM_OPTIONS, RunningEmulator, start_firestore, start_pubsub
from devstack.processes import free_port, stop_process_group
from devstack.stack import Stack

TEST_PROJECT = "release-pipeline-test"


def assert_jvm_took_the_emulator_options(log_path: Path) -> None:
    """The JVM itself prints the JAVA_TOOL_OPTIONS it picked up: proof that the emulator options
    reached it through whatever launcher started it."""
    log = log_path.read_text(encoding="utf-8", errors="replace")
    picked_up = [line for line in log.splitlines() if line.startswith("Picked up JAVA_TOOL_OPTIONS:")]
    assert picked_up, f"{log_path.name}: the JVM did not report JAVA_TOOL_OPTIONS"
    assert all(option in picked_up[-1] for option in EMULATOR_JVM_OPTIONS), picked_up[-1]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def pubsub_emulator(session_dir: Path) -> Iterator[RunningEmulator]:
    emulator = start_pubsub(free_port(), session_dir / "logs" / "pubsub.log", TEST_PROJECT)
    try:
        yield emulator
    finally:
        stop_process_group(emulator.process.pid)


@pytest.fixture(scope="session")
def firestore_emulator(session_dir: Path) -> Iterator[RunningEmulator]:
    emulator = start_firestore(free_port(), session_dir / "logs" / "firestore.log")
    try:
        yield emulator
    finally:
        stop_process_group(emulator.process.pid)


@pytest.fixture
def emulator_env(
    monkeypatch: pytest.MonkeyPatch, pubsub_emulator: RunningEmulator, firestore_emulator: RunningEmulator
) -> dict[str, str]:
    """Point the Google client libraries at the emulators for one test."""
    env = {
        "GOOGLE_CLOUD_PROJECT": TEST_PROJECT,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def clean_firestore(firestore_emulator: RunningEmulator) -> Iterator[str]:
    """An empty Firestore database for the test; yields the emulator host."""
    _wipe_firestore(firestore_emulator.host)
    yield firestore_emulator.host


def _wipe_firestore(host: str) -> None:
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{TEST_PROJECT}/databases/(default)/documents", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The full local stack (emulators, Compute emulator, token issuer, main.py's functions, push
    subscriptions, scheduler) in its own temporary state directory, on free ports.

    Offers `.env` (the variables of its `env` file, as `make up` writes `.local/env`), `.state_dir`,
    `.config` (the generated PipelineConfig), `.url(app, environment)` (the load balancer),
    `.function_url(entry_point)`, `.notifications_file` and `.webhook_record_file`.
    """
    stack = Stack(tmp_path_factory.mktemp("local-stack"), project=TEST_PROJECT, fixed_ports={})
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def local_stack_env(monkeypatch: pytest.MonkeyPatch, local_stack: Stack) -> dict[str, str]:
    """Point this test's client libraries at `local_stack`, as `source .local/env` does."""
    for name, value in local_stack.env.items():
        monkeypatch.setenv(name, value)
    return dict(local_stack.env)


def running_in_ci() -> bool:
    return os.environ.get("CI") == "true"
