"""A local OpenID-style identity-token issuer, standing in for Google's on one machine.

On GCP the caller gets a Google-signed ID token (`gcloud auth print-identity-token`) and the
rollback function verifies it with google-auth against Google's published certificates. Here the
issuer signs RS256 tokens with its own key and publishes the matching certificate in the same
`{"key id": "x509 PEM"}` format, so the function runs the very same google-auth code path,
only with `ID_TOKEN_CERTS_URL` and `ID_TOKEN_ISSUERS` pointed at this server.

Endpoints (127.0.0.1 only):
  GET /certs                          {kid: certificate PEM}
  GET /token?audience=A[&email=E]     the token as text/plain (with `hd` for a non-consumer domain)
  GET /healthz                        200
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from shared.config import ENV_RELEASECTL_IDENTITY

DEFAULT_IDENTITY = "developer@hello.local"
TOKEN_LIFETIME_SECONDS = 3600
CONSUMER_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
"""Domains of consumer Google accounts, whose tokens carry no `hd` claim."""
KEY_FILE = "signing-key.pem"
CERT_FILE = "signing-cert.pem"


def local_identity() -> str:
    """The e-mail the local developer acts as: $RELEASECTL_IDENTITY or the default."""
    return os.environ.get(ENV_RELEASECTL_IDENTITY) or DEFAULT_IDENTITY


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key_pem: bytes
    certificate_pem: bytes

    def certs_document(self) -> dict[str, str]:
        return {self.key_id: self.certificate_pem.decode("ascii")}

    def sign(self, issuer: str, audience: str, email: str, now: float | None = None) -> str:
        issued_at = int(now if now is not None else time.time())
        claims: dict[str, object] = {
            "iss": issuer,
            "aud": audience,
            "sub": _subject(email),
            "email": email,
            "email_verified": True,
            "iat": issued_at,
            "exp": issued_at + TOKEN_LIFETIME_SECONDS,
        }
        hosted_domain = hosted_domain_of(email)
        if hosted_domain:
            claims["hd"] = hosted_domain
        signer = crypt.RSASigner.from_string(self.private_key_pem, key_id=self.key_id)
        return jwt.encode(signer, claims).decode("ascii")


def hosted_domain_of(email: str) -> str | None:
    """The `hd` claim Google puts in a token for this e-mail: the domain of a Workspace account,
    nothing for a consumer account. Locally every non-consumer domain counts as a Workspace domain.

    >>> hosted_domain_of("developer@Hello.Local"), hosted_domain_of("someone@gmail.com")
    ('hello.local', None)
    """
    domain = email.rsplit("@", 1)[1].strip().lower() if "@" in email else ""
    return domain if domain and domain not in CONSUMER_DOMAINS else None


def _subject(email: str) -> str:
    # Google's `sub` is a stable numeric account id; derive a stable one from the e-mail.
    return str(int(hashlib.sha256(email.encode("utf-8")).hexdigest()[:15], 16))


def generate_signing_key(common_name: str = "local-token-issuer") -> SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(private_key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    private_key_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Google's key ids are hex digests; a digest of the certificate changes whenever the key does.
    key_id = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return SigningKey(key_id, private_key_pem, certificate_pem)


def load_or_create_signing_key(directory: Path) -> SigningKey:
    """The issuer's key, kept in `directory` so tokens stay valid across issuer restarts."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if key_path.exists() and cert_path.exists():
        certificate_pem = cert_path.read_bytes()
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key_id = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        return SigningKey(key_id, key_path.read_bytes(), certificate_pem)
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    # Written private first, with owner-only permissions, so a reader never sees a half key.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_key_pem)
    cert_path.write_bytes(key.certificate_pem)
    return key


def mint_token(issuer_url: str, audience: str, email: str | None = None, timeout: float = 10.0) -> str:
    """Ask a running issuer for a token for `audience`, as `email` (default: the local identity)."""
    query = urllib.parse.urlencode({"audience": audience, "email": email or local_identity()})
    with urllib.request.urlopen(f"{issuer_url.rstrip('/')}/token?{query}", timeout=timeout) as response:
        return str(response.read().decode("ascii").strip())


class _IssuerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], key: SigningKey) -> None:
        super().__init__(address, _IssuerHandler)
        self.key = key
        self.issuer_url = f"http://{address[0]}:{self.server_address[1]}"


class _IssuerHandler(BaseHTTPRequestHandler):
    server: _IssuerServer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/healthz":
            self._reply(200, "text/plain", b"ok\n")
        elif url.path == "/certs":
            body = json.dumps(self.server.key.certs_document()).encode("utf-8")
            self._reply(200, "application/json", body)
        elif url.path == "/token":
            audience = query.get("audience", [""])[0]
            if not audience:
                self._reply(400, "text/plain", b"audience is required\n")
                return
            email = query.get("email", [""])[0] or local_identity()
            token = self.server.key.sign(self.server.issuer_url, audience, email)
            self._reply(200, "text/plain", token.encode("ascii"))
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"token-issuer: {self.address_string()} {format % args}\n")


def serve(host: str, port: int, state_dir: Path) -> None:
    key = load_or_create_signing_key(state_dir)
    server = _IssuerServer((host, port), key)

    def shut_down(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must run off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    sys.stderr.write(f"token-issuer: serving {server.issuer_url} (key id {key.key_id})\n")
    server.serve_forever(poll_interval=0.2)
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="where the signing key is kept")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.state_dir)


if __name__ == "__main__":
    main()
