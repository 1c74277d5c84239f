"""The NotificationChannels port: the pipeline file's channels for an app and environment, each
with its webhook URL from the environment variable it names, plus (locally) the notifications file.

URLs are read at each notification, not at cold start, so a rotated secret takes effect at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import PipelineConfig
from shared.notifications.delivery import ChannelSender
from shared.notifications.senders import senders_for


@dataclass(frozen=True)
class ConfiguredChannels:
    config: PipelineConfig
    notifications_file: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def senders_for(
        self, app: str | None, environment: str | None, *, operational: bool
    ) -> list[ChannelSender]:
        return senders_for(
            self.config,
            app,
            environment,
            self.environ,
            notifications_file=self.notifications_file,
            operational=operational,
        )
