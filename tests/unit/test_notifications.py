"""Notifications: what each channel receives, and exactly-once delivery over a fake ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from shared.config import Channel, parse_pipeline_config
from shared.notifications.delivery import (
    ClaimOutcome,
    PermanentDeliveryError,
    TransientDeliveryError,
    UndeliveredChannelsError,
    deliver,
)
from shared.notifications.model import Notification
from shared.notifications.render import headline, render_google_chat, render_json, render_slack, render_text
from shared.notifications.senders import NotificationsFileSender, channels_for, senders_for
from tests.unit.fakes import FakeLedger

LIVE = Notification(
    kind="deployment",
    dedupe_key="hello-staging-abc:live",
    status="live",
    app="hello",
    environment="staging",
    version="1.1.0",
    deployment_id="hello-staging-abc",
    commit="0123456789abcdef0123456789abcdef01234567",
    changelog=("feat: greet in French\n\nlong body", "fix: trailing <slash>"),
    duration_seconds=12.345,
    build_url="https://circleci.example.com/build/42",
    triggered_by="circleci",
    url="http://127.0.0.1:8080",
)


# ---- rendering ---------------------------------------------------------------------------------


def test_the_text_carries_every_fact_and_the_rollback_command() -> None:
    text = render_text(LIVE)

    assert text.splitlines()[0] == "hello 1.1.0 is live on staging"
    for expected in (
        "Version: 1.1.0",
        "Status: live",
        "Commit: 0123456",
        "Duration: 12.3 s",
        "Triggered by (CI): circleci",
        "  - feat: greet in French",
        "  - fix: trailing <slash>",
        "Build: https://circleci.example.com/build/42",
        "Roll back: releasectl rollback --app hello --env staging",
    ):
        assert expected in text
    assert "long body" not in text  # only each message's subject line


def test_a_verified_requester_is_shown_instead_of_cis_claim() -> None:
    rollback = replace(LIVE, requested_by="oncall@example.com", rollback_of="hello-staging-xyz")
    text = render_text(rollback)
    assert "Requested by: oncall@example.com" in text and "Triggered by" not in text
    assert render_json(rollback)["requested_by"] == "oncall@example.com"


def test_awaiting_approval_and_approved_headlines_say_what_to_do_and_who() -> None:
    waiting = replace(
        LIVE,
        status="awaiting_approval",
        environment="production",
        detail="approve with: releasectl approve d1",
    )
    assert headline(waiting) == (
        "hello 1.1.0 is awaiting approval on production: approve with: releasectl approve d1"
    )
    approved = replace(waiting, status="approved", detail="approved by lead@example.com")
    assert headline(approved) == "hello 1.1.0 on production: approved by lead@example.com"


def test_a_failed_deployment_says_why() -> None:
    failed = Notification(
        kind="deployment",
        dedupe_key="d:failed",
        status="failed",
        app="hello",
        environment="staging",
        version="1.2.0",
        detail="green never became healthy within 45 s",
    )
    assert headline(failed) == "hello 1.2.0 failed on staging: green never became healthy within 45 s"


def test_rejected_and_dead_lettered_events_are_announced_without_a_rollback_command() -> None:
    rejected = Notification(
        kind="rejected", dedupe_key="rejected:1", status="rejected", app="hello", detail="commit: not 40 hex"
    )
    dead = Notification(
        kind="dead_letter", dedupe_key="dead-letter:2", status="dead_lettered", detail="notify"
    )

    assert headline(rejected) == "Rejected a build-succeeded message for hello: commit: not 40 hex"
    assert headline(dead).startswith("Dead-lettered event: notify")
    assert rejected.rollback_command is None
    assert "Roll back" not in render_text(rejected)


def test_slack_gets_blocks_with_a_plain_fallback_and_escaped_text() -> None:
    payload = render_slack(LIVE)

    assert payload["text"] == "hello 1.1.0 is live on staging"
    assert payload["blocks"][0]["type"] == "section"
    assert len(payload["blocks"][1]["fields"]) <= 10
    changes = payload["blocks"][2]["text"]["text"]
    assert "fix: trailing &lt;slash&gt;" in changes
    context = payload["blocks"][-1]["elements"][0]["text"]
    assert "<https://circleci.example.com/build/42|Build>" in context
    assert "`releasectl rollback --app hello --env staging`" in context


def test_google_chat_gets_a_cards_v2_card() -> None:
    payload = render_google_chat(LIVE)

    assert payload["text"] == "hello 1.1.0 is live on staging"
    card = payload["cardsV2"][0]["card"]
    assert card["header"]["title"] == "hello 1.1.0 is live on staging"
    widgets = card["sections"][0]["widgets"]
    labels = {
        w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in widgets if "decoratedText" in w
    }
    assert labels["Version"] == "1.1.0"
    assert labels["Commit"] == "0123456"
    buttons = next(w["buttonList"]["buttons"] for w in widgets if "buttonList" in w)
    assert buttons[0]["onClick"]["openLink"]["url"] == "https://circleci.example.com/build/42"


def test_the_generic_webhook_gets_every_fact_as_json() -> None:
    payload = render_json(LIVE)

    assert json.loads(json.dumps(payload)) == payload
    assert {k: payload[k] for k in ("app", "environment", "version", "status", "deployment_id")} == {
        "app": "hello",
        "environment": "staging",
        "version": "1.1.0",
        "status": "live",
        "deployment_id": "hello-staging-abc",
    }
    assert payload["rollback_command"] == "releasectl rollback --app hello --env staging"
    assert payload["text"] == render_text(LIVE)


def test_a_long_changelog_is_cut_with_a_count() -> None:
    many = Notification(
        kind="deployment", dedupe_key="k", status="live", changelog=tuple(f"fix: {i}" for i in range(25))
    )
    text = render_text(many)
    assert "fix: 9" in text
    assert "fix: 10" not in text
    assert "… and 15 more" in text


# ---- channels ------------------------------------------------------------------------------------

CONFIG = parse_pipeline_config(
    {
        "apps": {
            "hello": {
                "artifact_prefixes": ["gs://hello-artifacts/hello/"],
                "defaults": {"base_instance_template": "b", "health_check": "h", "backend_service": "s"},
                "environments": {
                    "staging": {"channels": [{"kind": "slack", "url_env": "STAGING_SLACK"}]},
                    "production": {
                        "channels": [
                            {"kind": "slack", "url_env": "STAGING_SLACK"},
                            {"kind": "google_chat", "url_env": "PROD_CHAT"},
                        ]
                    },
                },
            }
        }
    }
)


def test_a_known_environment_uses_its_own_channels() -> None:
    assert channels_for(CONFIG, "hello", "staging") == [Channel("slack", "STAGING_SLACK")]


def test_a_message_for_an_unknown_environment_goes_to_every_channel_of_the_app_once() -> None:
    assert channels_for(CONFIG, "hello", "nope") == [
        Channel("slack", "STAGING_SLACK"),
        Channel("google_chat", "PROD_CHAT"),
    ]


WITH_OPERATIONS = parse_pipeline_config(
    {
        "operations": {"channels": [{"kind": "slack", "url_env": "OPS_SLACK"}]},
        "apps": {
            "hello": {
                "defaults": {"base_instance_template": "b", "health_check": "h", "backend_service": "s"},
                "environments": {"staging": {"channels": [{"kind": "slack", "url_env": "STAGING_SLACK"}]}},
            },
            "other": {
                "defaults": {"base_instance_template": "b", "health_check": "h", "backend_service": "s"},
                "environments": {"staging": {"channels": [{"kind": "google_chat", "url_env": "OTHER_CHAT"}]}},
            },
        },
    }
)


@pytest.mark.parametrize(("app", "environment"), [("intruder", "staging"), (None, None), (None, "staging")])
def test_a_message_for_an_unknown_app_goes_only_to_the_operations_channels(
    app: str | None, environment: str | None
) -> None:
    assert channels_for(WITH_OPERATIONS, app, environment) == [Channel("slack", "OPS_SLACK")]


def test_without_operations_channels_a_message_for_an_unknown_app_reaches_no_team() -> None:
    assert channels_for(CONFIG, "intruder", "staging") == []
    assert channels_for(CONFIG, None, None) == []


def test_a_known_app_keeps_its_own_channels_and_operational_news_adds_the_operations_ones() -> None:
    assert channels_for(WITH_OPERATIONS, "hello", "staging") == [Channel("slack", "STAGING_SLACK")]
    assert channels_for(WITH_OPERATIONS, "hello", "nope") == [Channel("slack", "STAGING_SLACK")]
    assert channels_for(WITH_OPERATIONS, "hello", "staging", operational=True) == [
        Channel("slack", "STAGING_SLACK"),
        Channel("slack", "OPS_SLACK"),
    ]
    assert channels_for(WITH_OPERATIONS, None, None, operational=True) == [Channel("slack", "OPS_SLACK")]


def test_a_channel_without_a_url_is_skipped_and_the_file_is_added(tmp_path: Path) -> None:
    senders = senders_for(
        CONFIG,
        "hello",
        "production",
        environ={"PROD_CHAT": "http://127.0.0.1:9/chat"},
        notifications_file=str(tmp_path / "n.jsonl"),
    )
    assert [s.channel_id for s in senders] == ["google_chat_PROD_CHAT", "notifications_file"]


def test_the_notifications_file_gets_one_json_line_per_message(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "notifications.jsonl"
    sender = NotificationsFileSender(path)
    sender.send(LIVE)
    sender.send(LIVE)

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    assert lines[0]["version"] == "1.1.0"
    assert lines[0]["text"].startswith("hello 1.1.0 is live on staging")
    assert "at" in lines[0]


# ---- exactly-once delivery over a fake ledger -------------------------------------------------


@dataclass
class ScriptedSender:
    """A channel whose next sends fail as scripted, then succeed."""

    channel_id: str
    failures: list[Exception] = field(default_factory=list)
    received: list[Notification] = field(default_factory=list)
    attempts: int = 0

    def send(self, notification: Notification) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.received.append(notification)


def no_sleep(seconds: float) -> None:
    pass


def test_every_channel_gets_the_message_once() -> None:
    ledger = FakeLedger()
    slack, chat = ScriptedSender("slack"), ScriptedSender("chat")

    report = deliver(LIVE, [slack, chat], ledger, sleep=no_sleep)

    assert report.delivered == ["slack", "chat"]
    assert (len(slack.received), len(chat.received)) == (1, 1)


@dataclass
class WatchedSender(ScriptedSender):
    """A channel that notes the ledger's state of every channel at the moment it is sent to."""

    ledger: FakeLedger = field(default_factory=FakeLedger)
    seen: list[dict[str, str]] = field(default_factory=list)

    def send(self, notification: Notification) -> None:
        self.seen.append(self.ledger.channel_states(notification.dedupe_key))
        super().send(notification)


