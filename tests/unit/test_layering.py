"""The layers stay apart: a pure domain, use cases that reach the world only through ports, and
entry points that get their SDK clients from the one composition root instead of building them."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "shared" / "domain"
USECASES = ROOT / "shared" / "usecases"
FUNCTIONS = ROOT / "functions"

DOMAIN_FORBIDDEN = (
    "google",
    "requests",
    "functions_framework",
    "flask",
    "shared.adapters",
    "shared.usecases",
)
# Use cases may use the domain, the ports and each other; the SDKs and HTTP stay in the adapters.
USECASES_FORBIDDEN = ("google", "requests", "functions_framework", "flask", "shared.adapters")


def imported_modules(source: str) -> list[str]:
    """Every module a source file imports, at any depth (imports inside functions count too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def forbidden_imports(directory: Path, forbidden: tuple[str, ...]) -> list[str]:
    offending = []
    for path in sorted(directory.glob("*.py")):
        names = imported_modules(path.read_text(encoding="utf-8"))
        offending += [f"{path.name}: {n}" for n in names if n == forbidden or n.startswith(forbidden)]
    return offending


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def sdk_clients_constructed(source: str) -> list[str]:
    """Calls that build a Google SDK client (`...Client(...)` on a name imported from `google`)."""
    tree = ast.parse(source)
    # Each name bound by an import from `google`, with the name it was imported as.
    from_google: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            from_google |= {
                (a.asname or a.name).split(".")[0]: a.name for a in node.names if a.name.startswith("google")
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("google"):
            from_google |= {a.asname or a.name: a.name for a in node.names}
    built = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (callee := _dotted(node.func)):
            root, _, rest = callee.partition(".")
            if root in from_google and (rest or from_google[root]).rsplit(".", 1)[-1].endswith("Client"):
                built.append(callee)
    return built


def test_the_domain_imports_nothing_from_the_outside_world() -> None:
    assert forbidden_imports(DOMAIN, DOMAIN_FORBIDDEN) == []


def test_the_use_cases_import_no_sdk_and_no_adapter() -> None:
    assert forbidden_imports(USECASES, USECASES_FORBIDDEN) == []


def test_the_layering_check_would_see_a_google_import_in_a_use_case(tmp_path: Path) -> None:
    (tmp_path / "leaky.py").write_text(
        "import os\ndef later():\n    from google.cloud import firestore\n", encoding="utf-8"
    )
    assert forbidden_imports(tmp_path, USECASES_FORBIDDEN) == ["leaky.py: google.cloud"]


def test_the_client_check_sees_sdk_clients_and_not_our_own_classes() -> None:
    source = (
        "import google.cloud.pubsub_v1\n"
        "from google.cloud import firestore\n"
        "from google.cloud.compute_v1 import InstancesClient as Instances\n"
        "from tests.unit.fakes import FakeClient\n"
        "a = firestore.Client(project='p')\n"
        "b = google.cloud.pubsub_v1.PublisherClient()\n"
        "c = FakeClient()\n"
        "d = firestore.Query\n"
        "e = Instances()\n"
    )
    assert sdk_clients_constructed(source) == [
        "firestore.Client",
        "google.cloud.pubsub_v1.PublisherClient",
        "Instances",
    ]


@pytest.mark.parametrize("module", sorted(FUNCTIONS.glob("*.py")), ids=lambda path: path.name)
def test_no_entry_point_constructs_an_sdk_client(module: Path) -> None:
    assert sdk_clients_constructed(module.read_text(encoding="utf-8")) == []


def test_the_compute_emulator_shares_no_code_with_the_pipeline_it_stands_in_for() -> None:
    # Its checks (the artifact digest, the Procfile) are its own reading of the contract, so a bug
    # in the pipeline's code cannot hide behind the same bug in the emulator.
    # Its tests too: the distribution installs and tests on its own, without the pipeline.
    distribution = ROOT / "emulators" / "compute"
    folders = sorted({path.parent for path in distribution.rglob("*.py")})
    assert distribution / "compute_emulator" / "state" in folders
    assert distribution / "tests" in folders
    pipeline = ("shared", "functions", "releasectl", "devstack", "tests")
    assert [problem for folder in folders for problem in forbidden_imports(folder, pipeline)] == []
