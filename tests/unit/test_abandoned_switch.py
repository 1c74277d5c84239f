"""A switch the load balancer never completes (green attached, never seen healthy) is bounded: a
deadline after it began, the watchdog fails it, hands the traffic back to the live release and
frees the environment; a late switch racing it cannot leave users without the live release."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared import topology
from shared.config import EnvironmentConfig
from shared.domain.naming import instance_group_name
from shared.domain.status import DeploymentStatus as S
from shared.ports import PermanentError, TrafficSample, TransientError
from shared.usecases.abandon import abandon_switch, finish_abandoned_switch
from shared.usecases.bake import automatic_rollback_id, check_bake
from shared.usecases.lifecycle import fail_deployment
from shared.usecases.provision import start_rolling_replace
from shared.usecases.services import NotReadyYet
from shared.usecases.switch import complete_cool_down, switch_traffic
from shared.usecases.watchdog import run_watchdog
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import (
    COMMIT_A,
    COMMIT_B,
    COMMIT_C,
    build,
    deploy_to_live,
    notifications,
    roll_back,
    step,
    stuck_switching,
)

DEADLINE_SECONDS = 60
"""The fake world's provisioning deadline: a switch is overdue this long after it began."""
COOL_DOWN_SECONDS = 5
DRAINING_SECONDS = 10
"""The fake world's draining timeout."""


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def drained(world: FakeWorld) -> None:
    """The draining timeout passes, and the watchdog sweeps."""
    world.clock.advance(DRAINING_SECONDS)
    assert run_watchdog(world.services).errors == []


def test_the_watchdog_abandons_an_overdue_switch_and_hands_the_traffic_back(world: FakeWorld) -> None:
    blue, green, _ = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS - 1)
    assert run_watchdog(world.services).failed == [], "not overdue yet"
    assert world.store.deployments[green].status is S.SWITCHING

    world.clock.advance(1)
    assert run_watchdog(world.services).failed == [green]

    failed = world.store.deployments[green]
    assert failed.status is S.FAILED
    reason = (
        f"the load balancer did not see green healthy within {DEADLINE_SECONDS} s of the switch (watchdog)"
    )
    assert failed.history[-1].detail == reason
    assert world.compute.attached == [instance_group_name(blue)], "the live release serves alone"
    assert instance_group_name(green) in world.compute.groups, "draining, in case it served requests"
    drained(world)
    assert instance_group_name(green) not in world.compute.groups, "deleted once drained"
    state = world.store.environments["hello@staging"]
    assert state.live_deployment_id == blue and state.active_deployment_id is None
    assert world.store.deployments[blue].status is S.LIVE
    [alert] = [n for n in notifications(world) if n.status == "failed"]
    assert alert.deployment_id == green and reason in alert.detail


def test_the_next_deployment_starts_once_the_switch_is_abandoned(world: FakeWorld) -> None:
    _, green, _ = stuck_switching(world)
    waiting = build(world, "b3", COMMIT_C)
    assert world.store.deployments[waiting.deployment_id].status is S.QUEUED
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    assert world.store.deployments[waiting.deployment_id].status is S.PROVISIONING
    assert step(world, topology.START_ROLLING_REPLACE).deployment_id == waiting.deployment_id


def test_an_overdue_switch_the_load_balancer_now_sees_healthy_is_published_not_failed(
    world: FakeWorld,
) -> None:
    _, green, _ = stuck_switching(world)  # its poll is then lost
    world.clock.advance(DEADLINE_SECONDS)
    world.compute.lb_unhealthy.clear()
    report = run_watchdog(world.services)
    assert (report.failed, report.kicked) == ([], [green])
    live = complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert live is not None and live.status is S.LIVE
    assert world.compute.attached == [instance_group_name(green)]


