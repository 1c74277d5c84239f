"""Every validation pattern matches the whole string: `$` alone lets a trailing newline through."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from compute_emulator.errors import ApiError
from compute_emulator.links import check_name, check_region, check_zone, parse_reference
from compute_emulator.listing import apply_filter

from releasectl.cli import run
from shared.config import ConfigError, parse_pipeline_config
from shared.domain.naming import is_valid_name
from shared.domain.versioning import is_version
from tests.unit.test_config import VALID


def renamed(document: dict[str, Any], app: str = "hello", environment: str = "staging") -> dict[str, Any]:
    changed = copy.deepcopy(document)
    raw_app = changed["apps"].pop("hello")
    raw_app["environments"] = {environment: raw_app["environments"]["staging"]}
    changed["apps"][app] = raw_app
    return changed


def test_the_pipeline_file_refuses_names_with_a_trailing_newline() -> None:
    parse_pipeline_config(renamed(VALID))  # the unchanged names are fine
    with pytest.raises(ConfigError, match=r"apps\.hello\n: app name"):
        parse_pipeline_config(renamed(VALID, app="hello\n"))
    with pytest.raises(ConfigError, match="environment name"):
        parse_pipeline_config(renamed(VALID, environment="staging\n"))
    document = copy.deepcopy(VALID)
    document["apps"]["hello"]["environments"]["staging"]["health_check"] = "hello-staging-hc\n"
    with pytest.raises(ConfigError, match="health_check"):
        parse_pipeline_config(document)


def test_resource_names_and_versions_with_a_trailing_newline_are_invalid() -> None:
    assert is_valid_name("hello-staging-tpl")
    assert not is_valid_name("hello-staging-tpl\n")
    assert is_version("1.2.3")
    assert not is_version("1.2.3\n")


@pytest.mark.parametrize("name", ["hello\n", "Hello"])
def test_releasectl_refuses_an_app_name_with_a_trailing_newline(name: str) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run(["status", "--app", name, "--env", "staging"], stdout=stdout, stderr=stderr)
    assert code == 2
    assert "must match" in stderr.getvalue()


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_name, "green-mig\n"),
        (check_zone, "us-central1-a\n"),
        (check_region, "us-central1\n"),
    ],
)
def test_the_compute_emulator_refuses_names_with_a_trailing_newline(check: Any, value: str) -> None:
    check(value.rstrip("\n"))
    with pytest.raises(ApiError) as refused:
        check(value)
    assert refused.value.code == 400


def test_the_compute_emulator_refuses_a_reference_with_a_trailing_newline() -> None:
    reference = "projects/p/global/instanceTemplates/hello-tpl"
    assert parse_reference(reference, "template", "p", ("instanceTemplates",)).name == "hello-tpl"
    with pytest.raises(ApiError):
        parse_reference(reference + "\n", "template", "p", ("instanceTemplates",))


def test_a_list_filter_is_one_whole_comparison() -> None:
    items = [{"name": "a"}, {"name": "b"}]
    assert apply_filter(items, 'name = "a"') == [{"name": "a"}]
    with pytest.raises(ApiError):
        apply_filter(items, 'name = "a" trailing words')


def test_a_push_path_naming_a_topic_has_no_trailing_newline() -> None:
    from devstack.eventarc import topic_of_path

    assert topic_of_path("/projects/p/topics/notify") == "projects/p/topics/notify"
    assert topic_of_path("/projects/p/topics/notify\n") is None
    assert topic_of_path("/projects/p/topics/no tify") is None