@dataclass
class ChangeRecordingLedger(FakeLedger):
    """The in-memory ledger, noting each change it is asked for in order."""

    changes: list[str] = field(default_factory=list)

    def claim(
        self,
        notification: Notification,
        channel_id: str,
        owner: str,
        lease_seconds: float,
        delivered: str | None = None,
    ) -> ClaimOutcome:
        self.changes.append(f"claim {channel_id} +{delivered}")
        return super().claim(notification, channel_id, owner, lease_seconds, delivered)

    def mark_delivered(self, dedupe_key: str, channel_id: str, owner: str) -> None:
        self.changes.append(f"delivered {channel_id}")
        super().mark_delivered(dedupe_key, channel_id, owner)


def test_a_channel_is_recorded_delivered_with_the_next_claim_before_anything_else_is_sent() -> None:
    ledger = ChangeRecordingLedger()
    slack, chat = WatchedSender("slack", ledger=ledger), WatchedSender("chat", ledger=ledger)

    deliver(LIVE, [slack, chat], ledger, sleep=no_sleep)
    changes = ledger.changes

    assert changes == ["claim slack +None", "claim chat +slack", "delivered chat"], "three changes, not four"
    assert chat.seen == [{"slack": "delivered", "chat": "sending"}]
    assert ledger.channel_states(LIVE.dedupe_key) == {"slack": "delivered", "chat": "delivered"}


