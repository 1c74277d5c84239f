"""The distribution installs on its own: a fresh virtualenv, this directory only, then an import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DISTRIBUTION = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_distribution_installs_alone_and_imports_none_of_the_pipeline(tmp_path: Path) -> None:
    # A copy: building from the source tree would leave build/ and egg-info behind in it.
    source = tmp_path / "source"
    shutil.copytree(
        DISTRIBUTION, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # A plain (not editable) install, from the package index pip is configured with, so a dependency
    # missing from its pyproject.toml fails here rather than in someone else's environment.
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=600,
    )
    probe = (
        "import compute_emulator.api, compute_emulator.discovery, compute_emulator.state, pathlib, sys;"
        "print(pathlib.Path(compute_emulator.api.__file__).parent);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('shared', 'functions', 'releasectl', 'devstack')))"
    )
    # -I: no current directory or PYTHON* variables on the path, only what the venv installed.
    result = subprocess.run(
        [str(python), "-I", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    package_dir, pipeline_modules = result.stdout.splitlines()
    assert Path(package_dir).is_relative_to(venv), "imported from the venv, not from the source tree"
    assert pipeline_modules == "[]"
    script = subprocess.run(
        [str(venv / "bin" / "compute-emulator"), "--help"], capture_output=True, timeout=60
    )
    assert script.returncode == 0, script.stderr
