"""The pipeline's records as values: a deployment, a release, an environment's state.

The store maps them to Firestore documents (CONTRACT §6); the use cases change them only
through the methods here, so every status change goes through the state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.status import FINISHED, DeploymentStatus, check_transition
from shared.domain.verification import Verification, VerificationState


@dataclass(frozen=True)
class HistoryEntry:
    status: DeploymentStatus
    at: datetime
    detail: str = ""


@dataclass(frozen=True)
class Approval:
    """One decision on a deployment awaiting approval, by a verified identity (CONTRACT §6)."""

    by: str
    decision: str
    """`approve` or `reject`."""
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    app: str
    environment: str
    version: str
    commit: str
    build_id: str
    artifact: str
    status: DeploymentStatus
    created_at: datetime
    updated_at: datetime
    history: tuple[HistoryEntry, ...]
    event: Mapping[str, Any]
    """The validated build-succeeded payload; a rollback republishes it."""
    finished_at: datetime | None = None
    rollback_of: str | None = None
    triggered_by: str | None = None
    reason: str | None = None
    build_url: str | None = None
    branch: str | None = None
    commit_messages: tuple[str, ...] = ()
    started_at: datetime | None = None
    """When it took the environment lock; the provisioning deadline counts from here."""
    not_before: datetime | None = None
    """End of the cool-down."""
    went_live_at: datetime | None = None
    retired_at: datetime | None = None
    replaced_deployment_id: str | None = None
    """The deployment that was live when this one went live (blue)."""
    instance_template: str | None = None
    instance_group: str | None = None
    cleanup_due_at: datetime | None = None
    """When this deployment's Compute resources may be deleted (after draining and retention);
    None while they are in use, and once deleted or adopted."""
    resources_deleted_at: datetime | None = None
    adopted_by: str | None = None
    """The rollback deployment that took over this retired deployment's group (its clean-up
    cancelled): the group now belongs to that deployment's record."""
    last_kick_at: datetime | None = None
    """When the watchdog last republished this deployment's pending step."""
    last_polled_at: datetime | None = None
    """When a poll of its cool-down step last found green not ready to switch, noted at most
    every `POLL_NOTE_SECONDS`: the watchdog takes a step that is still polled for one that is
    slow, not lost."""
    artifact_sha256: str = ""
    """SHA-256 of the artifact (from the build, kept by its release): the instance verifies it."""
    committed_at: datetime | None = None
    """When the deployed commit was made, as the build reported it (lead time)."""
    requested_by: str | None = None
    """The verified identity that asked for it through the pipeline's HTTP functions (rollback,
    promotion); None for a CI build, whose `triggered_by` is only CI's claim."""
    promoted_from: str | None = None
    """The environment whose live (or once live) release this deployment promotes."""
    approvals: tuple[Approval, ...] = ()
    """Every approval decision, in order, with the verified identity that made it."""
    request_id: str | None = None
    """The release request (written by an HTTP function) that proves the fields above."""
    verification: Verification | None = None
    """The bake window's verdict once live (CONTRACT §9); None when it has no bake window."""
    is_rollback: bool = False
    """A rollback: asked for through a verified rollback request, or started by the pipeline after
    a failed bake window. It holds even when nothing was live to replace (`rollback_of` None);
    it exempts the deployment from approvals, deploy windows and freezes, and from baking."""
    announce_due_at: datetime | None = None
    """When the watchdog announces this deployment's outcome itself: set in the transaction that
    ends it, cleared once the call that ended it has published the announcement, so a crash in
    between delays the alert instead of losing it (on_notify sends one per status)."""
    superseded: tuple[str, ...] = ()
    """The deployments this one cancelled when it arrived (newest wins among those waiting): a
    retry of the step that cancelled them announces them again, in case the first try died between
    its commit and its announcements."""

    @property
    def group_name(self) -> str:
        """Its instance group: the recorded one (for a warm rollback, the group it adopted), else
        the name derived from its id, which is known even before provisioning recorded it."""
        return self.instance_group or instance_group_name(self.deployment_id)

    @property
    def template_name(self) -> str:
        """Its instance template: the recorded one, else the name derived from its id."""
        return self.instance_template or instance_template_name(self.deployment_id)

    @property
    def baking(self) -> bool:
        """Live and still in its bake window: it keeps the environment lock until the verdict."""
        return (
            self.status is DeploymentStatus.LIVE
            and self.verification is not None
            and self.verification.state is VerificationState.PENDING
        )

    @classmethod
    def queued(
        cls,
        *,
        deployment_id: str,
        app: str,
        environment: str,
        version: str,
        commit: str,
        build_id: str,
        artifact: str,
        event: Mapping[str, Any],
        at: datetime,
        artifact_sha256: str = "",
        committed_at: datetime | None = None,
        rollback_of: str | None = None,
        triggered_by: str | None = None,
        reason: str | None = None,
        build_url: str | None = None,
        branch: str | None = None,
        commit_messages: tuple[str, ...] = (),
        detail: str = "",
        requested_by: str | None = None,
        promoted_from: str | None = None,
        request_id: str | None = None,
        awaiting_approval: bool = False,
        is_rollback: bool = False,
    ) -> Deployment:
        """A new deployment: `queued`, or `awaiting_approval` where the environment needs one.

        One that replaces a named deployment (`rollback_of`) is a rollback whatever `is_rollback`
        says; `is_rollback` makes one that replaces nothing a rollback too.

        >>> from datetime import UTC, datetime
        >>> new = dict(deployment_id="d", app="a", environment="e", version="1.0.0", commit="c",
        ...     build_id="b", artifact="x", event={}, at=datetime(2026, 1, 1, tzinfo=UTC))
        >>> [Deployment.queued(**new, **how).is_rollback
        ...     for how in ({}, {"rollback_of": "live"}, {"is_rollback": True})]
        [False, True, True]
        """
        status = DeploymentStatus.AWAITING_APPROVAL if awaiting_approval else DeploymentStatus.QUEUED
        return cls(
            deployment_id=deployment_id,
            app=app,
            environment=environment,
            version=version,
            commit=commit,
            build_id=build_id,
            artifact=artifact,
            status=status,
            created_at=at,
            updated_at=at,
            history=(HistoryEntry(status, at, detail),),
            event=event,
            rollback_of=rollback_of,
            triggered_by=triggered_by,
            reason=reason,
            build_url=build_url,
            branch=branch,
            commit_messages=commit_messages,
            artifact_sha256=artifact_sha256,
            committed_at=committed_at,
            requested_by=requested_by,
            promoted_from=promoted_from,
            request_id=request_id,
            is_rollback=is_rollback or rollback_of is not None,
        )

    def advance(self, target: DeploymentStatus, at: datetime, detail: str = "", **changes: Any) -> Deployment:
        """This deployment in `target` status, or `IllegalTransition`. Extra fields may change too."""
        check_transition(self.status, target)
        if target is DeploymentStatus.PROVISIONING:
            changes.setdefault("started_at", at)
        if target is DeploymentStatus.LIVE:
            changes.setdefault("went_live_at", at)
        if target is DeploymentStatus.RETIRED:
            changes.setdefault("retired_at", at)
        if target in FINISHED:
            changes.setdefault("finished_at", at)
        return replace(
            self,
            status=target,
            updated_at=at,
            history=(*self.history, HistoryEntry(target, at, detail)),
            **changes,
        )

    def noted(self, at: datetime, detail: str) -> Deployment:
        """This deployment with one more history line in its current status (no transition),
        e.g. why a queued deployment still waits."""
        return replace(self, updated_at=at, history=(*self.history, HistoryEntry(self.status, at, detail)))

    def with_changes(self, at: datetime, **changes: Any) -> Deployment:
        """Change bookkeeping fields without a status change."""
        return replace(self, updated_at=at, **changes)

    def with_approval(self, approval: Approval) -> Deployment:
        """This deployment with one more decision recorded (no status change by itself)."""
        return replace(self, approvals=(*self.approvals, approval))

    def deadline_at(self, deadline_seconds: int) -> datetime:
        """When the deployment's provisioning deadline passes: counted from when it took the lock."""
        return (self.started_at or self.created_at) + timedelta(seconds=deadline_seconds)

    def is_past_deadline(self, now: datetime, deadline_seconds: int) -> bool:
        return now >= self.deadline_at(deadline_seconds)

    def quiet_since(self) -> datetime:
        """Since when nothing shows that its pending step is being worked on: its last change,
        the end of its cool-down or of its bake window, the watchdog's last re-publish of the step,
        the last poll noted."""
        quiet = self.updated_at
        if self.status is DeploymentStatus.COOLING_DOWN and self.not_before is not None:
            quiet = max(quiet, self.not_before)
        if self.baking and self.verification is not None:
            quiet = max(quiet, self.verification.ends_at)
        for noted in (self.last_kick_at, self.last_polled_at):
            if noted is not None:
                quiet = max(quiet, noted)
        return quiet

    def is_quiet_for(self, now: datetime, seconds: float) -> bool:
        """Whether nothing has shown its pending step being worked on for `seconds` (`quiet_since`)."""
        return (now - self.quiet_since()).total_seconds() >= seconds

    @property
    def switch_started_at(self) -> datetime | None:
        """When its traffic switch began (its history's entry into `switching`); None if it never
        got that far."""
        return next((entry.at for entry in self.history if entry.status is DeploymentStatus.SWITCHING), None)

    def switch_deadline_at(self, deadline_seconds: int) -> datetime | None:
        """When a switch that has not completed is overdue: the provisioning deadline again,
        counted from the switch's start (a switch normally takes seconds: the load balancer's
        first health checks of green)."""
        started = self.switch_started_at
        return None if started is None else started + timedelta(seconds=deadline_seconds)

    def is_switch_overdue(self, now: datetime, deadline_seconds: int) -> bool:
        due = self.switch_deadline_at(deadline_seconds)
        return due is not None and now >= due

    def cool_down_over(self, now: datetime) -> bool:
        return self.not_before is None or now >= self.not_before

    def is_past_final_deadline(self, now: datetime, deadline_seconds: int) -> bool:
        """Whether a deployment before its switch has run out of time whatever its green is.

        Past its deadline a deployment whose green is ready to take traffic (every instance
        healthy, the cool-down over) is still switched: a poll or a watchdog sweep that comes late
        (a busy machine, a lost message) must not fail a release that is ready. Twice the deadline
        is the end, ready or not, so that a switch that keeps being put off (a preview that never
        routes to green) still ends and frees the environment.
        """
        return self.is_past_deadline(now, 2 * deadline_seconds)


