"""The internal `notify` event: what happened, for whom. `on_notify` enriches it from Firestore.

Published by every step that reaches an outcome worth telling the team about. The dedupe key
makes delivery exactly-once per outcome even when the event itself is redelivered. A step that
has the deployment record at hand sends its facts along (`DeploymentFacts`), so `on_notify`
need not read the record again; without them it reads it, as for events of earlier versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

NotifyKind = Literal["deployment", "rejected", "dead_letter", "leaks_collected"]
_KINDS = ("deployment", "rejected", "dead_letter", "leaks_collected")
DEDUPE_KEY_ATTRIBUTE = "notify_dedupe_key"
"""Set on every published notify event, so that a dead-lettered one is recognised as a
notification (and by which key) wherever the dead-letter topic's name is not known."""


class NotifyMessageError(ValueError):
    """The notify event is malformed."""


@dataclass(frozen=True)
class DeploymentFacts:
    """What a deployment notification shows besides its status, copied from the deployment record
    by the step that publishes it (the same fields `on_notify` would read from it)."""

    commit: str | None = None
    changelog: tuple[str, ...] = ()
    """The deployment's commit messages; empty: `on_notify` takes the release's."""
    duration_seconds: float | None = None
    build_url: str | None = None
    triggered_by: str | None = None
    requested_by: str | None = None
    rollback_of: str | None = None

    @classmethod
    def from_json_value(cls, raw: Any) -> DeploymentFacts | None:
        """The facts from a decoded event; None when absent or malformed (then the record is read).

        >>> DeploymentFacts.from_json_value({"commit": "abc", "changelog": ["fix: x"], "duration_seconds": 3})
        DeploymentFacts(commit='abc', changelog=('fix: x',), duration_seconds=3.0, build_url=None, triggered_by=None, requested_by=None, rollback_of=None)
        >>> DeploymentFacts.from_json_value({"commit": 7}) is None, DeploymentFacts.from_json_value(None) is None
        (True, True)
        """
        if not isinstance(raw, dict):
            return None
        texts = ("commit", "build_url", "triggered_by", "requested_by", "rollback_of")
        if any(raw.get(key) is not None and not isinstance(raw.get(key), str) for key in texts):
            return None
        changelog = raw.get("changelog") or []
        if not isinstance(changelog, list) or not all(isinstance(line, str) for line in changelog):
            return None
        duration = raw.get("duration_seconds")
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)):
            return None
        return cls(
            commit=raw.get("commit"),
            changelog=tuple(changelog),
            duration_seconds=float(duration) if duration is not None else None,
            build_url=raw.get("build_url"),
            triggered_by=raw.get("triggered_by"),
            requested_by=raw.get("requested_by"),
            rollback_of=raw.get("rollback_of"),
        )


@dataclass(frozen=True)
class NotifyRequest:
    kind: NotifyKind
    app: str | None
    environment: str | None
    status: str
    """A deployment status (CONTRACT §6) for kind=deployment; `rejected`, `dead_lettered` or
    `collected` (the watchdog deleted resources a crash had left behind) otherwise."""
    detail: str
    dedupe_key: str
    """One notification per key: `<deployment_id>:<status>`, `rejected:<event id>`, `dead-letter:<message id>`,
    `leaks:<digest of the collected names>`."""
    deployment_id: str | None = None
    version: str | None = None
    about_notification: str | None = None
    """For the announcement that a notification could not be delivered everywhere: that
    notification's dedupe key. Its channels that never took it are left out of this one."""
    facts: DeploymentFacts | None = None
    """For kind=deployment: the record's facts as the publisher read them; None: read the record."""

    @property
    def announces_a_dead_letter(self) -> bool:
        """Whether this notification itself reports an event that exhausted its retries: when it
        cannot be delivered in turn, that is recorded but never announced again, which ends the
        notify → dead letter → notify cycle.

        >>> NotifyRequest("dead_letter", None, None, "dead_lettered", "", "dead-letter:1").announces_a_dead_letter
        True
        """
        return self.kind == "dead_letter"

    @classmethod
    def for_deployment(
        cls,
        *,
        app: str,
        environment: str,
        deployment_id: str,
        version: str | None,
        status: str,
        detail: str = "",
        facts: DeploymentFacts | None = None,
    ) -> NotifyRequest:
        return cls(
            kind="deployment",
            app=app,
            environment=environment,
            status=status,
            detail=detail,
            dedupe_key=f"{deployment_id}:{status}",
            deployment_id=deployment_id,
            version=version,
            facts=facts,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NotifyRequest:
        try:
            raw: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotifyMessageError(f"notify event is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise NotifyMessageError("notify event is not a JSON object")
        if raw.get("kind") not in _KINDS:
            raise NotifyMessageError(f"notify event has unknown kind {raw.get('kind')!r}")
        for required in ("status", "dedupe_key"):
            if not isinstance(raw.get(required), str) or not raw[required]:
                raise NotifyMessageError(f"notify event lacks {required}")
        about = raw.get("about_notification")
        if about is not None and (not isinstance(about, str) or not about):
            raise NotifyMessageError("notify event has a malformed about_notification")
        return cls(
            kind=raw["kind"],
            app=raw.get("app"),
            environment=raw.get("environment"),
            status=raw["status"],
            detail=str(raw.get("detail") or ""),
            dedupe_key=raw["dedupe_key"],
            deployment_id=raw.get("deployment_id"),
            version=raw.get("version"),
            about_notification=about,
            facts=DeploymentFacts.from_json_value(raw.get("facts")),
        )
