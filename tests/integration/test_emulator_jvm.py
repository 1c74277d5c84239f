"""The Java emulators the tests start run with the JVM options a short local run wants."""

from __future__ import annotations

import pytest

from devstack.emulators import EMULATOR_JVM_OPTIONS, RunningEmulator


@pytest.mark.parametrize("fixture", ["pubsub_emulator", "firestore_emulator"])
def test_the_jvm_reports_the_quick_compiler_and_serial_collector(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    emulator: RunningEmulator = request.getfixturevalue(fixture)
    log = emulator.log_path.read_text(encoding="utf-8", errors="replace")
    picked_up = [line for line in log.splitlines() if line.startswith("Picked up JAVA_TOOL_OPTIONS:")]
    assert picked_up, f"{emulator.name}: the JVM did not report JAVA_TOOL_OPTIONS"
    assert all(option in picked_up[-1] for option in EMULATOR_JVM_OPTIONS), picked_up[-1]
