"""In-memory fakes of the pipeline's own ports (never of a Google client)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from shared.config import EnvironmentConfig, PipelineConfig, parse_pipeline_config
from shared.domain.identity import Caller, CallerCheck, caller_allowed
from shared.domain.leaks import ListedResource
from shared.domain.records import Deployment, EnvironmentState, Release, environment_key, release_key
from shared.domain.release_request import ReleaseRequest
from shared.domain.status import DeploymentStatus
from shared.domain.verification import SmokeAnswer, SmokeCheck
from shared.domain.versioning import highest_version
from shared.notifications.delivery import ChannelSender, ClaimOutcome
from shared.notifications.model import Notification
from shared.ports import (
    DeadLetteredEvent,
    GroupHealth,
    MetricsUnavailable,
    PermanentError,
    PreconditionFailed,
    RejectedEvent,
    TrafficSample,
    TransientError,
)
from shared.usecases.services import Services

T = TypeVar("T")


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class _FakeTransaction:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.deployments: dict[str, Deployment] = {}
        self.environments: dict[str, EnvironmentState] = {}
        self.releases: dict[str, Release] = {}
        self.highest: dict[str, str] = {}

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self.store.deployments.get(deployment_id)

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        return self.store.environments.get(environment_key(app, environment))

    def release(self, app: str, version: str) -> Release | None:
        return self.store.releases.get(release_key(app, version))

    def release_for_commit(self, app: str, commit: str) -> Release | None:
        return next((r for r in self.store.releases.values() if r.app == app and r.commit == commit), None)

    def read_ahead(
        self,
        *,
        deployments: Sequence[str] = (),
        environments: Sequence[tuple[str, str]] = (),
        commits: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Nothing to fetch: the fake's reads cost nothing."""

    def highest_version(self, app: str) -> str | None:
        # Only the per-app record, like the Firestore store: the release history is not read.
        return self.highest.get(app, self.store.highest_versions.get(app))

    def put_deployment(self, deployment: Deployment) -> None:
        self.deployments[deployment.deployment_id] = deployment

    def put_environment(self, state: EnvironmentState) -> None:
        self.environments[state.key] = state

    def put_release(self, release: Release) -> None:
        self.releases[release.key] = release
        current = self.highest_version(release.app)
        self.highest[release.app] = (
            highest_version([release.version, *([current] if current else [])]) or release.version
        )


class FakeStore:
    def __init__(self) -> None:
        self.deployments: dict[str, Deployment] = {}
        self.environments: dict[str, EnvironmentState] = {}
        self.releases: dict[str, Release] = {}
        self.highest_versions: dict[str, str] = {}
        """apps/{app}: the highest version ever released, by app."""
        self.rejected: dict[str, RejectedEvent] = {}
        self.dead_lettered: dict[str, DeadLetteredEvent] = {}
        self.release_requests: dict[str, ReleaseRequest] = {}
        self._lock = threading.RLock()
        self.fail_next_commit: Exception | None = None

    def atomically(self, work: Callable[[Any], T]) -> T:
        with self._lock:
            tx = _FakeTransaction(self)
            result = work(tx)
            self._fail_if_asked()
            self.deployments.update(tx.deployments)
            self.environments.update(tx.environments)
            # As in Firestore, a committed write replaces the document.
            self.releases.update(tx.releases)
            self.highest_versions.update(tx.highest)
            return result

    def update_deployment(
        self, deployment_id: str, change: Callable[[Deployment], Deployment | None]
    ) -> Deployment | None:
        with self._lock:
            current = self.deployments.get(deployment_id)
            if current is None:
                return None
            changed = change(current)
            if changed is None:
                return current
            self._fail_if_asked()
            self.deployments[deployment_id] = changed
            return changed

    def _fail_if_asked(self) -> None:
        """A commit fails once when a test set `fail_next_commit`."""
        if self.fail_next_commit is not None:
            error, self.fail_next_commit = self.fail_next_commit, None
            raise error

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        return self.deployments.get(deployment_id)

    def get_environment(self, app: str, environment: str) -> EnvironmentState | None:
        return self.environments.get(environment_key(app, environment))

    def get_release(self, app: str, version: str) -> Release | None:
        return self.releases.get(release_key(app, version))

    def released_versions(self, app: str) -> list[str]:
        return [r.version for r in self.releases.values() if r.app == app]

    def deployments_with_status(self, statuses: Sequence[DeploymentStatus]) -> list[Deployment]:
        return [d for d in self.deployments.values() if d.status in statuses]

    def baking_deployments(self) -> list[Deployment]:
        return [d for d in self.deployments.values() if d.baking]

    def deployments_due_for_cleanup(self, now: datetime) -> list[Deployment]:
        return [
            d for d in self.deployments.values() if d.cleanup_due_at is not None and d.cleanup_due_at <= now
        ]

    def deployments_due_for_announcement(self, now: datetime) -> list[Deployment]:
        return [
            d for d in self.deployments.values() if d.announce_due_at is not None and d.announce_due_at <= now
        ]

    def live_history(self, app: str, environment: str, limit: int = 50) -> list[Deployment]:
        went_live = [
            d
            for d in self.deployments.values()
            if d.app == app and d.environment == environment and d.went_live_at is not None
        ]
        return sorted(went_live, key=lambda d: d.went_live_at or d.created_at, reverse=True)[:limit]

    def deployments_of_environment(
        self, app: str, environment: str, statuses: Sequence[DeploymentStatus]
    ) -> list[Deployment]:
        return [
            d
            for d in self.deployments.values()
            if d.app == app and d.environment == environment and d.status in statuses
        ]

    def create_release_request(self, request: ReleaseRequest) -> None:
        if request.request_id in self.release_requests:
            raise ValueError(f"release request {request.request_id} already exists")
        self.release_requests[request.request_id] = request

    def get_release_request(self, request_id: str) -> ReleaseRequest | None:
        return self.release_requests.get(request_id)

    def record_rejected(self, event: RejectedEvent) -> None:
        self.rejected.setdefault(event.event_id, event)

    def record_dead_lettered(self, event: DeadLetteredEvent) -> None:
        self.dead_lettered.setdefault(event.message_id, event)

    def history_of(self, deployment_id: str) -> list[str]:
        return [str(h.status) for h in self.deployments[deployment_id].history]


