"""Render a notification for each kind of channel: plain text, Slack, Google Chat, generic JSON.

Every rendering carries the same facts: app, environment, version, status, commit, changelog,
duration, build link, who triggered it and, for deployments, the rollback command.
"""

from __future__ import annotations

from typing import Any

from shared.notifications.model import Notification

MAX_CHANGELOG_LINES = 10
"""Chat messages stay readable; the full list is on the release record."""

_STATUS_EMOJI = {
    "live": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":fast_forward:",
    "rejected": ":no_entry:",
    "dead_lettered": ":rotating_light:",
    "collected": ":broom:",
}


def headline(notification: Notification) -> str:
    """One line saying what happened.

    >>> headline(Notification(kind="deployment", dedupe_key="k", status="live", app="hello",
    ...                       environment="staging", version="1.1.0"))
    'hello 1.1.0 is live on staging'
    """
    n = notification
    where = n.environment or "an unknown environment"
    if n.kind == "rejected":
        target = "/".join(part for part in (n.app, n.environment) if part) or "an unknown app"
        return f"Rejected a build-succeeded message for {target}: {n.detail or 'invalid message'}"
    if n.kind == "dead_letter":
        return f"Dead-lettered event: {n.detail or 'a pipeline event ran out of retries'}"
    if n.kind == "leaks_collected":
        return f"Watchdog deleted resources no deployment needed: {n.detail or 'see the logs'}"
    if n.status == "live":
        suffix = " (rollback)" if n.rollback_of else ""
        return f"{n.subject} is live on {where}{suffix}"
    if n.status == "failed":
        reason = f": {n.detail}" if n.detail else ""
        return f"{n.subject} failed on {where}{reason}"
    if n.status == "cancelled":
        return f"{n.subject} was cancelled on {where}" + (f": {n.detail}" if n.detail else "")
    return f"{n.subject} on {where}: {n.status.replace('_', ' ')}" + (f" ({n.detail})" if n.detail else "")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _facts(notification: Notification) -> list[tuple[str, str]]:
    n = notification
    facts: list[tuple[str, str]] = []
    if n.app:
        facts.append(("App", n.app))
    if n.environment:
        facts.append(("Environment", n.environment))
    if n.version:
        facts.append(("Version", n.version))
    facts.append(("Status", n.status))
    if n.short_commit:
        facts.append(("Commit", n.short_commit))
    duration = _duration(n.duration_seconds)
    if duration:
        facts.append(("Duration", duration))
    if n.triggered_by:
        facts.append(("Triggered by", n.triggered_by))
    if n.rollback_of:
        facts.append(("Rollback of", n.rollback_of))
    if n.deployment_id:
        facts.append(("Deployment", n.deployment_id))
    return facts


def _changelog(notification: Notification) -> list[str]:
    lines = [message.splitlines()[0] for message in notification.changelog if message.strip()]
    if len(lines) > MAX_CHANGELOG_LINES:
        hidden = len(lines) - MAX_CHANGELOG_LINES
        lines = [*lines[:MAX_CHANGELOG_LINES], f"… and {hidden} more"]
    return lines


def render_text(notification: Notification) -> str:
    """The plain-text message (also the fallback text of the rich renderings)."""
    n = notification
    lines = [headline(n)]
    lines.append(" · ".join(f"{label}: {value}" for label, value in _facts(n)))
    changes = _changelog(n)
    if changes:
        lines.append("Changes:")
        lines.extend(f"  - {change}" for change in changes)
    if n.build_url:
        lines.append(f"Build: {n.build_url}")
    if n.url and n.status == "live":
        lines.append(f"URL: {n.url}")
    if n.rollback_command:
        lines.append(f"Roll back: {n.rollback_command}")
    return "\n".join(lines)


def render_slack(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook payload: Block Kit blocks, with `text` as the notification fallback."""
    n = notification
    emoji = _STATUS_EMOJI.get(n.status, ":information_source:")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{_slack_escape(headline(n))}*"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"} for label, value in _facts(n)
            ][:10],  # Slack allows at most ten fields per section.
        },
    ]
    changes = _changelog(n)
    if changes:
        bullet_list = "\n".join(f"• {_slack_escape(change)}" for change in changes)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Changes*\n{bullet_list}"}})
    links = []
    if n.build_url:
        links.append(f"<{n.build_url}|Build>")
    if n.url and n.status == "live":
        links.append(f"<{n.url}|Open {n.environment}>")
    if n.rollback_command:
        links.append(f"Roll back: `{n.rollback_command}`")
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(links)}]})
    return {"text": headline(n), "blocks": blocks}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reserves these three characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_google_chat(notification: Notification) -> dict[str, Any]:
    """A Google Chat incoming-webhook payload: `text` plus a cardsV2 card with the facts."""
    n = notification
    widgets: list[dict[str, Any]] = [
        {"decoratedText": {"topLabel": label, "text": value}} for label, value in _facts(n)
    ]
    changes = _changelog(n)
    if changes:
        widgets.append({"textParagraph": {"text": "<b>Changes</b><br>" + "<br>".join(map(_html, changes))}})
    if n.rollback_command:
        widgets.append({"textParagraph": {"text": f"Roll back: <code>{_html(n.rollback_command)}</code>"}})
    buttons = []
    if n.build_url:
        buttons.append({"text": "Build", "onClick": {"openLink": {"url": n.build_url}}})
    if n.url and n.status == "live":
        buttons.append({"text": f"Open {n.environment}", "onClick": {"openLink": {"url": n.url}}})
    if buttons:
        widgets.append({"buttonList": {"buttons": buttons}})
    return {
        "text": headline(n),
        "cardsV2": [
            {
                "cardId": f"release-{n.dedupe_key}"[:64],
                "card": {
                    "header": {"title": headline(n)[:200], "subtitle": n.status},
                    "sections": [{"widgets": widgets}],
                },
            }
        ],
    }


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_json(notification: Notification) -> dict[str, Any]:
    """The generic webhook body, and the local notifications file's line: every fact, plus `text`."""
    n = notification
    return {
        "kind": n.kind,
        "app": n.app,
        "environment": n.environment,
        "version": n.version,
        "status": n.status,
        "deployment_id": n.deployment_id,
        "commit": n.commit,
        "changelog": list(n.changelog),
        "duration_seconds": None if n.duration_seconds is None else round(n.duration_seconds, 3),
        "build_url": n.build_url,
        "triggered_by": n.triggered_by,
        "rollback_of": n.rollback_of,
        "rollback_command": n.rollback_command,
        "url": n.url,
        "detail": n.detail,
        "dedupe_key": n.dedupe_key,
        "text": render_text(n),
    }


RENDERERS = {
    "slack": render_slack,
    "google_chat": render_google_chat,
    "webhook": render_json,
}
