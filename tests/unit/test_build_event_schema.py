import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.build_event import (
    MAX_MESSAGE_BYTES,
    BuildSucceeded,
    InvalidBuildEvent,
    parse_build_succeeded,
)
from shared.domain.versioning import Bump

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app": "hello",
        "environment": "staging",
        "commit": COMMIT,
        "build_id": "circle-42",
        "artifact": "gs://builds-bucket/hello/hello-abc.tar.gz",
        "artifact_sha256": DIGEST,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def parse(payload: Any, attributes: dict[str, str] | None = None) -> BuildSucceeded:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_build_succeeded(
        data, attributes if attributes is not None else {"app": "hello", "environment": "staging"}
    )


def reason_for(payload: Any, attributes: dict[str, str] | None = None) -> str:
    with pytest.raises(InvalidBuildEvent) as caught:
        parse(payload, attributes)
    return caught.value.reason


def test_a_minimal_valid_event_parses() -> None:
    event = parse(body())
    assert (event.app, event.environment, event.commit, event.build_id) == (
        "hello",
        "staging",
        COMMIT,
        "circle-42",
    )
    assert event.commit_messages == () and event.bump is None
    assert event.artifact_sha256 == DIGEST and event.committed_at is None


def test_optional_fields_are_kept() -> None:
    event = parse(
        body(
            branch="develop",
            commit_messages=["feat: x", "fix: y"],
            bump="minor",
            build_url="https://ci.example.com/42",
            triggered_by="dev@example.com",
        )
    )
    assert event.branch == "develop"
    assert event.commit_messages == ("feat: x", "fix: y")
    assert event.bump is Bump.MINOR
    assert event.build_url == "https://ci.example.com/42"
    assert event.triggered_by == "dev@example.com"


def test_a_local_file_artifact_is_accepted() -> None:
    assert parse(body(artifact="file:///tmp/artifacts/hello-0a1b.tar.gz")).artifact.startswith("file:///")


def test_unknown_fields_are_kept_but_ignored_and_survive_a_round_trip() -> None:
    event = parse(body(pipeline_number=7, labels={"team": "web"}))
    assert event.extra == {"pipeline_number": 7, "labels": {"team": "web"}}
    data, attributes = event.to_message()
    assert parse_build_succeeded(data, attributes) == event


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'"a string"', "not an object"),
        (body(app=None), "app: required"),
        (body(app="Hello"), "app:"),
        (body(app="a" * 31), "app:"),
        (body(environment="1st"), "environment:"),
        (body(commit="abc"), "commit:"),
        (body(commit=COMMIT.upper()), "commit:"),
        (body(commit=None), "commit: required"),
        (body(build_id=""), "build_id:"),
        (body(build_id="x" * 129), "build_id:"),
        (body(build_id=42), "build_id: must be a string"),
        (body(artifact="https://example.com/a.tar.gz"), "artifact:"),
        (body(artifact="gs://bucket/a.zip"), "artifact:"),
        (body(artifact=None), "artifact: required"),
        (body(bump="huge"), "bump:"),
        (body(commit_messages="feat: x"), "commit_messages:"),
        (body(commit_messages=["ok", 3]), "commit_messages:"),
        (body(branch=["develop"]), "branch: must be a string"),
        (body(artifact_sha256=None), "artifact_sha256: required"),
        (body(artifact_sha256=DIGEST.upper()), "artifact_sha256:"),
        (body(artifact_sha256=DIGEST[:63]), "artifact_sha256:"),
        (body(artifact_sha256=DIGEST + "0"), "artifact_sha256:"),
        (body(artifact_sha256=64), "artifact_sha256: must be a string"),
        (body(committed_at="2026-01-05T10:00:09"), "committed_at:"),
        (body(committed_at="2026-02-30T10:00:09Z"), "committed_at:"),
        (body(committed_at="yesterday"), "committed_at:"),
        (body(committed_at=1767607209), "committed_at: must be a string"),
    ],
)
def test_each_contract_rule_rejects_with_a_clear_reason(payload: Any, expected: str) -> None:
    assert expected in reason_for(payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app", "hello\n"),
        ("environment", "staging\n"),
        ("commit", COMMIT + "\n"),
        ("artifact", "gs://builds-bucket/hello/hello-abc.tar.gz\n"),
        ("artifact_sha256", DIGEST + "\n"),
        ("rollback_of", "hello-staging-0123456789ab\n"),
        ("committed_at", "2026-01-05T10:00:09Z\n"),
    ],
)
def test_every_pattern_matches_the_whole_string_so_a_trailing_newline_is_rejected(
    field: str, value: str
) -> None:
    # `re.match` with a pattern ending in `$` accepts "value\n": `$` also matches before a final newline.
    assert f"{field}:" in reason_for(body(**{field: value}))


def test_committed_at_is_parsed_to_an_aware_time_and_survives_a_round_trip() -> None:
    event = parse(body(committed_at="2026-01-05T10:00:09.123456789+01:00"))
    assert event.committed_at is not None
    assert event.committed_at.utcoffset() == timedelta(hours=1)
    assert event.committed_at.astimezone(UTC) == datetime(2026, 1, 5, 9, 0, 9, 123456, tzinfo=UTC)
    data, attributes = event.to_message()
    assert parse_build_succeeded(data, attributes).committed_at == event.committed_at


def test_a_message_over_64_kib_is_rejected_before_parsing() -> None:
    big = json.dumps(body(padding="x" * MAX_MESSAGE_BYTES)).encode()
    assert "bytes" in reason_for(big)


def test_attributes_must_mirror_the_body() -> None:
    assert "does not match" in reason_for(body(), {"app": "hello", "environment": "production"})
    assert "missing" in reason_for(body(), {"app": "hello"})


def test_a_rollback_republish_keeps_the_release_and_marks_itself() -> None:
    event = parse(body(bump="major", commit_messages=["feat!: x"]))
    rollback = event.as_rollback(
        build_id="rollback-1",
        rollback_of="hello-staging-0123456789ab",
        triggered_by="lead@example.com",
        reason="bad",
    )
    assert (rollback.commit, rollback.artifact, rollback.artifact_sha256, rollback.commit_messages) == (
        event.commit,
        event.artifact,
        event.artifact_sha256,
        event.commit_messages,
    )
    assert rollback.bump is None
    data, attributes = rollback.to_message()
    again = parse_build_succeeded(data, attributes)
    assert again.rollback_of == "hello-staging-0123456789ab" and again.reason == "bad"
    assert again.triggered_by == "lead@example.com" and again.build_id == "rollback-1"
