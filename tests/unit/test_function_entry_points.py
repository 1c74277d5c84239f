"""The entry points as Cloud Functions runs them: functions-framework apps driven through a
test client, with the pipeline's own ports faked (the use cases are tested elsewhere; here,
how events are decoded and how outcomes map to acknowledge / retry / HTTP status)."""

from __future__ import annotations

import base64
import gc
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from functions_framework import create_app

import functions.build_succeeded
import functions.cool_down_complete
import functions.rollback
import functions.start_rolling_replace
import functions.watchdog
from functions.step_event import StepNotReady, handle_step_event
from shared import topology
from shared.adapters import composition_root
from shared.config import ConfigError
from shared.domain.identity import Caller, InvalidTokenError
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name
from shared.logging import CloudLoggingFormatter
from shared.usecases.services import NotReadyYet, Services, UnknownEnvironment
from shared.usecases.watchdog import WatchdogReport
from tests.unit.fakes import FakeWorld, fake_world

MAIN = str(Path(__file__).resolve().parents[2] / "main.py")
COMMIT = "c" * 40


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = fake_world()
    for module in (
        functions.build_succeeded,
        functions.start_rolling_replace,
        functions.cool_down_complete,
        functions.rollback,
    ):
        monkeypatch.setattr(module, "services", lambda: world.services)
    return world


def client(target: str, signature_type: str) -> FlaskClient:
    return create_app(target=target, source=MAIN, signature_type=signature_type).test_client()


