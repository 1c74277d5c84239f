"""The emulator fixtures really serve the Google client libraries."""

import pytest
from google.cloud import firestore, pubsub_v1  # type: ignore[attr-defined]

from devstack.emulators import RunningEmulator
from tests.conftest import TEST_PROJECT, assert_jvm_took_the_emulator_options


def test_firestore_emulator_round_trips_a_document(
    emulator_env: dict[str, str], clean_firestore: str
) -> None:
    client = firestore.Client(project=TEST_PROJECT)
    client.collection("probe").document("one").set({"value": 1})
    assert client.collection("probe").document("one").get().to_dict() == {"value": 1}


def test_pubsub_emulator_accepts_a_topic_and_a_message(emulator_env: dict[str, str]) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(TEST_PROJECT, "emulator-probe")
    publisher.create_topic(name=topic)
    assert publisher.publish(topic, b"{}").result(timeout=10)


@pytest.mark.parametrize("fixture", ["pubsub_emulator", "firestore_emulator"])
def test_the_jvm_runs_with_the_quick_compiler_and_serial_collector(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    emulator: RunningEmulator = request.getfixturevalue(fixture)
    assert_jvm_took_the_emulator_options(emulator.log_path)
