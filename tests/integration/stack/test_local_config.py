"""The local pipeline file: rendered from the template with load-balancer URLs and the local identity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack.local_config import DEFAULT_PIPELINE_TEMPLATE, render_pipeline_config
from devstack.processes import ServiceError
from devstack.services import PUBSUB, function_service
from devstack.stack import ports_from_environment
from devstack.stack_state import read_env_file, write_env_file
from devstack.token_issuer import DEFAULT_IDENTITY
from shared.config import ENV_RELEASECTL_IDENTITY as ENV_IDENTITY
from shared.config import load_pipeline_config
from shared.topology import all_entry_points

URLS = {
    "hello-staging-backend": "http://127.0.0.1:4001",
    "hello-production-backend": "http://127.0.0.1:4002",
    "hello-staging-preview": "http://127.0.0.1:4003",
    "hello-production-preview": "http://127.0.0.1:4004",
}


def test_the_rendered_file_meets_the_local_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_IDENTITY, raising=False)
    path = tmp_path / "pipeline.toml"
    path.write_text(render_pipeline_config(DEFAULT_PIPELINE_TEMPLATE.read_text(encoding="utf-8"), URLS))
    config = load_pipeline_config(path)
    assert set(config.apps) == {"hello"}
    assert set(config.apps["hello"].environments) == {"staging", "production"}
    for environment in config.all_environments():
        assert environment.cool_down_seconds <= 5
        assert environment.provisioning_deadline_seconds <= 60
        assert environment.instance_count == 2
        assert environment.url == URLS[environment.backend_service]
        assert DEFAULT_IDENTITY in environment.rollback_callers
        assert [c.kind for c in environment.channels] == ["webhook"]
    assert [(c.kind, c.url_env) for c in config.operations_channels] == [("webhook", "LOCAL_WEBHOOK_URL")]
    staging, production = config.environment("hello", "staging"), config.environment("hello", "production")
    assert staging is not None and staging.auto_deploy
    assert production is not None and not production.auto_deploy
    assert production.approvers == (DEFAULT_IDENTITY, "approver@hello.local")
    assert production.promotion_callers == production.approvers


def test_the_local_identity_may_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_IDENTITY, "oncall@hello.local")
    path = tmp_path / "pipeline.toml"
    path.write_text(render_pipeline_config(DEFAULT_PIPELINE_TEMPLATE.read_text(encoding="utf-8"), URLS))
    for environment in load_pipeline_config(path).all_environments():
        assert environment.rollback_callers == ("oncall@hello.local",)


def test_the_env_file_round_trips_values_that_need_quoting(tmp_path: Path) -> None:
    env = {"PLAIN": "127.0.0.1:8085", "SPACED": "/a path/with 'quotes'", "EMPTY": ""}
    path = tmp_path / "env"
    write_env_file(path, env)
    assert read_env_file(path) == env
    completed = subprocess.run(
        ["bash", "-c", f'source "{path}" && printf "%s|%s|%s" "$PLAIN" "$SPACED" "$EMPTY"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert completed.stdout == "|".join(env.values())


def test_ports_are_fixed_only_by_the_devstack_variables() -> None:
    fixed = ports_from_environment({"DEVSTACK_PUBSUB_PORT": "8085", "DEVSTACK_FUNCTIONS_PORT": "9100"})
    assert fixed[PUBSUB] == 8085
    entry_points = all_entry_points()
    assert [fixed[function_service(e)] for e in entry_points] == list(range(9100, 9100 + len(entry_points)))
    assert ports_from_environment({}) == {}
    with pytest.raises(ServiceError, match="DEVSTACK_PUBSUB_PORT"):
        ports_from_environment({"DEVSTACK_PUBSUB_PORT": "eighty"})
