"""The Terraform declares what the code uses, and the checks that say so can fail.

Names are read from the code (main.py, shared/topology.py, shared/config.py,
config/pipeline.toml, shared/queries.py), never restated here.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devstack import function_server
from shared import config, topology
from tests.infra import consistency as c

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"

# ENV_* constants that must NOT be set on Google Cloud, each with the reason.
LOCAL_ONLY_ENV = {
    config.ENV_COMPUTE_EMULATOR_HOST: "points the Compute client at the local emulator; on GCP the real API is used",
    config.ENV_MONITORING_EMULATOR_HOST: "points the Monitoring client at the local emulator; on GCP the real API is used",
    config.ENV_NOTIFICATIONS_FILE: "the local stack's notification log file; functions on GCP have no such file",
    config.ENV_DASHBOARD_LOCAL_TOKEN_URL: "the local token issuer, for the dashboard's local sign-in; none on GCP",
}


# ENV_RELEASECTL_* constants are read by the releasectl CLI on an operator's or CI machine,
# never by the functions, so they are not set on them either.
CLIENT_ONLY_PREFIX = "ENV_RELEASECTL_"


def function_env_names() -> set[str]:
    """What the functions may read on Google Cloud: every ENV_* but the exemptions above."""
    names = c.env_var_names(config)
    client_only = {value for name, value in names.items() if name.startswith(CLIENT_ONLY_PREFIX)}
    return set(names.values()) - set(LOCAL_ONLY_ENV) - client_only


@pytest.fixture(scope="module")
def model() -> c.Model:
    return c.load_terraform(TERRAFORM)


@pytest.fixture(scope="module")
def entry_points() -> list[str]:
    main_py = REPO / "main.py"
    if main_py.exists():
        return c.entry_points_from_main(main_py)
    # Until the bundle's main.py exists it re-exports exactly these.
    return topology.all_entry_points()


def policies() -> list[c.DeliveryPolicy]:
    return [
        c.DeliveryPolicy(
            topic=t.topic,
            entry_point=t.entry_point,
            min_backoff_seconds=t.min_backoff_seconds,
            max_backoff_seconds=t.max_backoff_seconds,
            max_delivery_attempts=t.max_delivery_attempts,
            dead_letter_topic=t.dead_letter_topic,
        )
        for t in topology.PUBSUB_TRIGGERS
    ]


def pipeline_file() -> dict[str, Any]:
    return tomllib.loads((REPO / "config" / "pipeline.toml").read_text(encoding="utf-8"))


def pipeline_environments() -> list[config.EnvironmentConfig]:
    return config.parse_pipeline_config(pipeline_file()).all_environments()


def pipeline_channels() -> list[config.Channel]:
    """The environments' channels and the operations channels."""
    return config.parse_pipeline_config(pipeline_file()).all_channels()


# ---- positive: the Terraform matches the code --------------------------------------------


def test_every_topic_the_code_uses_is_declared_and_no_other(model: c.Model) -> None:
    assert c.topic_problems(model, topology.all_topics()) == []


def test_delivery_policy_matches_the_topology(model: c.Model) -> None:
    assert c.delivery_policy_problems(model, policies()) == []


def test_every_entry_point_has_a_function_and_every_function_an_entry_point(
    model: c.Model, entry_points: list[str]
) -> None:
    assert set(entry_points) == set(topology.all_entry_points()), "main.py and shared/topology.py disagree"
    assert c.entry_point_problems(model, entry_points) == []


def test_each_trigger_topic_invokes_its_entry_point(model: c.Model) -> None:
    assert c.trigger_wiring_problems(model, policies(), topology.DEAD_LETTER_ENTRY_POINT) == []


def test_pubsub_triggered_functions_retry_on_failure(model: c.Model) -> None:
    function = model["resource"]["google_cloudfunctions2_function"]["fn"]
    trigger = function["dynamic"][0]["event_trigger"]["content"][0]
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"


def test_every_environment_variable_the_config_reads_is_set_on_the_functions(model: c.Model) -> None:
    names = set(c.env_var_names(config).values())
    assert set(LOCAL_ONLY_ENV) <= names, "an exemption names a variable shared/config.py no longer defines"
    assert c.env_var_problems(model, function_env_names()) == []


def test_variables_the_bundle_reads_by_literal_name_are_set_on_the_functions(model: c.Model) -> None:
    bundle = [REPO / "main.py", *(REPO / "functions").rglob("*.py"), *(REPO / "shared").rglob("*.py")]
    reads = c.literal_env_reads(path for path in bundle if path.exists())
    exempt = set(c.env_var_names(config).values()) - function_env_names()
    unset = {
        name: where
        for name, where in reads.items()
        if name not in model["locals"]["function_environment"] and name not in exempt
    }
    assert unset == {}


