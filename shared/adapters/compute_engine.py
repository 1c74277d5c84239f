"""The Compute port on Compute Engine, through google-cloud-compute (REST, proto-plus requests).

Every long-running operation is awaited with a timeout. Errors are translated at this
boundary: 409 on create means a retried step found its own resource (fetch and continue),
5xx / 429 / timeouts / connection failures are transient (`ComputeUnavailable`), other 4xx
are configuration errors that retrying cannot fix (`ComputeRefused`).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from shared.config import EnvironmentConfig
from shared.domain.leaks import ListedResource
from shared.logging import get_logger
from shared.ports import GroupHealth, PermanentError, TransientError

log = get_logger("compute")

OPERATION_TIMEOUT_SECONDS = 180.0
RELEASE_VERSION_KEY = "release-version"
RELEASE_ARTIFACT_KEY = "release-artifact"
RELEASE_ARTIFACT_SHA256_KEY = "release-artifact-sha256"
"""The artifact's SHA-256: the instance (startup script, or the local emulator) checks the
downloaded file against it before unpacking and never starts a release that differs."""
SERVING_PORT_NAME = "http"
SERVING_PORT = 80
"""On GCP the startup script puts nginx on 80 in front of the app; the health check and the
backend service address the named port `http`."""
MAX_FINGERPRINT_RETRIES = 5
API_ROOT = "https://www.googleapis.com/compute/v1/"
# lastAttempt error codes that say "not now" rather than "never": the deadline bounds them.
_TRANSIENT_INSTANCE_ERRORS = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "QUOTA_EXCEEDED",
    "RESOURCE_NOT_READY",
    "RATE_LIMIT_EXCEEDED",
)


class ComputeUnavailable(TransientError):
    """Compute Engine failed in a way worth retrying."""


class ComputeRefused(PermanentError):
    """Compute Engine refused the request: the configuration or the release is wrong."""


def _translate(exc: BaseException, what: str) -> Exception:
    if isinstance(
        exc,
        google_exceptions.ServerError
        | google_exceptions.TooManyRequests
        | google_exceptions.RetryError
        | concurrent.futures.TimeoutError
        | requests.exceptions.ConnectionError
        | requests.exceptions.Timeout,
    ):
        return ComputeUnavailable(f"{what}: {exc}")
    if isinstance(exc, google_exceptions.ClientError):
        return ComputeRefused(f"{what}: {exc.message if hasattr(exc, 'message') else exc}")
    return ComputeUnavailable(f"{what}: {exc}")


_API_ERRORS = (
    google_exceptions.GoogleAPIError,
    concurrent.futures.TimeoutError,
    requests.exceptions.RequestException,
)


class ComputeEngine:
    def __init__(
        self,
        project: str,
        *,
        endpoint: str | None = None,
        operation_timeout: float = OPERATION_TIMEOUT_SECONDS,
    ) -> None:
        """`endpoint` (e.g. http://127.0.0.1:8089) points the clients at an emulator, anonymously."""
        options: dict[str, Any] = {}
        if endpoint:
            options = {
                "credentials": AnonymousCredentials(),
                "client_options": ClientOptions(api_endpoint=endpoint),
            }
        self.project = project
        self.operation_timeout = operation_timeout
        self.templates = compute_v1.InstanceTemplatesClient(**options)
        self.groups = compute_v1.RegionInstanceGroupManagersClient(**options)
        self.backend_services = compute_v1.BackendServicesClient(**options)

    # ---- helpers ---------------------------------------------------------------------------

    def _await(self, operation: Any, what: str) -> None:
        try:
            operation.result(timeout=self.operation_timeout)
        except _API_ERRORS as exc:  # translated: 5xx/timeout transient, 4xx permanent
            raise _translate(exc, what) from exc

    def _call(self, call: Callable[[], Any], what: str) -> Any:
        try:
            return call()
        except _API_ERRORS as exc:  # translated: 5xx/timeout transient, 4xx permanent
            raise _translate(exc, what) from exc

    def _template_link(self, name: str) -> str:
        return f"{API_ROOT}projects/{self.project}/global/instanceTemplates/{name}"

    def _health_check_link(self, name: str) -> str:
        return f"{API_ROOT}projects/{self.project}/global/healthChecks/{name}"

    def group_link(self, env: EnvironmentConfig, name: str) -> str:
        return f"{API_ROOT}projects/{self.project}/regions/{env.region}/instanceGroups/{name}"

    # ---- templates -------------------------------------------------------------------------

    def ensure_instance_template(
        self, env: EnvironmentConfig, name: str, *, version: str, artifact: str, artifact_sha256: str
    ) -> None:
        try:
            base = self.templates.get(
                request=compute_v1.GetInstanceTemplateRequest(
                    project=self.project, instance_template=env.base_instance_template
                )
            )
        except google_exceptions.NotFound as exc:  # permanent: the environment's base resources are missing
            raise ComputeRefused(
                f"base instance template {env.base_instance_template} does not exist"
            ) from exc
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"reading base template {env.base_instance_template}") from exc

        properties_type = type(base.properties)
        properties = properties_type.deserialize(properties_type.serialize(base.properties))
        items = [
            item
            for item in properties.metadata.items
            if item.key not in (RELEASE_VERSION_KEY, RELEASE_ARTIFACT_KEY, RELEASE_ARTIFACT_SHA256_KEY)
        ]
        items.append(compute_v1.Items(key=RELEASE_VERSION_KEY, value=version))
        items.append(compute_v1.Items(key=RELEASE_ARTIFACT_KEY, value=artifact))
        items.append(compute_v1.Items(key=RELEASE_ARTIFACT_SHA256_KEY, value=artifact_sha256))
        properties.metadata = compute_v1.Metadata(items=items)
        template = compute_v1.InstanceTemplate(
            name=name,
            description=f"{env.app} {version} for {env.name}, from {env.base_instance_template}",
            properties=properties,
        )
        try:
            operation = self.templates.insert(
                request=compute_v1.InsertInstanceTemplateRequest(
                    project=self.project, instance_template_resource=template
                )
            )
        except google_exceptions.Conflict:  # expected on a retry: our own template exists; use it
            log.info("instance template %s already exists", name)
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"creating instance template {name}") from exc
        try:
            operation.result(timeout=self.operation_timeout)
        except google_exceptions.Conflict:  # the same, reported by the operation
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"creating instance template {name}") from exc

    def delete_instance_template(self, env: EnvironmentConfig, name: str) -> None:
        try:
            operation = self.templates.delete(
                request=compute_v1.DeleteInstanceTemplateRequest(project=self.project, instance_template=name)
            )
        except google_exceptions.NotFound:  # already gone: deleting is idempotent
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"deleting instance template {name}") from exc
        self._await(operation, f"deleting instance template {name}")

    # ---- managed instance groups ------------------------------------------------------------

    def ensure_instance_group(self, env: EnvironmentConfig, name: str, *, template: str) -> None:
        manager = compute_v1.InstanceGroupManager(
            name=name,
            description=f"green for {env.app}/{env.name}",
            # Instances are named <base>-xxxx, and an instance name has at most 63 characters.
            base_instance_name=name[:58].rstrip("-"),
            instance_template=self._template_link(template),
            target_size=env.instance_count,
            named_ports=[compute_v1.NamedPort(name=SERVING_PORT_NAME, port=SERVING_PORT)],
            auto_healing_policies=[
                compute_v1.InstanceGroupManagerAutoHealingPolicy(
                    health_check=self._health_check_link(env.health_check),
                    # Short, so a broken release is replaced (and shows up) quickly; long enough to boot.
                    initial_delay_sec=max(5, min(env.cool_down_seconds, 120)),
                )
            ],
        )
        try:
            operation = self.groups.insert(
                request=compute_v1.InsertRegionInstanceGroupManagerRequest(
                    project=self.project, region=env.region, instance_group_manager_resource=manager
                )
            )
        except google_exceptions.Conflict:  # expected on a retry: our own group exists; use it
            log.info("instance group %s already exists", name)
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"creating instance group {name}") from exc
        try:
            operation.result(timeout=self.operation_timeout)
        except google_exceptions.Conflict:  # expected on a retry: the operation found our own group
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"creating instance group {name}") from exc

    def group_health(self, env: EnvironmentConfig, name: str) -> GroupHealth:
        try:
            manager = self.groups.get(
                request=compute_v1.GetRegionInstanceGroupManagerRequest(
                    project=self.project, region=env.region, instance_group_manager=name
                )
            )
            instances = list(
                self.groups.list_managed_instances(
                    request=compute_v1.ListManagedInstancesRegionInstanceGroupManagersRequest(
                        project=self.project, region=env.region, instance_group_manager=name
                    )
                )
            )
        except google_exceptions.NotFound:  # permanent for this check: report it, the caller decides
            return GroupHealth(exists=False, target_size=0, healthy=0, instances=0)
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"reading instance group {name}") from exc
        healthy = 0
        errors: list[str] = []
        for instance in instances:
            states = [h.detailed_health_state for h in instance.instance_health]
            if (
                instance.instance_status == "RUNNING"
                and instance.current_action == "NONE"
                and states
                and all(s == "HEALTHY" for s in states)
            ):
                healthy += 1
            if instance.instance_status == "RUNNING":
                continue  # a past failed attempt that a later one overcame
            for error in instance.last_attempt.errors.errors:
                if error.code not in _TRANSIENT_INSTANCE_ERRORS:
                    errors.append(f"{instance.name or instance.instance}: {error.message or error.code}")
        return GroupHealth(
            exists=True,
            target_size=manager.target_size,
            healthy=healthy,
            instances=len(instances),
            errors=tuple(dict.fromkeys(errors)),
        )

    def delete_instance_group(self, env: EnvironmentConfig, name: str) -> None:
        try:
            operation = self.groups.delete(
                request=compute_v1.DeleteRegionInstanceGroupManagerRequest(
                    project=self.project, region=env.region, instance_group_manager=name
                )
            )
        except google_exceptions.NotFound:  # already gone: deleting is idempotent
            return
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise _translate(exc, f"deleting instance group {name}") from exc
        self._await(operation, f"deleting instance group {name}")

    # ---- listings (leak collection) ---------------------------------------------------------

    def list_instance_groups(self, region: str) -> list[ListedResource]:
        managers = self._call(
            lambda: list(
                self.groups.list(
                    request=compute_v1.ListRegionInstanceGroupManagersRequest(
                        project=self.project, region=region
                    )
                )
            ),
            f"listing instance groups in {region}",
        )
        return [
            ListedResource("instance_group", m.name, _created_at(m.creation_timestamp), region)
            for m in managers
        ]

    def list_instance_templates(self) -> list[ListedResource]:
        templates = self._call(
            lambda: list(
                self.templates.list(request=compute_v1.ListInstanceTemplatesRequest(project=self.project))
            ),
            "listing instance templates",
        )
        return [
            ListedResource("instance_template", t.name, _created_at(t.creation_timestamp)) for t in templates
        ]

    # ---- backend service -------------------------------------------------------------------

    @staticmethod
    def _is_group(backend: compute_v1.Backend, name: str) -> bool:
        return backend.group.rstrip("/").endswith(f"/instanceGroups/{name}")

    @staticmethod
    def _group_name(backend: compute_v1.Backend) -> str:
        return backend.group.rstrip("/").rsplit("/", 1)[-1]

    def _change_backends(
        self,
        env: EnvironmentConfig,
        change: Callable[[Sequence[compute_v1.Backend]], list[compute_v1.Backend] | None],
        what: str,
    ) -> None:
        """Read-modify-write of the backends, guarded by the fingerprint: a 412 re-reads."""
        for _attempt in range(MAX_FINGERPRINT_RETRIES):
            service = self._call(
                lambda: self.backend_services.get(
                    request=compute_v1.GetBackendServiceRequest(
                        project=self.project, backend_service=env.backend_service
                    )
                ),
                f"reading backend service {env.backend_service}",
            )
            backends = change(list(service.backends))
            if backends is None:
                return
            patch = compute_v1.BackendService(backends=backends, fingerprint=service.fingerprint)
            try:
                operation = self.backend_services.patch(
                    request=compute_v1.PatchBackendServiceRequest(
                        project=self.project,
                        backend_service=env.backend_service,
                        backend_service_resource=patch,
                    )
                )
                operation.result(timeout=self.operation_timeout)
                return
            except google_exceptions.PreconditionFailed:  # transient: someone changed it meanwhile; re-read
                log.info("backend service %s changed concurrently; retrying %s", env.backend_service, what)
                continue
            except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
                raise _translate(exc, what) from exc
        raise ComputeUnavailable(f"{what}: backend service {env.backend_service} kept changing")

    def attached_groups(self, env: EnvironmentConfig) -> list[str]:
        service = self._call(
            lambda: self.backend_services.get(
                request=compute_v1.GetBackendServiceRequest(
                    project=self.project, backend_service=env.backend_service
                )
            ),
            f"reading backend service {env.backend_service}",
        )
        return [self._group_name(backend) for backend in service.backends]

    def attach_group(self, env: EnvironmentConfig, name: str) -> None:
        link = self.group_link(env, name)

        def add(backends: Sequence[compute_v1.Backend]) -> list[compute_v1.Backend] | None:
            if any(self._is_group(b, name) for b in backends):
                return None
            return [
                *backends,
                compute_v1.Backend(group=link, balancing_mode="UTILIZATION", capacity_scaler=1.0),
            ]

        self._change_backends(env, add, f"attaching {name} to {env.backend_service}")

    def keep_only_group(self, env: EnvironmentConfig, name: str) -> list[str]:
        removed: list[str] = []

        def keep(backends: Sequence[compute_v1.Backend]) -> list[compute_v1.Backend] | None:
            kept = [b for b in backends if self._is_group(b, name)]
            removed[:] = [self._group_name(b) for b in backends if not self._is_group(b, name)]
            if not removed:
                return None
            if not kept:
                raise ComputeRefused(f"{name} is not attached to {env.backend_service}; refusing to empty it")
            return kept

        self._change_backends(env, keep, f"detaching all but {name} from {env.backend_service}")
        return removed

    def serving_healthy(self, env: EnvironmentConfig, name: str) -> bool:
        response = self._call(
            lambda: self.backend_services.get_health(
                request=compute_v1.GetHealthBackendServiceRequest(
                    project=self.project,
                    backend_service=env.backend_service,
                    resource_group_reference_resource=compute_v1.ResourceGroupReference(
                        group=self.group_link(env, name)
                    ),
                )
            ),
            f"reading the health of {name} in {env.backend_service}",
        )
        states = [status.health_state for status in response.health_status]
        return len(states) >= env.instance_count and all(state == "HEALTHY" for state in states)


def _created_at(timestamp: str) -> datetime | None:
    """Compute Engine's RFC 3339 `creationTimestamp`; None if absent or unreadable (never collected)."""
    if not timestamp:
        return None
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:  # permanent for this resource: without a time it is simply left alone
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
