"""Configuration: environment variables (one place for their names) and the pipeline file.

The pipeline file is one declarative TOML document describing every app and environment.
It is loaded and validated at cold start; a bad file fails fast with the offending key named.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shared import config_fields as fields
from shared import topology
from shared.config_fields import Channel, ConfigError
from shared.domain.identifiers import NAME_PATTERN
from shared.domain.records import environment_key
from shared.domain.verification import BakeRules, SmokeCheck
from shared.domain.windows import (
    DeployPolicy,
    Freeze,
    WeeklyWindow,
)

# ---- environment variable names (Terraform sets these on the functions) ---------------------
ENV_PROJECT = "GOOGLE_CLOUD_PROJECT"
ENV_PIPELINE_CONFIG = "PIPELINE_CONFIG"
"""Path of the pipeline TOML file. Default: config/pipeline.toml in the bundle."""
ENV_COMPUTE_EMULATOR_HOST = "COMPUTE_EMULATOR_HOST"
"""host:port of a Compute emulator; unset on GCP, where the real API is used."""
ENV_MONITORING_EMULATOR_HOST = "MONITORING_EMULATOR_HOST"
"""host:port serving Cloud Monitoring's v3 REST API locally (the Compute emulator's process);
unset on GCP, where the real API is used."""
ENV_NOTIFICATIONS_FILE = "NOTIFICATIONS_FILE"
"""Local only: every notification is also appended here as one JSON line."""
ENV_ROLLBACK_AUDIENCE = "ROLLBACK_AUDIENCE"
"""Comma-separated audiences a rollback caller's identity token may carry: the rollback
function's URL, optionally followed by others (on GCP, the Cloud CLI's client id, which is the
audience of a person's `gcloud auth print-identity-token`). See `parse_audiences`."""
ENV_PROMOTE_AUDIENCE = "PROMOTE_AUDIENCE"
"""Comma-separated audiences a promote caller's token may carry: the promote function's URL
first (one function URL, one audience), as ROLLBACK_AUDIENCE is for rollback."""
ENV_APPROVE_AUDIENCE = "APPROVE_AUDIENCE"
"""Comma-separated audiences an approve caller's token may carry: the approve function's URL first."""
ENV_ID_TOKEN_CERTS_URL = "ID_TOKEN_CERTS_URL"
"""Where the token-signing keys are published. Default: Google's OAuth2 certificates."""
ENV_ID_TOKEN_ISSUERS = "ID_TOKEN_ISSUERS"
"""Comma-separated accepted issuers. Default: Google's two issuer spellings."""
ENV_LOG_LEVEL = "LOG_LEVEL"
"""Level of the functions' JSON logs (default INFO)."""
ENV_RELEASECTL_ROLLBACK_URL = "RELEASECTL_ROLLBACK_URL"
"""releasectl: the rollback function's URL (CONTRACT §4)."""
ENV_RELEASECTL_PROMOTE_URL = "RELEASECTL_PROMOTE_URL"
"""releasectl: the promote function's URL (CONTRACT §4b)."""
ENV_RELEASECTL_APPROVE_URL = "RELEASECTL_APPROVE_URL"
"""releasectl: the approve function's URL (CONTRACT §4c)."""
ENV_RELEASECTL_TOKEN_URL = "RELEASECTL_TOKEN_URL"
"""releasectl, local only: the local issuer's mint endpoint; unset on GCP, where gcloud mints tokens."""
ENV_RELEASECTL_IDENTITY = "RELEASECTL_IDENTITY"
"""releasectl, local only: the e-mail to ask the local issuer for (default developer@hello.local)."""
ENV_RELEASECTL_DASHBOARD_URL = "RELEASECTL_DASHBOARD_URL"
"""The release dashboard's URL (CONTRACT §10); the local stack writes it to its env file."""
ENV_DASHBOARD_ROLLBACK_URL = "DASHBOARD_ROLLBACK_URL"
"""The dashboard function: the rollback function it forwards a user's rollback to."""
ENV_DASHBOARD_APPROVE_URL = "DASHBOARD_APPROVE_URL"
"""The dashboard function: the approval function it forwards approve / reject to (empty: none)."""
ENV_DASHBOARD_LOCAL_TOKEN_URL = "DASHBOARD_LOCAL_TOKEN_URL"
"""The dashboard function, local only: the local issuer's mint endpoint, for local sign-in."""

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "pipeline.toml"