def test_local_and_client_only_variables_are_not_set_on_the_functions(model: c.Model) -> None:
    exempt = set(c.env_var_names(config).values()) - function_env_names()
    assert exempt.isdisjoint(model["locals"]["function_environment"])


def test_webhook_variables_of_the_pipeline_file_come_from_secrets(model: c.Model) -> None:
    url_envs = {channel.url_env for channel in pipeline_channels()}
    assert url_envs, "the pipeline file declares no channel; nothing to check"
    assert c.webhook_problems(model, url_envs, "on_notify") == []


def test_the_rollback_audience_is_its_url_then_the_extra_audiences_comma_separated(model: c.Model) -> None:
    local_values = model["locals"]
    for name, variable in (
        ("rollback", config.ENV_ROLLBACK_AUDIENCE),
        ("promote", config.ENV_PROMOTE_AUDIENCE),
        ("approve", config.ENV_APPROVE_AUDIENCE),
    ):
        assert (
            local_values["function_environment"][variable]
            == f'${{local.release_control_audiences["{name}"]}}'
        )
    assert local_values["release_control_audiences"] == (
        "${{for name, url in local.release_control_urls : "
        'name => join(",", concat([url], var.rollback_extra_audiences))}}'
    )
    assert model["variable"]["rollback_extra_audiences"]["default"] == []
    # What that join renders is what the functions parse back.
    rendered = ",".join(
        ["https://europe-west1-p.cloudfunctions.net/rollback", "1.apps.googleusercontent.com"]
    )
    assert config.parse_audiences(rendered) == (
        "https://europe-west1-p.cloudfunctions.net/rollback",
        "1.apps.googleusercontent.com",
    )


def test_nothing_is_public_and_rollback_is_invoked_by_a_group_only(model: c.Model) -> None:
    assert c.public_access_problems(model) == []


def test_indexes_cover_the_queries_declared_in_code(model: c.Model) -> None:
    if importlib.util.find_spec("shared.queries") is None:
        pytest.skip("shared/queries.py does not exist yet: no queries declared in code to compare with")
    queries = c.queries_from_module(importlib.import_module("shared.queries"))
    assert c.index_problems(c.indexes_from_terraform(model), queries) == []


def test_compute_names_of_the_pipeline_file_are_what_the_environment_module_creates(model: c.Model) -> None:
    for env in pipeline_environments():
        names = c.module_compute_names(model, "environment", env.app, env.name)
        assert names == {
            "base_instance_template": env.base_instance_template,
            "health_check": env.health_check,
            "backend_service": env.backend_service,
            "preview_backend_service": env.preview_backend_service,
        }, env.key


def test_example_tfvars_declare_every_environment_of_the_pipeline_file() -> None:
    example = c.load_tfvars(TERRAFORM / "terraform.tfvars.example")
    declared = {(env["app"], env["environment"]) for env in example["environments"].values()}
    assert {(env.app, env.name) for env in pipeline_environments()} <= declared
    assert set(example["webhook_url_envs"]) >= {channel.url_env for channel in pipeline_channels()}


def test_no_project_id_or_key_file_is_hard_coded() -> None:
    for path in TERRAFORM.rglob("*.tf"):
        text = path.read_text(encoding="utf-8")
        # A project attribute is always var.project_id (or another expression), never a literal.
        assert not re.search(r'^\s*project(_id)?\s*=\s*"[a-z]', text, re.MULTILINE), path
        assert not re.search(r"^\s*(credentials|private_key|access_token)\s*=", text, re.MULTILINE), path
        assert "google_service_account_key" not in text, path


def written_fields() -> dict[str, set[str]]:
    """The fields the store writes, by collection, read from its document builders."""
    from shared import queries
    from shared.adapters.firestore_documents import (
        deployment_to_document,
        environment_to_document,
        release_to_document,
    )
    from shared.domain.records import EnvironmentState, Release
    from tests.unit.test_queue_rollback_and_naming import went_live

    deployment = went_live("d1", "1.0.0", 1)
    deployment = replace(deployment, cleanup_due_at=deployment.created_at)
    release = Release("hello", "1.0.0", "a" * 40, "file:///a.tar.gz", (), deployment.created_at)
    return {
        queries.DEPLOYMENTS: set(deployment_to_document(deployment)),
        queries.RELEASES: set(release_to_document(release)),
        queries.ENVIRONMENTS: set(environment_to_document(EnvironmentState("hello", "staging"))),
    }


