"""The SmokeProbe port over HTTP (requests): one request per smoke check, bounded by its timeout."""

from __future__ import annotations

import requests

from shared.domain.verification import SmokeAnswer, SmokeCheck

MAX_BODY_BYTES = 64 * 1024
"""A check looks for a substring near the top of the page; a huge body is not read whole."""


class HttpSmokeProbe:
    def request(self, base_url: str, check: SmokeCheck) -> SmokeAnswer:
        url = base_url.rstrip("/") + check.path
        try:
            with requests.request(
                check.method, url, timeout=check.timeout_seconds, allow_redirects=False, stream=True
            ) as response:
                body = response.raw.read(MAX_BODY_BYTES, decode_content=True) or b""
                return SmokeAnswer(response.status_code, body.decode("utf-8", errors="replace"))
        except requests.Timeout:  # an answer in itself: the check fails, saying so
            return SmokeAnswer(None, error=f"no answer within {check.timeout_seconds:g} s")
        except requests.RequestException as exc:  # the same: refused, reset, bad URL
            return SmokeAnswer(None, error=f"{type(exc).__name__}: {exc}")