@dataclass
class FakeGroup:
    template: str
    size: int
    healthy: int = 0
    errors: tuple[str, ...] = ()


@dataclass
class FakeCompute:
    templates: dict[str, Mapping[str, str]] = field(default_factory=dict)
    groups: dict[str, FakeGroup] = field(default_factory=dict)
    attached: list[str] = field(default_factory=list)
    preview_attached: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    lb_healthy: bool = True
    lb_unhealthy: set[str] = field(default_factory=set)
    """Groups the load balancer never sees healthy, whatever their instances say."""
    refuse_templates: str | None = None
    """When set, template creation is refused as a configuration error with this message."""
    created_at: dict[str, datetime] = field(default_factory=dict)
    """Creation time of each template and group, as listings report it."""
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The clock creations are stamped with; `fake_world` gives it the world's clock."""

    def ensure_instance_template(
        self, env: EnvironmentConfig, name: str, *, version: str, artifact: str, artifact_sha256: str
    ) -> None:
        self.calls.append(f"template {name}")
        if self.refuse_templates:
            raise PermanentError(self.refuse_templates)
        self.templates.setdefault(
            name,
            {
                "release-version": version,
                "release-artifact": artifact,
                "release-artifact-sha256": artifact_sha256,
            },
        )
        self.created_at.setdefault(name, self.now())

    def ensure_instance_group(self, env: EnvironmentConfig, name: str, *, template: str) -> None:
        self.calls.append(f"group {name}")
        self.groups.setdefault(name, FakeGroup(template=template, size=env.instance_count))
        self.created_at.setdefault(name, self.now())

    def make_healthy(self, name: str) -> None:
        self.groups[name].healthy = self.groups[name].size

    def group_health(self, env: EnvironmentConfig, name: str) -> GroupHealth:
        group = self.groups.get(name)
        if group is None:
            return GroupHealth(exists=False, target_size=0, healthy=0, instances=0)
        return GroupHealth(True, group.size, group.healthy, group.size, group.errors)

    def _backends(self, env: EnvironmentConfig) -> list[str]:
        # `attached` is the environment's own backend service; previews are kept apart by name.
        if env.backend_service == env.preview_backend_service or env.backend_service.endswith("-preview"):
            return self.preview_attached.setdefault(env.backend_service, [])
        return self.attached

    def attach_group(
        self,
        env: EnvironmentConfig,
        name: str,
        *,
        only_while: Callable[[], bool] | None = None,
        only_beside: str | None = None,
    ) -> None:
        backends = self._backends(env)
        if name in backends:
            self.calls.append(f"attach {name} to {env.backend_service}")
            return
        if only_beside is not None and backends != [only_beside]:
            raise PreconditionFailed(f"attaching {name}: {only_beside} is no longer the only backend")
        if only_while is not None and not only_while():
            raise PreconditionFailed(f"attaching {name}")
        self.calls.append(f"attach {name} to {env.backend_service}")
        backends.append(name)

    def serving_healthy(self, env: EnvironmentConfig, name: str) -> bool:
        group = self.groups.get(name)
        attached = name in self._backends(env) and name not in self.lb_unhealthy
        return self.lb_healthy and attached and group is not None and group.healthy > 0

    def keep_only_group(
        self, env: EnvironmentConfig, name: str, *, only_while: Callable[[], bool] | None = None
    ) -> list[str]:
        backends = self._backends(env)
        removed = [g for g in backends if g != name]
        if removed and name not in backends:  # as the adapter: never an empty backend service
            raise PermanentError(f"{name} is not attached to {env.backend_service}; refusing to empty it")
        if removed and only_while is not None and not only_while():
            raise PreconditionFailed(f"detaching all but {name}")
        backends[:] = [name]
        if removed:
            self.calls.append(f"detach {','.join(removed)} from {env.backend_service}")
        return removed

    def detach_group(self, env: EnvironmentConfig, name: str, *, leave_empty: bool = True) -> None:
        backends = self._backends(env)
        if backends == [name] and not leave_empty:
            raise TransientError(f"{name} is the only backend of {env.backend_service}; not detaching it")
        if name in backends:
            backends.remove(name)
            self.calls.append(f"detach {name} from {env.backend_service}")

    def delete_instance_group(self, env: EnvironmentConfig, name: str) -> None:
        if name in self.attached or any(name in groups for groups in self.preview_attached.values()):
            # As Compute Engine: resourceInUseByAnotherResource, a 400 the adapter calls refused.
            raise PermanentError(f"the instance group {name} is still a backend; not deleted")
        if self.groups.pop(name, None) is not None:
            self.calls.append(f"delete group {name}")

    def delete_instance_template(self, env: EnvironmentConfig, name: str) -> None:
        if self.templates.pop(name, None) is not None:
            self.calls.append(f"delete template {name}")

    def list_instance_groups(self, region: str) -> list[ListedResource]:
        return [
            ListedResource("instance_group", name, self.created_at.get(name), region) for name in self.groups
        ]

    def attached_groups(self, env: EnvironmentConfig) -> list[str]:
        return list(self.attached)

    def list_instance_templates(self) -> list[ListedResource]:
        return [
            ListedResource("instance_template", name, self.created_at.get(name)) for name in self.templates
        ]


