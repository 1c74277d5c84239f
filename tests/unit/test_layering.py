"""The domain stays pure: no Google Cloud SDK, no I/O libraries."""

import ast
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "shared" / "domain"
FORBIDDEN = ("google", "requests", "functions_framework", "flask", "shared.adapters", "shared.usecases")


def test_the_domain_imports_nothing_from_the_outside_world() -> None:
    offending = []
    for path in sorted(DOMAIN.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offending += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)]
    assert offending == []
