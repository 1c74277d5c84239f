"""The emulator's pure helpers, without a server: filters, references, Procfile commands."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
from compute_emulator.errors import ApiError
from compute_emulator.instances import (
    BootError,
    artifact_path,
    claim_port,
    expected_sha256,
    fetch_and_hash,
    guest_path,
    instance_port_range,
    release_port,
    shell_command,
    watch_children_with_pidfds,
)
from compute_emulator.links import parse_reference
from compute_emulator.listing import apply_filter, page

ITEMS: list[dict[str, Any]] = [
    {"name": "web-1", "status": {"isStable": True}},
    {"name": "web-2"},
    {"name": "worker"},
]


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ('name = "web-*"', ["web-1", "web-2"]),
        ("name != worker", ["web-1", "web-2"]),
        ("name eq web-[0-9]", ["web-1", "web-2"]),
        ("name ne web-.*", ["worker"]),
        ("status.isStable = true", ["web-1"]),
        ('(name = "web-*") (name != web-2)', ["web-1"]),
        ('name = "web-*" AND name != web-1', ["web-2"]),
    ],
)
def test_filters_read_like_compute_engine_list_filters(expression: str, names: list[str]) -> None:
    assert [item["name"] for item in apply_filter(ITEMS, expression)] == names


def test_a_filter_it_cannot_read_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        apply_filter(ITEMS, "name ~~ web")
    assert caught.value.code == 400


def test_pages_chain_through_their_tokens() -> None:
    first, token = page(ITEMS, {"maxResults": "2"})
    assert [i["name"] for i in first] == ["web-1", "web-2"] and token
    second, last = page(ITEMS, {"maxResults": "2", "pageToken": token})
    assert [i["name"] for i in second] == ["worker"] and last is None


@pytest.mark.parametrize(
    "value",
    [
        "https://www.googleapis.com/compute/v1/projects/p/global/instanceTemplates/t",
        "http://127.0.0.1:9/compute/v1/projects/p/global/instanceTemplates/t",
        "projects/p/global/instanceTemplates/t",
        "global/instanceTemplates/t",
        "t",
    ],
)
def test_references_accept_the_forms_compute_engine_accepts(value: str) -> None:
    reference = parse_reference(value, "instanceTemplate", "p", ("instanceTemplates",))
    assert reference.path == "projects/p/global/instanceTemplates/t"


def test_a_reference_to_the_wrong_collection_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_reference("global/healthChecks/hc", "instanceTemplate", "p", ("instanceTemplates",))
    assert caught.value.code == 400


@pytest.mark.parametrize(
    ("procfile_command", "script"),
    [
        ("python3 app.py", "exec python3 app.py"),
        ("gunicorn -b 127.0.0.1:$PORT app:app", "exec gunicorn -b 127.0.0.1:$PORT app:app"),
        ("cd web && python3 app.py", "cd web && python3 app.py"),
        ("FOO=1 python3 app.py", "FOO=1 python3 app.py"),
        ("exec ./run", "exec ./run"),
    ],
)
def test_single_commands_are_execed_and_compound_ones_left_to_the_shell(
    procfile_command: str, script: str
) -> None:
    assert shell_command(procfile_command) == script


def test_an_instance_port_is_never_given_twice_until_released() -> None:
    claimed = [claim_port() for _ in range(200)]
    try:
        assert len(set(claimed)) == len(claimed)
        assert all(port in instance_port_range() for port in claimed)
    finally:
        for port in claimed:
            release_port(port)


def test_an_instance_finds_the_images_programs_before_the_hosts() -> None:
    # A version manager's shim directory first on the host must not decide which `python3` a
    # Procfile runs; the host's directories still follow, for what only they have.
    path = guest_path("/home/dev/.pyenv/shims:/usr/bin:/opt/tools/bin::/bin").split(":")
    assert path[:6] == ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    assert path[6:] == ["/home/dev/.pyenv/shims", "/opt/tools/bin"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("gs://bucket/app.tar.gz", "no Cloud Storage"),
        ("https://example.com/app.tar.gz", "only file:///"),
        ("file:///nowhere/app.tar.gz", "does not exist"),
        (None, "release-artifact"),
    ],
)
def test_artifacts_that_cannot_be_fetched_say_why(url: str | None, words: str) -> None:
    with pytest.raises(BootError, match=words):
        artifact_path(url)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "no 'release-artifact-sha256'"),
        ("", "no 'release-artifact-sha256'"),
        ("A" * 64, "not a SHA-256"),
    ],
)
def test_a_template_without_a_usable_digest_never_runs_its_artifact(value: str | None, words: str) -> None:
    with pytest.raises(BootError, match=words):
        expected_sha256(value)


def test_the_fetched_copy_is_hashed_as_it_is_written(tmp_path: Path) -> None:
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"x" * 3_000_000)
    copy = tmp_path / "copy.tar.gz"
    assert fetch_and_hash(str(source), copy) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert copy.read_bytes() == source.read_bytes()


def test_instance_exits_are_seen_without_a_thread_per_process() -> None:
    async def spawn_and_reap() -> tuple[list[int], int]:
        if not watch_children_with_pidfds(asyncio.get_running_loop()):
            pytest.skip("pidfds unavailable here, or Python 3.12+ uses them by itself")
        threads_before = threading.active_count()
        # Each waits for a line on stdin, so all three are still running when the threads are counted.
        processes = [
            await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", f"read line; exit {code}", stdin=asyncio.subprocess.PIPE
            )
            for code in (0, 3, 7)
        ]
        # Python 3.11's default watcher would be running one thread per process now.
        threads_while_running = threading.active_count() - threads_before
        codes = [
            (await asyncio.wait_for(process.communicate(b"go\n"), 10), process.returncode)[1]
            for process in processes
        ]
        return codes, threads_while_running

    try:
        codes, extra_threads = asyncio.run(spawn_and_reap())
    finally:
        asyncio.set_child_watcher(None)  # later tests get the default watcher back
    assert codes == [0, 3, 7]
    assert extra_threads == 0