MAX_BAKE_SECONDS = 900
"""The bake step is polled by Pub/Sub redelivery (at most 100 deliveries, backoff up to 10 s:
`topology.retries_last_seconds`, 965 s)."""
MAX_PROVISIONING_DEADLINE_SECONDS = topology.retries_last_seconds(
    topology.trigger_of(topology.COOL_DOWN_COMPLETE)
)
"""The cool-down step is polled by Pub/Sub redelivery as well: a deadline longer than its
retries last would dead-letter the poll of a green that may still become healthy in time."""
BAKE_RETENTION_MARGIN_SECONDS = 30
"""The previous group must stay retained this much longer than the bake window: adoption refuses a
group whose clean-up is due within 10 s, and the last look at green comes up to a poll late."""


def parse_audiences(text: str) -> tuple[str, ...]:
    """The accepted token audiences of a comma-separated setting, in order, without blanks or
    repeats.

    >>> parse_audiences(" https://fn.example , 123.apps.googleusercontent.com,,https://fn.example")
    ('https://fn.example', '123.apps.googleusercontent.com')
    >>> parse_audiences(" , ")
    ()
    """
    audiences = (part.strip() for part in text.split(","))
    return tuple(dict.fromkeys(a for a in audiences if a))


@dataclass(frozen=True)
class EnvironmentConfig:
    app: str
    name: str
    region: str
    instance_count: int
    cool_down_seconds: int
    provisioning_deadline_seconds: int
    base_instance_template: str
    health_check: str
    backend_service: str
    health_path: str
    draining_timeout_seconds: int
    url: str
    retain_previous_seconds: int = 3600
    """How long a retired group keeps running, detached, after a switch, so that a rollback to
    it is a traffic switch rather than a new deployment. 0 keeps it only while it drains."""
    channels: tuple[Channel, ...] = ()
    rollback_callers: tuple[str, ...] = ()
    auto_deploy: bool = False
    """False: every deployment but a rollback waits in `awaiting_approval` for an approver."""
    approvers: tuple[str, ...] = ()
    """Who may approve or reject here: e-mail addresses, or `*@domain`."""
    promoters: tuple[str, ...] = ()
    """Who may promote a release into this environment; empty means the approvers."""
    approval_timeout_seconds: int = 86400
    """A deployment still awaiting approval this long after it was recorded is cancelled."""
    deploy_windows: tuple[WeeklyWindow, ...] = ()
    """When a deployment may start (weekly, local wall time); none: at any time."""
    freezes: tuple[Freeze, ...] = ()
    """Absolute ranges in which no deployment starts, windows or not. Rollbacks are exempt."""
    preview_backend_service: str = ""
    """A second backend service where green is reachable before the switch (CONTRACT §9)."""
    preview_url: str = ""
    smoke_checks: tuple[SmokeCheck, ...] = ()
    """Requests the preview must answer as expected before green gets traffic."""
    bake_seconds: int = 0
    """How long after the switch green is watched; 0: no bake window."""
    max_error_ratio: float = 0.05
    """Largest share of 5xx answers green may give during the bake window."""
    min_requests: int = 20
    """The 5xx ratio is judged only over at least this many requests."""

    @property
    def key(self) -> str:
        return environment_key(self.app, self.name)

    @property
    def deploy_policy(self) -> DeployPolicy:
        return DeployPolicy(windows=self.deploy_windows, freezes=self.freezes)

    @property
    def promotion_callers(self) -> tuple[str, ...]:
        """Who may promote into this environment: its `promoters`, by default its `approvers`."""
        return self.promoters or self.approvers

    @property
    def bake_rules(self) -> BakeRules:
        return BakeRules(self.bake_seconds, self.max_error_ratio, self.min_requests)

    def preview(self) -> EnvironmentConfig | None:
        """This environment as seen through its preview backend service, if it has one."""
        if not self.preview_backend_service:
            return None
        return replace(self, backend_service=self.preview_backend_service, url=self.preview_url)


