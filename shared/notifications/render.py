"""Render a notification for each kind of channel: plain text, Slack, Google Chat, generic JSON.

Every rendering carries the same facts: app, environment, version, status, commit, changelog,
duration, build link, who triggered it and, for deployments, the rollback command.

Most of those facts come from whoever published the build (commit messages, build URL, who
triggered it) or from an error text, so none of them is trusted to be plain text. Each chat
rendering escapes every value for the markup of the place it lands in, so that no value can
mention a whole channel (Slack `<!channel>`, `<!here>`, `<@U123>`; Chat `<users/all>`) or show a
link whose text hides where it goes (Slack `<http://evil|click>`, Chat `<url|text>`, `[text](url)`,
HTML `<a>` in card widgets). The only links in a message are the ones rendered here, from
URLs that passed `safe_link`. Values are also clipped so that a huge one cannot make a chat
service refuse the whole message.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from shared.notifications.model import Notification

MAX_CHANGELOG_LINES = 10
"""Chat messages stay readable; the full list is on the release record."""
MAX_VALUE_CHARACTERS = 300
"""One fact, changelog line or detail in a chat message; the records keep the whole text."""
MAX_URL_CHARACTERS = 2000
_LINK_SCHEMES = ("http", "https")
_URL_SAFE_CHARACTERS = ":/?#[]@!$&'()*+,;=%~-._"
"""Characters a URL keeps as they are; every other one (`|`, `<`, `>`, spaces, quotes…) is
percent-encoded, so it cannot end the link markup it is placed in."""
_BROADCAST_WORD = re.compile(r"@(?=(?:channel|here|everyone|all)\b)", re.IGNORECASE)
_CARD_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_STATUS_EMOJI = {
    "live": ":white_check_mark:",
    "failed": ":x:",
    "cancelled": ":fast_forward:",
    "rolled_back": ":rewind:",
    "verification_failed": ":rotating_light:",
    "verified": ":white_check_mark:",
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
    detail = clip(n.detail)
    if n.kind == "rejected":
        target = "/".join(part for part in (n.app, n.environment) if part) or "an unknown app"
        return f"Rejected a build-succeeded message for {target}: {detail or 'invalid message'}"
    if n.kind == "dead_letter":
        return f"Dead-lettered event: {detail or 'a pipeline event ran out of retries'}"
    if n.kind == "leaks_collected":
        return f"Watchdog deleted resources no deployment needed: {detail or 'see the logs'}"
    if n.status == "live":
        suffix = " (rollback)" if n.rollback_of else ""
        return f"{n.subject} is live on {where}{suffix}"
    if n.status == "failed":
        reason = f": {detail}" if detail else ""
        return f"{n.subject} failed on {where}{reason}"
    if n.status == "cancelled":
        return f"{n.subject} was cancelled on {where}" + (f": {detail}" if detail else "")
    if n.status == "awaiting_approval":
        return f"{n.subject} is awaiting approval on {where}" + (f": {detail}" if detail else "")
    if n.status == "approved":
        return f"{n.subject} on {where}: {detail or 'approved'}"
    if n.status == "rolled_back":
        # The one alert of an automatic rollback: what was seen, and what serves now.
        return f"{n.subject} failed its bake window on {where} and was rolled back" + (
            f": {detail}" if detail else ""
        )
    if n.status == "verification_failed":
        return f"{n.subject} failed its bake window on {where}" + (f": {detail}" if detail else "")
    if n.status == "verified":
        return f"{n.subject} passed its bake window on {where}" + (f" ({detail})" if detail else "")
    return f"{n.subject} on {where}: {n.status.replace('_', ' ')}" + (f" ({detail})" if detail else "")


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
    if n.requested_by:
        facts.append(("Requested by", n.requested_by))
    elif n.triggered_by:
        # Only CI's claim (unverified), so it is labelled as such.
        facts.append(("Triggered by (CI)", n.triggered_by))
    if n.rollback_of:
        facts.append(("Rollback of", n.rollback_of))
    if n.deployment_id:
        facts.append(("Deployment", n.deployment_id))
    return [(label, clip(value)) for label, value in facts]


def _changelog(notification: Notification) -> list[str]:
    lines = [clip(message.splitlines()[0]) for message in notification.changelog if message.strip()]
    if len(lines) > MAX_CHANGELOG_LINES:
        hidden = len(lines) - MAX_CHANGELOG_LINES
        lines = [*lines[:MAX_CHANGELOG_LINES], f"… and {hidden} more"]
    return lines


def clip(text: str, limit: int = MAX_VALUE_CHARACTERS) -> str:
    """At most `limit` characters, an ellipsis saying when some were cut.

    >>> clip("abcdef", 4)
    'abc…'
    >>> clip("abc", 4)
    'abc'
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_link(url: str | None) -> str | None:
    """`url` fit to be a link target in any chat markup, or None when it must not be a link.

    Only http and https with a host, and without user information (`https://ci.example@evil.example`
    reads as the first host and goes to the second). Characters that end link markup are
    percent-encoded, so the URL cannot close the link and add text or a second link of its own.

    >>> safe_link("https://ci.example/build/42?tab=tests")
    'https://ci.example/build/42?tab=tests'
    >>> safe_link("https://ci.example/b|click here>")
    'https://ci.example/b%7Cclick%20here%3E'
    >>> [safe_link(u) for u in ("javascript:alert(1)", "https://ci.example@evil.example/", "//x", None)]
    [None, None, None, None]
    """
    if not url or len(url) > MAX_URL_CHARACTERS:
        return None
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
    except ValueError:  # permanent: not a URL (e.g. a malformed IPv6 host); show no link
        return None
    if parts.scheme.lower() not in _LINK_SCHEMES or not host or "@" in parts.netloc:
        return None
    return urllib.parse.quote(text, safe=_URL_SAFE_CHARACTERS)


