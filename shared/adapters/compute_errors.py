"""Compute Engine's errors as the pipeline's: 5xx / 429 / timeouts / connection failures are
transient (`ComputeUnavailable`), other 4xx are configuration errors that retrying cannot fix
(`ComputeRefused`)."""

from __future__ import annotations

import concurrent.futures

import requests
from google.api_core import exceptions as google_exceptions

from shared.ports import PermanentError, TransientError

# lastAttempt error codes that say "not now" rather than "never": the deadline bounds them.
TRANSIENT_INSTANCE_ERRORS = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "QUOTA_EXCEEDED",
    "RESOURCE_NOT_READY",
    "RATE_LIMIT_EXCEEDED",
)


class ComputeUnavailable(TransientError):
    """Compute Engine failed in a way worth retrying."""


class ComputeRefused(PermanentError):
    """Compute Engine refused the request: the configuration or the release is wrong."""


def translate(exc: BaseException, what: str) -> Exception:
    if isinstance(
        exc,
        google_exceptions.ServerError
        | google_exceptions.TooManyRequests
        | google_exceptions.RetryError
        | concurrent.futures.TimeoutError
        | requests.exceptions.ConnectionError
        | requests.exceptions.Timeout,
    ):
        return ComputeUnavailable(f"{what}: {exc}")
    if isinstance(exc, google_exceptions.ClientError):
        return ComputeRefused(f"{what}: {exc.message if hasattr(exc, 'message') else exc}")
    return ComputeUnavailable(f"{what}: {exc}")