@dataclass(frozen=True)
class AppConfig:
    name: str
    first_version: str
    environments: Mapping[str, EnvironmentConfig] = field(default_factory=dict)
    artifact_prefixes: tuple[str, ...] = ()
    """Where this app's artifacts may come from (URL prefixes, each ending in '/'): a build whose
    artifact lies under none of them is rejected. None listed: every build is rejected."""
    allow_file_artifacts: bool = False
    """Whether `file:///` prefixes are allowed: only on the local stack, where instances read
    artifacts from this machine's disk. On Google Cloud artifacts come from Cloud Storage."""


@dataclass(frozen=True)
class PipelineConfig:
    apps: Mapping[str, AppConfig]
    operations_channels: tuple[Channel, ...] = ()
    """The top-level `[operations]` section's channels: where the people who run the pipeline
    hear about what belongs to no known app (a rejected message naming an unknown app) and
    about events that exhausted their retries."""

    def environment(self, app: str, environment: str) -> EnvironmentConfig | None:
        app_config = self.apps.get(app)
        return app_config.environments.get(environment) if app_config else None

    def all_environments(self) -> list[EnvironmentConfig]:
        return [env for app in self.apps.values() for env in app.environments.values()]

    def all_channels(self) -> list[Channel]:
        """Every channel the file names, each once: the environments' and the operations ones."""
        named = [*self.operations_channels, *(c for env in self.all_environments() for c in env.channels)]
        return list(dict.fromkeys(named))


_ENV_DEFAULTS: dict[str, Any] = {
    "region": "us-central1",
    "instance_count": 2,
    "cool_down_seconds": 300,
    "provisioning_deadline_seconds": 900,
    "health_path": "/healthz",
    "draining_timeout_seconds": 60,
    "retain_previous_seconds": 3600,
    "url": "",
    "channels": [],
    "rollback_callers": [],
    "auto_deploy": False,
    "approvers": [],
    "promoters": [],
    "approval_timeout_seconds": 86400,
    "deploy_windows": [],
    "freezes": [],
    "preview_backend_service": "",
    "preview_url": "",
    "smoke_checks": [],
    "bake_seconds": 0,
    "max_error_ratio": 0.05,
    "min_requests": 20,
}
_ENV_KEYS = {
    *_ENV_DEFAULTS,
    "base_instance_template",
    "health_check",
    "backend_service",
}
_APP_KEYS = {"first_version", "environments", "defaults", "artifact_prefixes", "allow_file_artifacts"}
_GCS_PREFIX = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,221}/\S*")
_FILE_PREFIX = re.compile(r"file:///\S*")


