"""Release verification through fakes of the pipeline's ports: smoke checks on the preview before
the switch, the bake window after it, and the automatic rollback on a breach."""

from __future__ import annotations

import pytest

from shared import topology
from shared.config import ConfigError, parse_pipeline_config
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.domain.verification import AUTOMATIC_ROLLBACK_ACTOR, SmokeAnswer, VerificationState
from shared.ports import TrafficSample
from shared.usecases.admit_build import admit_build
from shared.usecases.bake import automatic_rollback_id, check_bake
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import TEST_CONFIG, FakeWorld, fake_world
from tests.unit.pipeline_driving import COMMIT_A, COMMIT_B, build, notifications, rollback_by, step

ENV = "verified"


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def to_cooled_down(world: FakeWorld, build_id: str, commit: str) -> str:
    result = build(world, build_id, commit, environment=ENV, messages=["feat: x"])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.clock.advance(5)
    return result.deployment_id


def go_live(world: FakeWorld, build_id: str, commit: str) -> str:
    deployment_id = to_cooled_down(world, build_id, commit)
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert world.store.deployments[deployment_id].status is S.LIVE
    return deployment_id


def bake_until_passed(world: FakeWorld, deployment_id: str) -> None:
    group = instance_group_name(deployment_id)
    world.metrics.traffic_by_group[group] = TrafficSample(requests=500, server_errors=2)
    world.clock.advance(31)
    check_bake(world.services, step(world, topology.BAKE_CHECK))
    assert world.store.deployments[deployment_id].verification.state is VerificationState.PASSED  # type: ignore[union-attr]


def test_green_is_attached_to_the_preview_only_until_its_smoke_checks_pass(world: FakeWorld) -> None:
    deployment_id = to_cooled_down(world, "b1", COMMIT_A)
    group = instance_group_name(deployment_id)
    assert world.compute.preview_attached["hello-verified-preview"] == [group]
    assert world.compute.attached == [], "no user traffic before the smoke checks"

    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))

    assert world.probe.requests == ["GET http://preview.verified.test/"]
    live = world.store.deployments[deployment_id]
    assert live.status is S.LIVE and world.compute.attached == [group]
    assert world.compute.preview_attached["hello-verified-preview"] == [], "the preview is for the next one"
    assert "1 smoke check(s) passed" in world.store.deployments[deployment_id].history[-2].detail


def test_a_failing_smoke_check_fails_the_deployment_before_any_user_request_reaches_it(
    world: FakeWorld,
) -> None:
    world.probe.answers["/"] = SmokeAnswer(500, "Internal Server Error: template missing")
    deployment_id = to_cooled_down(world, "b1", COMMIT_A)

    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))

    failed = world.store.deployments[deployment_id]
    assert failed.status is S.FAILED and S.LIVE not in [h.status for h in failed.history]
    assert world.compute.attached == [], "green never joined the user-facing backend service"
    assert world.compute.preview_attached["hello-verified-preview"] == []
    assert instance_group_name(deployment_id) not in world.compute.groups, "green deleted"
    [alert] = [n for n in notifications(world) if n.status == "failed"]
    assert "smoke check GET / → 200 containing 'ok' failed: answered 500" in alert.detail
    assert "template missing" in alert.detail