def test_ttl_policies_are_only_on_fields_the_code_writes(model: c.Model) -> None:
    # The idempotency key is the deployment document itself, an audit record that never expires.
    assert c.ttl_problems(model, written_fields()) == []


# ---- negative: each check reports a broken copy ------------------------------------------


def test_a_ttl_policy_on_a_collection_or_field_nobody_writes_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    fields = broken["resource"].setdefault("google_firestore_field", {})
    fields["stale"] = {"collection": "idempotency_keys", "field": "expire_at", "ttl_config": [{}]}
    fields["typo"] = {"collection": "deployments", "field": "expires_at", "ttl_config": [{}]}
    fields["index_only"] = {"collection": "deployments", "field": "expires_at", "index_config": [{}]}
    problems = c.ttl_problems(broken, written_fields())
    assert len(problems) == 2
    assert any("'stale'" in p and "never writes" in p for p in problems)
    assert any("deployments.expires_at" in p for p in problems)


def test_a_renamed_topic_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    triggers = broken["locals"]["pubsub_triggers"]
    triggers["notfy"] = triggers.pop(topology.NOTIFY)
    problems = c.topic_problems(broken, topology.all_topics())
    assert any(repr(topology.NOTIFY) in p and "not declared" in p for p in problems)
    assert any("'notfy'" in p for p in problems)


def test_a_topic_resource_that_stops_iterating_the_table_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    broken["resource"]["google_pubsub_topic"]["topic"]["for_each"] = "${toset([])}"
    assert len(c.topic_problems(broken, topology.all_topics())) == len(topology.all_topics())


def test_a_changed_delivery_policy_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    broken["locals"]["pubsub_triggers"][topology.COOL_DOWN_COMPLETE]["max_delivery_attempts"] = 5
    broken["locals"]["pubsub_triggers"][topology.BUILD_SUCCEEDED]["dead_letter_topic"] = None
    problems = c.delivery_policy_problems(broken, policies())
    assert len(problems) == 2, problems


def test_a_missing_entry_point_is_reported(model: c.Model, entry_points: list[str]) -> None:
    broken = copy.deepcopy(model)
    removed = entry_points[0]
    del broken["locals"]["functions"][removed]
    assert c.entry_point_problems(broken, entry_points) == [
        f"entry point {removed!r} has no function resource"
    ]


def test_a_function_without_entry_point_is_reported(model: c.Model, entry_points: list[str]) -> None:
    broken = copy.deepcopy(model)
    broken["locals"]["functions"]["orphan"] = dict(broken["locals"]["functions"][entry_points[0]])
    assert c.entry_point_problems(broken, entry_points) == [
        "function resource 'orphan' has no entry point in main.py"
    ]


def test_a_function_wired_to_the_wrong_topic_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    broken["locals"]["functions"]["on_notify"]["trigger_topics"] = [topology.BUILD_SUCCEEDED]
    assert c.trigger_wiring_problems(broken, policies(), topology.DEAD_LETTER_ENTRY_POINT) == [
        f"function 'on_notify' is not triggered by {topology.NOTIFY!r}"
    ]


def test_a_missing_environment_variable_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    del broken["locals"]["function_environment"][config.ENV_ROLLBACK_AUDIENCE]
    assert c.env_var_problems(broken, function_env_names()) == [
        f"environment variable {config.ENV_ROLLBACK_AUDIENCE!r} is read by the code but not set on the functions"
    ]


def test_a_function_instance_serves_as_many_requests_at_once_as_a_local_function_server(
    model: c.Model,
) -> None:
    assert c.concurrency_problems(model, function_server.REQUESTS_AT_ONCE) == []


def test_a_concurrency_without_a_whole_vcpu_or_threads_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    service = broken["resource"]["google_cloudfunctions2_function"]["fn"]["service_config"]
    (service[0] if isinstance(service, list) else service).pop("available_cpu")
    del broken["locals"]["function_environment"]["THREADS"]
    assert c.concurrency_problems(broken, function_server.REQUESTS_AT_ONCE + 1) == [
        "available_cpu is not a whole vCPU whenever var.function_request_concurrency > 1",
        "THREADS (functions-framework's server threads) is not var.function_request_concurrency",
        f"function_request_concurrency defaults to {function_server.REQUESTS_AT_ONCE},"
        f" a local function server serves {function_server.REQUESTS_AT_ONCE + 1}",
    ]


