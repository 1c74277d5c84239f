"""The pipeline's ports: what the use cases need from the outside world.

Adapters implement them for Google Cloud (Firestore, Compute Engine, Pub/Sub); unit tests
implement them in memory. Errors cross the boundary as the types defined here, never as
SDK exceptions, so the use cases can tell permanent faults from transient ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from shared.config import EnvironmentConfig
from shared.domain.leaks import ListedResource
from shared.domain.records import Deployment, EnvironmentState, Release
from shared.domain.release_request import ReleaseRequest
from shared.domain.status import DeploymentStatus
from shared.domain.verification import SmokeAnswer, SmokeCheck

T = TypeVar("T")


class TransientError(Exception):
    """Worth retrying: an outage, contention, a timeout. Entry points let it raise."""


class PermanentError(Exception):
    """Retrying cannot help (bad configuration, a refused request): fail the deployment."""


class PreconditionFailed(Exception):
    """A guarded change found its caller's precondition gone just before its write, and wrote
    nothing (see `Compute.keep_only_group`)."""


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware now."""
        ...


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message and wait until the broker has it; returns its message id."""
        ...


class Transaction(Protocol):
    """One atomic read-then-write unit. Reads first; writes are applied at commit."""

    def deployment(self, deployment_id: str) -> Deployment | None: ...
    def environment(self, app: str, environment: str) -> EnvironmentState | None: ...
    def release(self, app: str, version: str) -> Release | None: ...
    def release_for_commit(self, app: str, commit: str) -> Release | None: ...
    def highest_version(self, app: str) -> str | None:
        """The highest version ever released for the app, from one per-app record (not from
        the app's release history, so the read does not grow with it); None before the first."""
        ...

    def read_ahead(
        self,
        *,
        deployments: Sequence[str] = (),
        environments: Sequence[tuple[str, str]] = (),
        commits: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Fetch in one round trip what the reads that follow will ask for: deployments by id,
        environments by (app, environment), and for each (app, commit) what `release_for_commit`
        and `highest_version` read first. Only for speed: every read answers the same without it.
        What is fetched joins the transaction's reads (another transaction writing it conflicts
        with this one), so name only what the work reads on its usual path."""
        ...

    def put_deployment(self, deployment: Deployment) -> None: ...
    def put_environment(self, state: EnvironmentState) -> None: ...
    def put_release(self, release: Release) -> None:
        """Create the release and raise the app's highest version to it, in this transaction."""
        ...


@dataclass(frozen=True)
class RejectedEvent:
    event_id: str
    reason: str
    payload: str
    """The raw message, decoded leniently and truncated."""
    attributes: Mapping[str, str]
    received_at: datetime
    topic: str


@dataclass(frozen=True)
class DeadLetteredEvent:
    message_id: str
    topic: str
    subscription: str | None
    delivery_attempts: int | None
    payload: str
    attributes: Mapping[str, str]
    received_at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)


