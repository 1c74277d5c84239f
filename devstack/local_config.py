"""The local pipeline file: the template `make up` serves, checked and rendered.

The template is a pipeline file in the local format whose strings may hold placeholders: `${lb_<backend
service>}` for each environment's load-balancer URL on the Compute emulator, `${identity}` for the
local token issuer's identity. They sit inside TOML strings, so the template parses as it is.
"""

from __future__ import annotations

import json
import os
import string
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devstack.processes import ServiceError
from devstack.token_issuer import local_identity
from shared import config as shared_config

DEFAULT_PIPELINE_TEMPLATE = Path(__file__).resolve().parent / "pipeline.local.toml"
PIPELINE_FILE = "pipeline.toml"

PIPELINE_TEMPLATE_ENV_VAR = "DEVSTACK_PIPELINE_TEMPLATE"
"""A pipeline file (local format, placeholders allowed) to serve instead of the sample configuration."""


def backend_placeholder(backend_service: str) -> str:
    """The template placeholder for a backend service's URL: `lb_` + the name, dashes as underscores.

    >>> backend_placeholder("hello-web-staging")
    'lb_hello_web_staging'
    """
    return "lb_" + backend_service.replace("-", "_")


def one_environment_apps_template(
    apps: Iterable[str], environment: str, settings: Mapping[str, Any], comment: str
) -> str:
    """A template of apps with one auto-deployed environment each, of one instance unless
    `settings` say otherwise, on base resources named `<app>-<environment>-base|hc|backend`
    (the stack creates them for every environment) and served at its load balancer's URL.

    >>> print(one_environment_apps_template(["a1"], "stage", {"cool_down_seconds": 2}, "two apps"))
    # two apps
    <BLANKLINE>
    [apps.a1]
    first_version = "1.0.0"
    allow_file_artifacts = true
    artifact_prefixes = ["file:///"]
    <BLANKLINE>
    [apps.a1.environments.stage]
    auto_deploy = true
    instance_count = 1
    cool_down_seconds = 2
    base_instance_template = "a1-stage-base"
    health_check = "a1-stage-hc"
    backend_service = "a1-stage-backend"
    url = "${lb_a1_stage_backend}"
    <BLANKLINE>
    """
    parts = [f"# {comment}"]
    for app in apps:
        backend_service = f"{app}-{environment}-backend"
        environment_settings = {
            "auto_deploy": True,
            "instance_count": 1,
            **settings,
            "base_instance_template": f"{app}-{environment}-base",
            "health_check": f"{app}-{environment}-hc",
            "backend_service": backend_service,
            "url": "${" + backend_placeholder(backend_service) + "}",
        }
        lines = [
            f"[apps.{app}]",
            'first_version = "1.0.0"',
            "allow_file_artifacts = true",
            'artifact_prefixes = ["file:///"]',
            "",
            f"[apps.{app}.environments.{environment}]",
            # JSON's strings, numbers, booleans and lists of them are also TOML's.
            *(f"{key} = {json.dumps(value)}" for key, value in environment_settings.items()),
        ]
        parts.append("\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def template_environments(template: str) -> list[shared_config.EnvironmentConfig]:
    """Every environment the template configures (it parses with its placeholders in place)."""
    return shared_config.parse_pipeline_config(tomllib.loads(template)).all_environments()


def render_pipeline_config(template: str, backend_urls: Mapping[str, str]) -> str:
    """Fill the local pipeline template: load-balancer URLs and the local identity."""
    values: dict[str, Any] = {backend_placeholder(name): url for name, url in backend_urls.items()}
    values["identity"] = local_identity()
    for environment in template_environments(template):
        values.setdefault(backend_placeholder(environment.backend_service), "")
    rendered = string.Template(template).substitute(values)
    shared_config.parse_pipeline_config(tomllib.loads(rendered))  # fail here, not in a function
    return rendered


def pipeline_template_from_environment(environ: Mapping[str, str] = os.environ) -> Path:
    """The template `make up` serves: DEVSTACK_PIPELINE_TEMPLATE if set, else the sample's."""
    chosen = environ.get(PIPELINE_TEMPLATE_ENV_VAR, "").strip()
    return Path(chosen).expanduser().resolve() if chosen else DEFAULT_PIPELINE_TEMPLATE


def check_pipeline_template(path: Path) -> shared_config.PipelineConfig:
    """Parse the template as `start()` will render it; any fault is a ServiceError naming the file.

    Every backend service gets a stand-in URL here, so an unknown placeholder (a misspelt
    `${lb_...}`) is found as surely as bad TOML or a bad setting.
    """
    try:
        template = path.read_text(encoding="utf-8")
    except OSError as exc:
        # Permanent: the file is missing or unreadable; nothing has been started yet.
        raise ServiceError(f"pipeline template {path}: cannot read it: {exc.strerror or exc}") from exc
    stand_ins: dict[str, str] = {}
    try:
        environments = template_environments(template)
        services = {e.backend_service for e in environments}
        services |= {e.preview_backend_service for e in environments if e.preview_backend_service}
        stand_ins = dict.fromkeys(sorted(services), "http://127.0.0.1:1")
        return shared_config.parse_pipeline_config(tomllib.loads(render_pipeline_config(template, stand_ins)))
    except tomllib.TOMLDecodeError as exc:
        # Permanent: the template's own syntax.
        raise ServiceError(f"pipeline template {path}: not valid TOML: {exc}") from exc
    except shared_config.ConfigError as exc:
        # Permanent: a setting the pipeline would refuse.
        raise ServiceError(f"pipeline template {path}: {exc}") from exc
    except (KeyError, ValueError) as exc:
        # Permanent. string.Template: an unknown placeholder (KeyError) or a stray `$` (ValueError).
        known = ", ".join(sorted({backend_placeholder(b) for b in stand_ins} | {"identity"}))
        raise ServiceError(
            f"pipeline template {path}: bad placeholder {exc}; known placeholders: {known} "
            "(write $$ for a literal $)"
        ) from exc
