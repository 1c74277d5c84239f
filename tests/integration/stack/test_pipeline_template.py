"""`DEVSTACK_PIPELINE_TEMPLATE=FILE make up`: the stack serves FILE's apps and environments, each with
its base resources; a malformed FILE stops `up` before anything starts, with the file's error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from devstack.base_resources import load_balancer_urls
from devstack.local_config import PIPELINE_TEMPLATE_ENV_VAR, check_pipeline_template
from devstack.processes import ServiceError
from devstack.stack import Stack
from devstack.token_issuer import DEFAULT_IDENTITY
from shared.config import ENV_RELEASECTL_IDENTITY as ENV_IDENTITY
from tests.integration.stack.conftest import ECHO_SOURCE

REPO_ROOT = Path(__file__).resolve().parents[3]

TWO_APPS = """\
[apps.shop]
first_version = "2.0.0"
allow_file_artifacts = true
artifact_prefixes = ["file:///"]

[apps.shop.defaults]
region = "europe-west1"
instance_count = 1
health_path = "/healthz"
cool_down_seconds = 1
provisioning_deadline_seconds = 30
draining_timeout_seconds = 1
rollback_callers = ["${identity}"]

[apps.shop.environments.qa]
auto_deploy = true
base_instance_template = "shop-qa-base"
health_check = "shop-qa-hc"
backend_service = "shop-qa-backend"
url = "${lb_shop_qa_backend}"

[apps.billing]
allow_file_artifacts = true
artifact_prefixes = ["file:///"]

[apps.billing.defaults]
region = "us-central1"
instance_count = 1
health_path = "/health"

[apps.billing.environments.staging]
auto_deploy = true
base_instance_template = "billing-staging-base"
health_check = "billing-staging-hc"
backend_service = "billing-staging-backend"
url = "${lb_billing_staging_backend}"
"""


def _devstack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[apps.shop\n", "not valid TOML"),
        (TWO_APPS.replace("cool_down_seconds = 1", "cool_down_seconds = -1"), "cool_down_seconds"),
        (TWO_APPS.replace("${lb_shop_qa_backend}", "${lb_shop_qa}"), "bad placeholder 'lb_shop_qa'"),
        (TWO_APPS.replace("[apps.billing.defaults]", "[apps.billing.defults]"), "defults"),
    ],
)
def test_a_malformed_template_is_refused_with_the_files_error(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ServiceError, match=r"pipeline template .*pipeline\.toml") as refused:
        check_pipeline_template(path)
    assert error in str(refused.value)


def test_a_missing_template_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="cannot read it"):
        check_pipeline_template(tmp_path / "absent.toml")


def test_make_up_with_a_malformed_template_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(TWO_APPS.replace('region = "us-central1"', "region = 7"), encoding="utf-8")
    state_dir = tmp_path / "stack"
    completed = _devstack("up", "--state-dir", str(state_dir), env={PIPELINE_TEMPLATE_ENV_VAR: str(path)})
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert str(path) in completed.stderr and "region" in completed.stderr
    assert not (state_dir / "stack.json").exists() and not (state_dir / "env").exists()


def test_make_up_serves_the_templates_apps_with_their_base_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_IDENTITY, raising=False)
    path = tmp_path / "two-apps.toml"
    path.write_text(TWO_APPS, encoding="utf-8")
    state_dir = tmp_path / "stack"
    env = {PIPELINE_TEMPLATE_ENV_VAR: str(path)}
    completed = _devstack(
        "up", "--state-dir", str(state_dir), "--functions-source", str(ECHO_SOURCE), env=env
    )
    try:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        stack = Stack(state_dir).load()
        assert stack.config is not None
        assert {e.key for e in stack.config.all_environments()} == {"shop@qa", "billing@staging"}
        compute_host = stack.env["COMPUTE_EMULATOR_HOST"]
        urls = load_balancer_urls(compute_host, stack.project)
        shop, billing = stack.config.environment("shop", "qa"), stack.config.environment("billing", "staging")
        assert shop is not None and billing is not None
        assert shop.url == urls["shop-qa-backend"] and billing.url == urls["billing-staging-backend"]
        assert shop.rollback_callers == (DEFAULT_IDENTITY,)
        assert "shop@qa" in completed.stdout and "billing@staging" in completed.stdout

        options = {"api_endpoint": f"http://{compute_host}"}
        credentials = AnonymousCredentials()
        templates = compute_v1.InstanceTemplatesClient(credentials=credentials, client_options=options)
        checks = compute_v1.HealthChecksClient(credentials=credentials, client_options=options)
        assert {t.name for t in templates.list(project=stack.project)} >= {
            "shop-qa-base",
            "billing-staging-base",
        }
        billing_check = checks.get(project=stack.project, health_check="billing-staging-hc")
        assert billing_check.http_health_check.request_path == "/health"
    finally:
        _devstack("down", "--state-dir", str(state_dir), env={})
    assert not (state_dir / "stack.json").exists()
