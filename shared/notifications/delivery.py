"""Deliver one notification to every channel exactly once, however often the event is redelivered.

The ledger (a Firestore record per dedupe key in production) remembers which channels already
have the message. Each channel is claimed by an atomic change of that record before sending, so
a redelivery, or two deliveries racing each other, send to a channel at most once while a claim
is held, and never again once it is marked delivered. The one gap is inherent to webhooks, which take no
idempotency key: a crash after a channel accepted the message and before the ledger records it
sends that channel the message again on redelivery.

A failing channel is retried a few times within the invocation, then released; the other
channels still go out, and the invocation raises so Pub/Sub redelivers and only the undelivered
channels are tried again. After the subscription's maximum attempts the event is dead-lettered.
A channel that refuses the message for good (a 4xx such as an archived Slack channel) is given up
on and logged, so it does not loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from shared.logging import get_logger
from shared.notifications.model import Notification

log = get_logger("notifications")

QUICK_ATTEMPTS = 3
"""Sends per channel within one invocation before leaving the rest to Pub/Sub's backoff."""
FIRST_BACKOFF_SECONDS = 0.25
CLAIM_LEASE_SECONDS = 60.0
"""How long a claim keeps other deliveries off a channel: longer than all quick attempts take."""


class TransientDeliveryError(Exception):
    """The channel could not take the message now (5xx, 429, timeout): try again later."""


class PermanentDeliveryError(Exception):
    """The channel refused the message for good (bad URL, 4xx): retrying cannot help."""


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    """Ours to send now."""
    ALREADY_DELIVERED = "already_delivered"
    GIVEN_UP = "given_up"
    """An earlier attempt met a permanent refusal."""
    HELD_ELSEWHERE = "held_elsewhere"
    """Another delivery of the same event is sending right now; check again on redelivery."""


class NotificationLedger(Protocol):
    """Which channels already have the message for a dedupe key. Each method is one atomic change."""

    def claim(
        self,
        notification: Notification,
        channel_id: str,
        owner: str,
        lease_seconds: float,
        delivered: str | None = None,
    ) -> ClaimOutcome:
        """Claim `channel_id` for `owner`; with `delivered`, also record that channel (which
        `owner` has just sent to) as delivered, in the same atomic change."""
        ...

    def mark_delivered(self, dedupe_key: str, channel_id: str, owner: str) -> None: ...

    def release(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None: ...

    def give_up(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None: ...

    def channel_states(self, dedupe_key: str) -> Mapping[str, str]:
        """Each channel's state for a dedupe key (`delivered`, `failed`, `given_up`, `sending`)."""
        ...


class ChannelSender(Protocol):
    """Sends a notification to one channel, raising Transient- or PermanentDeliveryError."""

    @property
    def channel_id(self) -> str: ...

    def send(self, notification: Notification) -> None: ...


def without_channels_that_failed(
    senders: Sequence[ChannelSender], earlier_states: Mapping[str, str]
) -> tuple[list[ChannelSender], list[str]]:
    """The senders for announcing that a notification did not reach every channel: the channels
    that took it, and those it never went to; not the ones that failed or refused it, which
    would only fail again. Also the ids of the channels left out, for the announcement's text.

    >>> class Sender:
    ...     def __init__(self, channel_id): self.channel_id = channel_id
    >>> kept, left_out = without_channels_that_failed(
    ...     [Sender("slack"), Sender("chat"), Sender("ops"), Sender("file")],
    ...     {"slack": "failed", "chat": "delivered", "file": "given_up"},
    ... )
    >>> [sender.channel_id for sender in kept], left_out
    (['chat', 'ops'], ['slack', 'file'])
    """
    kept: list[ChannelSender] = []
    left_out: list[str] = []
    for sender in senders:
        if earlier_states.get(sender.channel_id) in (None, "delivered"):
            kept.append(sender)
        else:
            left_out.append(sender.channel_id)
    return kept, left_out


class UndeliveredChannelsError(Exception):
    """Some channels do not have the message yet. Transient: raise so Pub/Sub redelivers."""

    def __init__(self, report: DeliveryReport) -> None:
        pending = [*report.failed, *report.held_elsewhere]
        super().__init__(f"not delivered yet to {', '.join(pending)}; the event will be redelivered")
        self.report = report


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    already_delivered: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    held_elsewhere: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failed and not self.held_elsewhere


def deliver(
    notification: Notification,
    senders: Sequence[ChannelSender],
    ledger: NotificationLedger,
    *,
    quick_attempts: int = QUICK_ATTEMPTS,
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    owner: str | None = None,
) -> DeliveryReport:
    """Send to each channel that does not have the message yet; raise if any is still missing it."""
    owner = owner or uuid.uuid4().hex
    report = DeliveryReport()
    # A channel just sent to is recorded delivered together with the next channel's claim, which
    # is written before anything else is sent: one change of the ledger instead of two, and the
    # window in which a crash makes a redelivery send it again is no wider.
    sent_unrecorded: str | None = None
    for sender in senders:
        channel = sender.channel_id
        outcome = ledger.claim(notification, channel, owner, CLAIM_LEASE_SECONDS, delivered=sent_unrecorded)
        sent_unrecorded = None
        if outcome is ClaimOutcome.ALREADY_DELIVERED:
            report.already_delivered.append(channel)
            continue
        if outcome is ClaimOutcome.GIVEN_UP:
            report.given_up.append(channel)
            continue
        if outcome is ClaimOutcome.HELD_ELSEWHERE:
            report.held_elsewhere.append(channel)
            continue
        if _send_with_retries(
            notification, sender, ledger, owner, report, quick_attempts, first_backoff_seconds, sleep
        ):
            sent_unrecorded = channel
    if sent_unrecorded is not None:
        ledger.mark_delivered(notification.dedupe_key, sent_unrecorded, owner)
    fields = {"channels": {key: value for key, value in vars(report).items() if value}}
    if not report.complete:
        log.warning("notification not yet delivered everywhere", extra={"fields": fields})
        raise UndeliveredChannelsError(report)
    log.info("notification delivered", extra={"fields": fields})
    return report


def _send_with_retries(
    notification: Notification,
    sender: ChannelSender,
    ledger: NotificationLedger,
    owner: str,
    report: DeliveryReport,
    quick_attempts: int,
    first_backoff_seconds: float,
    sleep: Callable[[float], None],
) -> bool:
    """Send to one claimed channel; True when it took the message (the caller records that)."""
    channel = sender.channel_id
    last_error = "no attempt made"
    for attempt in range(1, quick_attempts + 1):
        try:
            sender.send(notification)
        except PermanentDeliveryError as exc:  # permanent: the channel will refuse every retry
            log.error(
                "channel refused the notification for good",
                extra={"fields": {"channel": channel, "error": str(exc)}},
            )
            ledger.give_up(notification.dedupe_key, channel, owner, str(exc))
            report.given_up.append(channel)
            return False
        except TransientDeliveryError as exc:  # transient: retry quickly, then leave it to Pub/Sub
            last_error = str(exc)
            log.warning(
                "channel did not take the notification",
                extra={"fields": {"channel": channel, "attempt": attempt, "error": last_error}},
            )
            if attempt < quick_attempts:
                sleep(first_backoff_seconds * 2 ** (attempt - 1))
            continue
        report.delivered.append(channel)
        return True
    ledger.release(notification.dedupe_key, channel, owner, last_error)
    report.failed.append(channel)
    return False
