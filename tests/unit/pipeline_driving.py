"""Driving the pipeline's use cases through fakes of its own ports, step by step, as Pub/Sub would:
the builds, steps and requests the use-case tests share."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from shared import topology
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.domain.notify_message import NotifyRequest
from shared.domain.status import DeploymentStatus
from shared.usecases.admit_build import admit_build
from shared.usecases.provision import start_rolling_replace
from shared.usecases.rollback import RollbackAccepted, request_rollback
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down
from tests.unit.fakes import FakeWorld, verified_caller_check

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
COMMIT_C = "c" * 40


def build(
    world: FakeWorld,
    build_id: str,
    commit: str = COMMIT_A,
    environment: str = "staging",
    messages: list[str] | None = None,
    **extra: Any,
) -> Any:
    body = {
        "app": "hello",
        "environment": environment,
        "commit": commit,
        "build_id": build_id,
        "artifact": f"file:///artifacts/{commit[:6]}.tar.gz",
        "artifact_sha256": digest_of(commit),
        "commit_messages": messages or [],
        **extra,
    }
    return admit_build(
        world.services,
        json.dumps(body).encode(),
        {"app": "hello", "environment": environment},
        f"event-{build_id}",
    )


def digest_of(commit: str) -> str:
    """A stand-in artifact digest, one per commit (the build of a commit is one artifact)."""
    return hashlib.sha256(commit.encode()).hexdigest()


def step(world: FakeWorld, topic: str) -> StepMessage:
    messages = world.publisher.take(topic)
    assert messages, f"nothing published on {topic}"
    return StepMessage.from_message(messages[-1].data)


def notifications(world: FakeWorld) -> list[NotifyRequest]:
    return [NotifyRequest.from_json(m.data) for m in world.publisher.on(topology.NOTIFY)]


def rollback_by(
    world: FakeWorld, *, app: str = "hello", environment: str = "staging", caller: str, **options: Any
) -> RollbackAccepted:
    """A rollback asked by `caller`, a verified Workspace account (see `verified_caller_check`)."""
    return request_rollback(
        world.services,
        app=app,
        environment=environment,
        caller=caller,
        caller_matches=verified_caller_check(caller),
        **options,
    )


def deploy_to_live(world: FakeWorld, build_id: str, commit: str = COMMIT_A, **kwargs: Any) -> str:
    result = build(world, build_id, commit, **kwargs)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    message = step(world, topology.COOL_DOWN_COMPLETE)
    assert result.deployment_id is not None
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, message)
    return result.deployment_id


def recorded_before_digests(world: FakeWorld, deployment_id: str) -> None:
    """Make a deployment and its release look as CONTRACT v1 recorded them: no digest anywhere."""
    deployment = world.store.deployments[deployment_id]
    event = {key: value for key, value in deployment.event.items() if key != "artifact_sha256"}
    world.store.deployments[deployment_id] = replace(deployment, event=event, artifact_sha256="")
    key = f"{deployment.app}@{deployment.version}"
    world.store.releases[key] = replace(world.store.releases[key], artifact_sha256="")


def roll_back(
    world: FakeWorld, *, caller: str = "lead@example.com", **options: Any
) -> tuple[RollbackAccepted, Any]:
    """A rollback of hello/staging asked by `caller`, and the admission of the build event it
    republishes (as Pub/Sub would deliver it): the request's answer and the admission's result."""
    accepted = rollback_by(world, caller=caller, **options)
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admitted = admit_build(
        world.services, published.data, published.attributes, f"event-{accepted.deployment_id}"
    )
    return accepted, admitted


def stuck_switching(world: FakeWorld) -> tuple[str, str, StepMessage]:
    """1.0.0 live on staging; 1.0.1 switching, its green attached beside it and healthy, but the
    load balancer never sees it so (say, a firewall that blocks its health checks). Returns the
    live deployment, the switching one and its poll."""
    blue = deploy_to_live(world, "b1")
    result = build(world, "b2", COMMIT_B)
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    poll = step(world, topology.COOL_DOWN_COMPLETE)
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.compute.lb_unhealthy.add(instance_group_name(result.deployment_id))
    world.clock.advance(5)  # the fake world's cool-down
    with pytest.raises(NotReadyYet, match="backend service does not see it healthy"):
        complete_cool_down(world.services, poll)
    assert world.store.deployments[result.deployment_id].status is DeploymentStatus.SWITCHING
    assert world.compute.attached == [instance_group_name(blue), instance_group_name(result.deployment_id)]
    return blue, result.deployment_id, poll
