"""The dashboard function as Cloud Functions runs it (functions-framework test client), with its
ports faked: records in memory, and the pipeline's HTTP functions replaced by a recorder."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

import functions.dashboard
from shared.domain.records import Approval, Deployment, EnvironmentState, HistoryEntry
from shared.domain.status import DeploymentStatus
from shared.domain.verification import Verification, VerificationState
from shared.usecases.dashboard import DashboardServices, ForwardedAnswer
from tests.unit.fakes import pipeline_config
from tests.unit.test_function_entry_points import client

S = DeploymentStatus
NOW = datetime.now(UTC)
AWAITING_APPROVAL = DeploymentStatus.AWAITING_APPROVAL


class MemoryRecords:
    def __init__(self, deployments: list[Deployment], environments: list[EnvironmentState]) -> None:
        self.deployments = {d.deployment_id: d for d in deployments}
        self.environments = {(e.app, e.environment): e for e in environments}

    def deployments_since(self, app: str, environment: str | None, since: datetime) -> list[Deployment]:
        found = [
            d
            for d in self.deployments.values()
            if d.app == app
            and (environment is None or d.environment == environment)
            and d.created_at >= since
        ]
        return sorted(found, key=lambda d: d.created_at, reverse=True)

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        return self.environments.get((app, environment))

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self.deployments.get(deployment_id)


@dataclass
class RecordingEndpoints:
    answer: ForwardedAnswer = field(
        default_factory=lambda: ForwardedAnswer(
            202, {"deployment_id": "hello-production-new", "status": "queued"}
        )
    )
    calls: list[tuple[str, Mapping[str, Any], str]] = field(default_factory=list)

    def post(self, url: str, body: Mapping[str, Any], token: str) -> ForwardedAnswer:
        self.calls.append((url, dict(body), token))
        return self.answer

    def mint_local_token(self, token_url: str, audience: str, email: str) -> str:
        return f"token:{email}:{audience}"


def record(
    deployment_id: str, environment: str, version: str, minutes_ago: float, *steps: DeploymentStatus
) -> Deployment:
    created = NOW - timedelta(minutes=minutes_ago)
    history = [HistoryEntry(S.QUEUED, created)]
    for index, status in enumerate(steps, start=1):
        history.append(HistoryEntry(status, created + timedelta(seconds=10 * index)))
    live = next((h.at for h in history if h.status == S.LIVE), None)
    return Deployment(
        deployment_id=deployment_id,
        app="hello",
        environment=environment,
        version=version,
        commit="c" * 40,
        build_id=deployment_id,
        artifact="file:///a.tar.gz",
        status=history[-1].status,
        created_at=created,
        updated_at=history[-1].at,
        history=tuple(history),
        event={},
        went_live_at=live,
        triggered_by="circleci",
        commit_messages=("feat: <script>alert(1)</script> greet in French",),
    )


LIVE = replace(
    record("hello-staging-live", "staging", "1.1.0", 60, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING, S.LIVE),
    committed_at=NOW - timedelta(minutes=70),
)
COOLING = record("hello-staging-next", "staging", "1.2.0", 1, S.PROVISIONING, S.COOLING_DOWN)
WAITING = replace(
    record("hello-production-wait", "production", "1.1.0", 5),
    status=AWAITING_APPROVAL,
    history=(HistoryEntry(AWAITING_APPROVAL, NOW - timedelta(minutes=5)),),
    requested_by="dev@example.com",
    approvals=(
        Approval("lead@example.com", "approve", NOW - timedelta(minutes=2)),
        Approval("qa@example.com", "reject", NOW - timedelta(minutes=1), reason="not yet"),
    ),
)


@pytest.fixture
def endpoints() -> RecordingEndpoints:
    return RecordingEndpoints()


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch, endpoints: RecordingEndpoints) -> Iterator[FlaskClient]:
    records = MemoryRecords(
        [LIVE, COOLING, WAITING],
        [EnvironmentState("hello", "staging", live_deployment_id=LIVE.deployment_id, live_version="1.1.0")],
    )
    services = DashboardServices(
        config=pipeline_config(),
        records=records,
        endpoints=endpoints,
        rollback_url="https://rollback.example/",
        approve_url="https://approve.example/",
        local_token_url="",
    )
    monkeypatch.setattr(functions.dashboard, "dashboard_services", lambda: services)
    yield client("dashboard", "http")


def test_the_page_shows_live_in_flight_awaiting_and_the_four_keys(dashboard: FlaskClient) -> None:
    response = dashboard.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'data-version="1.1.0"' in page
    assert 'data-deployment="hello-staging-next" data-phase="cooling_down"' in page
    assert 'data-deployment="hello-production-wait"' in page and "Approve 1.1.0" in page
    for key in ("Deployment frequency", "Lead time for changes", "Change failure rate", "Time to restore"):
        assert f'data-key="{key}"' in page
    assert "<svg" in page and 'role="img"' in page


def test_record_text_is_escaped_and_only_the_pages_own_script_may_run(dashboard: FlaskClient) -> None:
    response = dashboard.get("/")
    page = response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    policy = response.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert nonce is not None
    assert page.count("<script") == 1 and f'<script nonce="{nonce.group(1)}">' in page
    assert "frame-ancestors 'none'" in policy


def test_the_json_form_has_what_the_page_shows(dashboard: FlaskClient) -> None:
    document = dashboard.get("/?format=json").get_json()
    shown = {view["environment"]: view for view in document["environments"]}
    staging, production = shown["staging"], shown["production"]
    assert staging["live"]["version"] == "1.1.0"
    assert [d["phase"] for d in staging["in_flight"]] == ["cooling_down"]
    assert [d["deployment_id"] for d in production["awaiting_approval"]] == ["hello-production-wait"]
    waiting = production["awaiting_approval"][0]
    # The verified requester wins over the build's claim; a rejection is not an approval.
    assert waiting["requested_by"] == "dev@example.com"
    assert waiting["approved_by"] == ["lead@example.com"]
    assert staging["metrics"]["deployments"] == 1
    assert staging["metrics"]["lead_time_seconds"]["p50"] == pytest.approx(600 + 40, abs=1)
    assert staging["metrics"]["bands"]["lead_time"] == "elite"


def test_an_approval_is_forwarded_with_the_callers_token(
    dashboard: FlaskClient, endpoints: RecordingEndpoints
) -> None:
    response = dashboard.post(
        "/",
        data={
            "action": "decide",
            "deployment_id": "hello-production-wait",
            "decision": "approve",
            "reason": "ok",
        },
        headers={"Authorization": "Bearer the-users-token", "Accept": "application/json"},
    )
    assert response.status_code == 202
    assert response.get_json()["message"] == "Approved: hello-production-new is now queued."
    assert endpoints.calls == [
        (
            "https://approve.example/",
            {"deployment_id": "hello-production-wait", "decision": "approve", "reason": "ok"},
            "the-users-token",
        )
    ]


def test_without_javascript_a_pasted_token_is_forwarded_and_the_page_says_what_happened(
    dashboard: FlaskClient, endpoints: RecordingEndpoints
) -> None:
    endpoints.answer = ForwardedAnswer(202, {"deployment_id": "r1", "version": "1.0.0", "rollback_of": "x"})
    response = dashboard.post(
        "/",
        data={
            "action": "rollback",
            "app": "hello",
            "environment": "staging",
            "to_version": "",
            "token": "pasted",
        },
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 202
    assert "Rollback accepted: 1.0.0 is on its way (r1)." in response.get_data(as_text=True)
    assert endpoints.calls == [
        ("https://rollback.example/", {"app": "hello", "environment": "staging"}, "pasted")
    ]


def test_the_functions_refusal_is_passed_on(dashboard: FlaskClient, endpoints: RecordingEndpoints) -> None:
    endpoints.answer = ForwardedAnswer(403, {"error": "you requested it yourself"})
    response = dashboard.post(
        "/",
        json={"action": "decide", "deployment_id": "d", "decision": "approve"},
        headers={"Authorization": "Bearer t", "Accept": "application/json"},
    )
    assert response.status_code == 403
    assert "you requested it yourself" in response.get_json()["message"]


def test_no_token_is_401_and_nothing_is_forwarded(
    dashboard: FlaskClient, endpoints: RecordingEndpoints
) -> None:
    response = dashboard.post(
        "/",
        data={"action": "decide", "deployment_id": "d", "decision": "approve"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 401
    assert endpoints.calls == []


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("{", "application/json"),
        ("[1, 2]", "application/json"),
        ('{"action": "decide", "deployment_id": 7, "decision": "approve"}', "application/json"),
        ("[" * 5000 + "]" * 5000, "application/json"),
        ('{"action": "decide", "deployment_id": "d", "decision": "maybe"}', "application/json"),
        ('{"action": "decide", "deployment_id": "d", "decision": "reject"}', "application/json"),
        ('{"action": "rollback", "app": "Hello!", "environment": "staging"}', "application/json"),
        (
            '{"action": "rollback", "app": "hello", "environment": "staging", "to_version": "x"}',
            "application/json",
        ),
        (
            '{"action": "rollback", "app": "hello", "environment": "staging", "colour": "red"}',
            "application/json",
        ),
        ('{"action": "delete-everything"}', "application/json"),
        ("action=decide&action=rollback", "application/x-www-form-urlencoded"),
        ("x=" + "a" * 20000, "application/x-www-form-urlencoded"),
        ("<xml/>", "text/xml"),
    ],
)
def test_a_malformed_action_is_400_and_nothing_is_forwarded(
    dashboard: FlaskClient, endpoints: RecordingEndpoints, body: str, content_type: str
) -> None:
    response = dashboard.post(
        "/",
        data=body,
        content_type=content_type,
        headers={"Authorization": "Bearer t", "Accept": "application/json"},
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "error" in response.get_json()
    assert endpoints.calls == []


def test_bad_query_parameters_are_400(dashboard: FlaskClient) -> None:
    assert dashboard.get("/?days=0").status_code == 400
    assert dashboard.get("/?days=abc").status_code == 400
    assert dashboard.get("/?app=nope").status_code == 400
    assert dashboard.delete("/").status_code == 405


def test_local_sign_in_exists_only_on_the_local_stack(dashboard: FlaskClient) -> None:
    response = dashboard.get("/?local_token_for=someone@example.com", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert json.loads(response.data)["error"].startswith("local sign-in")


def test_locally_each_action_gets_a_token_for_its_own_function(
    dashboard: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = functions.dashboard.dashboard_services()
    local = replace(services, local_token_url="http://issuer.local/token")
    monkeypatch.setattr(functions.dashboard, "dashboard_services", lambda: local)
    response = dashboard.get("/?local_token_for=approver@hello.local", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.get_json()["tokens"] == {
        "rollback": "token:approver@hello.local:https://rollback.example/",
        "approve": "token:approver@hello.local:https://approve.example/",
    }
    assert dashboard.get("/?local_token_for=not-an-address").status_code == 400


def steps(deployment: Deployment) -> list[tuple[str, str]]:
    from shared.domain.dashboard_view import timeline

    return [(step.phase, step.state) for step in timeline(deployment, NOW)]


def test_a_failed_deployment_shows_where_it_stopped() -> None:
    failed = record("f", "staging", "1.3.0", 3, S.PROVISIONING, S.COOLING_DOWN, S.FAILED)
    assert steps(failed) == [
        ("queued", "done"),
        ("provisioning", "done"),
        ("cooling_down", "done"),
        ("switching", "pending"),
        ("live", "pending"),
        ("failed", "failed"),
    ]


def with_verification(deployment: Deployment, state: VerificationState, **fields: Any) -> Deployment:
    """The deployment with the bake window's state, checked now."""
    return replace(deployment, verification=Verification(state, "", NOW, ends_at=NOW), **fields)


