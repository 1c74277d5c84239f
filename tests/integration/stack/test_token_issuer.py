"""Tokens from the local issuer verify through google-auth exactly as the rollback function checks them."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import google.auth.transport.requests
import pytest
from google.auth import jwt
from google.oauth2 import id_token

from devstack.processes import free_port, http_ok, start_service, stop_process_group, wait_until
from devstack.token_issuer import (
    DEFAULT_IDENTITY,
    TOKEN_LIFETIME_SECONDS,
    generate_signing_key,
    load_or_create_signing_key,
    mint_token,
)
from shared.config import ENV_RELEASECTL_IDENTITY as ENV_IDENTITY

AUDIENCE = "http://127.0.0.1:9/rollback"


@pytest.fixture(scope="module")
def issuer_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state_dir = tmp_path_factory.mktemp("issuer")
    port = free_port()
    log = state_dir / "issuer.log"
    process = start_service(
        "token-issuer",
        [sys.executable, "-m", "devstack.token_issuer", "--port", str(port), "--state-dir", str(state_dir)],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/healthz"), 30, "token issuer", process, log)
        yield url
    finally:
        stop_process_group(process.pid)


def _verify(token: str, issuer_url: str, audience: str = AUDIENCE) -> dict[str, object]:
    request = google.auth.transport.requests.Request()
    return dict(id_token.verify_token(token, request, audience=audience, certs_url=f"{issuer_url}/certs"))


def test_a_minted_token_verifies_with_the_issuers_certificates(
    issuer_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_IDENTITY, raising=False)
    token = mint_token(issuer_url, AUDIENCE)
    claims = _verify(token, issuer_url)
    assert claims["iss"] == issuer_url
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == DEFAULT_IDENTITY
    assert claims["email_verified"] is True
    assert claims["sub"]
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == TOKEN_LIFETIME_SECONDS
    with urllib.request.urlopen(f"{issuer_url}/certs", timeout=5) as response:
        certs = json.loads(response.read())
    assert jwt.decode_header(token)["kid"] in certs
    assert jwt.decode_header(token)["alg"] == "RS256"


def test_the_identity_comes_from_the_argument_or_the_environment(
    issuer_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _verify(mint_token(issuer_url, AUDIENCE, "someone@else.example"), issuer_url)["email"] == (
        "someone@else.example"
    )
    monkeypatch.setenv(ENV_IDENTITY, "oncall@hello.local")
    assert _verify(mint_token(issuer_url, AUDIENCE), issuer_url)["email"] == "oncall@hello.local"


def test_a_workspace_domain_gets_the_hd_claim_and_a_consumer_account_does_not(issuer_url: str) -> None:
    local = _verify(mint_token(issuer_url, AUDIENCE), issuer_url)
    assert local["hd"] == DEFAULT_IDENTITY.rsplit("@", 1)[1]
    assert "hd" not in _verify(mint_token(issuer_url, AUDIENCE, "someone@gmail.com"), issuer_url)


def test_a_token_from_another_key_is_refused(issuer_url: str) -> None:
    stranger = generate_signing_key()
    with pytest.raises(ValueError):
        _verify(stranger.sign(issuer_url, AUDIENCE, DEFAULT_IDENTITY), issuer_url)


def test_a_forged_token_reusing_the_issuers_key_id_is_refused(issuer_url: str) -> None:
    genuine = mint_token(issuer_url, AUDIENCE)
    stranger = generate_signing_key()
    forged_key = type(stranger)(
        jwt.decode_header(genuine)["kid"], stranger.private_key_pem, stranger.certificate_pem
    )
    with pytest.raises(ValueError):
        _verify(forged_key.sign(issuer_url, AUDIENCE, DEFAULT_IDENTITY), issuer_url)


def test_a_token_for_another_audience_is_refused(issuer_url: str) -> None:
    with pytest.raises(ValueError):
        _verify(mint_token(issuer_url, "http://127.0.0.1:9/elsewhere"), issuer_url)


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    issued_long_ago = key.sign("http://127.0.0.1:9", AUDIENCE, DEFAULT_IDENTITY, now=1_000_000_000)
    assert jwt.decode(
        key.sign("http://127.0.0.1:9", AUDIENCE, DEFAULT_IDENTITY),
        certs=key.certs_document(),
        audience=AUDIENCE,
    )
    with pytest.raises(ValueError, match="expired"):
        jwt.decode(issued_long_ago, certs=key.certs_document(), audience=AUDIENCE)


def test_the_token_endpoint_requires_an_audience(issuer_url: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{issuer_url}/token", timeout=5)
    assert raised.value.code == 400


def test_the_signing_key_survives_a_restart(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path)
    again = load_or_create_signing_key(tmp_path)
    assert (again.key_id, again.private_key_pem) == (first.key_id, first.private_key_pem)
    assert (tmp_path / "signing-key.pem").stat().st_mode & 0o077 == 0
