"""Least privilege, read from the Terraform: pull requests build as a read-only account, never
the deployer; each function's account holds exactly the roles its code uses, as documented.

Each check has a negative twin that breaks a copy of the model and expects the report.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from shared import topology
from tests.infra import consistency as c

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"


@pytest.fixture(scope="module")
def model() -> c.Model:
    return c.load_terraform(TERRAFORM)


def code_publishes() -> dict[str, set[str]]:
    sources = [*(REPO / "functions").glob("*.py"), *(REPO / "shared" / "usecases").glob("*.py")]
    return c.published_topics(sources, topology.all_entry_points(), topology)


# ---- Cloud Build -------------------------------------------------------------------------


def test_pull_requests_build_as_the_read_only_account_and_main_as_the_deployer(model: c.Model) -> None:
    assert c.cloudbuild_split_problems(model) == []
    pull_request = model["resource"]["google_cloudbuild_trigger"]["pull_request"]
    main = model["resource"]["google_cloudbuild_trigger"]["main"]
    assert pull_request["service_account"] != main["service_account"]
    assert "deployer_service_account" in main["service_account"]


def test_the_read_only_account_holds_read_only_roles(model: c.Model) -> None:
    roles = [
        role
        for where, body in c._iam_grants(model)
        if c.PULL_REQUEST_ACCOUNT in str(body.get("member"))
        for role in c._roles_of(model, body)
    ]
    assert set(roles) <= c.READ_ONLY_ROLES
    assert "roles/storage.objectViewer" in roles  # the state, on its bucket only
    assert not [role for role in roles if role in ("roles/viewer", "roles/editor", "roles/owner")]


def mutated(model: c.Model, change: Any) -> c.Model:
    broken = copy.deepcopy(model)
    change(broken)
    return broken


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["resource"]["google_cloudbuild_trigger"]["pull_request"].update(
                service_account="projects/${var.project_id}/serviceAccounts/${var.cloudbuild.deployer_service_account}"
            ),
            "the pull-request trigger does not run as the read-only account",
        ),
        (
            lambda m: m["resource"]["google_cloudbuild_trigger"]["main"].update(
                service_account="${google_service_account.cloudbuild_pull_requests.id}"
            ),
            "the main-branch trigger runs as the read-only pull-request account",
        ),
        (
            lambda m: m["resource"]["google_cloudbuild_trigger"]["pull_request"]["substitutions"].update(
                _PLAN_ONLY="false"
            ),
            "the pull-request trigger does not set _PLAN_ONLY=true",
        ),
        (
            lambda m: m["locals"]["cloudbuild_pull_request_project_roles"].append("roles/editor"),
            "google_project_iam_member.cloudbuild_pull_requests gives the pull-request account roles/editor, "
            "which is not read-only",
        ),
        (
            lambda m: (
                m["resource"]
                .setdefault("google_service_account_iam_member", {})
                .update(
                    pr_impersonates={
                        "role": "roles/iam.serviceAccountTokenCreator",
                        "member": "${google_service_account.cloudbuild_pull_requests.member}",
                    }
                )
            ),
            "google_service_account_iam_member.pr_impersonates gives the pull-request account "
            "roles/iam.serviceAccountTokenCreator, which is not read-only",
        ),
        (
            lambda m: m["resource"]["google_cloudbuild_trigger"].pop("pull_request"),
            "no Cloud Build trigger for pull requests",
        ),
    ],
    ids=[
        "pr as deployer",
        "main as pr account",
        "pr applies",
        "pr editor",
        "pr impersonates",
        "no pr trigger",
    ],
)
def test_a_broken_split_is_reported(model: c.Model, change: Any, expected: str) -> None:
    assert expected in c.cloudbuild_split_problems(mutated(model, change))


def test_pull_request_builds_plan_without_the_state_lock() -> None:
    build = YAML(typ="safe").load((REPO / "cloudbuild.yaml").read_text(encoding="utf-8"))
    plan = next(step for step in build["steps"] if step["id"] == "plan")
    script = " ".join(plan["args"])
    assert '-lock="$$lock"' in script and 'if [ "${_PLAN_ONLY}" = "true" ]; then lock=false; fi' in script
    apply = next(step for step in build["steps"] if step["id"] == "apply")
    assert 'if [ "${_PLAN_ONLY}" = "true" ]' in " ".join(apply["args"])


# ---- the functions' accounts -------------------------------------------------------------


def test_each_function_may_publish_to_exactly_the_topics_its_code_publishes_to(model: c.Model) -> None:
    assert c.publishing_problems(model, code_publishes()) == []


def test_the_code_scan_follows_calls_into_the_use_cases() -> None:
    published = code_publishes()
    # A provisioning failure frees the lock and starts the next queued deployment …
    assert "start-rolling-replace" in published["on_start_rolling_replace"]
    # … and the watchdog re-publishes whichever step a stalled deployment is in.
    assert {"start-rolling-replace", "cool-down-complete"} <= published["watchdog"]
    assert published["on_notify"] == set()
    assert published["rollback"] == {"build-succeeded"}


def test_a_publishing_right_the_code_does_not_use_or_lacks_is_reported(model: c.Model) -> None:
    broken = mutated(model, lambda m: m["locals"]["functions"]["on_notify"].update(publishes=["notify"]))
    assert c.publishing_problems(broken, code_publishes()) == [
        "function 'on_notify' may publish to 'notify', which its code never does"
    ]
    broken = mutated(model, lambda m: m["locals"]["functions"]["watchdog"].update(publishes=["notify"]))
    assert "function 'watchdog' publishes to 'cool-down-complete' but may not" in c.publishing_problems(
        broken, code_publishes()
    )


def test_every_role_of_a_function_follows_a_declared_rule_and_is_documented(model: c.Model) -> None:
    grants, problems = c.function_grants(model)
    assert problems == []
    documented = c.documented_function_grants((TERRAFORM / "README.md").read_text(encoding="utf-8"))
    assert documented == grants, (sorted(documented - grants, key=str), sorted(grants - documented, key=str))


def test_rollback_only_reads_the_records_and_on_notify_publishes_nothing(model: c.Model) -> None:
    grants, _ = c.function_grants(model)
    assert {g.role for g in grants if g.function == "rollback"} == {
        "roles/datastore.viewer",
        "roles/pubsub.publisher",
    }
    assert not [g for g in grants if g.function == "on_notify" and g.role == "roles/pubsub.publisher"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["resource"]["google_project_iam_member"].update(
                function_editor={
                    "for_each": "${local.functions}",
                    "role": "roles/editor",
                    "member": "${google_service_account.function[each.key].member}",
                }
            ),
            "google_project_iam_member.function_editor gives a function's account 'roles/editor' by no declared rule",
        ),
        (
            lambda m: m["locals"]["functions"]["rollback"].pop("firestore_access"),
            "function 'rollback': firestore_access None is not one of ['read', 'read_write']",
        ),
    ],
    ids=["editor for every function", "undeclared firestore access"],
)
def test_an_undeclared_grant_is_reported(model: c.Model, change: Any, expected: str) -> None:
    _, problems = c.function_grants(mutated(model, change))
    assert expected in problems


def test_an_undocumented_grant_shows_in_the_comparison(model: c.Model) -> None:
    broken = mutated(
        model, lambda m: m["locals"]["functions"]["rollback"].update(firestore_access="read_write")
    )
    grants, _ = c.function_grants(broken)
    documented = c.documented_function_grants((TERRAFORM / "README.md").read_text(encoding="utf-8"))
    assert c.Grant("rollback", "roles/datastore.user") in grants - documented