def _environment(
    app: str, name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]
) -> EnvironmentConfig:
    where = f"apps.{app}.environments.{name}"
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: environment name must match {NAME_PATTERN.pattern}")
    fields.require(dict, raw, where)
    fields.refuse_unknown_keys(raw, where, _ENV_KEYS)
    merged = {**_ENV_DEFAULTS, **defaults, **raw}
    for key in ("base_instance_template", "health_check", "backend_service"):
        if key not in merged:
            raise ConfigError(f"{where}.{key}: required")
    channels = fields.channels(merged["channels"], f"{where}.channels")
    callers = fields.identities(merged["rollback_callers"], f"{where}.rollback_callers")
    health_path = fields.require(str, merged["health_path"], f"{where}.health_path")
    if not health_path.startswith("/"):
        raise ConfigError(f"{where}.health_path: must start with '/'")
    preview_backend_service = fields.require(
        str, merged["preview_backend_service"], f"{where}.preview_backend_service"
    )
    if preview_backend_service:
        fields.gce_name(preview_backend_service, f"{where}.preview_backend_service")
    smoke_checks = fields.smoke_checks(merged["smoke_checks"], f"{where}.smoke_checks")
    if smoke_checks and not preview_backend_service:
        raise ConfigError(f"{where}.smoke_checks: need a preview_backend_service to run against")
    if smoke_checks and not merged["preview_url"]:
        raise ConfigError(f"{where}.smoke_checks: need the preview_url of the preview backend service")
    deadline = fields.positive(
        merged["provisioning_deadline_seconds"], f"{where}.provisioning_deadline_seconds"
    )
    if deadline > MAX_PROVISIONING_DEADLINE_SECONDS:
        raise ConfigError(
            f"{where}.provisioning_deadline_seconds: at most {MAX_PROVISIONING_DEADLINE_SECONDS}"
            f" (the cool-down poll's retries last no longer), got {deadline}"
        )
    cool_down = fields.positive(merged["cool_down_seconds"], f"{where}.cool_down_seconds")
    if cool_down >= deadline:
        # The deadline counts from when the deployment took the lock, so it holds the cool-down.
        raise ConfigError(
            f"{where}.cool_down_seconds: must be shorter than provisioning_deadline_seconds ({deadline}),"
            f" which it is part of; got {cool_down}"
        )
    bake_seconds = fields.non_negative(merged["bake_seconds"], f"{where}.bake_seconds")
    if bake_seconds > MAX_BAKE_SECONDS:
        raise ConfigError(f"{where}.bake_seconds: at most {MAX_BAKE_SECONDS}, got {bake_seconds}")
    environment = EnvironmentConfig(
        app=app,
        name=name,
        region=fields.require(str, merged["region"], f"{where}.region"),
        instance_count=fields.positive(merged["instance_count"], f"{where}.instance_count"),
        cool_down_seconds=cool_down,
        provisioning_deadline_seconds=deadline,
        base_instance_template=fields.gce_name(
            merged["base_instance_template"], f"{where}.base_instance_template"
        ),
        health_check=fields.gce_name(merged["health_check"], f"{where}.health_check"),
        backend_service=fields.gce_name(merged["backend_service"], f"{where}.backend_service"),
        health_path=health_path,
        draining_timeout_seconds=fields.positive(
            merged["draining_timeout_seconds"], f"{where}.draining_timeout_seconds"
        ),
        url=fields.require(str, merged["url"], f"{where}.url"),
        retain_previous_seconds=fields.non_negative(
            merged["retain_previous_seconds"], f"{where}.retain_previous_seconds"
        ),
        channels=channels,
        rollback_callers=callers,
        auto_deploy=fields.require(bool, merged["auto_deploy"], f"{where}.auto_deploy"),
        approvers=fields.identities(merged["approvers"], f"{where}.approvers"),
        promoters=fields.identities(merged["promoters"], f"{where}.promoters"),
        approval_timeout_seconds=fields.positive(
            merged["approval_timeout_seconds"], f"{where}.approval_timeout_seconds"
        ),
        deploy_windows=fields.deploy_windows(merged["deploy_windows"], f"{where}.deploy_windows"),
        freezes=fields.freezes(merged["freezes"], f"{where}.freezes"),
        preview_backend_service=preview_backend_service,
        preview_url=fields.require(str, merged["preview_url"], f"{where}.preview_url"),
        smoke_checks=smoke_checks,
        bake_seconds=bake_seconds,
        max_error_ratio=fields.ratio(merged["max_error_ratio"], f"{where}.max_error_ratio"),
        min_requests=fields.positive(merged["min_requests"], f"{where}.min_requests"),
    )
    retained = max(environment.draining_timeout_seconds, environment.retain_previous_seconds)
    if bake_seconds and retained < bake_seconds + BAKE_RETENTION_MARGIN_SECONDS:
        # A breach switches traffic back to the previous release's retained group: it must
        # still be there when the bake window ends.
        raise ConfigError(
            f"{where}.bake_seconds: a bake window of {bake_seconds} s does not fit inside the retention of"
            f" {retained} s (retain_previous_seconds must be at least bake_seconds +"
            f" {BAKE_RETENTION_MARGIN_SECONDS})"
        )
    return environment


