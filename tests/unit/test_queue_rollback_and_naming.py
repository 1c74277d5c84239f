from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.naming import instance_group_name, instance_template_name, is_valid_name
from shared.domain.queue import admit, release_lock
from shared.domain.records import Deployment
from shared.domain.rollback import NothingToRollBack, UnknownTarget, choose_rollback_target
from shared.domain.status import DeploymentStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_free_environment_is_taken_at_once() -> None:
    assert admit(None, (), "d1", may_start=True).takes_lock


def test_a_busy_environment_queues_the_newest_and_cancels_the_older_queued() -> None:
    first = admit("d1", (), "d2", may_start=True)
    assert not first.takes_lock and first.queue == ("d2",) and first.cancelled == ()
    second = admit("d1", first.queue, "d3", may_start=True)
    assert second.queue == ("d3",) and second.cancelled == ("d2",)


def test_freeing_the_lock_hands_it_to_the_queued_one() -> None:
    handover = release_lock(("d3",))
    assert handover.next_deployment_id == "d3" and handover.queue == ()


def went_live(deployment_id: str, version: str, minutes: int) -> Deployment:
    d = Deployment.queued(
        deployment_id=deployment_id,
        app="hello",
        environment="staging",
        version=version,
        commit="a" * 40,
        build_id=deployment_id,
        artifact="file:///a.tar.gz",
        event={},
        at=T0,
    )
    at = T0 + timedelta(minutes=minutes)
    for status in (
        DeploymentStatus.PROVISIONING,
        DeploymentStatus.COOLING_DOWN,
        DeploymentStatus.SWITCHING,
        DeploymentStatus.LIVE,
    ):
        d = d.advance(status, at)
    return d


HISTORY = [went_live("d3", "1.2.0", 3), went_live("d2", "1.1.0", 2), went_live("d1", "1.0.0", 1)]
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "0.9.0"]


def test_the_default_target_is_the_release_live_before_the_current_one() -> None:
    target = choose_rollback_target(HISTORY, "d3", "1.2.0", None, VERSIONS)
    assert target.version == "1.1.0" and target.source is HISTORY[1]


def test_the_default_target_skips_earlier_deployments_of_the_live_version() -> None:
    history = [went_live("d4", "1.2.0", 4), *HISTORY]
    assert choose_rollback_target(history, "d4", "1.2.0", None, VERSIONS).version == "1.1.0"


def test_to_version_picks_that_release_even_if_it_never_ran_here() -> None:
    assert choose_rollback_target(HISTORY, "d3", "1.2.0", "1.0.0", VERSIONS).source is HISTORY[2]
    never_here = choose_rollback_target(HISTORY, "d3", "1.2.0", "0.9.0", VERSIONS)
    assert never_here.version == "0.9.0" and never_here.source is None


def test_an_unknown_to_version_is_404() -> None:
    with pytest.raises(UnknownTarget) as caught:
        choose_rollback_target(HISTORY, "d3", "1.2.0", "7.0.0", VERSIONS)
    assert caught.value.http_status == 404


def test_rolling_back_to_the_live_version_is_409() -> None:
    with pytest.raises(NothingToRollBack) as caught:
        choose_rollback_target(HISTORY, "d3", "1.2.0", "1.2.0", VERSIONS)
    assert caught.value.http_status == 409


def test_nothing_earlier_is_409() -> None:
    with pytest.raises(NothingToRollBack):
        choose_rollback_target(HISTORY[2:], "d1", "1.0.0", None, VERSIONS)
    with pytest.raises(NothingToRollBack):
        choose_rollback_target([], None, None, None, VERSIONS)


@pytest.mark.parametrize(
    "deployment_id",
    ["hello-staging-a0ab70131e5c", f"{'a' * 30}-{'b' * 30}-0123456789ab", "x-y-0123456789ab"],
)
def test_resource_names_are_valid_gce_names_and_distinct(deployment_id: str) -> None:
    template, group = instance_template_name(deployment_id), instance_group_name(deployment_id)
    assert is_valid_name(template) and is_valid_name(group) and template != group
    assert len(template) <= 63 and len(group) <= 63
    assert instance_group_name(deployment_id) == group


def test_long_ids_that_share_a_prefix_still_get_distinct_names() -> None:
    prefix = f"{'a' * 30}-{'b' * 30}-"
    assert instance_group_name(prefix + "000000000001") != instance_group_name(prefix + "000000000002")