def test_a_redelivered_event_sends_nothing_twice() -> None:
    ledger = FakeLedger()
    slack = ScriptedSender("slack")
    deliver(LIVE, [slack], ledger, sleep=no_sleep)

    report = deliver(LIVE, [slack], ledger, sleep=no_sleep)

    assert report.already_delivered == ["slack"]
    assert len(slack.received) == 1


def test_a_channel_failing_twice_succeeds_within_one_invocation_with_backoff() -> None:
    waits: list[float] = []
    flaky = ScriptedSender("flaky", failures=[TransientDeliveryError("503"), TransientDeliveryError("503")])

    report = deliver(LIVE, [flaky], FakeLedger(), sleep=waits.append, first_backoff_seconds=0.1)

    assert report.delivered == ["flaky"]
    assert flaky.attempts == 3
    assert waits == [0.1, 0.2]


def test_a_channel_still_failing_raises_and_only_it_is_retried_on_redelivery() -> None:
    ledger = FakeLedger()
    healthy = ScriptedSender("healthy")
    down = ScriptedSender("down", failures=[TransientDeliveryError("503")] * 3)

    with pytest.raises(UndeliveredChannelsError) as raised:
        deliver(LIVE, [healthy, down], ledger, sleep=no_sleep)
    assert raised.value.report.delivered == ["healthy"]
    assert raised.value.report.failed == ["down"]

    report = deliver(LIVE, [healthy, down], ledger, sleep=no_sleep)

    assert report.already_delivered == ["healthy"]
    assert report.delivered == ["down"]
    assert (len(healthy.received), len(down.received)) == (1, 1)


