"""shared/queries.py stays true to the documents the store writes."""

from dataclasses import replace
from datetime import UTC, datetime

from shared import queries
from shared.adapters.firestore_store import deployment_to_document, release_to_document
from shared.domain.records import Release
from tests.unit.test_queue_rollback_and_naming import went_live

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_declared_query_filters_and_orders_on_fields_the_store_writes() -> None:
    deployment = replace(went_live("d1", "1.0.0", 1), cleanup_due_at=T0)
    release = Release("hello", "1.0.0", "a" * 40, "file:///a.tar.gz", (), T0)
    fields = {
        queries.DEPLOYMENTS: set(deployment_to_document(deployment)),
        queries.RELEASES: set(release_to_document(release)),
    }
    for query in queries.ALL_QUERIES:
        named = {*query.equality, *query.membership, *query.range, *(f for f, _ in query.order_by)}
        assert named <= fields[query.collection], query.name


def test_only_the_rollback_history_needs_a_composite_index() -> None:
    (index,) = queries.composite_indexes()
    assert index.name == "live_history"
    assert index.composite_index_fields() == [
        ("app", "ASCENDING"),
        ("environment", "ASCENDING"),
        ("went_live_at", "DESCENDING"),
    ]
