"""The release dashboard's use cases: read what each environment shows; forward an action.

The dashboard never writes a record. An action (approve, reject, roll back) is forwarded, with
the caller's own identity token, to the same authenticated HTTP function `releasectl` calls;
that function verifies the token and decides. A dashboard that is compromised or mistaken can
therefore do nothing its user could not do with `releasectl`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.config import EnvironmentConfig, PipelineConfig
from shared.domain.dashboard_view import EnvironmentView, environment_view
from shared.domain.metrics import delivery_metrics
from shared.domain.rollback import rollback_request_body
from shared.usecases.delivery import DeliveryRecords

MAX_PARALLEL_READS = 8


@dataclass(frozen=True)
class ForwardedAnswer:
    status: int
    body: Mapping[str, Any]


class PipelineEndpoints(Protocol):
    def post(self, url: str, body: Mapping[str, Any], token: str) -> ForwardedAnswer:
        """POST `body` as JSON with `Authorization: Bearer <token>`; the function's answer."""
        ...

    def mint_local_token(self, token_url: str, audience: str, email: str) -> str:
        """A token from the local stack's issuer (which exists only there)."""
        ...


class ActionUnavailable(Exception):
    """The function to forward to is not configured here, or cannot be reached (503)."""


@dataclass(frozen=True)
class DashboardServices:
    config: PipelineConfig
    records: DeliveryRecords
    endpoints: PipelineEndpoints
    rollback_url: str
    approve_url: str
    """Empty where the approval function is not deployed."""
    local_token_url: str
    """The local token issuer's mint endpoint; empty on Google Cloud."""


def environments_of(config: PipelineConfig, app: str | None) -> list[EnvironmentConfig]:
    return [env for env in config.all_environments() if app is None or env.app == app]


def load_environment(
    records: DeliveryRecords, env: EnvironmentConfig, *, now: datetime, window_days: int
) -> EnvironmentView:
    """One environment's view: its state record and one bounded query for the metrics window."""
    since = now - timedelta(days=window_days)
    window = records.deployments_since(env.app, env.name, since)
    state = records.environment(env.app, env.name)
    live = None
    if state is not None and state.live_deployment_id:
        live = next((d for d in window if d.deployment_id == state.live_deployment_id), None)
        if live is None:  # live for longer than the window: one more read
            live = records.deployment(state.live_deployment_id)
    metrics = delivery_metrics(window, app=env.app, environment=env.name, since=since, until=now)
    return environment_view(
        app=env.app,
        environment=env.name,
        url=env.url,
        live_deployment=live,
        window=window,
        metrics=metrics,
        now=now,
    )


def load_dashboard(
    services: DashboardServices, *, app: str | None, now: datetime, window_days: int
) -> Sequence[EnvironmentView]:
    """Every configured environment (of `app`, if given), read in parallel."""
    environments = environments_of(services.config, app)
    if not environments:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_READS, len(environments))) as pool:
        return list(
            pool.map(
                lambda env: load_environment(services.records, env, now=now, window_days=window_days),
                environments,
            )
        )


def forward_rollback(
    services: DashboardServices,
    *,
    token: str,
    app: str,
    environment: str,
    to_version: str | None,
    reason: str | None,
) -> ForwardedAnswer:
    """CONTRACT §4, with the caller's token."""
    body = rollback_request_body(app, environment, to_version, reason)
    return _forward(services, services.rollback_url, body, token, "rollback")


def forward_decision(
    services: DashboardServices, *, token: str, deployment_id: str, decision: str, reason: str
) -> ForwardedAnswer:
    """CONTRACT §4c, with the caller's token."""
    body = {"deployment_id": deployment_id, "decision": decision, "reason": reason}
    return _forward(services, services.approve_url, body, token, "approval")


def local_tokens(services: DashboardServices, email: str) -> dict[str, str]:
    """Locally, a token for `email` per action kind, each for the one function that checks it
    (each HTTP function accepts only tokens minted for its own URL). Only the local stack has an
    issuer that mints tokens on request; on Google Cloud people bring their own."""
    if not services.local_token_url:
        raise ActionUnavailable("local sign-in exists only on the local stack")
    targets = {"rollback": services.rollback_url, "approve": services.approve_url}
    return {
        kind: services.endpoints.mint_local_token(services.local_token_url, url, email)
        for kind, url in targets.items()
        if url
    }


def _forward(
    services: DashboardServices, url: str, body: Mapping[str, Any], token: str, what: str
) -> ForwardedAnswer:
    if not url:
        raise ActionUnavailable(f"the {what} function is not configured for this dashboard")
    return services.endpoints.post(url, body, token)
