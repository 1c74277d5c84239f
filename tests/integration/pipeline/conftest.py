"""The pipeline's use cases on the real Firestore emulator (fakes only for Compute and Pub/Sub)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.cloud import firestore

from shared.adapters.firestore_store import FirestoreStore
from shared.usecases.services import Services
from tests.conftest import TEST_PROJECT
from tests.unit.fakes import (
    FakeClock,
    FakeCompute,
    FakeMetrics,
    FakePublisher,
    FakeSmokeProbe,
    FakeWorld,
    pipeline_config,
)


@pytest.fixture
def firestore_client(emulator_env: dict[str, str], clean_firestore: str) -> Iterator[firestore.Client]:
    client = firestore.Client(project=TEST_PROJECT)
    yield client
    client.close()


@pytest.fixture
def store(firestore_client: firestore.Client) -> FirestoreStore:
    return FirestoreStore(firestore_client)


@pytest.fixture
def world(store: FirestoreStore) -> FakeWorld:
    compute, publisher, clock = FakeCompute(), FakePublisher(), FakeClock()
    metrics, probe = FakeMetrics(), FakeSmokeProbe()
    services = Services(
        config=pipeline_config(),
        store=store,
        compute=compute,
        publisher=publisher,
        clock=clock,
        metrics=metrics,
        probe=probe,
    )
    return FakeWorld(services, store, compute, publisher, clock, metrics, probe)  # type: ignore[arg-type]
