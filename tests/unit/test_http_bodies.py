"""HTTP functions answer every malformed body with 400, never 500: too large, too deep, wrong types.

Driven through functions-framework's test client, as Cloud Functions serves them, with a token
that verifies, so that the body is what decides the answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from functions.http_body import MAX_BODY_BYTES, MAX_DEPTH, BadRequest, TextField, decode_json_object
from tests.unit.fakes import FakeWorld
from tests.unit.test_function_entry_points import rollback_client, world  # noqa: F401  (fixtures)

AUTH = {"Authorization": "Bearer lead"}
STAGING = {"app": "hello", "environment": "staging"}


def post_raw(client: FlaskClient, data: bytes | str, content_type: str = "application/json") -> Any:
    return client.post("/", data=data, content_type=content_type, headers=AUTH)


def assert_bad_request(response: Any) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert isinstance(response.get_json()["error"], str)


@pytest.mark.parametrize(
    "body",
    [
        {**STAGING, "app": 1},
        {**STAGING, "app": None},
        {**STAGING, "app": ["hello"]},
        {**STAGING, "environment": {"name": "staging"}},
        {**STAGING, "to_version": 3},
        {**STAGING, "to_version": True},
        {**STAGING, "to_version": "1.0.0\n"},
        {**STAGING, "reason": ["why"]},
        {**STAGING, "reason": {"text": "why"}},
        {**STAGING, "reason": 12.5},
        {**STAGING, "reason": "x" * 501},
        {**STAGING, "reason": "bell \x07"},
        {**STAGING, "app": "hello\n"},
        {**STAGING, "app": "x" * 5000},
        {**STAGING, "colour": "red"},
    ],
    ids=lambda body: json.dumps(body)[:60],
)
def test_rollback_answers_a_field_of_the_wrong_type_or_shape_with_400(
    world: FakeWorld,  # noqa: F811
    rollback_client: FlaskClient,  # noqa: F811
    body: dict[str, Any],
) -> None:
    assert_bad_request(post_raw(rollback_client, json.dumps(body)))


@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"app": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"app": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}",
        '{"app": {"b": {"c": "hello"}}, "environment": "staging"}',
    ],
    ids=["deep array", "deep field", "deep objects", "three levels"],
)
def test_rollback_answers_a_body_nested_too_deep_with_400(
    world: FakeWorld,  # noqa: F811
    rollback_client: FlaskClient,  # noqa: F811
    data: str,
) -> None:
    assert_bad_request(post_raw(rollback_client, data))


def test_rollback_answers_a_body_too_large_with_400_without_reading_it_all(
    world: FakeWorld,  # noqa: F811
    rollback_client: FlaskClient,  # noqa: F811
) -> None:
    padding = " " * (MAX_BODY_BYTES + 1)
    assert_bad_request(post_raw(rollback_client, json.dumps(STAGING) + padding))
    assert_bad_request(
        post_raw(rollback_client, json.dumps({**STAGING, "reason": "r" * 10 * MAX_BODY_BYTES}))
    )


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"", "application/json"),
        (b"null", "application/json"),
        (b'"hello"', "application/json"),
        (b"[]", "application/json"),
        (b"{", "application/json"),
        (b'{"app": NaN, "environment": "staging"}', "application/json"),
        (
            b'{"app": "hello", "environment": "staging", "to_version": ' + b"9" * 5000 + b"}",
            "application/json",
        ),
        (b'{"app": "hel\xfflo", "environment": "staging"}', "application/json"),
        (json.dumps(STAGING).encode(), "text/plain"),
    ],
    ids=["empty", "null", "string", "array", "truncated", "NaN", "huge number", "not UTF-8", "not JSON type"],
)
def test_rollback_answers_a_body_that_is_not_a_json_object_with_400(
    world: FakeWorld,  # noqa: F811
    rollback_client: FlaskClient,  # noqa: F811
    data: bytes,
    content_type: str,
) -> None:
    assert_bad_request(post_raw(rollback_client, data, content_type))


def test_a_valid_body_still_reaches_the_use_case(
    world: FakeWorld,  # noqa: F811
    rollback_client: FlaskClient,  # noqa: F811
) -> None:
    body = {**STAGING, "reason": "line one\nline two"}
    assert post_raw(rollback_client, json.dumps(body)).status_code == 409  # nothing live yet


def test_the_parser_counts_depth_without_being_fooled_by_brackets_in_strings() -> None:
    assert decode_json_object(json.dumps({"reason": "[[[[{{{{" * 100}).encode())
    nested: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        nested = {"n": nested}
    with pytest.raises(BadRequest, match="deeper"):
        decode_json_object(json.dumps(nested).encode())


def test_a_text_field_states_its_rule_and_the_type_it_got() -> None:
    decision = TextField("decision", required=True, choices=("approve", "reject"))
    assert decision.check("approve") == "approve"
    with pytest.raises(BadRequest, match="decision: must be one of approve, reject, got array"):
        decision.check(["approve"])
    with pytest.raises(BadRequest, match="decision: must be one of approve, reject"):
        decision.check("maybe")


def test_the_body_parsers_docstring_examples_hold() -> None:
    import doctest

    import functions.http_body

    assert doctest.testmod(functions.http_body).failed == 0
