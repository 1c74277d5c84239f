"""The `promote` and `approve` HTTP functions as Cloud Functions runs them (functions-framework
test clients), with the pipeline's own ports faked: how each request maps to its CONTRACT
§4b/§4c answer. The decisions themselves are tested in test_release_control_usecases."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from flask.testing import FlaskClient
from functions_framework import create_app

import functions.approve
import functions.promote
from functions.http_body import MAX_BODY_BYTES
from shared import topology
from shared.domain.identity import Caller, InvalidTokenError
from shared.usecases.admit_build import admit_build
from tests.unit.fakes import FakeWorld, fake_world
from tests.unit.pipeline_driving import build, deploy_to_live, recorded_before_digests
from tests.unit.test_function_entry_points import MAIN

AUDIENCES = {"promote": ("https://promote.example",), "approve": ("https://approve.example",)}
IDENTITIES = {
    "lead": "lead@example.com",
    "ops": "ops@approvers.example.com",
    "dev": "dev@example.com",
}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = fake_world()
    for module, name in ((functions.promote, "promote"), (functions.approve, "approve")):
        monkeypatch.setattr(module, "services", lambda: world.services)
        monkeypatch.setattr(module, f"{name}_audience", lambda name=name: AUDIENCES[name])
    return world


@pytest.fixture
def verify(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_verify(token: str, audience: Sequence[str]) -> Caller:
        assert tuple(audience) in AUDIENCES.values()
        if token in IDENTITIES:
            email = IDENTITIES[token]
            return Caller(email=email, subject=token, issuer="test", hosted_domain=email.rsplit("@", 1)[1])
        raise InvalidTokenError("bad token")

    monkeypatch.setattr("functions.http_support.verify_identity_token", fake_verify)


def client(target: str) -> FlaskClient:
    return create_app(target=target, source=MAIN, signature_type="http").test_client()


def post(app: FlaskClient, body: Any, token: str | None = "lead", **headers: str) -> Any:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.post("/", data=data, content_type="application/json", headers=headers)


PROMOTION = {"app": "hello", "from_environment": "staging", "to_environment": "production"}

MALFORMED: list[Any] = [
    b"{",
    b"\xff\xfe",
    b"[]",
    b'"text"',
    ("[" * 100_000 + "]" * 100_000).encode(),
    json.dumps({"padding": "x" * (MAX_BODY_BYTES + 1)}).encode(),
]


@pytest.mark.usefixtures("verify")
def test_promote_maps_each_request_to_its_contract_answer(world: FakeWorld) -> None:
    app = client("promote")
    assert post(app, PROMOTION, token=None).status_code == 401
    assert post(app, PROMOTION, token="forged").status_code == 401
    for bad in (
        *MALFORMED,
        {**PROMOTION, "colour": "red"},
        {**PROMOTION, "version": 3},
        {**PROMOTION, "version": "latest"},
        {**PROMOTION, "to_environment": ["production"]},
        {**PROMOTION, "to_environment": "staging"},
        {**PROMOTION, "reason": {"nested": True}},
        {"app": "hello"},
    ):
        response = post(app, bad)
        assert response.status_code == 400, (bad if not isinstance(bad, bytes) else bad[:20], response.data)
        assert response.get_json()["error"]
    assert post(app, {**PROMOTION, "to_environment": "qa"}).status_code == 404
    assert post(app, PROMOTION).status_code == 404, "nothing live in staging yet"
    assert post(app, PROMOTION, token="dev").status_code == 403, "not a promoter of production"
    deploy_to_live(world, "b1")
    world.publisher.messages.clear()
    accepted = post(app, {**PROMOTION, "reason": "ship it"})
    assert accepted.status_code == 202, accepted.data
    body = accepted.get_json()
    assert body["version"] == "1.0.0" and body["status"] == "awaiting_approval"
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, "e1")
    assert body["deployment_id"] in world.store.deployments
    assert post(app, PROMOTION).status_code == 409, "already on its way"
    assert post(app, {**PROMOTION, "version": "9.9.9"}).status_code == 404
    assert app.get("/", headers={"Authorization": "Bearer lead"}).status_code == 405


@pytest.mark.usefixtures("verify")
def test_promoting_a_release_recorded_before_digests_answers_409_with_the_reason(world: FakeWorld) -> None:
    recorded_before_digests(world, deploy_to_live(world, "b1"))
    world.publisher.messages.clear()

    response = post(client("promote"), PROMOTION)

    assert response.status_code == 409, response.get_data(as_text=True)
    assert "recorded before artifact digests" in response.get_json()["error"]
    assert world.publisher.on(topology.BUILD_SUCCEEDED) == []


@pytest.mark.usefixtures("verify")
def test_approve_maps_each_request_to_its_contract_answer(world: FakeWorld) -> None:
    app = client("approve")
    waiting = build(world, "b1-prod", environment="production").deployment_id
    approval = {"deployment_id": waiting, "decision": "approve"}
    assert post(app, approval, token=None).status_code == 401
    for bad in (
        *MALFORMED,
        {**approval, "decision": "maybe"},
        {**approval, "decision": True},
        {**approval, "deployment_id": "Not An Id"},
        {**approval, "deployment_id": f"{waiting}\n"},
        {**approval, "extra": 1},
        {"deployment_id": waiting, "decision": "reject"},
        {"deployment_id": waiting, "decision": "reject", "reason": "  "},
    ):
        assert post(app, bad).status_code == 400, bad if not isinstance(bad, bytes) else bad[:20]
    assert post(app, approval, token="dev").status_code == 403
    assert post(app, {**approval, "deployment_id": "hello-production-000000000000"}).status_code == 404
    accepted = post(app, {**approval, "reason": "ok"})
    assert accepted.status_code == 202, accepted.data
    assert accepted.get_json() == {"deployment_id": waiting, "status": "provisioning"}
    assert world.store.deployments[waiting].approvals[0].by == "lead@example.com"
    assert post(app, approval, token="ops").status_code == 409


@pytest.mark.usefixtures("verify")
def test_the_requester_of_a_promotion_cannot_approve_it(world: FakeWorld) -> None:
    deploy_to_live(world, "b1")
    world.publisher.messages.clear()
    promoted = post(client("promote"), PROMOTION, token="ops").get_json()["deployment_id"]
    (published,) = world.publisher.take(topology.BUILD_SUCCEEDED)
    admit_build(world.services, published.data, published.attributes, "e1")
    app = client("approve")
    refused = post(app, {"deployment_id": promoted, "decision": "approve"}, token="ops")
    assert refused.status_code == 403 and "cannot approve it too" in refused.get_json()["error"]
    rejected = post(app, {"deployment_id": promoted, "decision": "reject", "reason": "wrong build"})
    assert rejected.get_json() == {"deployment_id": promoted, "status": "cancelled"}
