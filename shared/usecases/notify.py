"""Tell the team about one outcome: enrich the notify event from the records, then deliver it to
each of its channels once (`shared.notifications.delivery`).

Reads go through the Store port (the deployment and release records, never written here); the
ledger and the channels are ports of their own, built in the composition root.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.config import PipelineConfig
from shared.domain.notify_message import DeploymentFacts, NotifyRequest
from shared.domain.records import Deployment
from shared.logging import get_logger
from shared.notifications.delivery import (
    ChannelSender,
    DeliveryReport,
    NotificationLedger,
    deliver,
    without_channels_that_failed,
)
from shared.notifications.model import Notification
from shared.ports import Clock, Store

log = get_logger("usecases.notify")

OPERATIONAL_KINDS = ("dead_letter", "leaks_collected")
"""Notify kinds the operations channels get too, besides the app's own."""


class NotificationChannels(Protocol):
    """Where a notification about an app and environment goes (the pipeline file's channels)."""

    def senders_for(
        self, app: str | None, environment: str | None, *, operational: bool
    ) -> Sequence[ChannelSender]: ...


@dataclass(frozen=True)
class NotifyServices:
    """What `on_notify` needs: less than a pipeline step (no Compute, no publisher)."""

    config: PipelineConfig
    store: Store
    ledger: NotificationLedger
    channels: NotificationChannels
    clock: Clock


def notify_team(services: NotifyServices, request: NotifyRequest) -> DeliveryReport:
    """Deliver the notification for `request` to every channel that does not have it yet.

    Raises `UndeliveredChannelsError` (transient) while a channel still misses it, and the
    Store's and ledger's transient errors as they are.
    """
    notification = notification_for(services, request)
    senders: Sequence[ChannelSender] = services.channels.senders_for(
        notification.app, notification.environment, operational=notification.kind in OPERATIONAL_KINDS
    )
    if request.about_notification:
        # Announcing that a notification ran out of retries: not on the channels that failed it.
        senders, left_out = without_channels_that_failed(
            senders, services.ledger.channel_states(request.about_notification)
        )
        if left_out:
            notification = dataclasses.replace(
                notification, detail=f"{notification.detail}; not delivered to {', '.join(left_out)}"
            )
    return deliver(notification, senders, services.ledger)


def notification_for(services: NotifyServices, request: NotifyRequest) -> Notification:
    """The notify event, with the environment's URL and, for a deployment, the facts of its records:
    as the publishing step sent them, or else read from the deployment record here."""
    environment = (
        services.config.environment(request.app, request.environment)
        if request.app and request.environment
        else None
    )
    base = Notification(
        kind=request.kind,
        dedupe_key=request.dedupe_key,
        status=request.status,
        app=request.app,
        environment=request.environment,
        version=request.version,
        deployment_id=request.deployment_id,
        detail=request.detail,
        url=environment.url if environment and environment.url else None,
    )
    if request.kind != "deployment" or not request.deployment_id:
        return base
    if request.facts is not None:
        return _with_facts(services, base, request.facts)
    deployment = services.store.get_deployment(request.deployment_id)
    if deployment is None:
        # Transient-looking but not worth a retry loop: announce with what the event carries.
        log.warning("deployment record not found; notifying without enrichment")
        return base
    base = dataclasses.replace(
        base,
        app=base.app or deployment.app,
        environment=base.environment or deployment.environment,
        version=request.version or deployment.version or None,
    )
    return _with_facts(services, base, facts_of(deployment, request.status, services.clock.now()))


def _with_facts(services: NotifyServices, base: Notification, facts: DeploymentFacts) -> Notification:
    changelog = facts.changelog
    if not changelog and base.app and base.version:
        release = services.store.get_release(base.app, base.version)
        changelog = release.commit_messages if release else ()
    return dataclasses.replace(
        base,
        commit=facts.commit or None,
        changelog=tuple(message for message in changelog if message),
        duration_seconds=facts.duration_seconds,
        build_url=facts.build_url or None,
        triggered_by=facts.triggered_by or None,
        requested_by=facts.requested_by or None,
        rollback_of=facts.rollback_of or None,
    )


def facts_of(deployment: Deployment, status: str, now: datetime) -> DeploymentFacts:
    """What a notification about `deployment` reaching `status` shows, from its record."""
    return DeploymentFacts(
        commit=deployment.commit or None,
        changelog=tuple(deployment.commit_messages),
        duration_seconds=duration_until(deployment, status, now),
        build_url=deployment.build_url or None,
        triggered_by=deployment.triggered_by or None,
        requested_by=deployment.requested_by or None,
        rollback_of=deployment.rollback_of or None,
    )


def duration_until(deployment: Deployment, status: str, now: datetime) -> float:
    """Seconds from the deployment's creation to when it last reached `status` (else to when it
    finished, else to now): how long the outcome took."""
    ended = next((entry.at for entry in reversed(deployment.history) if entry.status == status), None)
    ended = ended or deployment.finished_at or now
    return max(0.0, (ended - deployment.created_at).total_seconds())
