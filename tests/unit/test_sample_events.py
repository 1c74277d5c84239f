"""The sample events in tests/events are what the documentation shows; keep them honest."""

import json
from pathlib import Path

import pytest

from shared.domain.build_event import InvalidBuildEvent, parse_build_succeeded

EVENTS = Path(__file__).resolve().parents[1] / "events"


def load(name: str) -> tuple[bytes, dict[str, str]]:
    data = (EVENTS / name).read_bytes()
    body = json.loads(data)
    return data, {"app": body["app"], "environment": body["environment"]}


@pytest.mark.parametrize(
    "name", ["build_succeeded.json", "build_succeeded_minimal.json", "build_succeeded_rollback.json"]
)
def test_the_valid_samples_parse(name: str) -> None:
    event = parse_build_succeeded(*load(name))
    assert event.app == "hello"


def test_the_rollback_sample_carries_its_internal_fields() -> None:
    event = parse_build_succeeded(*load("build_succeeded_rollback.json"))
    assert event.rollback_of == "hello-staging-a0ab70131e5c" and event.reason


def test_the_invalid_sample_is_rejected_for_its_commit() -> None:
    with pytest.raises(InvalidBuildEvent, match="commit"):
        parse_build_succeeded(*load("build_succeeded_invalid_commit.json"))


def test_the_sample_without_a_digest_is_rejected_for_it() -> None:
    with pytest.raises(InvalidBuildEvent, match="artifact_sha256: required"):
        parse_build_succeeded(*load("build_succeeded_without_digest.json"))


def test_the_full_sample_carries_the_digest_and_the_commit_time() -> None:
    event = parse_build_succeeded(*load("build_succeeded.json"))
    assert len(event.artifact_sha256) == 64
    assert event.committed_at is not None and event.committed_at.utcoffset() is not None
