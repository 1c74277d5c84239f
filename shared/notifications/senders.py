"""Channel senders: chat webhooks over HTTPS, and (locally) the notifications file.

Webhook URLs are secrets, so the pipeline file names an environment variable per channel
(filled from Secret Manager on GCP) and the URL itself never appears in a log line.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared.config import Channel, EnvironmentConfig, PipelineConfig
from shared.logging import get_logger
from shared.notifications.delivery import ChannelSender, PermanentDeliveryError, TransientDeliveryError
from shared.notifications.model import Notification
from shared.notifications.render import RENDERERS, render_json

log = get_logger("notifications.senders")

WEBHOOK_TIMEOUT_SECONDS = 5.0
NOTIFICATIONS_FILE_CHANNEL = "notifications_file"
_RETRYABLE_STATUS = {408, 425, 429}


def channel_id(channel: Channel) -> str:
    """A stable id for a channel, usable as a Firestore field name: `slack_SLACK_WEBHOOK_URL`."""
    return f"{channel.kind}_{channel.url_env}"


class WebhookSender:
    """POSTs the channel kind's rendering as JSON to the URL held in `channel.url_env`."""

    def __init__(
        self,
        channel: Channel,
        url: str,
        session: requests.Session | None = None,
        render: Callable[[Notification], Mapping[str, Any]] | None = None,
    ) -> None:
        self._channel = channel
        self._url = url
        self._session = session or requests.Session()
        self._render = render or RENDERERS[channel.kind]

    @property
    def channel_id(self) -> str:
        return channel_id(self._channel)

    def send(self, notification: Notification) -> None:
        try:
            response = self._session.post(
                self._url,
                json=self._render(notification),
                timeout=WEBHOOK_TIMEOUT_SECONDS,
                headers={"User-Agent": "release-pipeline-notify"},
            )
        except requests.RequestException as exc:
            # Transient: connection refused, reset or timed out; the endpoint may come back.
            raise TransientDeliveryError(f"{self.channel_id}: {type(exc).__name__}") from exc
        if 200 <= response.status_code < 300:
            return
        reason = f"{self.channel_id}: HTTP {response.status_code} {response.text[:200]!r}"
        if response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS:
            raise TransientDeliveryError(reason)
        # Other 4xx: the payload, the URL or the channel is wrong; the same request fails forever.
        raise PermanentDeliveryError(reason)


class NotificationsFileSender:
    """Appends the JSON rendering (plus `at`) as one line; a lock keeps concurrent lines whole."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def channel_id(self) -> str:
        return NOTIFICATIONS_FILE_CHANNEL

    def send(self, notification: Notification) -> None:
        line = json.dumps({**render_json(notification), "at": datetime.now(UTC).isoformat()}, sort_keys=True)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._path, "a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    handle.write(line + "\n")
                    handle.flush()
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError as exc:
            # Transient: a full disk or a moved directory may be fixed before the next attempt.
            raise TransientDeliveryError(f"{self.channel_id}: {exc}") from exc


def channels_for(
    config: PipelineConfig, app: str | None, environment: str | None, *, operational: bool = False
) -> list[Channel]:
    """Where a notification goes, each channel once.

    A known environment: its channels. A known app but an unknown environment (a rejected
    message): every channel of that app, so its team sees it. An unknown app: the operations
    channels only; a message naming an app nobody configured belongs to no team, and whoever can
    publish one must not be able to post into every team's channel. `operational` notifications
    (an event that exhausted its retries) also go to the operations channels.
    """
    selected: Iterable[EnvironmentConfig]
    known = config.environment(app, environment) if app and environment else None
    if known is not None:
        selected = [known]
    elif app and app in config.apps:
        selected = config.apps[app].environments.values()
    else:
        selected = []
    unique: dict[str, Channel] = {}
    for env in selected:
        for channel in env.channels:
            unique.setdefault(channel_id(channel), channel)
    if operational or not selected:
        for channel in config.operations_channels:
            unique.setdefault(channel_id(channel), channel)
    return list(unique.values())


def senders_for(
    config: PipelineConfig,
    app: str | None,
    environment: str | None,
    environ: Mapping[str, str] = os.environ,
    notifications_file: str | None = None,
    session: requests.Session | None = None,
    *,
    operational: bool = False,
) -> list[ChannelSender]:
    senders: list[ChannelSender] = []
    for channel in channels_for(config, app, environment, operational=operational):
        url = environ.get(channel.url_env, "").strip()
        if not url:
            # A configuration gap, not a delivery failure: retrying would not fill it in.
            log.warning(
                "notification channel has no URL; skipped",
                extra={"fields": {"channel": channel_id(channel), "url_env": channel.url_env}},
            )
            continue
        senders.append(WebhookSender(channel, url, session=session))
    if notifications_file:
        senders.append(NotificationsFileSender(Path(notifications_file)))
    return senders
