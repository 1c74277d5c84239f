"""terraform/ uses only what the google provider's schema has, and the check that says so can fail.

The schema comes from the pinned provider bindings' jsii assembly (tests/infra/provider_schema.py);
each negative test edits one real .tf file in memory and expects the problem it introduced.
"""

from __future__ import annotations

import doctest
from collections.abc import Callable
from pathlib import Path

import hcl2
import pytest

from tests.infra import provider_schema as ps

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"


@pytest.fixture(scope="module")
def schema() -> ps.ProviderSchema:
    return ps.load_provider_schema()


def problems_after(schema: ps.ProviderSchema, file: str, edit: Callable[[str], str]) -> list[str]:
    original = (TERRAFORM / file).read_text(encoding="utf-8")
    edited = edit(original)
    assert edited != original, "the edit did not apply; the test no longer tests anything"
    return ps.check_parsed(hcl2.loads(edited), schema, file)


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) == 1, f"expected {old!r} once"
        return text.replace(old, new)

    return edit


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(ps).failed == 0


def test_the_terraform_uses_only_what_the_google_provider_schema_has(schema: ps.ProviderSchema) -> None:
    assert ps.check_directory(TERRAFORM, schema) == []


def test_the_schema_is_of_the_provider_line_versions_tf_asks_for(schema: ps.ProviderSchema) -> None:
    assert ps.version_satisfies(schema.version, ">= 6.10, < 7.0")


def test_names_are_the_terraform_names_even_where_jsii_renames_them(schema: ps.ProviderSchema) -> None:
    # jsii calls these buildAttribute and detectMd5Hash; camelCase undone would say detect_md5_hash.
    assert isinstance(schema.resources["google_cloudbuild_trigger"].names["build"], ps.BlockSchema)
    assert "detect_md5hash" in schema.resources["google_storage_bucket_object"].names
    template = schema.resources["google_compute_instance_template"]
    assert template.names["machine_type"] is None and "machine_type" in template.required
    assert "google_project" in schema.data_sources and "project" in schema.provider.names


def test_an_unknown_resource_type_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(
        schema, "pubsub.tf", replace_once('resource "google_pubsub_topic"', 'resource "google_pubsub_topik"')
    )
    assert problems == ["pubsub.tf: google_pubsub_topik.topic: unknown resource type"]


def test_an_unknown_argument_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(
        schema,
        "functions.tf",
        replace_once(
            '  location    = var.region\n  description = "Release',
            '  colour = "blue"\n  location    = var.region\n  description = "Release',
        ),
    )
    assert problems == [
        "functions.tf: google_cloudfunctions2_function.fn: unknown argument or block 'colour'"
    ]


def test_an_unknown_argument_of_a_nested_block_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(
        schema,
        "functions.tf",
        replace_once(
            "        object = google_storage", "        generation_id = 1\n        object = google_storage"
        ),
    )
    assert problems == [
        "functions.tf: google_cloudfunctions2_function.fn.build_config.source.storage_source: "
        "unknown argument or block 'generation_id'"
    ]


def test_an_unknown_nested_block_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(
        schema,
        "functions.tf",
        replace_once(
            "    source {\n      storage_source {",
            '    source {\n      git_source {\n        url = "x"\n      }\n      storage_source {',
        ),
    )
    assert problems == [
        "functions.tf: google_cloudfunctions2_function.fn.build_config.source: unknown argument or block 'git_source'"
    ]


def test_an_unknown_dynamic_block_and_an_unknown_argument_inside_one_are_reported(
    schema: ps.ProviderSchema,
) -> None:
    renamed = problems_after(
        schema, "functions.tf", replace_once('dynamic "event_trigger"', 'dynamic "event_triggers"')
    )
    assert renamed == [
        "functions.tf: google_cloudfunctions2_function.fn: dynamic 'event_triggers' is not a nested block of this schema"
    ]
    inside = problems_after(
        schema,
        "functions.tf",
        replace_once("      retry_policy          =", "      retry_count = 3\n      retry_policy          ="),
    )
    assert inside == [
        "functions.tf: google_cloudfunctions2_function.fn.event_trigger: unknown argument or block 'retry_count'"
    ]


def test_a_block_written_as_an_argument_and_the_reverse_are_reported(schema: ps.ProviderSchema) -> None:
    as_argument = problems_after(
        schema, "functions.tf", replace_once("      storage_source {", "      storage_source = {")
    )
    assert as_argument == [
        "functions.tf: google_cloudfunctions2_function.fn.build_config.source: "
        "'storage_source' is a nested block, written as an argument"
    ]
    as_block = problems_after(
        schema,
        "functions.tf",
        replace_once("    runtime         = var.python_runtime\n", "    runtime {\n    }\n"),
    )
    assert as_block == [
        "functions.tf: google_cloudfunctions2_function.fn.build_config: 'runtime' is an argument, written as a block"
    ]


def test_a_missing_required_argument_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(schema, "functions.tf", replace_once("  location    = var.region\n", ""))
    assert problems == ["functions.tf: google_cloudfunctions2_function.fn: required 'location' is missing"]


def test_a_provider_line_the_schema_is_not_of_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(schema, "versions.tf", replace_once('">= 6.10, < 7.0"', '"~> 7.0"'))
    assert len(problems) == 1 and "outside '~> 7.0'" in problems[0]


def test_an_unknown_provider_argument_is_reported(schema: ps.ProviderSchema) -> None:
    problems = problems_after(
        schema,
        "versions.tf",
        replace_once("  region  = var.region\n", '  region  = var.region\n  zonez = "a"\n'),
    )
    assert problems == ["versions.tf: provider google: unknown argument or block 'zonez'"]
