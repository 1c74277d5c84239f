"""A notification that keeps failing ends its notify → dead letter → notify cycle: it is recorded,
announced at most once, and only on the channels that took it."""

from __future__ import annotations

import pytest

from shared import topology
from shared.domain.notify_message import DEDUPE_KEY_ATTRIBUTE, NotifyRequest
from shared.notifications.delivery import TransientDeliveryError, deliver, without_channels_that_failed
from shared.notifications.model import Notification
from shared.usecases.dead_letter import record_dead_letter
from shared.usecases.services import publish_notify
from tests.unit.fakes import FakeLedger, FakeWorld, fake_world
from tests.unit.test_notifications import ScriptedSender, no_sleep

LIVE = NotifyRequest.for_deployment(
    app="hello", environment="staging", deployment_id="hello-staging-abc", version="1.1.0", status="live"
)
NOTIFY_DEAD_LETTER = topology.dead_letter_topic(topology.NOTIFY)


@pytest.fixture
def world() -> FakeWorld:
    return fake_world()


def announcements(world: FakeWorld) -> list[NotifyRequest]:
    return [NotifyRequest.from_json(m.data) for m in world.publisher.take(topology.NOTIFY)]


def dead_letter(
    world: FakeWorld, request: NotifyRequest, message_id: str, topic: str = NOTIFY_DEAD_LETTER
) -> None:
    publish_notify(world.services, request)
    (published,) = world.publisher.take(topology.NOTIFY)
    record_dead_letter(
        world.services,
        message_id=message_id,
        topic=topic,
        data=published.data,
        attributes=published.attributes,
    )


def test_every_published_notify_event_names_its_dedupe_key_in_an_attribute(world: FakeWorld) -> None:
    publish_notify(world.services, LIVE)
    (published,) = world.publisher.on(topology.NOTIFY)
    assert published.attributes[DEDUPE_KEY_ATTRIBUTE] == LIVE.dedupe_key


@pytest.mark.parametrize("topic", [NOTIFY_DEAD_LETTER, "unknown"], ids=["named topic", "attribute only"])
def test_a_dead_lettered_notification_is_recorded_and_announced_once_about_itself(
    world: FakeWorld, topic: str
) -> None:
    dead_letter(world, LIVE, "m-1", topic)

    assert "m-1" in world.store.dead_lettered
    (announcement,) = announcements(world)
    assert announcement.kind == "dead_letter" and announcement.status == "dead_lettered"
    assert announcement.about_notification == LIVE.dedupe_key
    assert announcement.dedupe_key == f"undelivered:{LIVE.dedupe_key}"
    assert (announcement.app, announcement.environment, announcement.version) == ("hello", "staging", "1.1.0")
    assert "live notification for hello 1.1.0 ran out of retries" in announcement.detail


def test_the_same_notification_dead_lettered_twice_gets_one_dedupe_key(world: FakeWorld) -> None:
    dead_letter(world, LIVE, "m-1")
    (first,) = announcements(world)
    dead_letter(world, LIVE, "m-2")
    (second,) = announcements(world)
    assert first.dedupe_key == second.dedupe_key  # so on_notify sends it once per channel


@pytest.mark.parametrize(
    "about_a_dead_letter",
    [
        NotifyRequest("dead_letter", "hello", "staging", "dead_lettered", "x", "dead-letter:cool-1"),
        NotifyRequest(
            "dead_letter", "hello", "staging", "dead_lettered", "x", "undelivered:k", about_notification="k"
        ),
    ],
    ids=["alert about another topic's dead letter", "announcement of an undelivered notification"],
)
def test_a_notification_about_a_dead_letter_is_recorded_but_never_announced_again(
    world: FakeWorld, about_a_dead_letter: NotifyRequest
) -> None:
    dead_letter(world, about_a_dead_letter, "m-3")

    assert "m-3" in world.store.dead_lettered
    assert announcements(world) == []


def test_an_undecodable_dead_lettered_notify_event_is_recorded_only(world: FakeWorld) -> None:
    record_dead_letter(
        world.services, message_id="m-4", topic=NOTIFY_DEAD_LETTER, data=b"not json", attributes={}
    )
    assert "m-4" in world.store.dead_lettered
    assert announcements(world) == []


def test_other_topics_dead_letters_are_still_announced_by_message(world: FakeWorld) -> None:
    record_dead_letter(
        world.services,
        message_id="m-5",
        topic=topology.dead_letter_topic(topology.COOL_DOWN_COMPLETE),
        data=b'{"deployment_id": "x"}',
        attributes={"app": "hello", "environment": "staging"},
    )
    (alert,) = announcements(world)
    assert alert.dedupe_key == "dead-letter:m-5" and alert.about_notification is None


def test_the_whole_cycle_ends_with_one_announcement_on_the_healthy_channels(world: FakeWorld) -> None:
    """notify fails on Slack until dead-lettered → announced on the others → nothing more."""
    ledger = FakeLedger()
    slack, chat = ScriptedSender("slack", [TransientDeliveryError("HTTP 503")] * 1000), ScriptedSender("chat")
    original = Notification(kind="deployment", dedupe_key=LIVE.dedupe_key, status="live", app="hello")
    for _ in range(10):
        with pytest.raises(Exception, match="not delivered yet to slack"):
            deliver(original, [slack, chat], ledger, sleep=no_sleep)
    dead_letter(world, LIVE, "m-1")
    (announcement,) = announcements(world)

    senders, left_out = without_channels_that_failed(
        [slack, chat], ledger.channel_states(str(announcement.about_notification))
    )
    assert left_out == ["slack"]
    notice = Notification(kind="dead_letter", dedupe_key=announcement.dedupe_key, status="dead_lettered")
    deliver(notice, senders, ledger, sleep=no_sleep)  # completes: nothing left to redeliver
    assert [n.dedupe_key for n in chat.received] == [LIVE.dedupe_key, announcement.dedupe_key]
    assert slack.received == []
