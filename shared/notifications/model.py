"""What a notification says, once the `notify` event has been enriched from the release records."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Notification:
    """One outcome worth telling the team about, with everything a reader needs to act on it."""

    kind: str
    """`deployment`, `rejected`, `dead_letter` or `leaks_collected` (the notify event's kind)."""
    dedupe_key: str
    status: str
    app: str | None = None
    environment: str | None = None
    version: str | None = None
    deployment_id: str | None = None
    detail: str = ""
    commit: str | None = None
    changelog: tuple[str, ...] = field(default_factory=tuple)
    duration_seconds: float | None = None
    build_url: str | None = None
    triggered_by: str | None = None
    """CI's claim of who triggered the build (unverified)."""
    requested_by: str | None = None
    """The verified identity that requested a rollback or promotion."""
    rollback_of: str | None = None
    url: str | None = None
    """The environment's public URL (its load balancer)."""

    @property
    def rollback_command(self) -> str | None:
        if self.kind != "deployment" or not self.app or not self.environment:
            return None
        return f"releasectl rollback --app {self.app} --env {self.environment}"

    @property
    def short_commit(self) -> str | None:
        return self.commit[:7] if self.commit else None

    @property
    def subject(self) -> str:
        """`hello 1.1.0` or whatever part of it is known."""
        parts = [part for part in (self.app, self.version) if part]
        return " ".join(parts) or "unknown release"
