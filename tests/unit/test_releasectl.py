"""releasectl without any service: usage errors, message building and validation, packaging."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from releasectl.cli import run
from releasectl.remote import BadInput, build_message

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
REPO = Path(__file__).resolve().parents[2]


def releasectl(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(list(argv), stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["deploy"],
        ["status", "--app", "hello"],
        ["status", "--app", "Hello", "--env", "staging"],
        ["releases", "--app", "hello", "--env", "staging", "--limit", "0"],
        ["watch", "hello-staging-abc", "--timeout", "soon"],
        ["publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
         "--artifact", "file:///a.tar.gz", "--bump", "huge"],
        ["publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
         "--artifact", "gs://hello-artifacts/hello/a.tar.gz"],
        ["publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
         "--artifact", "file:///nowhere/a.tar.gz"],
        ["publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
         "--artifact", "gs://hello-artifacts/hello/a.tar.gz", "--artifact-sha256", DIGEST.upper()],
        ["publish", "--app", "hello", "--env", "staging", "--commit", COMMIT, "--build-id", "1",
         "--artifact", "gs://hello-artifacts/hello/a.tar.gz", "--artifact-sha256", DIGEST,
         "--committed-at", "2026-01-05 10:00"],
    ],
)  # fmt: skip
def test_bad_usage_exits_2_with_one_line_on_stderr(argv: list[str]) -> None:
    code, stdout, stderr = releasectl(*argv)

    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("releasectl: ")


def test_the_message_is_the_contract_shape_with_mirrored_attributes() -> None:
    data, attributes = build_message(
        app="hello",
        environment="staging",
        commit=COMMIT,
        build_id="ci-7",
        artifact="gs://hello-artifacts/hello-abc.tar.gz",
        artifact_sha256=DIGEST,
        committed_at="2026-01-05T10:00:09+01:00",
        commit_messages=["feat: x"],
        bump="minor",
        build_url="https://circleci.example.com/7",
        triggered_by="ada",
    )

    assert attributes == {"app": "hello", "environment": "staging"}
    assert json.loads(data) == {
        "app": "hello",
        "environment": "staging",
        "commit": COMMIT,
        "build_id": "ci-7",
        "artifact": "gs://hello-artifacts/hello-abc.tar.gz",
        "artifact_sha256": DIGEST,
        "committed_at": "2026-01-05T10:00:09+01:00",
        "commit_messages": ["feat: x"],
        "bump": "minor",
        "build_url": "https://circleci.example.com/7",
        "triggered_by": "ada",
    }


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("commit", "abc", "commit"),
        ("build_id", "x" * 129, "build_id"),
        ("artifact", "https://example.com/a.tar.gz", "artifact"),
        ("artifact", "file:///a.zip", "artifact"),
        ("artifact_sha256", "abc", "artifact_sha256"),
        ("committed_at", "2026-01-05", "committed_at"),
    ],
)
def test_a_message_breaking_a_rule_is_bad_input(field: str, value: str, reason: str) -> None:
    fields = {
        "app": "hello",
        "environment": "staging",
        "commit": COMMIT,
        "build_id": "1",
        "artifact": "file:///a.tar.gz",
        "artifact_sha256": DIGEST,
    }
    fields[field] = value
    with pytest.raises(BadInput, match=reason):
        build_message(**fields)


def test_package_prints_the_artifact_path_and_json_gives_its_uri_and_digest(tmp_path: Path) -> None:
    code, stdout, _ = releasectl(
        "package", str(REPO / "examples" / "hello"), "--out", str(tmp_path), "--json"
    )

    assert code == 0
    document = json.loads(stdout)
    assert Path(document["path"]).is_file()
    assert document["uri"] == Path(document["path"]).as_uri()
    assert document["uri"].startswith("file:///")
    assert document["sha256"] == hashlib.sha256(Path(document["path"]).read_bytes()).hexdigest()


def test_packaging_a_tree_without_a_procfile_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    code, stdout, stderr = releasectl("package", str(tmp_path / "src"), "--out", str(tmp_path / "out"))

    assert code == 2
    assert stdout == ""
    assert "Procfile" in stderr