def test_a_channel_that_refuses_for_good_is_given_up_without_blocking_the_others() -> None:
    ledger = FakeLedger()
    gone = ScriptedSender("gone", failures=[PermanentDeliveryError("410 channel_is_archived")])
    healthy = ScriptedSender("healthy")

    report = deliver(LIVE, [gone, healthy], ledger, sleep=no_sleep)

    assert report.given_up == ["gone"]
    assert report.delivered == ["healthy"]
    assert gone.attempts == 1
    assert deliver(LIVE, [gone, healthy], ledger, sleep=no_sleep).given_up == ["gone"]


def test_a_channel_another_delivery_is_sending_to_is_left_to_a_later_redelivery() -> None:
    ledger = FakeLedger()
    slack = ScriptedSender("slack")
    assert ledger.claim(LIVE, "slack", "the-other-delivery", 60) is ClaimOutcome.CLAIMED

    with pytest.raises(UndeliveredChannelsError) as raised:
        deliver(LIVE, [slack], ledger, sleep=no_sleep, owner="us")

    assert raised.value.report.held_elsewhere == ["slack"]
    assert slack.received == []


def test_different_outcomes_of_one_deployment_are_separate_messages() -> None:
    ledger = FakeLedger()
    slack = ScriptedSender("slack")
    failed = Notification(kind="deployment", dedupe_key="hello-staging-abc:failed", status="failed")

    deliver(LIVE, [slack], ledger, sleep=no_sleep)
    deliver(failed, [slack], ledger, sleep=no_sleep)

    assert [n.status for n in slack.received] == ["live", "failed"]