def test_a_webhook_without_secret_is_reported(model: c.Model) -> None:
    assert c.webhook_problems(model, {"TEAMS_WEBHOOK_URL"}, "on_notify") == [
        "webhook variable 'TEAMS_WEBHOOK_URL' of the pipeline file has no secret in webhook_url_envs"
    ]


def test_a_public_rollback_invoker_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    broken["locals"]["http_invoker_groups"]["rollback"] = "allUsers"
    problems = c.public_access_problems(broken)
    assert any("allUsers" in p for p in problems)
    assert "the rollback function's invoker is 'group:allUsers', not a group variable" in problems
    broken = copy.deepcopy(model)
    broken["resource"]["google_cloud_run_v2_service_iam_member"]["http_invoker"]["member"] = (
        "user:${each.value}"
    )
    assert len([p for p in c.public_access_problems(broken) if "not a group" in p]) == len(c.HTTP_FUNCTIONS)
    del broken["locals"]["http_invoker_groups"]["approve"]
    assert "no invoker binding for the approve function" in c.public_access_problems(broken)


def test_public_members_are_found_in_modules_locals_and_defaults(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    broken["modules"]["environment"]["resource"]["google_storage_bucket_iam_binding"] = {
        "open": {"bucket": "b", "role": "roles/storage.objectViewer", "members": ["allAuthenticatedUsers"]}
    }
    broken["locals"]["invoker"] = "allUsers"
    broken["variable"]["rollback_invoker_group"]["default"] = "allUsers"
    assert len(c.public_access_problems(broken)) == 3


def test_a_query_without_index_and_an_unused_index_are_reported(model: c.Model) -> None:
    indexes = c.indexes_from_terraform(model)
    assert indexes, "no composite index declared"
    kept, dropped = indexes[1:], indexes[0]
    query = c.Query(
        name="served-by-the-dropped-index",
        collection=dropped.collection,
        equality=frozenset(f.field for f in dropped.fields[:-1]),
        inequality=(),
        order_by=dropped.fields[-1:],
    )
    assert c.index_problems(indexes, [query]) == [
        f"index {index.name!r} serves no declared query (it only costs writes)" for index in kept
    ]
    assert c.index_problems(kept, [query]) == [
        f"query 'served-by-the-dropped-index' on {dropped.collection!r} has no composite index",
        *[f"index {index.name!r} serves no declared query (it only costs writes)" for index in kept],
    ]


def test_index_coverage_follows_firestore_rules() -> None:
    asc, desc = (lambda f: c.IndexField(f, False)), (lambda f: c.IndexField(f, True))
    index = c.CompositeIndex("i", "deployments", (asc("status"), asc("updated_at")))

    def query(equality: set[str], inequality: str | None, order: tuple[c.IndexField, ...]) -> c.Query:
        return c.Query("q", "deployments", frozenset(equality), (inequality,) if inequality else (), order)

    assert c.index_covers(index, query({"status"}, "updated_at", ()))
    assert c.index_covers(index, query({"status"}, None, (desc("updated_at"),)))  # reverse order
    assert not c.index_covers(index, query({"app"}, "updated_at", ()))
    assert not c.index_covers(index, query({"updated_at"}, "status", ()))
    assert not query({"status", "app"}, None, ()).needs_composite_index()  # equality-only merges
    assert not query(set(), None, (desc("created_at"),)).needs_composite_index()


def test_the_base_template_boots_the_startup_script_that_is_tested(model: c.Model) -> None:
    template = model["modules"]["environment"]["resource"]["google_compute_instance_template"]["base"]
    assert template["metadata"]["startup-script"] == '${file("${path.module}/startup.sh")}'
    assert (TERRAFORM / "modules" / "environment" / "startup.sh").is_file()


def test_the_artifact_bucket_never_loses_an_artifact_a_live_or_retained_release_needs(model: c.Model) -> None:
    assert c.artifact_bucket_problems(model) == []


def test_an_age_based_deletion_of_current_artifacts_is_reported(model: c.Model) -> None:
    broken = copy.deepcopy(model)
    bucket = broken["resource"]["google_storage_bucket"]["artifacts"]
    bucket["lifecycle_rule"].append({"condition": [{"age": 90}], "action": [{"type": "Delete"}]})
    bucket["versioning"] = [{"enabled": False}]
    broken["resource"]["google_storage_bucket_iam_member"]["circleci_uploads_artifacts"]["role"] = (
        "roles/storage.objectAdmin"
    )
    problems = c.artifact_bucket_problems(broken)
    assert len(problems) == 3, problems
    assert any("deletes current artifacts" in p for p in problems)
    assert any("versioning is off" in p for p in problems)
    assert any("objectAdmin" in p for p in problems)
