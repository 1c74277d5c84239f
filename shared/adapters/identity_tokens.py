"""Identity-token verification against the issuer's published keys: the SDK side of
`shared.domain.identity`.

One code path everywhere. On Google Cloud the token is a Google-signed ID token
(`gcloud auth print-identity-token`, or a service account's metadata-server token) and the keys
come from Google's certificate endpoint. Locally the stack runs its own issuer, publishes its
keys in the same format (`{key id: PEM X.509 certificate}`), and the functions are pointed at it
with `ID_TOKEN_CERTS_URL` and `ID_TOKEN_ISSUERS`. Signature, expiry and audience are checked by
google-auth in both cases; what the claims must say is decided by the domain.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from google.oauth2 import id_token

from shared.config import ENV_ID_TOKEN_CERTS_URL, ENV_ID_TOKEN_ISSUERS, GOOGLE_CERTS_URL, GOOGLE_ISSUERS
from shared.domain.identity import (
    Caller,
    CertificatesUnavailableError,
    InvalidTokenError,
    caller_from_claims,
    issuers_from,
)

CLOCK_SKEW_SECONDS = 10
"""Tolerated difference between the issuer's clock and ours when checking `iat` and `exp`."""
DEFAULT_CERTS_MAX_AGE_SECONDS = 300.0
"""How long fetched keys are reused when the endpoint sends no usable Cache-Control max-age."""
MAX_CERTS_MAX_AGE_SECONDS = 6 * 3600.0
CERTS_FETCH_TIMEOUT_SECONDS = 10.0

_MAX_AGE = re.compile(r"max-age=(\d+)")
_UNKNOWN_KEY_ID = "Certificate for key id"


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
    return issuers_from(os.environ.get(ENV_ID_TOKEN_ISSUERS, "")) or GOOGLE_ISSUERS


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
    return caller_from_claims(claims, accepted_issuers())


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
