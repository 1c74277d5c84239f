"""Fixtures: one emulator process for the package (each test uses its own project id), artifacts,
and the health check and release template most tests start from."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulator_helpers import (
    Emulator,
    build_artifact,
    insert_health_check,
    insert_template,
    pid_alive,
    start_emulator,
    stop_emulator,
)

TESTAPP = Path(__file__).resolve().parent / "testapp"


@pytest.fixture(scope="package")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("compute-emulator"))
    try:
        yield running
    finally:
        pids = [item["pid"] for project in running.projects for item in running.processes(project)]
        code = stop_emulator(running)
        assert code == 0, f"the emulator exited with {code}:\n{running.log_tail()}"
        leftovers = [pid for pid in pids if pid_alive(pid)]
        assert not leftovers, f"instance processes outlived the emulator: {leftovers}"


@pytest.fixture
def project(emulator: Emulator) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    emulator.projects.add(name)
    return name


def _app(tmp: Path, name: str, procfile: str) -> str:
    source = tmp / name
    source.mkdir()
    (source / "app.py").write_text((TESTAPP / "app.py").read_text())
    (source / "Procfile").write_text(procfile)
    return f"file://{build_artifact(source, tmp / 'dist')}"


@pytest.fixture(scope="package")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """file:// URLs: two copies of the test app, one whose /healthz fails, one whose process exits."""
    tmp = tmp_path_factory.mktemp("artifacts")
    return {
        "hello": _app(tmp, "hello", "web: python3 app.py\n"),
        "testapp": _app(tmp, "testapp", "web: python3 app.py\n"),
        "unhealthy": _app(tmp, "unhealthy", "web: python3 app.py --healthz-status 500\n"),
        "exits": _app(tmp, "exits", "web: python3 -c 'import sys; print(\"crashing\"); sys.exit(3)'\n"),
    }


@pytest.fixture
def health_check(emulator: Emulator, project: str) -> str:
    """The HTTP health check of this test's project (`/healthz` on the named port): its path."""
    return insert_health_check(emulator, project)


@pytest.fixture
def hello_template(emulator: Emulator, project: str, artifacts: dict[str, str]) -> str:
    """An instance template of the test app's release 1.0.0 in this test's project: its name."""
    insert_template(emulator, project, "hello-1-0-0", artifacts["hello"], "1.0.0")
    return "hello-1-0-0"
