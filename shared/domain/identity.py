"""Who is calling: the claims of a verified identity token, and the allow-list check.

Pure. The signature, expiry and audience of a token are checked by the adapter that fetches the
issuer's keys (`shared.adapters.identity_tokens`); what the claims must say once the signature
holds (a trusted issuer, a verified e-mail) and whom an allow-list admits are decided here.

A `*@domain` allow-list entry trusts the token's `hd` (hosted domain) claim, never the e-mail
alone: anyone can create a consumer Google account whose verified e-mail is an address of a
company domain (for instance before the company moved to Google Workspace), and its tokens carry
a matching `email` but no `hd`. Only the Workspace account of that domain carries `hd`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CallerCheck = Callable[[Sequence[str]], bool]
"""Whether the verified caller matches one of these patterns (e-mails or `*@domain`): how a use
case asks about a caller it cannot see the token of (see `caller_allowed`)."""

_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


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


def issuers_from(configured: str) -> tuple[str, ...]:
    """The issuers a comma-separated setting names (blanks dropped).

    >>> issuers_from(" http://issuer.test , ,https://accounts.google.com")
    ('http://issuer.test', 'https://accounts.google.com')
    """
    return tuple(part.strip() for part in configured.split(",") if part.strip())


def caller_from_claims(claims: Mapping[str, Any], trusted_issuers: Iterable[str]) -> Caller:
    """The caller a token's claims name, once its signature, expiry and audience are verified.

    The issuer must be trusted and the e-mail verified (google-auth checks neither).

    >>> claims = {"iss": "https://accounts.google.com", "sub": "1", "email": "ada@example.com",
    ...           "email_verified": True, "hd": "example.com"}
    >>> caller_from_claims(claims, ["https://accounts.google.com"])
    Caller(email='ada@example.com', subject='1', issuer='https://accounts.google.com', hosted_domain='example.com')
    >>> caller_from_claims(claims | {"email_verified": "false"}, ["https://accounts.google.com"])
    Traceback (most recent call last):
    ...
    shared.domain.identity.InvalidTokenError: the e-mail ada@example.com in the identity token is not verified
    """
    issuer = str(claims.get("iss") or "")
    if issuer not in tuple(trusted_issuers):
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