class Store(Protocol):
    def atomically(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in one transaction; it may run again on contention, so keep it pure."""
        ...

    def update_deployment(
        self, deployment_id: str, change: Callable[[Deployment], Deployment | None]
    ) -> Deployment | None:
        """Change one deployment record on its own, without a transaction, so no lock outlives a
        crash: `change` gets the record and returns what to write, or None to leave it. The write
        happens only if nobody wrote the record since it was read; otherwise it is read again and
        `change` runs again, so keep it pure. Returns the record as it now stands (None: there is
        no such deployment). A write whose answer was lost is retried, finds the record changed
        and leaves it: callers go by the record's status, not by whether they wrote it."""
        ...

    def get_deployment(self, deployment_id: str) -> Deployment | None: ...
    def get_environment(self, app: str, environment: str) -> EnvironmentState | None: ...
    def get_release(self, app: str, version: str) -> Release | None: ...
    def released_versions(self, app: str) -> list[str]: ...
    def deployments_with_status(self, statuses: Sequence[DeploymentStatus]) -> list[Deployment]: ...
    def baking_deployments(self) -> list[Deployment]:
        """Live deployments still in their bake window."""
        ...

    def deployments_due_for_cleanup(self, now: datetime) -> list[Deployment]: ...
    def deployments_due_for_announcement(self, now: datetime) -> list[Deployment]:
        """Deployments whose outcome is still unannounced at `now` (`announce_due_at`)."""
        ...

    def live_history(self, app: str, environment: str, limit: int = 50) -> list[Deployment]:
        """Deployments of the environment that went live, most recent first."""
        ...

    def deployments_of_environment(
        self, app: str, environment: str, statuses: Sequence[DeploymentStatus]
    ) -> list[Deployment]:
        """The environment's deployments in one of `statuses` (few: the unfinished ones)."""
        ...

    def create_release_request(self, request: ReleaseRequest) -> None:
        """Write a new release request; its id is fresh, so it never exists yet."""
        ...

    def get_release_request(self, request_id: str) -> ReleaseRequest | None: ...

    def record_rejected(self, event: RejectedEvent) -> None:
        """Idempotent per event id."""
        ...

    def record_dead_lettered(self, event: DeadLetteredEvent) -> None:
        """Idempotent per message id."""
        ...


@dataclass(frozen=True)
class GroupHealth:
    """A managed instance group as the cool-down sees it."""

    exists: bool
    target_size: int
    """The instances the group keeps (listed, not being deleted or abandoned): its target size."""
    healthy: int
    instances: int
    errors: tuple[str, ...] = ()
    """Instances that cannot start (bad template, an artifact that fails its digest check or
    cannot run): permanent."""

    @property
    def all_healthy(self) -> bool:
        return self.exists and self.target_size > 0 and self.healthy >= self.target_size


class Compute(Protocol):
    def ensure_instance_template(
        self, env: EnvironmentConfig, name: str, *, version: str, artifact: str, artifact_sha256: str
    ) -> None:
        """The environment's base template plus release metadata (version, artifact and its
        SHA-256, which the instance verifies before unpacking); an existing one is reused."""
        ...

    def ensure_instance_group(self, env: EnvironmentConfig, name: str, *, template: str) -> None:
        """A regional MIG of `env.instance_count` with autohealing; not attached to any backend."""
        ...

    def group_health(self, env: EnvironmentConfig, name: str) -> GroupHealth: ...

    def attach_group(
        self,
        env: EnvironmentConfig,
        name: str,
        *,
        only_while: Callable[[], bool] | None = None,
        only_beside: str | None = None,
    ) -> None:
        """Add the group to the backend service (no-op if it is there).

        Both conditions are checked after each read of the service, just before the write that
        adds it; when one does not hold, nothing is written and `PreconditionFailed` is raised.
        `only_while` is asked (a switch passes "still switching", so that a poll stale from
        before the watchdog abandoned it cannot attach green again). `only_beside` demands that
        exactly that group is attached (an abandoned switch's hand-back puts the live release
        back only while green alone serves, never beside a newer release that took over since).
        """
        ...

    def serving_healthy(self, env: EnvironmentConfig, name: str) -> bool:
        """Whether the backend service sees every instance of the attached group as healthy."""
        ...

    def keep_only_group(
        self, env: EnvironmentConfig, name: str, *, only_while: Callable[[], bool] | None = None
    ) -> list[str]:
        """Remove every other group from the backend service (their connections drain).

        Returns the names of the groups removed; a repeated call removes nothing. `only_while`,
        when given, is asked after each read of the service, just before the write that removes
        them: False writes nothing and raises `PreconditionFailed`. A switch passes "still
        switching", so that once the watchdog has recorded it abandoned, a late poll of it can no
        longer take the live release off (the moment between the question and the write is
        ordered by the service's fingerprint against the hand-back's own writes).
        """
        ...

    def detach_group(self, env: EnvironmentConfig, name: str, *, leave_empty: bool = True) -> None:
        """Remove the group from the backend service (its connections drain); no-op if it is not
        there. With `leave_empty=False`, `TransientError` instead when it is the only group there
        as the write is made (another caller's change since this caller looked)."""
        ...

    def delete_instance_group(self, env: EnvironmentConfig, name: str) -> None:
        """Delete the MIG and its instances; no-op if it is gone."""
        ...

    def delete_instance_template(self, env: EnvironmentConfig, name: str) -> None:
        """No-op if it is gone."""
        ...

    def list_instance_groups(self, region: str) -> list[ListedResource]:
        """Every regional managed instance group in `region`, with its creation time."""
        ...

    def list_instance_templates(self) -> list[ListedResource]:
        """Every global instance template, with its creation time."""
        ...

    def attached_groups(self, env: EnvironmentConfig) -> list[str]:
        """Names of the groups the environment's backend service sends (or drains) traffic to."""
        ...


@dataclass(frozen=True)
class TrafficSample:
    """What a load balancer answered on behalf of one instance group during a window."""

    requests: int
    server_errors: int
    """Answers of class 5xx."""

    @property
    def error_ratio(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0


class MetricsUnavailable(PermanentError):
    """The metrics source refuses the query for good (permission, unknown metric): verification
    falls back to health only and says so."""


class Metrics(Protocol):
    def traffic(self, env: EnvironmentConfig, group: str, start: datetime, end: datetime) -> TrafficSample:
        """Requests the environment's backend service sent to `group` between `start` and `end`.

        Raises `TransientError` on an outage (retry later), `MetricsUnavailable` when retrying
        cannot help.
        """
        ...


class SmokeProbe(Protocol):
    def request(self, base_url: str, check: SmokeCheck) -> SmokeAnswer:
        """Send the check's request to `base_url` + its path; no answer is a `SmokeAnswer` with
        `error` set, never an exception."""
        ...
