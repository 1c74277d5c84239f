"""How the Firestore store reports what its generated-client path raises: a Firestore outage or
contention that outlasted the attempts is `StoreUnavailable` (transient: the step is redelivered),
anything else is left to propagate as the bug or refusal it is.

The store's own `FirestoreRpc` is replaced by a stand-in that raises; no Google client is faked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from shared.adapters.firestore_store import FirestoreStore, StoreUnavailable


class RaisingRpc:
    """Answers every read and transaction with `error`."""

    database = "projects/p/databases/(default)"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def document_path(self, collection: str, document_id: str) -> str:
        return f"{self.database}/documents/{collection}/{document_id}"

    def read_versioned(self, path: str) -> Any:
        raise self.error

    def run_transaction(self, work: Callable[..., Any], attempts: int) -> Any:
        raise self.error


def store_raising(error: BaseException) -> FirestoreStore:
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    return FirestoreStore(client, rpc=RaisingRpc(error))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        google_exceptions.Aborted("contention outlasted the attempts"),
        google_exceptions.ServiceUnavailable("Firestore is down"),
        google_exceptions.DeadlineExceeded("too slow"),
        google_exceptions.RetryError("the generated client's retries gave up", cause=None),
    ],
    ids=["aborted", "unavailable", "deadline", "retries-exhausted"],
)
def test_outages_and_contention_are_transient(error: BaseException) -> None:
    store = store_raising(error)
    with pytest.raises(StoreUnavailable):
        store.atomically(lambda tx: tx.deployment("d-1"))
    with pytest.raises(StoreUnavailable):
        store.get_deployment("d-1")
    with pytest.raises(StoreUnavailable):
        store.update_deployment("d-1", lambda current: current)


@pytest.mark.parametrize(
    "error",
    [
        google_exceptions.PermissionDenied("no role"),
        google_exceptions.InvalidArgument("bad path"),
        KeyError("bug"),
    ],
    ids=["permission", "invalid", "bug"],
)
def test_anything_else_propagates_as_it_is(error: BaseException) -> None:
    store = store_raising(error)
    with pytest.raises(type(error)):
        store.atomically(lambda tx: tx.deployment("d-1"))
    with pytest.raises(type(error)):
        store.get_deployment("d-1")
    with pytest.raises(type(error)):
        store.update_deployment("d-1", lambda current: current)
