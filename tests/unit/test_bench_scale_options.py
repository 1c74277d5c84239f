"""`python -m bench scale` options: what `--k` and `--repeat` accept (the runs need a stack)."""

from __future__ import annotations

import argparse

import pytest

from bench.bench_scale import parse_ks, parse_repeat
from bench.scale_report import repeat_summary


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