@dataclass
class Published:
    topic: str
    data: bytes
    attributes: Mapping[str, str]


@dataclass
class FakePublisher:
    messages: list[Published] = field(default_factory=list)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        self.messages.append(Published(topic, data, dict(attributes)))
        return str(len(self.messages))

    def on(self, topic: str) -> list[Published]:
        return [m for m in self.messages if m.topic == topic]

    def take(self, topic: str) -> list[Published]:
        taken = self.on(topic)
        self.messages = [m for m in self.messages if m.topic != topic]
        return taken


@dataclass
class FakeMetrics:
    """Request counts per group, as the load balancer would report them; `refuse` makes every
    query a permanent refusal (health-only verification)."""

    traffic_by_group: dict[str, TrafficSample] = field(default_factory=dict)
    refuse: str | None = None
    queries: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    def traffic(self, env: EnvironmentConfig, group: str, start: datetime, end: datetime) -> TrafficSample:
        self.queries.append((group, start, end))
        if self.refuse:
            raise MetricsUnavailable(self.refuse)
        return self.traffic_by_group.get(group, TrafficSample(0, 0))


@dataclass
class FakeSmokeProbe:
    """What the preview answers, per path (default 200 "ok"); records every request."""

    answers: dict[str, SmokeAnswer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def request(self, base_url: str, check: SmokeCheck) -> SmokeAnswer:
        self.requests.append(f"{check.method} {base_url}{check.path}")
        return self.answers.get(check.path, SmokeAnswer(200, "ok"))


TEST_CONFIG: dict[str, Any] = {
    "apps": {
        "hello": {
            "first_version": "1.0.0",
            "allow_file_artifacts": True,
            "artifact_prefixes": ["file:///", "gs://hello-artifacts/hello/"],
            "defaults": {
                "instance_count": 2,
                "cool_down_seconds": 5,
                "provisioning_deadline_seconds": 60,
                "draining_timeout_seconds": 10,
                "retain_previous_seconds": 60,
                "rollback_callers": ["*@example.com"],
            },
            "environments": {
                "staging": {
                    "auto_deploy": True,
                    "base_instance_template": "hello-staging-base",
                    "health_check": "hello-staging-hc",
                    "backend_service": "hello-staging-backend",
                },
                "production": {
                    "approvers": ["lead@example.com", "*@approvers.example.com"],
                    "approval_timeout_seconds": 3600,
                    "base_instance_template": "hello-production-base",
                    "health_check": "hello-production-hc",
                    "backend_service": "hello-production-backend",
                },
                # With verification: smoke checks on a preview, then a bake window.
                "verified": {
                    "auto_deploy": True,
                    "base_instance_template": "hello-verified-base",
                    "health_check": "hello-verified-hc",
                    "backend_service": "hello-verified-backend",
                    "preview_backend_service": "hello-verified-preview",
                    "preview_url": "http://preview.verified.test",
                    "smoke_checks": [{"path": "/", "body_contains": "ok"}],
                    "bake_seconds": 30,
                    "max_error_ratio": 0.1,
                    "min_requests": 20,
                },
            },
        }
    }
}


def verified_caller_check(email: str) -> CallerCheck:
    """How the HTTP functions check a verified caller, for a Workspace account: its token's `hd`
    claim is its e-mail domain (what a `*@domain` allow-list entry needs)."""
    caller = Caller(email=email, subject=email, issuer="test", hosted_domain=email.rsplit("@", 1)[1].lower())
    return lambda patterns: caller_allowed(caller, patterns)


def pipeline_config() -> PipelineConfig:
    return parse_pipeline_config(TEST_CONFIG)


@dataclass
class FakeWorld:
    services: Services
    store: FakeStore
    compute: FakeCompute
    publisher: FakePublisher
    clock: FakeClock
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    probe: FakeSmokeProbe = field(default_factory=FakeSmokeProbe)


def fake_world() -> FakeWorld:
    store, compute, publisher, clock = FakeStore(), FakeCompute(), FakePublisher(), FakeClock()
    compute.now = clock.now
    metrics, probe = FakeMetrics(), FakeSmokeProbe()
    services = Services(
        config=pipeline_config(),
        store=store,
        compute=compute,
        publisher=publisher,
        clock=clock,
        metrics=metrics,
        probe=probe,
    )
    return FakeWorld(services, store, compute, publisher, clock, metrics, probe)


@dataclass
class FakeLedger:
    """The ledger port in memory, with the same state rules as the Firestore one."""

    states: dict[tuple[str, str], str] = field(default_factory=dict)
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def claim(
        self,
        notification: Notification,
        channel_id: str,
        owner: str,
        lease_seconds: float,
        delivered: str | None = None,
    ) -> ClaimOutcome:
        if delivered is not None:
            self.states[(notification.dedupe_key, delivered)] = "delivered"
        key = (notification.dedupe_key, channel_id)
        state = self.states.get(key)
        if state == "delivered":
            return ClaimOutcome.ALREADY_DELIVERED
        if state == "given_up":
            return ClaimOutcome.GIVEN_UP
        if state == "sending" and self.owners[key] != owner:
            return ClaimOutcome.HELD_ELSEWHERE
        self.states[key], self.owners[key] = "sending", owner
        return ClaimOutcome.CLAIMED

    def mark_delivered(self, dedupe_key: str, channel_id: str, owner: str) -> None:
        self.states[(dedupe_key, channel_id)] = "delivered"

    def release(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self.states[(dedupe_key, channel_id)] = "failed"

    def give_up(self, dedupe_key: str, channel_id: str, owner: str, error: str) -> None:
        self.states[(dedupe_key, channel_id)] = "given_up"

    def channel_states(self, dedupe_key: str) -> dict[str, str]:
        return {channel: state for (key, channel), state in self.states.items() if key == dedupe_key}


@dataclass
class FakeChannels:
    """The NotificationChannels port: the same senders for any app and environment, and what was asked."""

    senders: list[ChannelSender] = field(default_factory=list)
    asked: list[tuple[str | None, str | None, bool]] = field(default_factory=list)

    def senders_for(
        self, app: str | None, environment: str | None, *, operational: bool
    ) -> list[ChannelSender]:
        self.asked.append((app, environment, operational))
        return list(self.senders)
