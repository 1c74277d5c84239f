"""Talking to the pipeline: publish `build-succeeded`, get an identity token, call the HTTP
functions (rollback, promote, approve).

Each failure is classified for the CLI's exit code: `BadInput` (2) for what the user can fix in
the command line or environment, `OperationFailed` (1) for everything else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from shared.config import (
    ENV_APPROVE_AUDIENCE,
    ENV_PROJECT,
    ENV_PROMOTE_AUDIENCE,
    ENV_RELEASECTL_APPROVE_URL,
    ENV_RELEASECTL_IDENTITY,
    ENV_RELEASECTL_PROMOTE_URL,
    ENV_RELEASECTL_ROLLBACK_URL,
    ENV_RELEASECTL_TOKEN_URL,
    ENV_ROLLBACK_AUDIENCE,
)
from shared.domain.build_event import BuildSucceeded, InvalidBuildEvent, parse_build_succeeded
from shared.domain.rollback import rollback_request_body
from shared.topology import BUILD_SUCCEEDED

DEFAULT_IDENTITY = "developer@hello.local"
ENV_GCLOUD_IMPERSONATION = "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT"
"""gcloud's own setting: when set, gcloud mints tokens for that service account."""
PUBLISH_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 30.0
GCLOUD_TIMEOUT_SECONDS = 60.0


class BadInput(Exception):
    """Bad usage or input: exit 2 with this one-line reason."""


class OperationFailed(Exception):
    """The operation did not succeed: exit 1 with this reason."""