def parse_pipeline_config(document: Mapping[str, Any]) -> PipelineConfig:
    unknown = set(document) - {"apps", "operations"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown top-level key")
    raw_apps = fields.require(dict, document.get("apps", {}), "apps")
    if not raw_apps:
        raise ConfigError("apps: at least one app is required")
    apps: dict[str, AppConfig] = {}
    for app_name, raw_app in raw_apps.items():
        where = f"apps.{app_name}"
        if not NAME_PATTERN.fullmatch(app_name):
            raise ConfigError(f"{where}: app name must match {NAME_PATTERN.pattern}")
        fields.require(dict, raw_app, where)
        fields.refuse_unknown_keys(raw_app, where, _APP_KEYS)
        defaults = fields.require(dict, raw_app.get("defaults", {}), f"{where}.defaults")
        fields.refuse_unknown_keys(defaults, f"{where}.defaults", _ENV_KEYS)
        raw_envs = fields.require(dict, raw_app.get("environments", {}), f"{where}.environments")
        if not raw_envs:
            raise ConfigError(f"{where}.environments: at least one environment is required")
        first_version = fields.require(str, raw_app.get("first_version", "1.0.0"), f"{where}.first_version")
        _check_semver(first_version, f"{where}.first_version")
        allow_file_artifacts = fields.require(
            bool, raw_app.get("allow_file_artifacts", False), f"{where}.allow_file_artifacts"
        )
        apps[app_name] = AppConfig(
            name=app_name,
            first_version=first_version,
            artifact_prefixes=_artifact_prefixes(raw_app, where, allow_file_artifacts=allow_file_artifacts),
            allow_file_artifacts=allow_file_artifacts,
            environments={
                env_name: _environment(app_name, env_name, raw_env, defaults)
                for env_name, raw_env in raw_envs.items()
            },
        )
    return PipelineConfig(apps=apps, operations_channels=fields.operations(document.get("operations", {})))


def _artifact_prefixes(
    raw_app: Mapping[str, Any], where: str, *, allow_file_artifacts: bool
) -> tuple[str, ...]:
    """The app's artifact origins: `gs://bucket/path/` prefixes, or `file:///…/` ones where the
    app says `allow_file_artifacts = true` (the local stack)."""
    key = f"{where}.artifact_prefixes"
    # Optional to load, but deny by default: an app without prefixes has every build rejected
    # (the rejection says to add them), so a missing line never lets an artifact in.
    prefixes = fields.require(list, raw_app.get("artifact_prefixes", []), key)
    for index, prefix in enumerate(prefixes):
        fields.require(str, prefix, f"{key}[{index}]")
        if not prefix.endswith("/"):
            # Without it, gs://bucket/app would also admit gs://bucket/app-of-someone-else/.
            raise ConfigError(f"{key}[{index}]: {prefix!r} must end with '/'")
        if any(part in (".", "..") for part in prefix.split("/")[3:]) or "%" in prefix:
            raise ConfigError(f"{key}[{index}]: {prefix!r} must not hold '.', '..' or %-escapes")
        if _FILE_PREFIX.fullmatch(prefix):
            if not allow_file_artifacts:
                raise ConfigError(
                    f"{key}[{index}]: {prefix!r} is a local file prefix; it is refused unless "
                    f"{where}.allow_file_artifacts = true (local stacks only)"
                )
        elif not _GCS_PREFIX.fullmatch(prefix):
            raise ConfigError(f"{key}[{index}]: {prefix!r} must be gs://bucket/… (or file:///… locally)")
    return tuple(prefixes)


def _check_semver(text: str, where: str) -> None:
    import semver

    try:
        semver.Version.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {text!r} is not a semantic version") from exc


def load_pipeline_config(path: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Load the pipeline file named by the argument, $PIPELINE_CONFIG, or the bundled default."""
    resolved = Path(path or os.environ.get(ENV_PIPELINE_CONFIG) or DEFAULT_CONFIG_PATH)
    try:
        document = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{ENV_PIPELINE_CONFIG}: no such file {resolved}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{resolved}: not valid TOML: {exc}") from exc
    return parse_pipeline_config(document)
