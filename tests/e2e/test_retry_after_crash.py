"""A handler that dies after its Compute call and before its Firestore write is redelivered and
finishes the deployment once: no second MIG, no second notification.

The steps run in this process on the stack's real Firestore emulator and Compute emulator, with
the pipeline's store wrapped to die once at the chosen moment; the test then redelivers the same
message, as Pub/Sub would. Step messages are held here (so the stack's own functions do not
race the test); notifications go to the stack's real `notify` topic and notifications file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from shared import topology
from shared.adapters.clock import SystemClock
from shared.adapters.compute_engine import ComputeEngine
from shared.adapters.firestore_store import FirestoreStore
from shared.adapters.http_probe import HttpSmokeProbe
from shared.adapters.pubsub_publisher import PubSubPublisher
from shared.domain.approval import Decision
from shared.domain.identity import caller_allowed
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.records import Deployment
from shared.domain.status import DeploymentStatus
from shared.usecases.admit_build import admit_build
from shared.usecases.approval import decide
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet, Services
from shared.usecases.switch import complete_cool_down
from tests.e2e.conftest import Pipeline, artifact_digest, new_commit, wait_for

T = TypeVar("T")

pytestmark = pytest.mark.stack


class SimulatedCrash(RuntimeError):
    """Stands for the function instance dying (or Firestore failing) at that moment."""


class CrashingStore:
    """Our own Store port, made to die once just before its n-th next write (a transaction or a
    single-record update)."""

    def __init__(self, inner: FirestoreStore) -> None:
        self.inner = inner
        self._countdown: int | None = None

    def crash_before_write(self, n: int) -> None:
        self._countdown = n

    def _count_down(self) -> None:
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown == 0:
                self._countdown = None
                raise SimulatedCrash("died after the Compute call, before the Firestore write")

    def atomically(self, work: Callable[[Any], T]) -> T:
        self._count_down()
        return self.inner.atomically(work)

    def update_deployment(
        self, deployment_id: str, change: Callable[[Deployment], Deployment | None]
    ) -> Deployment | None:
        self._count_down()
        return self.inner.update_deployment(deployment_id, change)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class HoldingPublisher:
    """Publishes notifications and the bake step for real (the stack's functions handle them);
    keeps the step messages the test delivers itself."""

    def __init__(self, inner: PubSubPublisher) -> None:
        self.inner = inner
        self.held: list[tuple[str, bytes]] = []

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        if topic in (topology.NOTIFY, topology.BAKE_CHECK):
            return self.inner.publish(topic, data, attributes)
        self.held.append((topic, data))
        return f"held-{len(self.held)}"

    def last(self, topic: str) -> StepMessage:
        return StepMessage.from_message([data for held_topic, data in self.held if held_topic == topic][-1])


def test_a_crash_between_compute_and_firestore_is_redelivered_and_finishes_once(pipeline: Pipeline) -> None:
    env = pipeline.config.apps["hello"].environments["production"]
    store = CrashingStore(FirestoreStore(pipeline.db))
    publisher = HoldingPublisher(PubSubPublisher(pipeline.project))
    compute = ComputeEngine(
        pipeline.project, endpoint=f"http://{pipeline.stack.env['COMPUTE_EMULATOR_HOST']}"
    )
    services = Services(
        config=pipeline.config,
        store=store,
        compute=compute,
        publisher=publisher,
        clock=SystemClock(),
        probe=HttpSmokeProbe(),
    )
    # Earlier modules may leave production's lock held a little longer (a release in its bake
    # window keeps it): this test drives admission itself and needs the environment free.
    wait_for(
        lambda: not pipeline.environment("production").get("active_deployment_id") or None,
        90,
        "production's lock to be free",
    )
    blue = pipeline.environment("production").get("live_deployment_id")  # None when run on its own
    body = {
        "app": "hello",
        "environment": "production",
        "commit": new_commit(),
        "build_id": "ci-crash",
        "artifact": pipeline.artifacts["hello"],
        "artifact_sha256": artifact_digest(pipeline.artifacts["hello"]),
        "commit_messages": ["fix: survive crashes"],
    }
    admitted = admit_build(
        services, json.dumps(body).encode(), {"app": "hello", "environment": "production"}, "crash-event"
    )
    deployment_id = str(admitted.deployment_id)
    # Production waits for an approver (other than the requester; a CI build has none).
    decide(
        services,
        deployment_id=deployment_id,
        decision=Decision.APPROVE,
        caller="approver@hello.local",
        caller_matches=lambda patterns: caller_allowed("approver@hello.local", patterns),
    )
    start = publisher.last(topology.START_ROLLING_REPLACE)

    # 1. Green is created, then the process dies before recording it.
    store.crash_before_write(1)
    with pytest.raises(SimulatedCrash):
        start_rolling_replace(services, start)
    assert pipeline.group_exists("production", instance_group_name(deployment_id))
    assert (pipeline.deployment(deployment_id) or {})["status"] == "provisioning"
    # The redelivery finds its own template and group (409 → fetch and continue), and a late
    # duplicate changes nothing.
    assert start_rolling_replace(services, start) is not None
    start_rolling_replace(services, start)
    mine = [name for name in pipeline.group_names("production") if name.startswith(deployment_id)]
    assert mine == [instance_group_name(deployment_id)], f"groups for this deployment: {mine}"
    record = pipeline.deployment(deployment_id) or {}
    assert [h["status"] for h in record["history"]].count("cooling_down") == 1
    assert record["instance_template"] == instance_template_name(deployment_id)

    # 2. Traffic is switched, then the process dies before recording `live`.
    cool_down = publisher.last(topology.COOL_DOWN_COMPLETE)
    not_before = (pipeline.deployment(deployment_id) or {}).get("not_before")
    assert isinstance(not_before, datetime)

    def ready() -> bool:
        health = compute.group_health(env, instance_group_name(deployment_id))
        return health.all_healthy and datetime.now(UTC) >= not_before

    wait_for(ready, env.provisioning_deadline_seconds, "green to be healthy and the cool-down over")
    store.crash_before_write(2)  # the first is cooling_down → switching; the second is `live`
    with pytest.raises((SimulatedCrash, NotReadyYet)):
        complete_cool_down(services, cool_down)
    assert (pipeline.deployment(deployment_id) or {})["status"] == "switching"
    wait_for(lambda: pipeline.serving("production") == admitted.version, 10, "green to serve")

    def redeliver() -> Any:
        try:
            return complete_cool_down(services, cool_down)
        except NotReadyYet:  # as Pub/Sub would: try again after a backoff
            return None

    live = wait_for(redeliver, 30, "the redelivered switch to finish", interval=0.5)
    assert live.status is DeploymentStatus.LIVE
    complete_cool_down(services, cool_down)  # one more duplicate delivery: still once

    record = pipeline.deployment(deployment_id) or {}
    assert [h["status"] for h in record["history"]] == [
        "awaiting_approval",
        "queued",
        "provisioning",
        "cooling_down",
        "switching",
        "live",
    ]
    if blue is not None:
        assert (pipeline.deployment(str(blue)) or {})["status"] == "retired"
    assert pipeline.environment("production")["live_deployment_id"] == deployment_id

    def live_lines() -> list[dict[str, Any]]:
        return [
            n
            for n in pipeline.notifications()
            if n["deployment_id"] == deployment_id and n["status"] == "live"
        ]

    wait_for(live_lines, 15, "the live notification")
    # Give the duplicate notify events time to be handled; they must not add a line.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert len(live_lines()) == 1, "the live notification was sent twice"
        time.sleep(0.2)


def test_a_crash_after_the_commit_and_before_the_publish_is_resumed_by_the_redelivery(
    pipeline: Pipeline,
) -> None:
    publisher = HoldingPublisher(PubSubPublisher(pipeline.project))
    services = Services(
        config=pipeline.config,
        store=FirestoreStore(pipeline.db),
        compute=ComputeEngine(
            pipeline.project, endpoint=f"http://{pipeline.stack.env['COMPUTE_EMULATOR_HOST']}"
        ),
        publisher=publisher,
        clock=SystemClock(),
        probe=HttpSmokeProbe(),
    )
    # The release before may still be in its bake window, which keeps the environment's lock.
    bake = pipeline.config.apps["hello"].environments["production"].bake_seconds
    wait_for(
        lambda: pipeline.environment("production").get("active_deployment_id") is None,
        bake + 30,
        "production's lock to be free",
    )
    commit = new_commit()
    # Staging: it deploys without an approval, so admission itself takes the lock.
    body = {
        "app": "hello",
        "environment": "staging",
        "commit": commit,
        "build_id": "ci-lost-publish",
        "artifact": pipeline.artifacts["hello"],
        "artifact_sha256": artifact_digest(pipeline.artifacts["hello"]),
        "commit_messages": ["fix: lost message"],
    }
    # The first delivery records the deployment and takes the lock, then "dies": its
    # start-rolling-replace message is never published.
    admitted = admit_build(
        services, json.dumps(body).encode(), {"app": "hello", "environment": "staging"}, "x"
    )
    assert [topic for topic, _ in publisher.held] == [topology.START_ROLLING_REPLACE]
    assert (pipeline.deployment(str(admitted.deployment_id)) or {})["status"] == "provisioning"
    # Pub/Sub redelivers the same event to the stack's on_build_succeeded, which resumes it.
    redelivered = pipeline.publish_build("staging", commit, "ci-lost-publish", messages=["fix: lost message"])
    assert redelivered == admitted.deployment_id
    live = pipeline.wait_status(redelivered, "live", "failed")
    assert live["status"] == "live" and live["version"] == admitted.version
    assert [h["status"] for h in live["history"]].count("provisioning") == 1


def test_a_dead_lettered_event_is_recorded_and_announced(pipeline: Pipeline) -> None:
    topic = pipeline.publisher.topic_path(
        pipeline.project, topology.dead_letter_topic(topology.COOL_DOWN_COMPLETE)
    )
    message_id = pipeline.publisher.publish(
        topic,
        b'{"deployment_id": "hello-staging-000000000000", "app": "hello", "environment": "staging"}',
        app="hello",
        environment="staging",
        CloudPubSubDeadLetterSourceDeliveryCount="100",
    ).result(timeout=30)
    record = wait_for(
        lambda: pipeline.document("dead_lettered_events", message_id), 20, "the dead-letter record"
    )
    assert record["delivery_attempts"] == 100 and record["attributes"]["app"] == "hello"
    # The topic it came from, named by the CloudEvent's source as Eventarc sets it on GCP.
    assert record["topic"] == topology.dead_letter_topic(topology.COOL_DOWN_COMPLETE)
    wait_for(
        lambda: [n for n in pipeline.notifications() if n["dedupe_key"] == f"dead-letter:{message_id}"],
        20,
        "the dead-letter alert",
    )