def _defuse_broadcast_words(text: str) -> str:
    """Plain `@channel`, `@here`, `@everyone`, `@all` cannot notify anyone: a word joiner follows the `@`.

    >>> _defuse_broadcast_words("ping @here and @Channel, not @hello") == "ping @\u2060here and @\u2060Channel, not @hello"
    True
    """
    return _BROADCAST_WORD.sub("@\u2060", text)


def render_text(notification: Notification) -> str:
    """The plain-text message (also the generic webhook's `text`); links only if they are safe."""
    n = notification
    lines = [headline(n)]
    lines.append(" · ".join(f"{label}: {value}" for label, value in _facts(n)))
    changes = _changelog(n)
    if changes:
        lines.append("Changes:")
        lines.extend(f"  - {change}" for change in changes)
    build_link = safe_link(n.build_url)
    if build_link:
        lines.append(f"Build: {build_link}")
    environment_link = safe_link(n.url)
    if environment_link and n.status == "live":
        lines.append(f"URL: {environment_link}")
    if n.rollback_command:
        lines.append(f"Roll back: {n.rollback_command}")
    return "\n".join(lines)


def slack_text(text: str) -> str:
    """Any text as Slack mrkdwn that shows exactly that text: `&`, `<` and `>` are entities
    (Slack's only control characters: every mention, channel link and link starts with `<`).

    >>> slack_text("<!channel> <http://evil|click> & @here")
    '&lt;!channel&gt; &lt;http://evil|click&gt; &amp; @\u2060here'
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _defuse_broadcast_words(escaped)


def _slack_link(url: str | None, label: str) -> str | None:
    link = safe_link(url)
    # In `<url|label>` the URL is escaped like text; `safe_link` already encoded `<`, `>` and `|`.
    return f"<{link.replace('&', '&amp;')}|{slack_text(label)}>" if link else None


def render_slack(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook payload: Block Kit blocks, with `text` as the notification fallback."""
    n = notification
    emoji = _STATUS_EMOJI.get(n.status, ":information_source:")
    title = slack_text(headline(n))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{title}*"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{slack_text(value)}"} for label, value in _facts(n)
            ][:10],  # Slack allows at most ten fields per section.
        },
    ]
    changes = _changelog(n)
    if changes:
        bullet_list = "\n".join(f"• {slack_text(change)}" for change in changes)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Changes*\n{bullet_list}"}})
    links = [_slack_link(n.build_url, "Build")]
    if n.status == "live" and n.environment:
        links.append(_slack_link(n.url, f"Open {n.environment}"))
    if n.rollback_command:
        links.append(f"Roll back: `{slack_text(n.rollback_command)}`")
    shown = [link for link in links if link]
    if shown:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(shown)}]})
    # The fallback `text` is mrkdwn too (it is what a phone's notification shows): escaped alike.
    return {"text": title, "blocks": blocks}


def chat_text(text: str) -> str:
    """Any text for a Google Chat message's `text`, unable to form Chat markup.

    Chat text has no escape for its `<users/all>` mentions and `<url|text>` links, so angle
    brackets become the look-alike single angle quotation marks (U+2039, U+203A); in spaces that
    read Markdown, `](` would open a link, so a zero-width space separates the two.

    >>> chat_text("<users/all> <http://evil|click> [docs](http://evil)") == (
    ...     "\u2039users/all\u203a \u2039http://evil|click\u203a [docs]\u200b(http://evil)"
    ... )
    True
    """
    neutral = text.replace("<", "\u2039").replace(">", "\u203a").replace("](", "]\u200b(")
    return _defuse_broadcast_words(neutral)


def chat_html(text: str) -> str:
    """Any text for a Chat card widget, whose text is a subset of HTML: shown as text, never markup.

    >>> chat_html('<a href="http://evil">click</a> & <users/all>')
    '&lt;a href=&quot;http://evil&quot;&gt;click&lt;/a&gt; &amp; &lt;users/all&gt;'
    """
    escaped = (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )
    return _defuse_broadcast_words(escaped)


def render_google_chat(notification: Notification) -> dict[str, Any]:
    """A Google Chat incoming-webhook payload: `text` plus a cardsV2 card with the facts."""
    n = notification
    widgets: list[dict[str, Any]] = [
        {"decoratedText": {"topLabel": label, "text": chat_html(value)}} for label, value in _facts(n)
    ]
    changes = _changelog(n)
    if changes:
        widgets.append(
            {"textParagraph": {"text": "<b>Changes</b><br>" + "<br>".join(map(chat_html, changes))}}
        )
    if n.rollback_command:
        widgets.append(
            {"textParagraph": {"text": f"Roll back: <code>{chat_html(n.rollback_command)}</code>"}}
        )
    buttons = []
    build_link = safe_link(n.build_url)
    if build_link:
        buttons.append({"text": "Build", "onClick": {"openLink": {"url": build_link}}})
    environment_link = safe_link(n.url)
    if environment_link and n.status == "live" and n.environment:
        buttons.append(
            {"text": chat_text(f"Open {n.environment}"), "onClick": {"openLink": {"url": environment_link}}}
        )
    if buttons:
        widgets.append({"buttonList": {"buttons": buttons}})
    title = chat_text(headline(n))
    return {
        "text": title,
        "cardsV2": [
            {
                "cardId": _CARD_ID_UNSAFE.sub("-", f"release-{n.dedupe_key}")[:64],
                "card": {
                    "header": {"title": clip(title, 200), "subtitle": chat_text(n.status)},
                    "sections": [{"widgets": widgets}],
                },
            }
        ],
    }


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
        "requested_by": n.requested_by,
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
