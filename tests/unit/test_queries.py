"""shared/queries.py stays true to the documents the store writes and to what actually runs."""

import ast
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from shared import queries
from shared.adapters.firestore_documents import (
    deployment_from_document,
    deployment_to_document,
    release_to_document,
)
from shared.domain.records import Release
from shared.domain.verification import Verification, VerificationState
from tests.unit.test_queue_rollback_and_naming import went_live

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
QUERY_METHODS = {"where", "order_by"}


def test_every_declared_query_filters_and_orders_on_fields_the_store_writes() -> None:
    deployment = replace(went_live("d1", "1.0.0", 1), cleanup_due_at=T0, announce_due_at=T0)
    release = Release("hello", "1.0.0", "a" * 40, "file:///a.tar.gz", (), T0)
    fields = {
        queries.DEPLOYMENTS: set(deployment_to_document(deployment)),
        queries.RELEASES: set(release_to_document(release)),
    }
    baking = replace(
        deployment, verification=Verification(VerificationState.PENDING, "baking", T0, ends_at=T0)
    )
    documents = {
        queries.DEPLOYMENTS: deployment_to_document(baking),
        queries.RELEASES: release_to_document(release),
    }
    for query in queries.ALL_QUERIES:
        named = {*query.equality, *query.membership, *query.range, *(f for f, _ in query.order_by)}
        top_level = {field.split(".", 1)[0] for field in named}
        assert top_level <= fields[query.collection], query.name
        for field in named - fields[query.collection]:  # a path into a map field
            outer, inner = field.split(".", 1)
            assert inner in documents[query.collection][outer], query.name


def test_the_queries_needing_a_composite_index_are_the_rollback_release_and_metrics_histories() -> None:
    indexes = {query.name: query.composite_index_fields() for query in queries.composite_indexes()}
    assert indexes == {
        "live_history": [("app", "ASCENDING"), ("environment", "ASCENDING"), ("went_live_at", "DESCENDING")],
        "environment_deployments": [
            ("app", "ASCENDING"),
            ("environment", "ASCENDING"),
            ("created_at", "DESCENDING"),
        ],
        # The metrics window: the same order, bounded below by created_at.
        "environment_deployments_since": [
            ("app", "ASCENDING"),
            ("environment", "ASCENDING"),
            ("created_at", "DESCENDING"),
        ],
        "app_deployments_since": [("app", "ASCENDING"), ("created_at", "DESCENDING")],
    }


def test_releasectls_queries_are_declared() -> None:
    declared = set(queries.ALL_QUERIES)
    assert queries.ENVIRONMENT_DEPLOYMENTS in declared
    assert queries.ENVIRONMENT_DEPLOYMENTS_WITH_STATUS in declared
    assert queries.ENVIRONMENT_DEPLOYMENTS_WITH_STATUS.membership == ("status",)


def test_queries_are_built_only_from_declarations() -> None:
    """A `.where(...)` or `.order_by(...)` written by hand would run a query the index check never
    sees; the one builder that turns declarations into queries is the only place allowed."""
    builder = REPO / "shared" / "adapters" / "firestore_store.py"
    sources = [
        *(REPO / "shared").rglob("*.py"),
        *(REPO / "releasectl").rglob("*.py"),
        *(REPO / "functions").rglob("*.py"),
    ]
    hand_built = []
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed: set[ast.AST] = set()
        if path == builder:
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "declared_query":
                    allowed.update(ast.walk(node))
        hand_built += [
            f"{path.relative_to(REPO)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERY_METHODS
            and node not in allowed
        ]
    assert hand_built == []


def test_a_deployment_stays_a_rollback_through_the_store_even_one_written_before_the_field() -> None:
    replaced_nothing = replace(went_live("d1", "1.0.0", 1), is_rollback=True)
    assert deployment_from_document("d1", deployment_to_document(replaced_nothing)).is_rollback
    ordinary = went_live("d2", "1.1.0", 2)
    assert not deployment_from_document("d2", deployment_to_document(ordinary)).is_rollback
    older = deployment_to_document(replace(ordinary, rollback_of="d1"))
    del older["is_rollback"]
    assert deployment_from_document("d2", older).is_rollback, "rollback_of alone made a rollback then"