def test_twice_the_deadline_ends_a_switch_even_while_compute_is_down(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    blue, green, _ = stuck_switching(world)
    outage = Outage()
    for call in ("serving_healthy", "attached_groups", "attach_group", "detach_group"):
        monkeypatch.setattr(world.compute, call, outage.wrap(getattr(world.compute, call)))
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [], "it cannot tell whether the switch is stuck"
    world.clock.advance(DEADLINE_SECONDS)
    report = run_watchdog(world.services)
    assert report.failed == [green], "failed; the hand-back is left to the clean-up sweep"
    assert world.compute.attached == [instance_group_name(blue), instance_group_name(green)]
    failed = world.store.deployments[green]
    assert failed.status is S.FAILED
    assert (
        failed.history[-1].detail
        == f"switch not complete within twice the {DEADLINE_SECONDS} s deadline (watchdog)"
    )
    assert world.store.environments["hello@staging"].active_deployment_id is None, "the lock is free"
    for _ in range(3):  # due, counted from the failure; each sweep tries to hand back again
        world.clock.advance(DRAINING_SECONDS)
        assert run_watchdog(world.services).cleaned == []
    assert instance_group_name(green) in world.compute.groups

    outage.over = True
    assert run_watchdog(world.services).cleaned == [], "handed back; it drains from when it left"
    assert world.compute.attached == [instance_group_name(blue)]
    drained(world)
    assert instance_group_name(green) not in world.compute.groups


class Outage:
    """Compute calls that fail until `over`."""

    def __init__(self) -> None:
        self.over = False

    def wrap(self, call: Callable[..., object]) -> Callable[..., object]:
        def during_outage(*args: object, **options: object) -> object:
            if not self.over:
                raise TransientError("compute unavailable")
            return call(*args, **options)

        return during_outage


@pytest.mark.parametrize("abandoned", ["before its keep_only_group", "after its keep_only_group"])
def test_a_late_switch_racing_the_abandon_leaves_the_live_release_serving(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, abandoned: str
) -> None:
    """The poll read the record switching and finds green healthy at last, just as the watchdog
    abandons the switch: whichever order their Compute calls take, the live release serves and
    green is gone, and the record says failed."""
    blue, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    world.compute.lb_unhealthy.clear()
    keep_only_group = world.compute.keep_only_group

    def racing(env: EnvironmentConfig, name: str, **options: Any) -> list[str]:
        if abandoned == "before its keep_only_group":
            abandon_switch(world.services, green, "abandoned")
            return keep_only_group(env, name, **options)  # refused: the record is failed
        removed = keep_only_group(env, name, **options)  # users reach green alone for a moment
        abandon_switch(world.services, green, "abandoned")
        return removed

    monkeypatch.setattr(world.compute, "keep_only_group", racing)
    try:
        complete_cool_down(world.services, poll)
    except PermanentError:  # the adapter's refusal to leave the backend service empty
        assert abandoned == "before its keep_only_group"
    monkeypatch.setattr(world.compute, "keep_only_group", keep_only_group)
    assert world.store.deployments[green].status is S.FAILED
    assert world.compute.attached == [instance_group_name(blue)]
    drained(world)
    assert instance_group_name(green) not in world.compute.groups
    assert world.store.environments["hello@staging"].live_deployment_id == blue


def test_a_late_switch_between_the_abandons_look_and_its_detach_hands_the_traffic_back(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst order: the abandon sees the live release still attached, the late poll then takes
    it off (`keep_only_group(green)`), the abandon detaches green. That detach is refused (green is
    the only backend by then), so users still reach green, never nothing; the late poll, finding
    the record failed, hands back itself."""
    blue, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    world.compute.lb_unhealthy.clear()
    keep_only_group, detach_group = world.compute.keep_only_group, world.compute.detach_group
    backend = world.services.environment_config("hello", "staging").backend_service

    def poll_keeps_green_first(env: EnvironmentConfig, name: str, **options: bool) -> None:
        if env.backend_service == backend and name == green_group:
            # The late poll's write, its "still switching" answered before the failure's commit.
            removed.extend(keep_only_group(env, name))
            monkeypatch.setattr(world.compute, "detach_group", detach_group)
        detach_group(env, name, **options)

    def racing(env: EnvironmentConfig, name: str, **options: Any) -> list[str]:
        monkeypatch.setattr(world.compute, "detach_group", poll_keeps_green_first)
        abandon_switch(world.services, green, "abandoned")
        assert world.compute.attached == [green_group], "refused: never an empty backend service"
        return removed

    green_group = instance_group_name(green)
    removed: list[str] = []
    monkeypatch.setattr(world.compute, "keep_only_group", racing)
    with pytest.raises(NotReadyYet, match="is back; green stays until it is seen healthy"):
        complete_cool_down(world.services, poll)
    assert world.store.deployments[green].status is S.FAILED
    assert world.compute.attached == [green_group, instance_group_name(blue)], "never nothing"
    complete_cool_down(world.services, poll)  # its redelivery
    assert world.compute.attached == [instance_group_name(blue)]


def test_green_leaves_only_after_its_clean_up_is_pushed_back(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The due time moves to a full draining time from now before green is detached, so a sweep
    that reads the record the moment after the detach does not delete a green still draining."""
    _, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    env = world.services.environment_config("hello", "staging")
    with monkeypatch.context() as outage:  # the abandon's own hand-back fails
        outage.setattr(world.compute, "attached_groups", Outage().wrap(world.compute.attached_groups))
        assert run_watchdog(world.services).failed == [green]
    world.clock.advance(2 * DRAINING_SECONDS)  # long past the due time the failure set
    detach_group = world.compute.detach_group
    swept: list[list[str]] = []

    def then_a_sweep(env_: EnvironmentConfig, name: str, **options: Any) -> None:
        detach_group(env_, name, **options)
        if env_.backend_service == env.backend_service:
            monkeypatch.setattr(world.compute, "detach_group", detach_group)
            swept.append(run_watchdog(world.services).cleaned)

    monkeypatch.setattr(world.compute, "detach_group", then_a_sweep)
    complete_cool_down(world.services, poll)  # the poll's redelivery hands back
    assert swept == [[]] and instance_group_name(green) in world.compute.groups
    drained(world)
    assert instance_group_name(green) not in world.compute.groups


def test_a_late_hand_back_during_a_newer_release_switch_does_not_bring_back_the_old_release(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newer release has just taken the traffic (`keep_only_group`), not yet recorded it: the
    environment still names the old release live. The abandoned switch's poll, delivered again
    then, must not attach the old release beside it."""
    blue, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    world.compute.lb_unhealthy.clear()
    newer = build(world, "b3", COMMIT_C).deployment_id
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(newer))
    world.clock.advance(COOL_DOWN_SECONDS)
    keep_only_group = world.compute.keep_only_group

    def then_the_old_poll(env: EnvironmentConfig, name: str, **options: Any) -> list[str]:
        removed = keep_only_group(env, name, **options)
        assert world.store.environments["hello@staging"].live_deployment_id == blue
        complete_cool_down(world.services, poll)
        return removed

    monkeypatch.setattr(world.compute, "keep_only_group", then_the_old_poll)
    live = complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert live is not None and live.status is S.LIVE
    assert world.compute.attached == [instance_group_name(newer)]


def test_green_stays_until_the_load_balancer_sees_the_live_group_healthy_again(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late poll took the live group off; the hand-back puts it back, and green, which served
    alone meanwhile, leaves only once the load balancer sees the live group healthy."""
    blue, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    world.compute.lb_unhealthy.clear()
    keep_only_group = world.compute.keep_only_group

    def and_then_the_abandon(env: EnvironmentConfig, name: str, **options: Any) -> list[str]:
        removed = keep_only_group(env, name, **options)
        world.compute.lb_unhealthy.add(instance_group_name(blue))  # re-attached: not seen healthy yet
        abandon_switch(world.services, green, "abandoned")
        return removed

    monkeypatch.setattr(world.compute, "keep_only_group", and_then_the_abandon)
    with pytest.raises(NotReadyYet, match="not seen healthy yet"):
        complete_cool_down(world.services, poll)
    assert world.compute.attached == [instance_group_name(green), instance_group_name(blue)]
    for _ in range(30):  # long after the poll's retries: the clean-up sweep waits with it
        world.clock.advance(DRAINING_SECONDS)
        assert run_watchdog(world.services).cleaned == []
    assert world.compute.attached == [instance_group_name(green), instance_group_name(blue)]
    world.compute.lb_unhealthy.clear()
    assert run_watchdog(world.services).cleaned == []
    assert world.compute.attached == [instance_group_name(blue)]
    drained(world)
    assert instance_group_name(green) not in world.compute.groups


def test_a_live_group_the_load_balancer_does_not_see_healthy_does_not_keep_an_unhealthy_green(
    world: FakeWorld,
) -> None:
    """The same fault hides both from the load balancer: green, serving nothing, leaves at once."""
    blue, green, _ = stuck_switching(world)
    world.compute.lb_unhealthy.add(instance_group_name(blue))
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    assert world.compute.attached == [instance_group_name(blue)]


def test_the_clean_up_never_deletes_a_green_that_is_still_a_backend(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale poll attached green again after the hand-back: the clean-up hands back again and
    waits a full draining time, whether or not Compute would refuse the deletion."""
    blue, green, _ = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    env = world.services.environment_config("hello", "staging")
    world.compute.attach_group(env, instance_group_name(green))  # the stale poll's first call
    groups = world.compute.groups
    monkeypatch.setattr(world.compute, "delete_instance_group", lambda env, name: groups.pop(name, None))
    world.clock.advance(DRAINING_SECONDS)
    assert run_watchdog(world.services).cleaned == []
    assert world.compute.attached == [instance_group_name(blue)]
    assert instance_group_name(green) in world.compute.groups
    drained(world)
    assert instance_group_name(green) not in world.compute.groups


def test_a_stale_poll_cannot_take_the_live_release_off_once_the_switch_is_abandoned(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll read the record while it was switching and comes back after the abandon, whose
    hand-back could not reach Compute (green still attached): the load balancer sees green healthy
    now, but the write that would take the live release off asks first, and is refused."""
    blue, green, _ = stuck_switching(world)
    stale = world.store.deployments[green]
    world.clock.advance(DEADLINE_SECONDS)
    with monkeypatch.context() as outage:
        outage.setattr(world.compute, "attached_groups", Outage().wrap(world.compute.attached_groups))
        assert abandon_switch(world.services, green, "abandoned") is not None
    assert world.compute.attached == [instance_group_name(blue), instance_group_name(green)]
    world.compute.lb_unhealthy.clear()
    env = world.services.environment_config("hello", "staging")
    latest = switch_traffic(world.services, env, stale, stale.group_name)
    assert latest is not None and latest.status is S.FAILED
    assert not [c for c in world.compute.calls if c.startswith(f"detach {instance_group_name(blue)}")]
    assert world.compute.attached == [instance_group_name(blue)], "and it hands back what was left"


def test_a_stale_poll_does_not_attach_green_again_once_the_switch_is_abandoned(world: FakeWorld) -> None:
    """A poll read the record while it was switching and comes back after the abandon handed the
    traffic back: its first write, attaching green, asks first and is refused, so green never
    serves beside the live release again."""
    blue, green, _ = stuck_switching(world)
    stale = world.store.deployments[green]
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    assert world.compute.attached == [instance_group_name(blue)]
    world.compute.lb_unhealthy.clear()
    world.compute.calls.clear()
    env = world.services.environment_config("hello", "staging")
    latest = switch_traffic(world.services, env, stale, stale.group_name)
    assert latest is not None and latest.status is S.FAILED
    assert not [c for c in world.compute.calls if c.startswith(f"attach {instance_group_name(green)}")]
    assert world.compute.attached == [instance_group_name(blue)]


def test_a_hand_back_racing_a_newer_release_switch_does_not_attach_the_old_release_beside_it(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-back read green alone on the backend service (a late poll had taken the live group
    off); a newer release's switch then took the traffic before the hand-back's write. The write
    re-attaching the live group checks the backends it is made against, so it is not made."""
    _, green, _ = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    with monkeypatch.context() as outage:
        outage.setattr(world.compute, "attached_groups", Outage().wrap(world.compute.attached_groups))
        assert abandon_switch(world.services, green, "abandoned") is not None
    env = world.services.environment_config("hello", "staging")
    world.compute.keep_only_group(env, instance_group_name(green))  # the late poll's write
    newer_group = "hello-staging-newer-mig"
    attached_groups = world.compute.attached_groups

    def then_a_newer_switch(env: EnvironmentConfig) -> list[str]:
        seen = attached_groups(env)
        world.compute.attach_group(env, newer_group)
        world.compute.keep_only_group(env, newer_group)
        return seen

    monkeypatch.setattr(world.compute, "attached_groups", then_a_newer_switch)
    with pytest.raises(NotReadyYet, match="changed while handing back"):
        finish_abandoned_switch(world.services, world.store.deployments[green])
    assert world.compute.attached == [newer_group]
    monkeypatch.undo()
    drained(world)  # the next sweep finds green gone from the service and deletes it
    assert world.compute.attached == [newer_group]
    assert instance_group_name(green) not in world.compute.groups


def test_a_held_green_a_newer_release_takes_off_drains_from_then(world: FakeWorld) -> None:
    """The hand-back holds green (the load balancer sees it healthy, not the live release) when a
    newer release's switch takes both off: green drains from that moment before it is deleted."""
    blue, green, _ = stuck_switching(world)
    world.compute.lb_unhealthy = {instance_group_name(blue)}  # green is now seen healthy, blue not
    world.clock.advance(2 * DEADLINE_SECONDS)  # the end, whatever the load balancer says
    assert run_watchdog(world.services).failed == [green]
    assert world.compute.attached == [instance_group_name(blue), instance_group_name(green)], "held"
    world.compute.lb_unhealthy = set()
    world.clock.advance(2 * DRAINING_SECONDS)  # long past the due time the failure set
    newer = deploy_to_live(world, "b3", COMMIT_C)
    assert world.compute.attached == [instance_group_name(newer)]
    assert run_watchdog(world.services).cleaned == [], "green has only just left"
    assert instance_group_name(green) in world.compute.groups
    drained(world)
    assert instance_group_name(green) not in world.compute.groups


def test_a_held_adopted_group_a_newer_release_takes_off_drains_from_then(world: FakeWorld) -> None:
    """As above, for a rollback that adopted the previous release's retained group: the group is
    named after that release, and the clean-up that must wait is the rollback's."""
    first = deploy_to_live(world, "b1")
    second = deploy_to_live(world, "b2", COMMIT_B, messages=["feat: x"])
    world.publisher.messages.clear()
    accepted, _ = roll_back(world)
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    adopted = instance_group_name(first)
    assert world.store.deployments[accepted.deployment_id].instance_group == adopted
    world.compute.lb_unhealthy = {adopted}
    with pytest.raises(NotReadyYet, match="backend service does not see it healthy"):
        complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    world.compute.lb_unhealthy = {instance_group_name(second)}  # the adopted group seen, not live
    world.clock.advance(2 * DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [accepted.deployment_id]
    assert world.compute.attached == [instance_group_name(second), adopted], "held"
    world.compute.lb_unhealthy = set()
    world.clock.advance(2 * DRAINING_SECONDS)  # long past the due time the failure set
    newer = deploy_to_live(world, "b3", COMMIT_C)
    assert world.compute.attached == [instance_group_name(newer)]
    assert accepted.deployment_id not in run_watchdog(world.services).cleaned, "it has only just left"
    assert adopted in world.compute.groups
    drained(world)
    assert adopted not in world.compute.groups


def test_a_switch_that_completed_first_is_not_abandoned(world: FakeWorld) -> None:
    _, green, poll = stuck_switching(world)
    world.compute.lb_unhealthy.clear()
    complete_cool_down(world.services, poll)
    assert abandon_switch(world.services, green, "too late") is None
    assert world.store.deployments[green].status is S.LIVE
    assert world.compute.attached == [instance_group_name(green)]


def test_a_late_hand_back_leaves_a_newer_release_serving(world: FakeWorld) -> None:
    """The abandoned switch's poll comes back after a newer release went live: it changes nothing."""
    _, green, poll = stuck_switching(world)
    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [green]
    world.compute.lb_unhealthy.clear()
    newer = deploy_to_live(world, "b3", COMMIT_C)
    assert world.compute.attached == [instance_group_name(newer)]
    failed = complete_cool_down(world.services, poll)
    assert failed is not None and failed.status is S.FAILED
    assert world.compute.attached == [instance_group_name(newer)]


def test_fail_deployment_never_fails_a_switching_deployment(world: FakeWorld) -> None:
    """Only the abandon, which hands the traffic back, may: `fail_deployment` deletes green."""
    _, green, _ = stuck_switching(world)
    assert fail_deployment(world.services, green, "late") is None
    assert world.store.deployments[green].status is S.SWITCHING
    assert instance_group_name(green) in world.compute.groups


def test_an_automatic_rollback_whose_switch_back_is_stuck_leaves_the_bad_release_serving(
    world: FakeWorld,
) -> None:
    """The load balancer never sees the previous group, adopted to go back to, healthy: the
    rollback fails and says which release keeps the traffic: the bad one, still what users reach
    (the load balancer sees nothing else healthy to send them to)."""
    environment = "verified"
    first = verified_live(world, "b1", COMMIT_A, environment, bake=True)
    bad = verified_live(world, "b2", COMMIT_B, environment, bake=False)
    world.metrics.traffic_by_group[instance_group_name(bad)] = TrafficSample(requests=100, server_errors=60)
    world.compute.lb_unhealthy.add(instance_group_name(first))
    world.clock.advance(2)
    bake_message = step(world, topology.BAKE_CHECK)
    with pytest.raises(NotReadyYet):
        check_bake(world.services, bake_message)
    going_back = automatic_rollback_id(world.store.deployments[bad])
    assert world.store.deployments[going_back].status is S.SWITCHING

    world.clock.advance(DEADLINE_SECONDS)
    assert run_watchdog(world.services).failed == [going_back]
    assert world.compute.attached == [instance_group_name(bad)]
    drained(world)
    assert instance_group_name(first) not in world.compute.groups, "deleted, as any abandoned green"
    assert world.store.environments[f"hello@{environment}"].active_deployment_id is None
    [alert] = [n for n in notifications(world) if n.status == "failed"]
    assert alert.deployment_id == going_back
    assert f"; {world.store.deployments[bad].version} keeps the traffic" in alert.detail
    assert "(an automatic rollback: " in alert.detail and "failed its bake window: 5xx 60%" in alert.detail
    # The bake message's redelivery finds the rollback failed and changes nothing.
    assert check_bake(world.services, bake_message) is not None
    assert world.compute.attached == [instance_group_name(bad)]


def verified_live(world: FakeWorld, build_id: str, commit: str, environment: str, *, bake: bool) -> str:
    result = build(world, build_id, commit, environment=environment, messages=["feat: x"])
    assert result.deployment_id is not None
    start_rolling_replace(world.services, step(world, topology.START_ROLLING_REPLACE))
    world.compute.make_healthy(instance_group_name(result.deployment_id))
    world.clock.advance(COOL_DOWN_SECONDS)
    complete_cool_down(world.services, step(world, topology.COOL_DOWN_COMPLETE))
    assert world.store.deployments[result.deployment_id].status is S.LIVE
    if bake:
        group = instance_group_name(result.deployment_id)
        world.metrics.traffic_by_group[group] = TrafficSample(requests=500, server_errors=2)
        world.clock.advance(31)
        check_bake(world.services, step(world, topology.BAKE_CHECK))
    return result.deployment_id
