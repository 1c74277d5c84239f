"""Every Firestore query the store runs, declared so the indexes can be checked against it.

Terraform declares a composite index for each query that `needs_composite_index`; a test
of the infrastructure compares the two. Keep this list equal to what runs: the store
(`shared.adapters.firestore_store`) and `releasectl` build every query from these
declarations with `declared_query`, and a unit test checks the collection and field names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["ASCENDING", "DESCENDING"]

DEPLOYMENTS = "deployments"
RELEASES = "releases"
APPS = "apps"
RELEASE_COMMITS = "release_commits"
"""`{app}@{commit}` → the version that commit was given: read by document id inside the admission
transaction, so that transactions of different apps lock different documents (a query there
would lock a range of `releases` that every app's admission writes into)."""
ENVIRONMENTS = "environments"
REJECTED_EVENTS = "rejected_events"
DEAD_LETTERED_EVENTS = "dead_lettered_events"
NOTIFICATIONS = "notifications"
RELEASE_REQUESTS = "release_requests"
"""Written only by the pipeline's HTTP functions: the proof behind a rollback or promotion."""


@dataclass(frozen=True)
class FirestoreQuery:
    name: str
    collection: str
    equality: tuple[str, ...] = ()
    """Fields filtered with `==`."""
    membership: tuple[str, ...] = ()
    """Fields filtered with `in`."""
    range: tuple[str, ...] = ()
    """Fields filtered with `<`, `<=`, `>` or `>=`."""
    order_by: tuple[tuple[str, Direction], ...] = ()
    purpose: str = ""

    @property
    def needs_composite_index(self) -> bool:
        """Equality on several fields alone is served by single-field indexes (index merging);
        an order or range on another field after equality filters needs a composite index."""
        ordered = {field for field, _ in self.order_by} | set(self.range)
        filtered = set(self.equality) | set(self.membership)
        return bool(filtered and ordered - filtered)

    def composite_index_fields(self) -> list[tuple[str, Direction]]:
        fields: list[tuple[str, Direction]] = [(f, "ASCENDING") for f in (*self.equality, *self.membership)]
        fields += [(f, "ASCENDING") for f in self.range if f not in {o for o, _ in self.order_by}]
        fields += list(self.order_by)
        return fields


RELEASE_BY_COMMIT = FirestoreQuery(
    name="release_by_commit",
    collection=RELEASES,
    equality=("app", "commit"),
    purpose="the same commit always gets the same version (releases recorded before "
    "release_commits existed; read outside the transaction)",
)
RELEASES_OF_APP = FirestoreQuery(
    name="releases_of_app",
    collection=RELEASES,
    equality=("app",),
    purpose="rollback: whether a version was released; once per app, the highest version for an "
    "app whose apps/{app} record predates it",
)
DEPLOYMENTS_IN_PROGRESS = FirestoreQuery(
    name="deployments_with_status",
    collection=DEPLOYMENTS,
    membership=("status",),
    purpose="watchdog: deadlines and stalled steps",
)
BAKING_DEPLOYMENTS = FirestoreQuery(
    name="baking_deployments",
    collection=DEPLOYMENTS,
    equality=("status", "verification.state"),
    purpose="watchdog: bake windows whose step stalled (not every live deployment: one read each)",
)
DEPLOYMENTS_DUE_FOR_CLEANUP = FirestoreQuery(
    name="deployments_due_for_cleanup",
    collection=DEPLOYMENTS,
    range=("cleanup_due_at",),
    purpose="watchdog: delete blue groups after draining and retention",
)
DEPLOYMENTS_DUE_FOR_ANNOUNCEMENT = FirestoreQuery(
    name="deployments_due_for_announcement",
    collection=DEPLOYMENTS,
    range=("announce_due_at",),
    purpose="watchdog: announce an outcome whose announcement a crash lost",
)
LIVE_HISTORY = FirestoreQuery(
    name="live_history",
    collection=DEPLOYMENTS,
    equality=("app", "environment"),
    order_by=(("went_live_at", "DESCENDING"),),
    purpose="rollback: the release live before the current one",
)
ENVIRONMENT_DEPLOYMENTS = FirestoreQuery(
    name="environment_deployments",
    collection=DEPLOYMENTS,
    equality=("app", "environment"),
    order_by=(("created_at", "DESCENDING"),),
    purpose="releasectl releases: an environment's deployments, newest first",
)
ENVIRONMENT_DEPLOYMENTS_WITH_STATUS = FirestoreQuery(
    name="environment_deployments_with_status",
    collection=DEPLOYMENTS,
    equality=("app", "environment"),
    membership=("status",),
    purpose="releasectl status and promotion: an environment's unfinished deployments (sorted by the caller)",
)
ENVIRONMENT_DEPLOYMENTS_SINCE = FirestoreQuery(
    name="environment_deployments_since",
    collection=DEPLOYMENTS,
    equality=("app", "environment"),
    range=("created_at",),
    order_by=(("created_at", "DESCENDING"),),
    purpose="releasectl metrics --env and the dashboard: an environment's deployments created in a "
    "window, newest first (served by the same index as environment_deployments)",
)
APP_DEPLOYMENTS_SINCE = FirestoreQuery(
    name="app_deployments_since",
    collection=DEPLOYMENTS,
    equality=("app",),
    range=("created_at",),
    order_by=(("created_at", "DESCENDING"),),
    purpose="releasectl metrics without --env: every environment's deployments created in a window",
)

ALL_QUERIES: tuple[FirestoreQuery, ...] = (
    RELEASE_BY_COMMIT,
    RELEASES_OF_APP,
    DEPLOYMENTS_IN_PROGRESS,
    BAKING_DEPLOYMENTS,
    DEPLOYMENTS_DUE_FOR_CLEANUP,
    DEPLOYMENTS_DUE_FOR_ANNOUNCEMENT,
    LIVE_HISTORY,
    ENVIRONMENT_DEPLOYMENTS,
    ENVIRONMENT_DEPLOYMENTS_WITH_STATUS,
    ENVIRONMENT_DEPLOYMENTS_SINCE,
    APP_DEPLOYMENTS_SINCE,
)


def composite_indexes() -> list[FirestoreQuery]:
    return [q for q in ALL_QUERIES if q.needs_composite_index]
