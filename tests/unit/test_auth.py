"""Identity-token verification through real google-auth, against keys served over local HTTP."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from shared.adapters.identity_tokens import CachingRequest, verify_identity_token
from shared.config import ENV_ID_TOKEN_CERTS_URL, ENV_ID_TOKEN_ISSUERS
from shared.domain.identity import (
    Caller,
    CertificatesUnavailableError,
    InvalidTokenError,
    bearer_token,
    caller_allowed,
)

ISSUER = "http://issuer.test"
AUDIENCE = "http://127.0.0.1:9/rollback"


@dataclass
class SigningKey:
    key_id: str
    private_pem: bytes
    certificate_pem: str

    @classmethod
    def generate(cls, key_id: str) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(private_key, hashes.SHA256())
        )
        return cls(
            key_id=key_id,
            private_pem=private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        )

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "1234567890",
            "email": "ada@hello.example.com",
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        signer = crypt.RSASigner.from_string(self.private_pem, self.key_id)
        return jwt.encode(signer, claims).decode()


@dataclass
class CertsServer:
    """Publishes certificates as Google's v1 endpoint does: `{key id: PEM certificate}`."""

    url: str
    published: dict[str, str] = field(default_factory=dict)
    fetches: int = 0
    failing: bool = False


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    return SigningKey.generate("key-1")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate("key-2")


