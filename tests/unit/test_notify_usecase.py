"""The notify use case: a notify event enriched from the records, delivered through the ledger and
channel ports (fakes of our own ports, no Firestore)."""

from __future__ import annotations

import dataclasses

import pytest

from shared.domain.notify_message import NotifyRequest
from shared.domain.records import Deployment, Release
from shared.domain.status import DeploymentStatus as S
from shared.notifications.delivery import TransientDeliveryError, UndeliveredChannelsError
from shared.usecases.notify import NotifyServices, facts_of, notification_for, notify_team
from tests.unit.fakes import FakeChannels, FakeClock, FakeLedger, FakeStore, pipeline_config
from tests.unit.test_notifications import ScriptedSender

DEPLOYMENT_ID = "hello-staging-0123456789ab"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> FakeStore:
    store = FakeStore()
    queued = Deployment.queued(
        deployment_id=DEPLOYMENT_ID,
        app="hello",
        environment="staging",
        version="1.1.0",
        commit=COMMIT,
        build_id="build-42",
        artifact="file:///tmp/hello.tar.gz",
        event={},
        at=clock.now(),
        triggered_by="circleci",
        build_url="https://circleci.example.com/build/42",
    )
    clock.advance(2)
    provisioning = queued.advance(S.PROVISIONING, clock.now())
    clock.advance(6.5)
    store.deployments[DEPLOYMENT_ID] = (
        provisioning.advance(S.COOLING_DOWN, clock.now())
        .advance(S.SWITCHING, clock.now())
        .advance(S.LIVE, clock.now())
    )
    store.releases["hello@1.1.0"] = Release(
        app="hello",
        version="1.1.0",
        commit=COMMIT,
        artifact="file:///tmp/hello.tar.gz",
        commit_messages=("feat: greet in French",),
        created_at=queued.created_at,
    )
    clock.advance(30)  # the notify event arrives later: the duration is the deployment's, not ours
    return store


def services(store: FakeStore, clock: FakeClock, *senders: ScriptedSender) -> NotifyServices:
    return NotifyServices(
        config=pipeline_config(),
        store=store,
        ledger=FakeLedger(),
        channels=FakeChannels(list(senders)),
        clock=clock,
    )


LIVE = NotifyRequest.for_deployment(
    app="hello", environment="staging", deployment_id=DEPLOYMENT_ID, version="1.1.0", status="live"
)


def test_a_deployment_notification_carries_the_facts_of_its_records(
    store: FakeStore, clock: FakeClock
) -> None:
    notification = notification_for(services(store, clock), LIVE)

    assert notification.commit == COMMIT
    assert notification.changelog == ("feat: greet in French",)  # from the release: none on the deployment
    assert notification.duration_seconds == 8.5
    assert notification.build_url == "https://circleci.example.com/build/42"
    assert notification.triggered_by == "circleci"
    assert notification.rollback_of is None


def test_facts_sent_with_the_event_are_shown_as_the_record_would_give_them_without_reading_it(
    store: FakeStore, clock: FakeClock
) -> None:
    from_records = notification_for(services(store, clock), LIVE)
    deployment = store.deployments.pop(DEPLOYMENT_ID)
    with_facts = dataclasses.replace(LIVE, facts=facts_of(deployment, "live", clock.now()))

    sent = notification_for(services(store, clock), NotifyRequest.from_json(with_facts.to_json()))

    assert sent == from_records, "the same notification, with no deployment record to read"


def test_without_its_deployment_record_the_event_is_announced_as_it_came(
    store: FakeStore, clock: FakeClock
) -> None:
    del store.deployments[DEPLOYMENT_ID]

    notification = notification_for(services(store, clock), LIVE)

    assert (notification.version, notification.commit, notification.duration_seconds) == ("1.1.0", None, None)


def test_every_channel_gets_it_once_and_a_redelivery_sends_nothing_more(
    store: FakeStore, clock: FakeClock
) -> None:
    slack, chat = ScriptedSender("slack"), ScriptedSender("chat")
    wired = services(store, clock, slack, chat)

    notify_team(wired, LIVE)
    report = notify_team(wired, LIVE)

    assert report.already_delivered == ["slack", "chat"]
    assert (len(slack.received), len(chat.received)) == (1, 1)
    assert wired.channels.asked[0] == ("hello", "staging", False)  # type: ignore[attr-defined]


def test_a_dead_letter_goes_to_the_operations_channels_too(store: FakeStore, clock: FakeClock) -> None:
    wired = services(store, clock, ScriptedSender("ops"))
    dead = NotifyRequest("dead_letter", "hello", None, "dead_lettered", "notify", "dead-letter:1")

    notify_team(wired, dead)

    assert wired.channels.asked == [("hello", None, True)]  # type: ignore[attr-defined]


def test_the_announcement_of_an_undelivered_notification_skips_the_channels_that_failed_it(
    store: FakeStore, clock: FakeClock
) -> None:
    broken = ScriptedSender("broken", failures=[TransientDeliveryError("503")] * 3)
    working = ScriptedSender("working")
    wired = services(store, clock, broken, working)
    with pytest.raises(UndeliveredChannelsError):
        notify_team(wired, LIVE)

    about = NotifyRequest(
        "dead_letter", "hello", "staging", "dead_lettered", "notify", "dead-letter:2",
        about_notification=LIVE.dedupe_key,
    )  # fmt: skip
    notify_team(wired, about)

    assert [n.dedupe_key for n in working.received] == [LIVE.dedupe_key, "dead-letter:2"]
    assert working.received[-1].detail.endswith("not delivered to broken")
    assert [n.dedupe_key for n in broken.received] == []
