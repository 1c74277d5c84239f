"""`python -m bench publish`: what one step's publish costs, through Google's batching client and
through the pipeline's Publisher adapter (one Publish call per message), against the Pub/Sub
emulator.

A step publishes one message and waits until Pub/Sub has accepted it before it acknowledges its
own. Per publish: the publishing process's CPU, and the time until the message id is back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from bench.per_operation import measure, print_costs
from devstack.emulators import start_pubsub
from devstack.processes import environment_applied, free_port, stop_process_group
from shared.adapters.pubsub_publisher import PubSubPublisher

PROJECT = "bench-publish"
TOPIC = "step"
PUBLISHES = 1000
PAYLOAD = b'{"deployment_id": "hello-staging-0123456789ab", "hints": {}}' * 4


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        emulator = start_pubsub(free_port(), Path(tmp) / "pubsub.log", PROJECT)
        try:
            with environment_applied({"PUBSUB_EMULATOR_HOST": emulator.host}):
                batching = pubsub_v1.PublisherClient()
                path = batching.topic_path(PROJECT, TOPIC)
                batching.create_topic(name=path)
                adapter = PubSubPublisher(PROJECT)
                attributes = {"app": "hello", "environment": "staging"}
                print(f"{PUBLISHES} publishes of one {len(PAYLOAD)}-byte message each, waiting for its id")
                rows = [
                    (
                        "batching client (publish, then result())",
                        measure(
                            lambda: batching.publish(path, PAYLOAD, **attributes).result(timeout=30),
                            PUBLISHES,
                        ),
                    ),
                    (
                        "Publisher adapter (one Publish call)",
                        measure(lambda: adapter.publish(TOPIC, PAYLOAD, attributes), PUBLISHES),
                    ),
                ]
                batching.stop()
        finally:
            stop_process_group(emulator.process.pid)
    print_costs(rows, label="client")
    (_, batching_cost), (_, adapter_cost) = rows
    print(
        f"the adapter takes {adapter_cost.cpu / batching_cost.cpu:.2f}x the CPU"
        f" and {adapter_cost.wall / batching_cost.wall:.2f}x the time"
    )


if __name__ == "__main__":
    main()
