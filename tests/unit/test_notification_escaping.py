"""Chat renderings with hostile values: no field can mention a whole channel or disguise a link.

Commit messages, the build URL, who triggered a build and error details come from publishers and
outside systems; each test puts markup in them and looks at every string of the chat payload.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest

from shared.notifications.model import Notification
from shared.notifications.render import render_google_chat, render_slack, safe_link

HOSTILE = (
    "<!channel> <!here> <!everyone> <@U123> <#C999> <!subteam^S1> "
    "<http://evil.example|click here> <users/all> <users/123> "
    '<a href="http://evil.example">docs</a> [docs](http://evil.example) @channel @here '
    "&lt;!channel&gt;"
)
BUILD_URL = "https://circleci.example.com/build/42"

BASE = Notification(
    kind="deployment",
    dedupe_key="hello-staging-abc:failed",
    status="failed",
    app="hello",
    environment="staging",
    version="1.1.0",
    deployment_id="hello-staging-abc",
    detail="health check failed",
    commit="0123456789abcdef0123456789abcdef01234567",
    changelog=("feat: greet",),
    duration_seconds=1.0,
    build_url=BUILD_URL,
    triggered_by="circleci",
    rollback_of=None,
    url="http://127.0.0.1:8080",
)
TEXT_FIELDS = (
    "detail",
    "version",
    "triggered_by",
    "rollback_of",
    "deployment_id",
    "commit",
    "app",
    "environment",
)


def hostile_notifications() -> Iterator[tuple[str, Notification]]:
    for name in TEXT_FIELDS:
        fields: dict[str, Any] = {name: HOSTILE}
        yield name, dataclasses.replace(BASE, **fields)
    yield "changelog", dataclasses.replace(BASE, changelog=(HOSTILE, f"fix: {HOSTILE}"))
    yield "status", dataclasses.replace(BASE, status=HOSTILE)
    yield (
        "live with everything",
        dataclasses.replace(BASE, status="live", detail=HOSTILE, triggered_by=HOSTILE, changelog=(HOSTILE,)),
    )
    for kind in ("rejected", "dead_letter"):
        yield kind, dataclasses.replace(BASE, kind=kind, status=kind, detail=HOSTILE, app=None)


def strings(payload: Any) -> Iterator[str]:
    if isinstance(payload, str):
        yield payload
    elif isinstance(payload, dict):
        for value in payload.values():
            yield from strings(value)
    elif isinstance(payload, list):
        for value in payload:
            yield from strings(value)


CASES = list(hostile_notifications())
IDS = [name for name, _ in CASES]
UNBROKEN_BROADCAST = re.compile(r"@(channel|here|everyone|all)\b", re.IGNORECASE)


@pytest.mark.parametrize(("field", "notification"), CASES, ids=IDS)
def test_slack_shows_hostile_values_as_text_and_links_only_the_build(
    field: str, notification: Notification
) -> None:
    payload = render_slack(notification)
    for text in strings(payload):
        # Every Slack mention, channel link and link is `<...>`: the only ones left must be ours.
        for markup in re.findall(r"<([^>]*)>", text):
            assert markup.startswith((f"{BUILD_URL}|", "http://127.0.0.1:8080|")), (field, markup)
        assert not UNBROKEN_BROADCAST.search(text), (field, text)
    if field == "detail":
        assert "&lt;!channel&gt;" in payload["text"]  # shown to the reader, as text


@pytest.mark.parametrize(("field", "notification"), CASES, ids=IDS)
def test_google_chat_shows_hostile_values_as_text_and_links_only_the_build(
    field: str, notification: Notification
) -> None:
    payload = render_google_chat(notification)
    card = payload["cardsV2"][0]["card"]
    plain = [payload["text"], card["header"]["title"], card["header"]["subtitle"]]
    for text in plain:
        # Chat's message text turns `<users/all>` into a mention and `<url|text>` into a link.
        assert "<" not in text and ">" not in text, (field, text)
        assert "](" not in text, (field, text)
        assert not UNBROKEN_BROADCAST.search(text), (field, text)
    for widget in card["sections"][0]["widgets"]:
        for text in strings({key: value for key, value in widget.items() if key != "buttonList"}):
            # Card text is HTML: only the formatting tags the renderer writes itself may remain.
            tags = re.findall(r"<[^>]*>", text)
            assert set(tags) <= {"<b>", "</b>", "<br>", "<code>", "</code>"}, (field, tags)
            assert not UNBROKEN_BROADCAST.search(text), (field, text)
        for button in widget.get("buttonList", {}).get("buttons", []):
            assert button["onClick"]["openLink"]["url"] in (BUILD_URL, "http://127.0.0.1:8080")
            assert "<" not in button["text"]


@pytest.mark.parametrize(
    "build_url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://circleci.example.com@evil.example/build/42",
        "ftp://circleci.example.com/build/42",
        "//evil.example/build",
        "https://",
        "http://[::1",
    ],
)
def test_a_build_url_that_is_not_a_plain_web_link_is_never_linked(build_url: str) -> None:
    notification = dataclasses.replace(BASE, build_url=build_url)
    slack = render_slack(notification)
    chat = render_google_chat(notification)
    assert not any("Build>" in text for text in strings(slack))
    assert not any(text == "Build" for text in strings(chat))
    assert not any("evil.example" in text or "javascript:" in text for text in strings(slack))


def test_a_build_url_cannot_close_its_link_and_open_another() -> None:
    notification = dataclasses.replace(
        BASE, build_url="https://ci.example/b|<!channel>> <http://evil.example|x"
    )
    context = render_slack(notification)["blocks"][-1]["elements"][0]["text"]
    (link,) = re.findall(r"<([^>]*)>", context)
    url, label = link.split("|")
    assert label == "Build"
    assert url == "https://ci.example/b%7C%3C!channel%3E%3E%20%3Chttp://evil.example%7Cx"
    chat = render_google_chat(notification)
    buttons = next(w for w in chat["cardsV2"][0]["card"]["sections"][0]["widgets"] if "buttonList" in w)
    assert buttons["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"] == url


def test_a_huge_value_is_clipped_so_the_chat_service_accepts_the_message() -> None:
    notification = dataclasses.replace(BASE, detail="x" * 50_000, changelog=("y" * 50_000,))
    for text in strings(render_slack(notification)):
        assert len(text) <= 3000
    for text in strings(render_google_chat(notification)):
        assert len(text) <= 3000


def test_safe_links_keep_ordinary_urls_unchanged() -> None:
    assert safe_link(BUILD_URL) == BUILD_URL
    assert safe_link("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    assert safe_link("https://ci.example/job?a=1&b=2#x") == "https://ci.example/job?a=1&b=2#x"


def test_the_escaping_helpers_docstring_examples_hold() -> None:
    import doctest

    import shared.notifications.render

    assert doctest.testmod(shared.notifications.render).failed == 0
