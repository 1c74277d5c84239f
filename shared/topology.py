"""The event topology: topics, the function each one triggers, and its delivery policy.

One source of truth for three consumers: the local stack wires push subscriptions from it,
Terraform declares the same topics and triggers (a consistency test compares them), and the
functions publish to the topic names defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

BUILD_SUCCEEDED = "build-succeeded"
START_ROLLING_REPLACE = "start-rolling-replace"
COOL_DOWN_COMPLETE = "cool-down-complete"
BAKE_CHECK = "bake-check"
NOTIFY = "notify"
WATCHDOG_TICK = "watchdog-tick"
DEAD_LETTER_SUFFIX = "-dead-letter"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


@dataclass(frozen=True)
class Trigger:
    """A Pub/Sub topic that invokes one function entry point, with its retry policy."""

    topic: str
    entry_point: str
    # Exponential backoff bounds for redelivery after the function raises. For
    # cool-down-complete the backoff *is* the polling interval while green warms up.
    min_backoff_seconds: int
    max_backoff_seconds: int
    # After this many failed deliveries the message goes to the dead-letter topic.
    max_delivery_attempts: int
    dead_letter: bool = True

    @property
    def dead_letter_topic(self) -> str | None:
        return dead_letter_topic(self.topic) if self.dead_letter else None


PUBSUB_TRIGGERS: tuple[Trigger, ...] = (
    Trigger(BUILD_SUCCEEDED, "on_build_succeeded", 1, 60, 10),
    Trigger(START_ROLLING_REPLACE, "on_start_rolling_replace", 1, 60, 10),
    # Not-ready is the normal state for a while, so allow many polls: they last 965 s at least,
    # which bounds the provisioning deadline (shared/config.py).
    Trigger(COOL_DOWN_COMPLETE, "on_cool_down_complete", 1, 10, 100),
    # The bake window's poll: redelivered (like cool-down-complete) until the window ends or
    # green breaches it. Short backoff: the time to notice a breach is the exposure.
    Trigger(BAKE_CHECK, "on_bake_check", 1, 10, 100),
    Trigger(NOTIFY, "on_notify", 1, 60, 10),
    Trigger(WATCHDOG_TICK, "watchdog", 1, 10, 5, dead_letter=False),
)


def trigger_of(topic: str) -> Trigger:
    return next(t for t in PUBSUB_TRIGGERS if t.topic == topic)


def retries_last_seconds(trigger: Trigger) -> int:
    """The least time Pub/Sub takes to make all of a trigger's deliveries of a message that keeps
    failing: the backoffs between them (it may wait longer, never shorter). A poll that must go
    on for longer is dead-lettered while its step is still waiting.

    >>> retries_last_seconds(trigger_of(COOL_DOWN_COMPLETE))  # 1 + 2 + 4 + 8 + 95 x 10
    965
    """
    return sum(
        min(trigger.max_backoff_seconds, trigger.min_backoff_seconds * 2**attempt)
        for attempt in range(trigger.max_delivery_attempts - 1)
    )


DEAD_LETTER_ENTRY_POINT = "on_dead_letter"
"""Announces every dead-lettered event; subscribed to each trigger's dead-letter topic."""

HTTP_ENTRY_POINTS: tuple[str, ...] = ("rollback", "promote", "approve", "dashboard")


def all_topics() -> list[str]:
    topics: list[str] = []
    for trigger in PUBSUB_TRIGGERS:
        topics.append(trigger.topic)
        if trigger.dead_letter_topic:
            topics.append(trigger.dead_letter_topic)
    return topics


def all_entry_points() -> list[str]:
    names = [t.entry_point for t in PUBSUB_TRIGGERS]
    names.append(DEAD_LETTER_ENTRY_POINT)
    names.extend(HTTP_ENTRY_POINTS)
    return names
