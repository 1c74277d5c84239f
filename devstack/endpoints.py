"""Where a started stack's services answer, and the environment that points clients at them.

Two environments come from the endpoints: the stack's own (`.local/env`, for the shell, `releasectl`
and gcloud) and the functions' (the same plus what only the servers need: where to check tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.services import HOST
from shared import config as shared_config

ENV_WEBHOOK_URL = "LOCAL_WEBHOOK_URL"
"""The local pipeline file's webhook channel reads its URL from this variable."""


@dataclass(frozen=True)
class Endpoints:
    pubsub_host: str
    firestore_host: str
    compute_host: str
    issuer_url: str
    webhook_url: str
    function_ports: Mapping[str, int]

    def function_urls(self) -> dict[str, str]:
        return {entry: f"http://{HOST}:{port}/" for entry, port in self.function_ports.items()}

    def stack_env(
        self, project: str, pipeline_file: Path, notifications_file: Path, access_token_file: Path
    ) -> dict[str, str]:
        """The `.local/env` variables: every client of the stack finds its services through them."""
        function_urls = self.function_urls()
        env = {
            shared_config.ENV_PROJECT: project,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "FIRESTORE_EMULATOR_HOST": self.firestore_host,
            shared_config.ENV_COMPUTE_EMULATOR_HOST: self.compute_host,
        }
        # The Compute emulator's process also serves Cloud Monitoring's request counts.
        env[shared_config.ENV_MONITORING_EMULATOR_HOST] = self.compute_host
        env[shared_config.ENV_RELEASECTL_ROLLBACK_URL] = function_urls["rollback"]
        env[shared_config.ENV_RELEASECTL_PROMOTE_URL] = function_urls["promote"]
        env[shared_config.ENV_RELEASECTL_APPROVE_URL] = function_urls["approve"]
        env[shared_config.ENV_RELEASECTL_DASHBOARD_URL] = function_urls["dashboard"]
        env["CLOUDSDK_CORE_PROJECT"] = project
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB"] = f"http://{self.pubsub_host}/"
        env["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] = f"http://{self.compute_host}/compute/v1/"
        env["CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"] = str(access_token_file)
        env[shared_config.ENV_PIPELINE_CONFIG] = str(pipeline_file)
        env[shared_config.ENV_NOTIFICATIONS_FILE] = str(notifications_file)
        env[shared_config.ENV_RELEASECTL_TOKEN_URL] = f"{self.issuer_url}/token"
        # One function URL, one audience: each HTTP function accepts tokens minted for it alone.
        env[shared_config.ENV_ROLLBACK_AUDIENCE] = function_urls["rollback"]
        env[shared_config.ENV_PROMOTE_AUDIENCE] = function_urls["promote"]
        env[shared_config.ENV_APPROVE_AUDIENCE] = function_urls["approve"]
        env[ENV_WEBHOOK_URL] = self.webhook_url
        return env

    def function_env(self, stack_env: Mapping[str, str]) -> dict[str, str]:
        """What the function servers start with: the stack's env and where to check ID tokens."""
        return {
            **stack_env,
            shared_config.ENV_ID_TOKEN_CERTS_URL: f"{self.issuer_url}/certs",
            shared_config.ENV_ID_TOKEN_ISSUERS: self.issuer_url,
            # The dashboard forwards actions to the functions, and offers tokens of the local issuer.
            shared_config.ENV_DASHBOARD_ROLLBACK_URL: self.function_urls()["rollback"],
            shared_config.ENV_DASHBOARD_APPROVE_URL: self.function_urls().get("approve", ""),
            shared_config.ENV_DASHBOARD_LOCAL_TOKEN_URL: f"{self.issuer_url}/token",
            "PYTHONUNBUFFERED": "1",
        }
