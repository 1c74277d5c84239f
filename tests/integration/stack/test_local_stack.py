"""The `local_stack` fixture: main.py's functions on the full stack, as the end-to-end tests use it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from devstack.services import FIRESTORE, PUBSUB, log_name
from devstack.stack import Stack, function_service
from devstack.token_issuer import local_identity, mint_token
from shared.topology import all_entry_points
from tests.conftest import assert_jvm_took_the_emulator_options


def _post_rollback(stack: Stack, body: dict[str, str], token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        stack.env["RELEASECTL_ROLLBACK_URL"], data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_fixture_offers_env_config_and_urls(local_stack: Stack) -> None:
    assert local_stack.config is not None
    for entry_point in all_entry_points():
        assert local_stack.service(function_service(entry_point)).alive
    for environment in local_stack.config.all_environments():
        assert local_stack.url(environment.app, environment.name) == environment.url
        assert environment.url.startswith("http://127.0.0.1:")
        assert local_identity() in environment.rollback_callers
    assert local_stack.env["PIPELINE_CONFIG"] == str(local_stack.state_dir / "pipeline.toml")


def test_each_function_writes_a_log_of_its_own(local_stack: Stack) -> None:
    for entry_point in all_entry_points():
        name = function_service(entry_point)
        log = local_stack.logs_dir / log_name(name)
        assert Path(local_stack.service(name).log) == log
        text = log.read_text(encoding="utf-8")
        assert f"{name} started" in text
        others = [function_service(other) for other in all_entry_points() if other != entry_point]
        assert not [other for other in others if f"{other} started" in text], f"{log} is shared"


def test_the_rollback_function_accepts_the_local_issuers_tokens_only(local_stack: Stack) -> None:
    issuer_url = local_stack.env["RELEASECTL_TOKEN_URL"].removesuffix("/token")
    body = {"app": "no-such-app", "environment": "staging"}
    assert _post_rollback(local_stack, body, None) == 401
    assert _post_rollback(local_stack, body, "not-a-token") == 401
    token = mint_token(issuer_url, local_stack.env["ROLLBACK_AUDIENCE"])
    # Past authentication, the unknown app is what the function objects to (CONTRACT §4).
    assert _post_rollback(local_stack, body, token) == 404


def test_the_stacks_java_emulators_run_with_the_quick_compiler_and_serial_collector(
    local_stack: Stack,
) -> None:
    for name in (PUBSUB, FIRESTORE):
        assert_jvm_took_the_emulator_options(local_stack.logs_dir / log_name(name))