def build_message(
    *,
    app: str,
    environment: str,
    commit: str,
    build_id: str,
    artifact: str,
    artifact_sha256: str,
    committed_at: str | None = None,
    commit_messages: Sequence[str] = (),
    bump: str | None = None,
    branch: str | None = None,
    build_url: str | None = None,
    triggered_by: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The CONTRACT §3 message, validated by the same parser the pipeline runs."""
    payload: dict[str, Any] = {
        "app": app,
        "environment": environment,
        "commit": commit,
        "build_id": build_id,
        "artifact": artifact,
        "artifact_sha256": artifact_sha256,
    }
    optional: dict[str, Any] = {
        "committed_at": committed_at,
        "commit_messages": list(commit_messages) or None,
        "bump": bump,
        "branch": branch,
        "build_url": build_url,
        "triggered_by": triggered_by,
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    attributes = {"app": app, "environment": environment}
    try:
        event: BuildSucceeded = parse_build_succeeded(data, attributes)
    except InvalidBuildEvent as exc:  # permanent: the pipeline would reject it too
        raise BadInput(exc.reason) from exc
    return event.to_message()


def publish_build_succeeded(data: bytes, attributes: Mapping[str, str], project: str | None = None) -> str:
    """Publish on `build-succeeded`; returns the message id. Honours $PUBSUB_EMULATOR_HOST."""
    project = project or os.environ.get(ENV_PROJECT)
    if not project:
        raise BadInput(f"{ENV_PROJECT} is not set; it names the project whose topic to publish to")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, BUILD_SUCCEEDED)
    try:
        return str(publisher.publish(topic, data, **attributes).result(timeout=PUBLISH_TIMEOUT_SECONDS))
    except api_exceptions.NotFound as exc:  # permanent: the topic does not exist in this project
        raise OperationFailed(f"topic {topic} does not exist") from exc
    except (api_exceptions.GoogleAPICallError, TimeoutError) as exc:  # transient: CI can rerun the step
        raise OperationFailed(f"publishing to {topic} failed: {exc}") from exc
    finally:
        publisher.stop()


@dataclass(frozen=True)
class Endpoint:
    """One of the pipeline's HTTP functions, as releasectl finds it in the environment."""

    name: str
    url_variable: str
    audience_variable: str

    def url(self) -> str:
        url = os.environ.get(self.url_variable, "").strip()
        if not url:
            raise BadInput(f"{self.url_variable} is not set (the {self.name} function's URL)")
        return url

    def audience(self) -> str:
        """The token audience: the function's first accepted audience, else its URL."""
        configured = os.environ.get(self.audience_variable, "").split(",")[0].strip()
        return configured or self.url()


ROLLBACK = Endpoint("rollback", ENV_RELEASECTL_ROLLBACK_URL, ENV_ROLLBACK_AUDIENCE)
PROMOTE = Endpoint("promote", ENV_RELEASECTL_PROMOTE_URL, ENV_PROMOTE_AUDIENCE)
APPROVE = Endpoint("approve", ENV_RELEASECTL_APPROVE_URL, ENV_APPROVE_AUDIENCE)
ENDPOINTS = {endpoint.name: endpoint for endpoint in (ROLLBACK, PROMOTE, APPROVE)}


def rollback_url() -> str:
    return ROLLBACK.url()


def identity_token(endpoint: Endpoint = ROLLBACK, email: str | None = None) -> str:
    """A token `endpoint` accepts: from the local issuer, or from gcloud on GCP.

    `email` asks the local issuer for another identity (`releasectl token --email`); on GCP
    the identity is whoever gcloud is logged in as, so naming another one is bad input.
    """
    audience = endpoint.audience()
    token_url = os.environ.get(ENV_RELEASECTL_TOKEN_URL, "").strip()
    if token_url:
        identity = email or os.environ.get(ENV_RELEASECTL_IDENTITY, "").strip() or DEFAULT_IDENTITY
        query = urllib.parse.urlencode({"audience": audience, "email": identity})
        separator = "&" if "?" in token_url else "?"
        try:
            response = requests.get(f"{token_url}{separator}{query}", timeout=HTTP_TIMEOUT_SECONDS)
        except requests.RequestException as exc:  # transient: the local issuer is not running
            raise OperationFailed(f"cannot reach the token issuer at {token_url}: {exc}") from exc
        if response.status_code != 200:
            raise OperationFailed(
                f"token issuer answered HTTP {response.status_code}: {response.text.strip()}"
            )
        return response.text.strip()
    if email:
        raise BadInput(
            f"--email needs the local token issuer ({ENV_RELEASECTL_TOKEN_URL}); on Google Cloud the"
            " identity is the account gcloud is logged in as"
        )
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise BadInput(
            f"gcloud is not installed and {ENV_RELEASECTL_TOKEN_URL} is not set; cannot get a token"
        )
    flags = [f"--audiences={audience}"]
    if os.environ.get(ENV_GCLOUD_IMPERSONATION, "").strip():
        # A token minted through impersonation (CircleCI's promotion job) carries the e-mail
        # claim the functions verify only when asked to.
        flags.append("--include-email")
    completed = _gcloud_identity_token(gcloud, flags)
    if completed.returncode != 0 and "service account" in completed.stderr.lower():
        # gcloud names an audience only for service accounts; a person's token carries gcloud's
        # own client id as its audience, which the rollback function can be told to accept.
        completed = _gcloud_identity_token(gcloud, [])
    if completed.returncode != 0:
        reason = " ".join(completed.stderr.split())[:400] or "no output"
        raise OperationFailed(f"gcloud auth print-identity-token failed: {reason}")
    return completed.stdout.strip()


def _gcloud_identity_token(gcloud: str, flags: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [gcloud, "auth", "print-identity-token", *flags],
            capture_output=True,
            text=True,
            timeout=GCLOUD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # transient: gcloud hung (network, prompt)
        raise OperationFailed("gcloud auth print-identity-token timed out") from exc


@dataclass(frozen=True)
class RollbackAccepted:
    deployment_id: str
    version: str
    rollback_of: str | None
    body: dict[str, Any]


def request_rollback(
    app: str, environment: str, to_version: str | None, reason: str | None, token: str | None = None
) -> RollbackAccepted:
    """POST CONTRACT §4. 400/404 are the caller's input (BadInput); 401/403/409/5xx fail the operation."""
    answer = call(ROLLBACK, rollback_request_body(app, environment, to_version, reason), token)
    return RollbackAccepted(
        deployment_id=str(answer.get("deployment_id")),
        version=str(answer.get("version")),
        rollback_of=answer.get("rollback_of"),
        body=answer,
    )


def request_promotion(
    app: str,
    from_environment: str,
    to_environment: str,
    version: str | None,
    reason: str | None,
    token: str | None = None,
) -> dict[str, Any]:
    """POST CONTRACT §4b; the 202 answer `{deployment_id, version, status}`."""
    body: dict[str, Any] = {
        "app": app,
        "from_environment": from_environment,
        "to_environment": to_environment,
    }
    if version:
        body["version"] = version
    if reason:
        body["reason"] = reason
    return call(PROMOTE, body, token)


def request_decision(
    deployment_id: str, decision: str, reason: str | None, token: str | None = None
) -> dict[str, Any]:
    """POST CONTRACT §4c; the 202 answer `{deployment_id, status}`."""
    body: dict[str, Any] = {"deployment_id": deployment_id, "decision": decision}
    if reason:
        body["reason"] = reason
    return call(APPROVE, body, token)


def call(endpoint: Endpoint, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """POST `body` to `endpoint` with an identity token; the JSON answer of a 202.

    400 and 404 are the caller's input (BadInput, exit 2); 401, 403, 409 and 5xx fail the
    operation (exit 1), with the server's reason.
    """
    url = endpoint.url()
    bearer = token or identity_token(endpoint)
    try:
        response = requests.post(
            url, json=body, headers={"Authorization": f"Bearer {bearer}"}, timeout=HTTP_TIMEOUT_SECONDS
        )
    except requests.RequestException as exc:  # transient: the function is unreachable
        raise OperationFailed(f"cannot reach the {endpoint.name} endpoint {url}: {exc}") from exc
    answer = _json_or_text(response)
    if response.status_code == 202 and isinstance(answer, dict):
        return answer
    reason_text = answer.get("error") if isinstance(answer, dict) else str(answer)
    message = f"{endpoint.name} refused (HTTP {response.status_code}): {reason_text or response.reason}"
    if response.status_code in (400, 404):
        raise BadInput(message)
    raise OperationFailed(message)


def _json_or_text(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # not JSON (a proxy's error page): show the text
        return response.text.strip()
