"""Who is calling: verify an OpenID Connect identity token and check the caller against an allow-list.

One code path everywhere. On Google Cloud the token is a Google-signed ID token
(`gcloud auth print-identity-token`, or a service account's metadata-server token) and the keys
come from Google's certificate endpoint. Locally the stack runs its own issuer, publishes its
keys in the same format (`{key id: PEM X.509 certificate}`), and the functions are pointed at it
with `ID_TOKEN_CERTS_URL` and `ID_TOKEN_ISSUERS`. Signature, expiry and audience are checked by
google-auth in both cases; the issuer, the e-mail and the hosted-domain claims are checked here.

A `*@domain` allow-list entry trusts the token's `hd` (hosted domain) claim, never the e-mail
alone: anyone can create a consumer Google account whose verified e-mail is an address of a
company domain (for instance before the company moved to Google Workspace), and its tokens carry
a matching `email` but no `hd`. Only the Workspace account of that domain carries `hd`.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from google.oauth2 import id_token

from shared.config import ENV_ID_TOKEN_CERTS_URL, ENV_ID_TOKEN_ISSUERS, GOOGLE_CERTS_URL, GOOGLE_ISSUERS

CLOCK_SKEW_SECONDS = 10
"""Tolerated difference between the issuer's clock and ours when checking `iat` and `exp`."""
DEFAULT_CERTS_MAX_AGE_SECONDS = 300.0
"""How long fetched keys are reused when the endpoint sends no usable Cache-Control max-age."""
MAX_CERTS_MAX_AGE_SECONDS = 6 * 3600.0
CERTS_FETCH_TIMEOUT_SECONDS = 10.0

_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)
_MAX_AGE = re.compile(r"max-age=(\d+)")
_UNKNOWN_KEY_ID = "Certificate for key id"


class InvalidTokenError(Exception):
    """The caller did not present a token that verifies. Permanent for this request: answer 401."""


class CertificatesUnavailableError(Exception):
    """The signing keys could not be fetched. Transient (the key endpoint is down): answer 503."""


@dataclass(frozen=True)
class Caller:
    """A verified caller, as recorded on the deployment it triggers."""

    email: str
    subject: str
    issuer: str
    hosted_domain: str | None = None
    """The token's `hd` claim: the Google Workspace domain that manages the account, or None for
    a consumer account (or a service account)."""