@dataclass(frozen=True)
class Release:
    app: str
    version: str
    commit: str
    artifact: str
    commit_messages: tuple[str, ...]
    created_at: datetime
    artifact_sha256: str = ""
    """SHA-256 of the artifact: fixed by the first build of the commit; a rollback or a later
    build of the same commit deploys exactly these bytes."""

    @property
    def key(self) -> str:
        return release_key(self.app, self.version)


def release_key(app: str, version: str) -> str:
    return f"{app}@{version}"


def release_commit_key(app: str, commit: str) -> str:
    """
    >>> release_commit_key("hello", "9f1c2ab" + "0" * 33)
    'hello@9f1c2ab000000000000000000000000000000000'
    """
    return f"{app}@{commit}"


def environment_key(app: str, environment: str) -> str:
    return f"{app}@{environment}"


@dataclass(frozen=True)
class EnvironmentState:
    """Who is live, who holds the lock (one deployment at a time), who waits."""

    app: str
    environment: str
    live_deployment_id: str | None = None
    live_version: str | None = None
    active_deployment_id: str | None = None
    """The lock: the deployment now provisioning, cooling down or switching."""
    locked_at: datetime | None = None
    queue: tuple[str, ...] = ()
    updated_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    awaiting_deployment_id: str | None = None
    """The one deployment waiting for approval here (newest wins: a newer one cancels it)."""

    @property
    def key(self) -> str:
        return environment_key(self.app, self.environment)
