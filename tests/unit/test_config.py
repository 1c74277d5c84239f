"""The pipeline file is validated at cold start and errors name the offending key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shared import topology
from shared.config import (
    DEFAULT_CONFIG_PATH,
    MAX_BAKE_SECONDS,
    ConfigError,
    load_pipeline_config,
    parse_pipeline_config,
)

VALID: dict[str, Any] = {
    "apps": {
        "hello": {
            "first_version": "1.0.0",
            "artifact_prefixes": ["gs://hello-artifacts/hello/"],
            "defaults": {"region": "europe-west1"},
            "environments": {
                "staging": {
                    "base_instance_template": "hello-staging-base",
                    "health_check": "hello-staging-hc",
                    "backend_service": "hello-staging-backend",
                    "cool_down_seconds": 5,
                    "channels": [{"kind": "slack", "url_env": "SLACK_URL"}],
                    "rollback_callers": ["*@example.com"],
                }
            },
        }
    }
}


def with_change(path: list[str], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def test_a_valid_file_gives_typed_environments_with_defaults_applied() -> None:
    config = parse_pipeline_config(VALID)
    staging = config.environment("hello", "staging")
    assert staging is not None
    assert staging.region == "europe-west1"
    assert staging.cool_down_seconds == 5
    assert staging.instance_count == 2
    assert staging.retain_previous_seconds == 3600
    assert staging.health_path == "/healthz"
    assert staging.channels[0].kind == "slack"
    assert config.environment("hello", "nowhere") is None
    assert config.environment("nobody", "staging") is None


@pytest.mark.parametrize(
    ("path", "value", "named_key"),
    [
        (["apps", "hello", "environments", "staging", "cool_down_seconds"], -1, "cool_down_seconds"),
        (["apps", "hello", "environments", "staging", "retain_previous_seconds"], -1, "retain_previous"),
        (["apps", "hello", "environments", "staging", "retain_previous_seconds"], 1.5, "retain_previous"),
        (["apps", "hello", "environments", "staging", "cool_down_seconds"], "5", "cool_down_seconds"),
        (["apps", "hello", "environments", "staging", "instance_count"], True, "instance_count"),
        (["apps", "hello", "environments", "staging", "backend_service"], "Bad_Name", "backend_service"),
        (["apps", "hello", "environments", "staging", "health_path"], "healthz", "health_path"),
        (["apps", "hello", "environments", "staging", "colour"], "blue", "colour"),
        (["apps", "hello", "environments", "staging", "channels"], [{"kind": "pager"}], "channels[0].kind"),
        (["apps", "hello", "first_version"], "one", "first_version"),
        (["apps", "hello", "defaults", "regoin"], "x", "defaults.regoin"),
        (["apps", "hello", "artifact_prefixes"], "gs://hello-artifacts/hello/", "artifact_prefixes"),
        (["apps", "hello", "artifact_prefixes"], ["gs://hello-artifacts/hello"], r"artifact_prefixes[0]"),
        (["apps", "hello", "artifact_prefixes"], ["https://example.com/hello/"], "artifact_prefixes[0]"),
        (["apps", "hello", "artifact_prefixes"], ["gs://hello-artifacts/hello/../"], "artifact_prefixes[0]"),
        (["apps", "hello", "artifact_prefixes"], ["file:///tmp/"], "allow_file_artifacts"),
        (["apps", "hello", "allow_file_artifacts"], "yes", "allow_file_artifacts"),
    ],
)
def test_an_invalid_value_is_refused_naming_its_key(path: list[str], value: Any, named_key: str) -> None:
    with pytest.raises(
        ConfigError, match=r"apps\.hello\..*" + named_key.replace("[", r"\[").replace("]", r"\]")
    ):
        parse_pipeline_config(with_change(path, value))


def test_a_missing_required_key_is_named() -> None:
    document = copy.deepcopy(VALID)
    del document["apps"]["hello"]["environments"]["staging"]["health_check"]
    with pytest.raises(ConfigError, match=r"staging\.health_check: required"):
        parse_pipeline_config(document)


def test_an_app_without_artifact_prefixes_loads_with_none_so_it_accepts_no_build() -> None:
    document = copy.deepcopy(VALID)
    del document["apps"]["hello"]["artifact_prefixes"]
    assert parse_pipeline_config(document).apps["hello"].artifact_prefixes == ()


def test_file_artifact_prefixes_need_the_explicit_local_switch() -> None:
    document = with_change(["apps", "hello", "artifact_prefixes"], ["file:///"])
    document["apps"]["hello"]["allow_file_artifacts"] = True
    app = parse_pipeline_config(document).apps["hello"]
    assert app.artifact_prefixes == ("file:///",) and app.allow_file_artifacts


def test_the_google_cloud_pipeline_file_allows_only_its_bucket() -> None:
    # The bundled file by path: $PIPELINE_CONFIG may point at a local stack's file in this process.
    for app in load_pipeline_config(DEFAULT_CONFIG_PATH).apps.values():
        assert not app.allow_file_artifacts
        assert app.artifact_prefixes and all(p.startswith("gs://") for p in app.artifact_prefixes)


def test_bad_app_names_are_refused() -> None:
    document = {"apps": {"Hello": VALID["apps"]["hello"]}}
    with pytest.raises(ConfigError, match=r"apps\.Hello"):
        parse_pipeline_config(document)


def test_the_bundled_file_loads(tmp_path: Path) -> None:
    config = load_pipeline_config()
    assert {env.name for env in config.all_environments()} == {"staging", "production"}


def test_a_missing_or_malformed_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_pipeline_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[apps\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pipeline_config(broken)


def test_the_operations_section_names_channels_in_the_environments_format() -> None:
    document = {**VALID, "operations": {"channels": [{"kind": "webhook", "url_env": "OPS_URL"}]}}
    config = parse_pipeline_config(document)
    assert [(c.kind, c.url_env) for c in config.operations_channels] == [("webhook", "OPS_URL")]
    assert [c.url_env for c in config.all_channels()] == ["OPS_URL", "SLACK_URL"]
    assert parse_pipeline_config(VALID).operations_channels == ()


@pytest.mark.parametrize(
    ("operations", "named_key"),
    [
        ({"channels": [{"kind": "pager", "url_env": "X"}]}, r"operations\.channels\[0\]\.kind"),
        ({"channels": [{"kind": "slack"}]}, r"operations\.channels\[0\]\.url_env"),
        ({"channels": "slack"}, r"operations\.channels"),
        ({"chanels": []}, r"operations\.chanels: unknown key"),
        ([], r"operations"),
    ],
)
def test_a_bad_operations_section_is_refused_naming_its_key(operations: Any, named_key: str) -> None:
    with pytest.raises(ConfigError, match=named_key):
        parse_pipeline_config({**VALID, "operations": operations})


def test_a_deadline_longer_than_the_cool_down_poll_can_be_retried_is_refused() -> None:
    deadline = ["apps", "hello", "environments", "staging", "provisioning_deadline_seconds"]
    last = topology.retries_last_seconds(topology.trigger_of(topology.COOL_DOWN_COMPLETE))
    assert parse_pipeline_config(with_change(deadline, last)).environment("hello", "staging") is not None
    with pytest.raises(ConfigError, match=rf"staging\.provisioning_deadline_seconds: at most {last} "):
        parse_pipeline_config(with_change(deadline, last + 1))


def test_a_bake_window_is_never_longer_than_its_poll_can_be_retried() -> None:
    assert topology.retries_last_seconds(topology.trigger_of(topology.BAKE_CHECK)) >= MAX_BAKE_SECONDS


def test_a_cool_down_that_does_not_fit_inside_the_deadline_is_refused() -> None:
    staging = ["apps", "hello", "environments", "staging"]
    fitting = with_change([*staging, "provisioning_deadline_seconds"], 60)
    assert parse_pipeline_config(fitting).environment("hello", "staging") is not None  # cool-down 5 s
    too_long = copy.deepcopy(fitting)
    too_long["apps"]["hello"]["environments"]["staging"]["cool_down_seconds"] = 60
    with pytest.raises(ConfigError, match=r"staging\.cool_down_seconds: must be shorter than"):
        parse_pipeline_config(too_long)