def test_a_live_release_bakes_holding_the_lock_and_passes_with_its_numbers(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    live = world.store.deployments[first]
    assert live.verification is not None and live.verification.state is VerificationState.PENDING
    assert world.store.environments[f"hello@{ENV}"].active_deployment_id == first, "lock held while baking"
    queued = build(world, "b2", COMMIT_B, environment=ENV)
    assert world.store.deployments[queued.deployment_id or ""].status is S.QUEUED

    world.metrics.traffic_by_group[instance_group_name(first)] = TrafficSample(requests=300, server_errors=1)
    world.clock.advance(10)
    message = step(world, topology.BAKE_CHECK)
    with pytest.raises(NotReadyYet):
        check_bake(world.services, message)
    run_watchdog(world.services)
    assert world.store.deployments[queued.deployment_id or ""].status is S.QUEUED, "the watchdog waits too"

    world.clock.advance(21)
    check_bake(world.services, message)

    verification = world.store.deployments[first].verification
    assert verification is not None and verification.state is VerificationState.PASSED
    assert (verification.requests, verification.server_errors) == (300, 1)
    assert verification.detail == "passed: 5xx 0.3% of 300 requests in 31 s (limit 10%)"
    assert world.store.deployments[queued.deployment_id or ""].status is S.PROVISIONING, "the next one starts"
    assert [n.status for n in notifications(world)].count("verified") == 1


def test_a_breach_switches_back_to_the_retained_group_at_once_and_alerts_once(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    bake_until_passed(world, first)
    bad = go_live(world, "b2", COMMIT_B)
    assert world.store.deployments[first].status is S.RETIRED
    world.metrics.traffic_by_group[instance_group_name(bad)] = TrafficSample(requests=1210, server_errors=580)
    world.clock.advance(4)
    before = len(notifications(world))

    check_bake(world.services, step(world, topology.BAKE_CHECK))

    rolled_back = world.store.deployments[bad]
    assert rolled_back.status is S.ROLLED_BACK
    assert rolled_back.verification is not None and rolled_back.verification.state is VerificationState.FAILED
    assert rolled_back.verification.detail == "5xx 48% of 1,210 requests in 4 s (limit 10%)"
    rollback = world.store.deployments[automatic_rollback_id(world.store.deployments[bad])]
    assert rollback.status is S.LIVE and rollback.version == world.store.deployments[first].version
    assert rollback.rollback_of == bad and rollback.triggered_by == AUTOMATIC_ROLLBACK_ACTOR
    assert "48% of 1,210 requests" in (rollback.reason or "")
    assert rollback.instance_group == instance_group_name(first), "the retained group, adopted"
    assert world.compute.attached == [instance_group_name(first)], "traffic is back on the previous group"
    assert world.store.deployments[first].adopted_by == rollback.deployment_id
    state = world.store.environments[f"hello@{ENV}"]
    assert state.live_deployment_id == rollback.deployment_id and state.active_deployment_id is None
    alerts = notifications(world)[before:]
    assert [(n.status, n.deployment_id) for n in alerts] == [("rolled_back", bad)]
    assert "48% of 1,210 requests in 4 s" in alerts[0].detail


def test_a_redelivered_or_duplicated_bake_message_never_rolls_back_twice(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    bake_until_passed(world, first)
    bad = go_live(world, "b2", COMMIT_B)
    world.metrics.traffic_by_group[instance_group_name(bad)] = TrafficSample(requests=100, server_errors=60)
    message = step(world, topology.BAKE_CHECK)
    world.clock.advance(2)
    for _ in range(3):
        check_bake(world.services, message)

    rollbacks = [d for d in world.store.deployments.values() if d.rollback_of == bad]
    assert len(rollbacks) == 1
    assert [d.status for d in world.store.deployments.values()].count(S.ROLLED_BACK) == 1
    statuses = [n.dedupe_key for n in notifications(world) if n.status == "rolled_back"]
    assert set(statuses) == {f"{bad}:rolled_back"}, "repeats carry one dedupe key: one alert"


def test_a_breach_after_the_previous_group_is_gone_redeploys_it_and_says_so(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    bake_until_passed(world, first)
    bad = go_live(world, "b2", COMMIT_B)
    # The previous group was cleaned up (say, by hand): nothing to adopt.
    previous = world.store.deployments[first]
    world.store.deployments[first] = previous.with_changes(
        world.clock.now(), cleanup_due_at=None, resources_deleted_at=world.clock.now()
    )
    world.metrics.traffic_by_group[instance_group_name(bad)] = TrafficSample(requests=50, server_errors=50)
    world.clock.advance(3)

    check_bake(world.services, step(world, topology.BAKE_CHECK))

    rollback = world.store.deployments[automatic_rollback_id(world.store.deployments[bad])]
    assert rollback.status is S.PROVISIONING and rollback.rollback_of == bad
    assert "previous group is gone" in rollback.history[-1].detail
    [alert] = [n for n in notifications(world) if n.status == "verification_failed"]
    assert "is being redeployed" in alert.detail
    # With the facts every deployment alert carries: what was deployed, and who asked.
    assert alert.facts is not None and alert.facts.commit == COMMIT_B
    assert alert.facts.duration_seconds is not None and alert.facts.duration_seconds > 0
    # It runs as an ordinary deployment; its switch ends the bad release rolled back.
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(rollback.deployment_id))
    world.clock.advance(5)
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert world.store.deployments[rollback.deployment_id].status is S.LIVE
    assert world.store.deployments[bad].status is S.ROLLED_BACK


def test_without_metrics_the_bake_window_verifies_health_alone_and_says_so(world: FakeWorld) -> None:
    world.metrics.refuse = "403 permission denied"
    first = go_live(world, "b1", COMMIT_A)
    world.clock.advance(31)
    check_bake(world.services, step(world, topology.BAKE_CHECK))
    verification = world.store.deployments[first].verification
    assert verification is not None and verification.state is VerificationState.PASSED
    assert verification.detail.startswith("passed on health alone (metrics unavailable: 403")
    assert verification.metrics is False


def test_unhealthy_green_during_the_bake_is_a_breach(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    bake_until_passed(world, first)
    bad = go_live(world, "b2", COMMIT_B)
    world.compute.groups[instance_group_name(bad)].healthy = 0
    world.clock.advance(1)
    check_bake(world.services, step(world, topology.BAKE_CHECK))
    assert world.store.deployments[bad].status is S.ROLLED_BACK
    assert "green unhealthy" in (world.store.deployments[bad].verification.detail or "")  # type: ignore[union-attr]


def test_the_watchdog_resumes_a_stalled_bake_window(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    world.publisher.take(topology.BAKE_CHECK)  # the message is lost
    world.clock.advance(30 + 61)
    report = run_watchdog(world.services)
    assert first in report.kicked and world.publisher.on(topology.BAKE_CHECK)


def test_a_rollback_is_not_baked(world: FakeWorld) -> None:
    first = go_live(world, "b1", COMMIT_A)
    bake_until_passed(world, first)
    second = go_live(world, "b2", COMMIT_B)
    bake_until_passed(world, second)
    # A rollback comes only from the rollback use case (its release request is the proof).
    accepted = rollback_by(
        world,
        app="hello",
        environment=ENV,
        caller="a@example.com",
    )
    assert accepted.rollback_of == second
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    rollback = admit_build(world.services, published.data, published.attributes, "rollback-event")
    assert rollback.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.clock.advance(1)
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    live = world.store.deployments[rollback.deployment_id]
    assert live.status is S.LIVE and live.verification is None
    assert world.store.environments[f"hello@{ENV}"].active_deployment_id is None


def _config_with(**verified: object) -> dict[str, object]:
    apps = TEST_CONFIG["apps"]
    hello = dict(apps["hello"])
    environments = dict(hello["environments"])
    environments[ENV] = {**environments[ENV], **verified}
    hello["environments"] = environments
    return {"apps": {"hello": hello}}


def test_the_config_loader_refuses_a_bake_window_that_does_not_fit_inside_the_retention() -> None:
    with pytest.raises(ConfigError, match=r"bake_seconds: a bake window of 45 s does not fit"):
        parse_pipeline_config(_config_with(bake_seconds=45))  # retention 60 s < 45 + 30


def test_the_config_loader_refuses_smoke_checks_without_a_preview() -> None:
    with pytest.raises(ConfigError, match="need a preview_backend_service"):
        parse_pipeline_config(_config_with(preview_backend_service=""))
    with pytest.raises(ConfigError, match=r"smoke_checks\[0\].expect_status"):
        parse_pipeline_config(_config_with(smoke_checks=[{"path": "/", "expect_status": 42}]))
    with pytest.raises(ConfigError, match="max_error_ratio"):
        parse_pipeline_config(_config_with(max_error_ratio=1.5))
