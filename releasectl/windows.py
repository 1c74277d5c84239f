"""The deploy-window part of `releasectl status` (CONTRACT §5 `next_deploy_window`).

Computed from the pipeline file's policy for the environment and the current time, the same
rules the pipeline applies before a deployment takes its environment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.domain.windows import (
    SEARCH_DAYS,
    DeployPolicy,
    closed_because,
    is_open,
    local_time,
    next_opening,
    rfc3339,
)


def deploy_window_status(policy: DeployPolicy | None, now: datetime) -> dict[str, Any]:
    """`next_deploy_window`: null when a deployment could start now (no windows or freezes, or
    inside an open window), else the RFC 3339 instant the next window opens (null as well when
    none opens within the search horizon). `deploy_window_open` tells those nulls apart: true,
    false, or null when the pipeline file is not available here and the policy is unknown."""
    if policy is None:
        return {"next_deploy_window": None, "deploy_window_open": None}
    if is_open(policy, now):
        return {"next_deploy_window": None, "deploy_window_open": True}
    opening = next_opening(policy, now)
    return {"next_deploy_window": rfc3339(opening) if opening else None, "deploy_window_open": False}


def deploy_window_line(policy: DeployPolicy | None, now: datetime) -> str | None:
    """The human form: one line, or None when the policy is unknown."""
    if policy is None:
        return None
    if not policy.restricts:
        return "always open (no deploy windows or freezes)"
    if is_open(policy, now):
        return "open now"
    opening = next_opening(policy, now)
    why = closed_because(policy, now)
    if opening is None:
        return f"closed ({why}); no window opens within {SEARCH_DAYS} days"
    return f"closed ({why}); opens {rfc3339(opening)} ({local_time(opening, policy.display_zone)})"
