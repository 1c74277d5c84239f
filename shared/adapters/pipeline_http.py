"""The PipelineEndpoints port over HTTP: forwards a dashboard action to a pipeline function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from shared.usecases.dashboard import ActionUnavailable, ForwardedAnswer

HTTP_TIMEOUT_SECONDS = 30.0


class HttpPipelineEndpoints:
    def post(self, url: str, body: Mapping[str, Any], token: str) -> ForwardedAnswer:
        try:
            response = requests.post(
                url,
                json=dict(body),
                headers={"Authorization": f"Bearer {token}"},
                timeout=HTTP_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.RequestException as exc:  # transient: the function is unreachable
            raise ActionUnavailable(f"cannot reach {url}: {type(exc).__name__}") from exc
        try:
            answer = response.json()
        except ValueError:  # not JSON (a proxy's or IAM's error page): keep its first words
            answer = {"error": " ".join(response.text.split())[:200] or response.reason}
        if not isinstance(answer, dict):
            answer = {"error": str(answer)[:200]}
        return ForwardedAnswer(status=response.status_code, body=answer)

    def mint_local_token(self, token_url: str, audience: str, email: str) -> str:
        """A token from the local stack's issuer (never configured on Google Cloud)."""
        return _mint_local_token(token_url, audience, email)


def _mint_local_token(token_url: str, audience: str, email: str) -> str:
    try:
        response = requests.get(
            token_url, params={"audience": audience, "email": email}, timeout=HTTP_TIMEOUT_SECONDS
        )
    except requests.RequestException as exc:  # transient: the local issuer is not running
        raise ActionUnavailable(f"cannot reach the local token issuer: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise ActionUnavailable(f"the local token issuer answered HTTP {response.status_code}")
    return response.text.strip()