def bearer_token(authorization_header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header.

    >>> bearer_token("Bearer abc.def.ghi")
    'abc.def.ghi'
    """
    match = _BEARER.fullmatch(authorization_header or "")
    if not match:
        raise InvalidTokenError("missing or malformed Authorization header; expected `Bearer <token>`")
    return match.group(1)


def caller_allowed(caller: Caller | str, patterns: Iterable[str]) -> bool:
    """Whether the caller matches one pattern: an exact address, or `*@domain` for the accounts
    that the domain's Google Workspace manages (the token's `hd` claim is that domain).

    Comparison ignores case, as e-mail domains do. A domain pattern does not match subdomains.
    Given a bare e-mail instead of a verified Caller, there is no proof of a hosted domain, so
    only exact addresses can match.

    >>> workspace = Caller("Ada@Example.com", "1", "iss", hosted_domain="example.com")
    >>> caller_allowed(workspace, ["*@example.com"])
    True
    >>> consumer = Caller("ada@example.com", "2", "iss")  # a consumer account: no `hd`
    >>> caller_allowed(consumer, ["*@example.com"]), caller_allowed(consumer, ["ada@example.com"])
    (False, True)
    >>> caller_allowed("ada@evil.example.com", ["*@example.com", "bob@example.com"])
    False
    """
    email, hosted_domain = (caller, None) if isinstance(caller, str) else (caller.email, caller.hosted_domain)
    address = email.strip().lower()
    if not address or "@" not in address:
        return False
    domain = address.rsplit("@", 1)[1]
    proven_domain = (hosted_domain or "").strip().lower()
    for raw in patterns:
        pattern = raw.strip().lower()
        if pattern.startswith("*@"):
            if domain == pattern[2:] and proven_domain == domain:
                return True
        elif pattern == address:
            return True
    return False


@dataclass
class _CachedResponse:
    response: google.auth.transport.Response
    expires_at: float


class CachingRequest(google.auth.transport.Request):
    """A google-auth transport that reuses successful GET answers until their max-age runs out.

    google-auth fetches the certificates on every verification; the keys rotate about daily and
    the endpoint says how long to keep them (Cache-Control max-age), so we honour that instead of
    paying a network round trip per rollback call.
    """

    def __init__(
        self,
        inner: google.auth.transport.Request | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner or google.auth.transport.requests.Request()
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _CachedResponse] = {}

    def forget(self, url: str) -> None:
        with self._lock:
            self._cache.pop(url, None)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        if method != "GET":
            return self._inner(url, method=method, body=body, headers=headers, timeout=timeout, **kwargs)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached and cached.expires_at > now:
                return cached.response
        response = self._inner(
            url, method="GET", headers=headers, timeout=timeout or CERTS_FETCH_TIMEOUT_SECONDS, **kwargs
        )
        if response.status == 200:
            # Read the body now so the cached object never touches the connection again.
            _ = response.data
            with self._lock:
                self._cache[url] = _CachedResponse(response, now + _max_age(response.headers))
        return response


def _max_age(headers: Mapping[str, str]) -> float:
    cache_control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    if "no-store" in cache_control or "no-cache" in cache_control:
        return 0.0
    match = _MAX_AGE.search(cache_control)
    if not match:
        return DEFAULT_CERTS_MAX_AGE_SECONDS
    return min(float(match.group(1)), MAX_CERTS_MAX_AGE_SECONDS)


_shared_request = CachingRequest()


def certs_url() -> str:
    return os.environ.get(ENV_ID_TOKEN_CERTS_URL) or GOOGLE_CERTS_URL


def accepted_issuers() -> tuple[str, ...]:
    configured = os.environ.get(ENV_ID_TOKEN_ISSUERS, "")
    issuers = tuple(part.strip() for part in configured.split(",") if part.strip())
    return issuers or GOOGLE_ISSUERS


def verify_identity_token(
    token: str,
    audience: str | Sequence[str],
    *,
    request: CachingRequest | None = None,
) -> Caller:
    """Verify signature, expiry, audience, issuer and a verified e-mail; return who called.

    `audience` is the one audience a token must carry, or several accepted ones (e.g. the
    function's URL, and gcloud's client id for people whose `gcloud auth print-identity-token`
    cannot name an audience because they are not a service account).

    Raises InvalidTokenError for anything the caller got wrong, and CertificatesUnavailableError
    when the key endpoint cannot be reached.
    """
    audiences = [audience] if isinstance(audience, str) else [a for a in audience if a]
    if not audiences:
        # A deployment mistake, not the caller's: refuse rather than accept any audience.
        raise ValueError("verify_identity_token needs the expected audience")
    if not token:
        raise InvalidTokenError("empty identity token")
    transport = request or _shared_request
    url = certs_url()
    try:
        claims = _verify(token, transport, audiences, url)
    except ValueError as exc:
        if _UNKNOWN_KEY_ID not in str(exc):
            # Bad signature, expired, wrong audience, malformed: permanent for this token.
            raise InvalidTokenError(f"identity token rejected: {exc}") from exc
        # The issuer may have rotated its keys since we cached them: fetch once more.
        transport.forget(url)
        try:
            claims = _verify(token, transport, audiences, url)
        except ValueError as retry_exc:  # permanent: the key really is not the issuer's
            raise InvalidTokenError(f"identity token rejected: {retry_exc}") from retry_exc
    return _caller_from(claims)


def _verify(token: str, transport: CachingRequest, audience: list[str], url: str) -> Mapping[str, Any]:
    try:
        return id_token.verify_token(
            token,
            transport,
            audience=audience,
            certs_url=url,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except google.auth.exceptions.TransportError as exc:
        # Transient: the key endpoint is unreachable or erroring; the caller may retry.
        raise CertificatesUnavailableError(f"cannot fetch token signing keys from {url}: {exc}") from exc


def _caller_from(claims: Mapping[str, Any]) -> Caller:
    issuer = str(claims.get("iss") or "")
    if issuer not in accepted_issuers():
        raise InvalidTokenError(f"identity token has issuer {issuer!r}, which is not trusted")
    email = claims.get("email")
    if not isinstance(email, str) or not email:
        raise InvalidTokenError("identity token carries no e-mail claim")
    verified = claims.get("email_verified")
    if verified is not True and str(verified).lower() != "true":
        raise InvalidTokenError(f"the e-mail {email} in the identity token is not verified")
    hosted_domain = claims.get("hd")
    return Caller(
        email=email,
        subject=str(claims.get("sub") or ""),
        issuer=issuer,
        hosted_domain=hosted_domain if isinstance(hosted_domain, str) and hosted_domain else None,
    )
