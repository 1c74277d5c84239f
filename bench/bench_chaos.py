"""Chaos soak: deployments under SIGKILLed functions and a faulty Compute API; invariants checked.

`python -m bench chaos [--deployments N --environments E --kills K --seed S]`: see devstack/chaos.py
for the workload and the six invariants. Prints the summary; asserts nothing (the short version
in tests/e2e/test_chaos.py fails when an invariant breaks).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devstack.chaos import ChaosPlan, ChaosRun


def say(text: str = "") -> None:
    print(text, flush=True)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench chaos")
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--environments", type=int, default=5)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(list(argv))
    plan = ChaosPlan(
        environments=args.environments, deployments=args.deployments, kills=args.kills, seed=args.seed
    )
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as scratch:
        report = ChaosRun(plan, Path(scratch), progress=say).run()
    say()
    say("=" * 78)
    say(f"Chaos soak: {args.environments} environments, {args.deployments} deployments, {args.kills} kills")
    say(report.summary())
    say("All invariants held." if all(report.checks.values()) else "SOME INVARIANTS BROKE.")