def push(data: bytes, attributes: dict[str, str], message_id: str = "1001") -> dict[str, Any]:
    """The body a Pub/Sub push subscription sends."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/s",
    }


def build_body(build_id: str = "b1") -> bytes:
    return json.dumps(
        {
            "app": "hello",
            "environment": "staging",
            "commit": COMMIT,
            "build_id": build_id,
            "artifact": "file:///a/hello.tar.gz",
            "artifact_sha256": "ab" * 32,
        }
    ).encode()


def test_a_pushed_build_event_is_admitted_and_acknowledged(world: FakeWorld) -> None:
    response = client("on_build_succeeded", "cloudevent").post(
        "/", json=push(build_body(), {"app": "hello", "environment": "staging"})
    )
    assert response.status_code == 200
    assert len(world.store.deployments) == 1
    assert len(world.publisher.on(topology.START_ROLLING_REPLACE)) == 1


def test_a_bad_build_event_is_recorded_and_acknowledged_not_retried(world: FakeWorld) -> None:
    response = client("on_build_succeeded", "cloudevent").post(
        "/", json=push(b"{oops", {"app": "hello"}, message_id="2002")
    )
    assert response.status_code == 200
    assert "not JSON" in world.store.rejected["2002"].reason
    assert world.store.deployments == {}


def test_cool_down_not_ready_answers_503_without_a_traceback_so_pub_sub_retries_later(
    world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    app = client("on_build_succeeded", "cloudevent")
    app.post("/", json=push(build_body(), {"app": "hello", "environment": "staging"}))
    from shared.domain.messages import StepMessage
    from shared.usecases.provision import start_rolling_replace

    start = StepMessage.from_message(world.publisher.take(topology.START_ROLLING_REPLACE)[0].data)
    start_rolling_replace(world.services, start)
    (message,) = world.publisher.take(topology.COOL_DOWN_COMPLETE)
    cool_down = client("on_cool_down_complete", "cloudevent")
    not_ready = cool_down.post("/", json=push(message.data, dict(message.attributes)))
    assert not_ready.status_code == 503, "not ready is answered 503"
    assert b"not ready yet" in not_ready.data
    assert not [r for r in caplog.records if r.exc_info], "a not-ready poll must not log a traceback"
    world.compute.make_healthy(instance_group_name(start.deployment_id))
    world.clock.advance(10)
    assert cool_down.post("/", json=push(message.data, dict(message.attributes))).status_code == 200
    assert world.store.deployments[start.deployment_id].status == "live"


def test_an_undecodable_step_message_is_dropped_not_retried(world: FakeWorld) -> None:
    response = client("on_cool_down_complete", "cloudevent").post("/", json=push(b"[]", {}))
    assert response.status_code == 200


@pytest.fixture
def rollback_client(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    def verify(token: str, audience: Sequence[str]) -> Caller:
        assert audience == ("https://rollback.example",)
        if token == "lead":
            return Caller(email="lead@example.com", subject="1", issuer="test", hosted_domain="example.com")
        if token == "consumer":
            # A consumer account whose verified e-mail is in the allowed domain: no `hd` claim.
            return Caller(email="lead@example.com", subject="3", issuer="test")
        if token == "stranger":
            return Caller(email="stranger@elsewhere.example", subject="2", issuer="test")
        raise InvalidTokenError("bad token")

    monkeypatch.setattr("functions.http_support.verify_identity_token", verify)
    monkeypatch.setattr(functions.rollback, "rollback_audience", lambda: ("https://rollback.example",))
    yield client("rollback", "http")


def post(app: FlaskClient, body: Any, token: str | None = "lead") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.post("/", data=json.dumps(body), content_type="application/json", headers=headers)


def test_rollback_maps_each_refusal_to_its_contract_status(
    world: FakeWorld, rollback_client: FlaskClient
) -> None:
    staging = {"app": "hello", "environment": "staging"}
    assert post(rollback_client, staging, token=None).status_code == 401
    assert post(rollback_client, staging, token="forged").status_code == 401
    assert post(rollback_client, staging, token="stranger").status_code == 403
    assert post(rollback_client, staging, token="consumer").status_code == 403
    assert post(rollback_client, {"app": "hello"}).status_code == 400
    assert post(rollback_client, {**staging, "to_version": 3}).status_code == 400
    assert post(rollback_client, {**staging, "colour": "red"}).status_code == 400
    assert rollback_client.post("/", data="{", headers={"Authorization": "Bearer lead"}).status_code == 400
    assert post(rollback_client, {"app": "hello", "environment": "qa"}).status_code == 404
    assert post(rollback_client, staging).status_code == 409  # nothing live yet
    assert post(rollback_client, {**staging, "to_version": "2.0.0"}).status_code == 404
    assert rollback_client.get("/", headers={"Authorization": "Bearer lead"}).status_code == 405


def test_an_accepted_rollback_answers_202_with_the_deployment_it_will_create(
    world: FakeWorld, rollback_client: FlaskClient
) -> None:
    from tests.unit.pipeline_driving import COMMIT_B, deploy_to_live

    first = deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    response = post(rollback_client, {"app": "hello", "environment": "staging", "reason": "oops"})
    assert response.status_code == 202, response.get_data(as_text=True)
    accepted = response.get_json()
    assert accepted["version"] == "1.0.0" and accepted["rollback_of"] == second
    assert accepted["deployment_id"] not in (first, second)
    (event,) = world.publisher.on(topology.BUILD_SUCCEEDED)
    body = json.loads(event.data)
    # The identity and the reason travel in the release request, never in the message.
    assert "triggered_by" not in body and "reason" not in body and "rollback_of" not in body
    request = world.store.release_requests[body["release_request"]]
    assert (request.requested_by, request.reason, request.rollback_of) == ("lead@example.com", "oops", second)


def test_a_rollback_to_a_release_recorded_before_digests_answers_409_with_the_reason(
    world: FakeWorld, rollback_client: FlaskClient
) -> None:
    from tests.unit.pipeline_driving import COMMIT_B, deploy_to_live, recorded_before_digests

    recorded_before_digests(world, deploy_to_live(world, "b1"))
    deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()

    response = post(rollback_client, {"app": "hello", "environment": "staging"})

    assert response.status_code == 409, response.get_data(as_text=True)
    assert "recorded before artifact digests" in response.get_json()["error"]
    assert world.publisher.on(topology.BUILD_SUCCEEDED) == []


def test_cold_start_names_a_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    composition_root.services.cache_clear()
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        composition_root.services()
    monkeypatch.delenv("ROLLBACK_AUDIENCE", raising=False)
    composition_root.rollback_audience.cache_clear()
    with pytest.raises(ConfigError, match="ROLLBACK_AUDIENCE"):
        composition_root.rollback_audience()


def test_the_rollback_audience_accepts_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ROLLBACK_AUDIENCE", " https://rollback.example , 32555940559.apps.googleusercontent.com ,"
    )
    composition_root.rollback_audience.cache_clear()
    try:
        assert composition_root.rollback_audience() == (
            "https://rollback.example",
            "32555940559.apps.googleusercontent.com",
        )
        monkeypatch.setenv("ROLLBACK_AUDIENCE", " , ")
        composition_root.rollback_audience.cache_clear()
        with pytest.raises(ConfigError, match="ROLLBACK_AUDIENCE"):
            composition_root.rollback_audience()
    finally:
        composition_root.rollback_audience.cache_clear()


def test_a_pushed_start_step_creates_green_and_schedules_the_cool_down(world: FakeWorld) -> None:
    client("on_build_succeeded", "cloudevent").post(
        "/", json=push(build_body(), {"app": "hello", "environment": "staging"})
    )
    (message,) = world.publisher.take(topology.START_ROLLING_REPLACE)
    start = client("on_start_rolling_replace", "cloudevent")
    assert start.post("/", json=push(message.data, dict(message.attributes))).status_code == 200
    deployment_id = StepMessage.from_message(message.data).deployment_id
    assert world.store.deployments[deployment_id].status == "cooling_down"
    assert instance_group_name(deployment_id) in world.compute.groups
    assert len(world.publisher.on(topology.COOL_DOWN_COMPLETE)) == 1


@pytest.mark.parametrize("target", ["on_start_rolling_replace", "on_cool_down_complete"])
def test_step_functions_acknowledge_messages_that_can_never_succeed(world: FakeWorld, target: str) -> None:
    app = client(target, "cloudevent")
    assert app.post("/", json=push(b"[]", {})).status_code == 200
    gone = StepMessage("hello-qa-0123456789ab", "hello", "qa")
    assert app.post("/", json=push(*gone.to_message())).status_code == 200


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(CloudLoggingFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def step_event(data: bytes, event_id: str = "evt-1") -> CloudEvent:
    attributes = {
        "id": event_id,
        "source": "//pubsub.googleapis.com/projects/p/topics/some-step",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
    }
    return CloudEvent(attributes, push(data, {}))


def test_the_step_helper_binds_the_log_context_and_maps_each_error(world: FakeWorld) -> None:
    logger = logging.getLogger("tests.step_event")
    lines = _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    seen: list[StepMessage] = []

    def run(error: Exception | None) -> None:
        def step(pipeline: Services, message: StepMessage) -> None:
            assert pipeline is world.services
            seen.append(message)
            logger.info("step ran")
            if error is not None:
                raise error

        message = StepMessage("hello-staging-0123456789ab", "hello", "staging")
        handle_step_event(
            step_event(message.to_message()[0]),
            world.services,
            step,
            topic="some-step",
            action="step",
            log=logger,
        )

    try:
        run(None)
        assert lines.lines[-1]["message"] == "step ran"
        assert {k: lines.lines[-1][k] for k in ("app", "environment", "deployment_id", "event_id")} == {
            "app": "hello",
            "environment": "staging",
            "deployment_id": "hello-staging-0123456789ab",
            "event_id": "evt-1",
        }
        with pytest.raises(StepNotReady):  # transient: answered 503 so Pub/Sub redelivers
            run(NotReadyYet("green 0/1 healthy"))
        assert lines.lines[-1]["message"] == "not ready yet: green 0/1 healthy"
        with pytest.raises(RuntimeError):  # anything unexpected is retried too
            run(RuntimeError("Firestore is down"))
        run(UnknownEnvironment("hello/staging"))  # permanent: acknowledged
        assert (
            lines.lines[-1]["severity"] == "ERROR"
            and lines.lines[-1]["message"] == "cannot step: hello/staging"
        )
        handle_step_event(
            step_event(b"{", "evt-2"),
            world.services,
            lambda _services, message: seen.append(message),
            topic="some-step",
            action="x",
            log=logger,
        )
        assert lines.lines[-1]["message"].startswith("dropping an undecodable some-step message")
        assert lines.lines[-1]["event_id"] == "evt-2"
        assert len(seen) == 4
    finally:
        logger.removeHandler(lines)


def test_a_tick_that_arrives_during_a_sweep_is_acknowledged_without_a_second_sweep(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    sweeps: list[Services] = []

    def slow_sweep(services: Services, *, look_for_leaks: bool) -> WatchdogReport:
        sweeps.append(services)
        started.set()
        assert release.wait(10), "the test never released the first sweep"
        return WatchdogReport()

    monkeypatch.setattr(functions.watchdog, "services", lambda: world.services)
    monkeypatch.setattr(functions.watchdog, "run_watchdog", slow_sweep)
    tick = push(b'{"scheduled_at": "2026-01-01T00:00:00+00:00"}', {})
    first = threading.Thread(target=lambda: client("watchdog", "cloudevent").post("/", json=tick))
    first.start()
    try:
        assert started.wait(10), "the first tick never started its sweep"
        second = client("watchdog", "cloudevent").post(
            "/", json={**tick, "message": {**tick["message"], "messageId": "2"}}
        )
        assert second.status_code == 200
        assert len(sweeps) == 1
    finally:
        release.set()
        first.join(10)
    third = client("watchdog", "cloudevent").post(
        "/", json={**tick, "message": {**tick["message"], "messageId": "3"}}
    )
    assert third.status_code == 200
    assert len(sweeps) == 2, "once the sweep ended, the next tick sweeps again"


def test_leaks_are_looked_for_on_the_first_tick_then_once_per_interval(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[bool] = []

    def sweep(services: Services, *, look_for_leaks: bool) -> WatchdogReport:
        looked.append(look_for_leaks)
        return WatchdogReport()

    monkeypatch.setattr(functions.watchdog, "services", lambda: world.services)
    monkeypatch.setattr(functions.watchdog, "run_watchdog", sweep)
    monkeypatch.setattr(functions.watchdog, "_leaks_looked_for_at", None)
    app = client("watchdog", "cloudevent")
    for index, seconds_later in enumerate((0, 3, 3, functions.watchdog.LEAK_COLLECTION_INTERVAL.seconds)):
        world.clock.advance(seconds_later)
        tick = push(b"{}", {}, message_id=f"tick-{index}")
        assert app.post("/", json=tick).status_code == 200
    assert looked == [True, False, False, True]


def test_the_objects_built_at_cold_start_are_kept_out_of_garbage_collections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "cold-start-test")
    monkeypatch.setenv(
        "PIPELINE_CONFIG", str(Path(__file__).resolve().parents[2] / "config" / "pipeline.toml")
    )
    monkeypatch.setenv("COMPUTE_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    composition_root.pipeline_config.cache_clear()
    composition_root.services.cache_clear()
    gc.unfreeze()
    try:
        composition_root.services()
        # Every object alive after the cold start, the client libraries' classes among them.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        composition_root.services.cache_clear()
        composition_root.pipeline_config.cache_clear()


def test_concurrent_first_calls_at_cold_start_build_the_clients_once() -> None:
    builds: list[int] = []
    all_waiting = threading.Barrier(8)
    another_build_began = threading.Event()

    def build() -> object:
        builds.append(threading.get_ident())
        if len(builds) > 1:
            another_build_began.set()
        # Holds the first build open (bounded) for as long as a second one could begin.
        another_build_began.wait(timeout=0.5)
        return object()

    services = composition_root.built_once(build)

    def first_request() -> object:
        all_waiting.wait(timeout=10)
        return services()

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(first_request())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8 and len({id(result) for result in results}) == 1
    assert len(builds) == 1

    services.cache_clear()
    assert services() is not results[0] and len(builds) == 2


def test_a_cold_start_that_fails_is_tried_again_by_the_next_request() -> None:
    attempts: list[str] = []

    def build() -> str:
        attempts.append("tried")
        if len(attempts) == 1:
            raise ConfigError("PIPELINE_CONFIG: unreadable")
        return "built"

    services = composition_root.built_once(build)
    with pytest.raises(ConfigError):
        services()
    assert services() == "built" and services() == "built"
    assert len(attempts) == 2