@pytest.fixture
def certs_server(monkeypatch: pytest.MonkeyPatch, signing_key: SigningKey) -> Iterator[CertsServer]:
    state = CertsServer(url="")
    state.published[signing_key.key_id] = signing_key.certificate_pem

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            if state.failing:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps(state.published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/certs"
    monkeypatch.setenv(ENV_ID_TOKEN_CERTS_URL, state.url)
    monkeypatch.setenv(ENV_ID_TOKEN_ISSUERS, f"{ISSUER},https://other-trusted.test")
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def verify(token: str, audience: str = AUDIENCE) -> Caller:
    # A fresh cache per call keeps tests independent of each other's fetches.
    return verify_identity_token(token, audience, request=CachingRequest())


def test_a_valid_token_names_the_caller(certs_server: CertsServer, signing_key: SigningKey) -> None:
    caller = verify(signing_key.token())

    assert caller == Caller(email="ada@hello.example.com", subject="1234567890", issuer=ISSUER)


def test_an_expired_token_is_rejected(certs_server: CertsServer, signing_key: SigningKey) -> None:
    long_ago = int(time.time()) - 7200
    with pytest.raises(InvalidTokenError, match="expired"):
        verify(signing_key.token(iat=long_ago, exp=long_ago + 3600))


def test_a_token_for_another_audience_is_rejected(certs_server: CertsServer, signing_key: SigningKey) -> None:
    with pytest.raises(InvalidTokenError, match="audience"):
        verify(signing_key.token(aud="https://someone-else.example.com"))


def test_a_token_from_an_untrusted_issuer_is_rejected(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    with pytest.raises(InvalidTokenError, match="issuer"):
        verify(signing_key.token(iss="https://evil.example.com"))


def test_a_token_signed_by_another_key_is_rejected(certs_server: CertsServer, other_key: SigningKey) -> None:
    with pytest.raises(InvalidTokenError):
        verify(other_key.token())


def test_a_token_signed_by_another_key_under_a_published_key_id_is_rejected(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    impostor = SigningKey.generate(signing_key.key_id)
    with pytest.raises(InvalidTokenError, match="signature"):
        verify(impostor.token())


def test_an_unverified_email_is_rejected(certs_server: CertsServer, signing_key: SigningKey) -> None:
    with pytest.raises(InvalidTokenError, match="not verified"):
        verify(signing_key.token(email_verified=False))


def test_a_token_without_an_email_is_rejected(certs_server: CertsServer, signing_key: SigningKey) -> None:
    with pytest.raises(InvalidTokenError, match="e-mail"):
        verify(signing_key.token(email=None))


def test_garbage_is_rejected_as_an_invalid_token(certs_server: CertsServer) -> None:
    for garbage in ("not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA"):
        with pytest.raises(InvalidTokenError):
            verify(garbage)


def test_keys_are_fetched_once_while_their_max_age_lasts(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    request = CachingRequest()
    for _ in range(3):
        verify_identity_token(signing_key.token(), AUDIENCE, request=request)

    assert certs_server.fetches == 1


def test_a_rotated_key_is_picked_up_without_waiting_for_the_cache(
    certs_server: CertsServer, signing_key: SigningKey, other_key: SigningKey
) -> None:
    request = CachingRequest()
    verify_identity_token(signing_key.token(), AUDIENCE, request=request)
    certs_server.published[other_key.key_id] = other_key.certificate_pem

    caller = verify_identity_token(other_key.token(), AUDIENCE, request=request)

    assert caller.email == "ada@hello.example.com"
    assert certs_server.fetches == 2


def test_an_unreachable_key_endpoint_is_a_transient_error(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    certs_server.failing = True
    with pytest.raises(CertificatesUnavailableError):
        verify(signing_key.token())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  tok ", "tok"), ("BEARER x", "x")],
)
def test_the_bearer_token_is_taken_from_the_authorization_header(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwdw==", "Bearer a b"])
def test_a_missing_or_malformed_authorization_header_is_an_invalid_token(header: str | None) -> None:
    with pytest.raises(InvalidTokenError):
        bearer_token(header)


@pytest.mark.parametrize(
    ("email", "hosted_domain", "allowed"),
    [
        ("oncall@hello.example.com", "hello.example.com", True),
        ("OnCall@Hello.Example.com", "Hello.Example.com", True),
        ("dev@hello.example.com", "hello.example.com", True),
        ("dev@hello.example.com", None, False),  # a consumer account with a company address
        ("dev@hello.example.com", "other.example.com", False),
        ("dev@evil.hello.example.com", "evil.hello.example.com", False),
        ("dev@example.com", "example.com", False),
        ("lead@other.example.com", None, True),
        ("lead2@other.example.com", "other.example.com", False),
        ("", None, False),
    ],
)
def test_callers_match_exact_addresses_or_whole_workspace_domains(
    email: str, hosted_domain: str | None, allowed: bool
) -> None:
    patterns = ["*@hello.example.com", "lead@other.example.com"]
    assert caller_allowed(Caller(email, "1", ISSUER, hosted_domain), patterns) is allowed


def test_a_bare_email_never_matches_a_domain_pattern() -> None:
    assert caller_allowed("dev@hello.example.com", ["*@hello.example.com"]) is False
    assert caller_allowed("dev@hello.example.com", ["dev@hello.example.com"]) is True


def test_the_hosted_domain_comes_from_the_tokens_hd_claim(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    workspace = verify(signing_key.token(hd="hello.example.com"))
    consumer = verify(signing_key.token())
    assert workspace.hosted_domain == "hello.example.com"
    assert consumer.hosted_domain is None
    assert caller_allowed(workspace, ["*@hello.example.com"])
    assert not caller_allowed(consumer, ["*@hello.example.com"])


def test_no_patterns_allow_nobody() -> None:
    assert caller_allowed("ada@hello.example.com", []) is False


def test_any_of_several_accepted_audiences_verifies(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    gcloud_client_id = "32555940559.apps.googleusercontent.com"
    token = signing_key.token(aud=gcloud_client_id)

    caller = verify_identity_token(token, [AUDIENCE, gcloud_client_id], request=CachingRequest())

    assert caller.email == "ada@hello.example.com"
    with pytest.raises(InvalidTokenError, match="audience"):
        verify_identity_token(token, [AUDIENCE], request=CachingRequest())


def test_no_expected_audience_is_a_configuration_error(
    certs_server: CertsServer, signing_key: SigningKey
) -> None:
    with pytest.raises(ValueError, match="audience"):
        verify_identity_token(signing_key.token(), [], request=CachingRequest())
