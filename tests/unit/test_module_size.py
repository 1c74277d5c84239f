"""No Python module outside the tests grows past 500 lines: past that, a module holds several roles.

The Compute emulator's package is its own distribution with its own rules, and is left out here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500
SKIPPED_DIRECTORIES = {"tests", "build", "node_modules", "compute_emulator"}
"""Besides these, every hidden directory (virtual environments, the local stack's state, caches)."""


def _modules(root: Path) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(root):
        # Pruned in place, so installed packages and the local stack's files are never walked.
        subdirectories[:] = [
            d for d in subdirectories if not d.startswith(".") and d not in SKIPPED_DIRECTORIES
        ]
        found += [Path(directory) / name for name in files if name.endswith(".py")]
    return found


def _over_limit(root: Path) -> dict[str, int]:
    sizes = {
        path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules(root)
    }
    return {name: lines for name, lines in sizes.items() if lines > MAX_LINES}


def test_the_walk_finds_the_modules_it_checks() -> None:
    found = {path.relative_to(REPO_ROOT).as_posix() for path in _modules(REPO_ROOT)}
    assert {"devstack/stack.py", "main.py", "shared/domain/status.py", "bench/bench_pipeline.py"} <= found
    assert not any(name.startswith(("tests/", ".")) or "/compute_emulator/" in name for name in found)


def test_a_module_over_the_limit_is_found(tmp_path: Path) -> None:
    for directory in ("shared", "tests", ".venv"):
        (tmp_path / directory).mkdir()
    (tmp_path / "shared" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (tmp_path / "shared" / "fits.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    (tmp_path / "tests" / "test_big.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (tmp_path / ".venv" / "installed.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    assert _over_limit(tmp_path) == {"shared/big.py": MAX_LINES + 1}


def test_no_module_outside_the_tests_exceeds_the_limit() -> None:
    over = _over_limit(REPO_ROOT)
    assert not over, f"split these modules along their seams (over {MAX_LINES} lines): {over}"