def test_a_baking_release_is_in_flight_with_the_bake_as_its_current_phase() -> None:
    baking = with_verification(LIVE, VerificationState.PENDING)
    assert steps(baking)[-2:] == [("live", "done"), ("bake", "current")]
    from shared.domain.dashboard_view import deployment_view

    assert deployment_view(baking, NOW).current_phase == "bake"
    rolled_back = with_verification(
        LIVE,
        VerificationState.FAILED,
        status=S.ROLLED_BACK,
        history=(*LIVE.history, HistoryEntry(S.ROLLED_BACK, NOW)),
    )
    assert steps(rolled_back)[-3:] == [("live", "done"), ("bake", "done"), ("rolled_back", "failed")]


def test_rollback_targets_are_earlier_live_versions_newest_first() -> None:
    from shared.domain.dashboard_view import environment_view
    from shared.domain.metrics import delivery_metrics

    older = record(
        "o", "staging", "1.0.0", 300, S.PROVISIONING, S.COOLING_DOWN, S.SWITCHING, S.LIVE, S.RETIRED
    )
    window = [older, LIVE, COOLING]
    view = environment_view(
        app="hello",
        environment="staging",
        url="",
        live_deployment=LIVE,
        window=window,
        metrics=delivery_metrics(
            window, app="hello", environment="staging", since=NOW - timedelta(days=1), until=NOW
        ),
        now=NOW,
    )
    assert view.rollback_targets == ("1.0.0",)
    assert [d.deployment_id for d in view.in_flight] == ["hello-staging-next"]
    assert [d.deployment_id for d in view.history] == ["hello-staging-next", "hello-staging-live", "o"]
