"""`python -m bench publish`: what one step's publish costs, through Google's batching client and
through the pipeline's Publisher adapter (one Publish call per message), against the Pub/Sub
emulator.

A step publishes one message and waits until Pub/Sub has accepted it before it acknowledges its
own. Per publish: the publishing process's CPU, and the time until the message id is back.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from devstack.emulators import start_pubsub
from devstack.processes import environment_applied, free_port, stop_process_group
from shared.adapters.pubsub_publisher import PubSubPublisher

PROJECT = "bench-publish"
TOPIC = "step"
PUBLISHES = 1000
WARM_UP = 50
PAYLOAD = b'{"deployment_id": "hello-staging-0123456789ab", "hints": {}}' * 4


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(publish: Callable[[], object]) -> tuple[float, float]:
    """(CPU ms, wall ms) per publish, after a warm-up."""
    for _ in range(WARM_UP):
        publish()
    cpu, started = own_cpu_seconds(), time.monotonic()
    for _ in range(PUBLISHES):
        publish()
    return (
        1000 * (own_cpu_seconds() - cpu) / PUBLISHES,
        1000 * (time.monotonic() - started) / PUBLISHES,
    )


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
                        measure(lambda: batching.publish(path, PAYLOAD, **attributes).result(timeout=30)),
                    ),
                    (
                        "Publisher adapter (one Publish call)",
                        measure(lambda: adapter.publish(TOPIC, PAYLOAD, attributes)),
                    ),
                ]
                batching.stop()
        finally:
            stop_process_group(emulator.process.pid)
    print(f"{'client':42s}  {'CPU ms':>7s}  {'wall ms':>7s}")
    print(f"{'-' * 42}  {'-' * 7}  {'-' * 7}")
    for name, (cpu, wall) in rows:
        print(f"{name:42s}  {cpu:7.2f}  {wall:7.2f}")
    (_, (batch_cpu, batch_wall)), (_, (own_cpu, own_wall)) = rows
    print(f"the adapter takes {own_cpu / batch_cpu:.2f}x the CPU and {own_wall / batch_wall:.2f}x the time")


if __name__ == "__main__":
    main()
