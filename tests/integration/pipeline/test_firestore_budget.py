"""An ordinary deployment's Firestore work stays within its budget of document operations.

One release replacing a live one in an environment with smoke checks and a bake window, driven
step by step through the use cases as Pub/Sub would deliver them (each poll that finds "not yet"
redelivered after a second), on the real Firestore emulator and the real store and ledger
adapters. Reads and writes are counted at the gRPC boundary by the benchmarks' own counter
(bench/rpc_counting), in Firestore's billing units: a count, not a time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from google.cloud import firestore

from bench.rpc_counting.rpc_counter import RpcCounts, counting_emulator_channels
from bench.rpc_counts import FIRESTORE_BUDGET
from shared import topology
from shared.adapters.firestore_store import FirestoreStore
from shared.adapters.notification_ledger import FirestoreNotificationLedger
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.domain.notify_message import NotifyRequest
from shared.domain.status import DeploymentStatus as S
from shared.domain.verification import VerificationState
from shared.ports import TrafficSample
from shared.usecases.admit_build import admit_build
from shared.usecases.bake import check_bake
from shared.usecases.notify import NotifyServices, notify_team
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet, Services
from shared.usecases.switch import complete_cool_down
from tests.conftest import TEST_PROJECT
from tests.integration.pipeline.test_firestore_store import COMMITS
from tests.unit.fakes import (
    FakeChannels,
    FakeClock,
    FakeCompute,
    FakeMetrics,
    FakePublisher,
    FakeSmokeProbe,
    pipeline_config,
)
from tests.unit.test_notifications import ScriptedSender

ENVIRONMENT = "verified"
"""The test configuration's environment with a preview, smoke checks and a 30 s bake window."""
POLL_SECONDS = 1.0
"""The subscription's shortest backoff: how soon a poll that found "not yet" comes back."""


@dataclass
class Pipeline:
    """The use cases wired to the counted Firestore client, with Pub/Sub played by this test."""

    services: Services
    notify: NotifyServices
    publisher: FakePublisher
    clock: FakeClock
    compute: FakeCompute
    metrics: FakeMetrics
    counts: RpcCounts
    by_step: dict[str, list[int]] = field(default_factory=dict)

    def counted(self, step: str, run: Callable[[], object]) -> None:
        reads, writes = self.counts.firestore_reads, self.counts.firestore_writes
        try:
            run()
        finally:
            totals = self.by_step.setdefault(step, [0, 0, 0])
            totals[0] += 1
            totals[1] += self.counts.firestore_reads - reads
            totals[2] += self.counts.firestore_writes - writes

    def build(self, build_id: str, commit: str) -> str:
        body = json.dumps(
            {
                "app": "hello",
                "environment": ENVIRONMENT,
                "commit": commit,
                "build_id": build_id,
                "artifact": "file:///artifacts/hello.tar.gz",
                "artifact_sha256": "a" * 64,
                "commit_messages": [f"fix: {build_id}"],
            }
        )
        admitted: list[str | None] = []
        self.counted(
            "on_build_succeeded",
            lambda: admitted.append(
                admit_build(
                    self.services,
                    body.encode(),
                    {"app": "hello", "environment": ENVIRONMENT},
                    f"event-{build_id}",
                ).deployment_id
            ),
        )
        assert admitted[0] is not None
        return admitted[0]

    def deliver(self, topic: str, step: str, run: Callable[[Services, StepMessage], object]) -> None:
        """Deliver the one message on `topic`, again after each poll interval while it is not ready."""
        (published,) = self.publisher.take(topic)
        message = StepMessage.from_message(published.data)
        for _ in range(200):
            try:
                self.counted(step, lambda: run(self.services, message))
                return
            except NotReadyYet:  # transient by design: Pub/Sub redelivers after its backoff
                self.clock.advance(POLL_SECONDS)
                # Green becomes healthy a little after it is requested, as on the local stack.
                for group in self.compute.groups:
                    self.compute.make_healthy(group)
        raise AssertionError(f"{topic} never finished")

    def notify_all(self) -> None:
        for published in self.publisher.take(topology.NOTIFY):
            request = NotifyRequest.from_json(published.data)
            self.counted("on_notify", functools.partial(notify_team, self.notify, request))

    def release(self, build_id: str, commit: str) -> str:
        deployment_id = self.build(build_id, commit)
        self.deliver(topology.START_ROLLING_REPLACE, "on_start_rolling_replace", start_rolling_replace)
        self.deliver(topology.COOL_DOWN_COMPLETE, "on_cool_down_complete", complete_cool_down)
        self.metrics.traffic_by_group[instance_group_name(deployment_id)] = TrafficSample(400, 1)
        self.deliver(topology.BAKE_CHECK, "on_bake_check", check_bake)
        self.notify_all()
        return deployment_id


@pytest.fixture
def pipeline(emulator_env: dict[str, str], clean_firestore: str) -> Iterator[Pipeline]:
    with counting_emulator_channels(RpcCounts()) as counts:
        client = firestore.Client(project=TEST_PROJECT)
        store = FirestoreStore(client)
        clock, compute, publisher, metrics = FakeClock(), FakeCompute(), FakePublisher(), FakeMetrics()
        compute.now = clock.now
        services = Services(
            config=pipeline_config(),
            store=store,
            compute=compute,
            publisher=publisher,
            clock=clock,
            metrics=metrics,
            probe=FakeSmokeProbe(),
        )
        # Two channels, as on the local stack (its webhook and its notifications file).
        channels = FakeChannels([ScriptedSender("webhook"), ScriptedSender("notifications_file")])
        notify = NotifyServices(
            config=services.config,
            store=store,
            ledger=FirestoreNotificationLedger(client, clock=clock.now),
            channels=channels,
            clock=clock,
        )
        yield Pipeline(services, notify, publisher, clock, compute, metrics, counts)
        client.close()


def test_an_ordinary_deployment_stays_within_its_firestore_budget(pipeline: Pipeline) -> None:
    pipeline.release("first", COMMITS[0])
    pipeline.by_step.clear()
    before = pipeline.counts.firestore_operations

    deployment_id = pipeline.release("second", COMMITS[1])
    used = pipeline.counts.firestore_operations - before

    deployment = pipeline.services.store.get_deployment(deployment_id)
    assert deployment is not None and deployment.status is S.LIVE
    assert deployment.verification is not None and deployment.verification.state is VerificationState.PASSED
    assert deployment.replaced_deployment_id is not None, "an ordinary release replaces a live one"
    polls = pipeline.by_step["on_bake_check"][0] + pipeline.by_step["on_cool_down_complete"][0]
    assert polls > 10, "the polls are part of what is measured"
    breakdown = ", ".join(
        f"{step}: {n} deliveries, {reads} reads, {writes} writes"
        for step, (n, reads, writes) in sorted(pipeline.by_step.items())
    )
    print(f"{used} document operations: {breakdown}")
    assert used <= FIRESTORE_BUDGET, f"{used} document operations ({breakdown})"
