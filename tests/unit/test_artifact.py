"""Artifacts are deterministic, content-addressed and unpack safely."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from shared.artifact import (
    ArtifactError,
    build_artifact,
    parse_procfile,
    sha256_of_file,
    sha256_of_url,
    unpack_artifact,
)

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


def test_the_same_tree_always_gives_the_same_bytes_and_name(tmp_path: Path) -> None:
    first = build_artifact(HELLO, tmp_path / "a")
    second = build_artifact(HELLO, tmp_path / "b")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()
    assert first.name.startswith("hello-") and first.name.endswith(".tar.gz")


def test_a_changed_file_changes_the_name(tmp_path: Path) -> None:
    source = tmp_path / "hello"
    shutil.copytree(HELLO, source)
    before = build_artifact(source, tmp_path / "out")
    (source / "static" / "app.css").write_text("body { color: red; }\n")
    after = build_artifact(source, tmp_path / "out")
    assert before.name != after.name


def test_unpacking_returns_the_web_command_and_keeps_assets(tmp_path: Path) -> None:
    artifact = build_artifact(HELLO, tmp_path / "out")
    assert unpack_artifact(artifact, tmp_path / "app") == "python3 app.py"
    assert (tmp_path / "app" / "static" / "app.css").is_file()


def test_a_tree_without_a_web_process_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Procfile").write_text("worker: celery\n")
    with pytest.raises(ArtifactError, match="web"):
        build_artifact(tmp_path / "src", tmp_path / "out")
    with pytest.raises(ArtifactError, match="Procfile"):
        build_artifact(tmp_path, tmp_path / "out")


def test_entries_escaping_the_destination_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        payload = b"web: true\n"
        info = tarfile.TarInfo("../Procfile")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(ArtifactError):
        unpack_artifact(evil, tmp_path / "dest")
    assert not (tmp_path / "Procfile").exists()


def test_procfile_parsing_ignores_comments_and_blank_lines() -> None:
    assert parse_procfile("# c\n\nweb: gunicorn app:app --bind :$PORT\n") == {
        "web": "gunicorn app:app --bind :$PORT"
    }


def test_the_digest_of_a_local_artifact_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    artifact = build_artifact(HELLO, tmp_path / "out")
    expected = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert sha256_of_file(artifact) == expected
    assert sha256_of_url(artifact.as_uri()) == expected


@pytest.mark.parametrize(
    "url", ["gs://bucket/app/a.tar.gz", "file://host/a.tar.gz", "file:///nowhere/a.tar.gz"]
)
def test_a_digest_is_computed_only_for_a_readable_local_file(url: str) -> None:
    with pytest.raises(ArtifactError):
        sha256_of_url(url)
