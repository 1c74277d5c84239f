"""`python -m bench scale` options (what `--k` and `--repeat` accept) and its report's arithmetic;
the runs themselves need a stack."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import machine_speed
from bench.bench_scale import parse_ks, parse_repeat
from bench.machine_speed import MachineSpeed, reference_milliseconds, round_trip_microseconds, workload
from bench.process_cpu import CpuUse
from bench.rpc_counts import Counts
from bench.scale_report import Outcome, Result, Round, function_rows, repeat_summary, speed_rows


def test_repeat_takes_a_small_count_and_explains_anything_else() -> None:
    assert parse_repeat("3") == 3
    for bad in ("0", "11", "three"):
        with pytest.raises(argparse.ArgumentTypeError, match="--repeat"):
            parse_repeat(bad)


def test_k_takes_comma_separated_app_counts() -> None:
    assert parse_ks("10, 30,100") == (10, 30, 100)
    with pytest.raises(argparse.ArgumentTypeError, match="--k"):
        parse_ks("10,many")


def test_the_summary_gives_each_runs_ratio_and_their_median_for_repeated_ks_only() -> None:
    lines = repeat_summary({10: [1.05], 30: [1.2, 1.3], 100: [1.9, 1.6, 1.7]})
    assert lines == [
        "K=30 over 2 runs: p50/lone 1.20x 1.30x; median 1.25x",
        "K=100 over 3 runs: p50/lone 1.90x 1.60x 1.70x; median 1.70x",
    ]
    assert repeat_summary({100: [None, None]}) == ["K=100 over 2 runs: p50/lone - -; median -"]


def _burst(deployments: int, by_function: dict[str, float]) -> Round:
    outcomes = [Outcome(f"d{i}", "live", "1.0.1", 4.0, 3.0, 1.0, {}) for i in range(deployments)]
    return Round(outcomes, Counts(), CpuUse(by_function=by_function), 0.0, 8.0, deployments)


def test_the_functions_cpu_is_split_per_function_per_deployment_busiest_first() -> None:
    small = Result(apps=10, lone=[], burst=_burst(10, {"on_notify": 0.1, "on_cool_down_complete": 0.5}))
    large = Result(apps=100, lone=[], burst=_burst(100, {"on_cool_down_complete": 2.0, "approve": 0.0}))
    names, rows = function_rows([small, large])
    assert names == ["on_cool_down_complete", "on_notify"]
    assert rows == [["10", "0.0500", "0.0100"], ["100", "0.0200", "0.0000"]]


def test_each_run_shows_how_fast_the_machine_was_before_and_after_it() -> None:
    speed = (MachineSpeed(51.6, 80.4), MachineSpeed(55.2, 121.0))
    timed = Result(apps=100, lone=[], burst=_burst(100, {}), speed=speed)
    untimed = Result(apps=10, lone=[], burst=_burst(10, {}))
    assert speed_rows([timed, untimed]) == [["100", "52/55", "80/121"], ["10", "-", "-"]]


def _children() -> set[str]:
    """This process's child processes, as the kernel lists them per thread."""
    tasks = Path("/proc/self/task")
    return {pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


def test_a_round_trip_to_another_process_is_timed_and_the_process_ends() -> None:
    before = _children()
    assert round_trip_microseconds(trips=20, repeats=2) > 0
    assert _children() <= before


def test_the_speed_reference_is_the_best_of_its_repeats_of_one_fixed_workload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert workload() == workload() > 0
    # Three repeats that took 5, 2 and 7 seconds by the clock the reference reads.
    readings = iter([0.0, 5.0, 10.0, 12.0, 20.0, 27.0])
    monkeypatch.setattr(machine_speed.time, "perf_counter", lambda: next(readings))
    assert reference_milliseconds(repeats=3) == 2000.0
