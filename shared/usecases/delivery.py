"""Delivery metrics for `releasectl metrics` and the dashboard: read a window, compute the keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from shared.domain.metrics import DeliveryMetrics, delivery_metrics
from shared.domain.records import Deployment, EnvironmentState

DEFAULT_WINDOW_DAYS = 30
"""The window `releasectl metrics` and the dashboard look at unless told otherwise."""


class DeliveryRecords(Protocol):
    """Read-only view of the release records (bounded queries only)."""

    def deployments_since(self, app: str, environment: str | None, since: datetime) -> list[Deployment]:
        """Deployments created at or after `since`, newest first; every environment if None."""
        ...

    def environment(self, app: str, environment: str) -> EnvironmentState | None: ...

    def deployment(self, deployment_id: str) -> Deployment | None: ...


def window_metrics(
    records: DeliveryRecords, *, app: str, environment: str | None, days: float, now: datetime
) -> DeliveryMetrics:
    """The four keys of the last `days` days up to `now`."""
    since = now - timedelta(days=days)
    deployments = records.deployments_since(app, environment, since)
    return delivery_metrics(deployments, app=app, environment=environment, since=since, until=now)
