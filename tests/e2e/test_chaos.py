"""The short chaos soak: deployments of every kind while function processes are SIGKILLed and the
Compute API answers 503s, drops connections and lags; every invariant must hold afterwards.

The long version is `python -m bench chaos`; both run devstack/chaos.py on a private stack (this
test does not use the session stack: it needs the fault proxy in front of the Compute emulator).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.chaos import ChaosPlan, ChaosRun
from devstack.fault_proxy import FaultRates

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SHORT = ChaosPlan(
    environments=3,
    deployments=14,
    kills=4,
    failing_share=0.2,
    rollback_share=0.2,
    duplicate_share=0.15,
    faults=FaultRates(error=0.08, drop_before=0.03, drop_after=0.03, latency=0.1, max_latency_seconds=0.5),
    provisioning_deadline_seconds=20,
    mean_gap_seconds=0.8,
    seed=20261201,
)


@pytest.mark.timeout(600)
def test_a_short_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    report = ChaosRun(SHORT, tmp_path, progress=print).run()
    print(report.summary())
    assert report.deployments >= 10, report.summary()
    assert report.kills >= 3, report.summary()
    assert report.faults.get("answered_503", 0) + report.faults.get("dropped_before", 0) > 0, report.summary()
    assert report.checks and all(report.checks.values()), report.summary()
