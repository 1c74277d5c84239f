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

from shared.adapters.compute_errors import (
    TRANSIENT_INSTANCE_ERRORS,
    ComputeRefused,
    ComputeUnavailable,
    translate,
)
from shared.config import EnvironmentConfig
from shared.domain.leaks import ListedResource
from shared.logging import get_logger
from shared.ports import GroupHealth, PreconditionFailed

log = get_logger("compute")

OPERATION_TIMEOUT_SECONDS = 180.0
RELEASE_VERSION_KEY = "release-version"
RELEASE_ARTIFACT_KEY = "release-artifact"
RELEASE_ARTIFACT_SHA256_KEY = "release-artifact-sha256"
"""The artifact's SHA-256: the instance (startup script, or the local emulator) checks the
downloaded file against it before unpacking and never starts a release that differs."""
RELEASE_ERROR_NAMESPACE = "release"
"""Guest-attribute namespace where the startup script writes `error` when it refuses a release
(e.g. "artifact digest mismatch"): Compute Engine does not report startup-script failures, so
the guest reports them itself and group_health reads them back."""
SERVING_PORT_NAME = "http"
SERVING_PORT = 80
"""On GCP the startup script puts nginx on 80 in front of the app; the health check and the
backend service address the named port `http`."""
MAX_FINGERPRINT_RETRIES = 5
API_ROOT = "https://www.googleapis.com/compute/v1/"
_LEAVING_ACTIONS = ("DELETING", "ABANDONING")
"""A managed instance's `currentAction` while the group lets it go: not part of its target size."""
_EXISTS = (google_exceptions.Conflict,)
_GONE = (google_exceptions.NotFound,)
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
        self.instances = compute_v1.InstancesClient(**options)
        if endpoint:
            for client in (self.templates, self.groups, self.backend_services, self.instances):
                _reach_directly(client)

    # ---- helpers ---------------------------------------------------------------------------

    def _call(self, call: Callable[[], Any], what: str, *, expected: tuple[type[Exception], ...] = ()) -> Any:
        """`call()`'s result, with every API error translated; None for an `expected` error."""
        try:
            return call()
        except expected as exc:  # not an error: what the caller allows for (409 on create, 404 on delete)
            log.info("%s: %s", what, exc)
            return None
        except _API_ERRORS as exc:  # translated: 5xx/429/timeouts transient, other 4xx permanent
            raise translate(exc, what) from exc

    def _finish(self, operation: Any) -> bool:
        """Wait for a long-running operation, within the timeout (which raises)."""
        operation.result(timeout=self.operation_timeout)
        return True

    def _create(self, insert: Callable[[], Any], what: str) -> None:
        # Names derive from the deployment id, so a 409, from the call or from its operation, is
        # the resource an earlier try of this step created: use it.
        self._call(lambda: self._finish(insert()), what, expected=_EXISTS)

    def _delete(self, delete: Callable[[], Any], what: str) -> None:
        self._call(lambda: self._finish(delete()), what, expected=_GONE)

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
        base = self._call(
            lambda: self.templates.get(
                request=compute_v1.GetInstanceTemplateRequest(
                    project=self.project, instance_template=env.base_instance_template
                )
            ),
            f"reading base template {env.base_instance_template}",
            expected=_GONE,
        )
        if base is None:  # permanent: the environment's base resources are missing
            raise ComputeRefused(f"base instance template {env.base_instance_template} does not exist")

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
        self._create(
            lambda: self.templates.insert(
                request=compute_v1.InsertInstanceTemplateRequest(
                    project=self.project, instance_template_resource=template
                )
            ),
            f"creating instance template {name}",
        )

    def delete_instance_template(self, env: EnvironmentConfig, name: str) -> None:
        self._delete(
            lambda: self.templates.delete(
                request=compute_v1.DeleteInstanceTemplateRequest(project=self.project, instance_template=name)
            ),
            f"deleting instance template {name}",
        )

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
        self._create(
            lambda: self.groups.insert(
                request=compute_v1.InsertRegionInstanceGroupManagerRequest(
                    project=self.project, region=env.region, instance_group_manager_resource=manager
                )
            ),
            f"creating instance group {name}",
        )

    def group_health(self, env: EnvironmentConfig, name: str) -> GroupHealth:
        # One call: a group lists every instance it means to have from the moment it decides on
        # it (CREATING, before the VM exists), so the ones it keeps are its target size; reading
        # the group itself as well cost each check of green a second round trip.
        instances = self._call(
            lambda: list(
                self.groups.list_managed_instances(
                    request=compute_v1.ListManagedInstancesRegionInstanceGroupManagersRequest(
                        project=self.project, region=env.region, instance_group_manager=name
                    )
                )
            ),
            f"reading instance group {name}",
            expected=_GONE,
        )
        if instances is None:  # not an error here: the caller decides what a missing group means
            return GroupHealth(exists=False, target_size=0, healthy=0, instances=0)
        kept = [i for i in instances if i.current_action not in _LEAVING_ACTIONS]
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
            else:
                # What the guest refused (its startup script's errors). Healthy instances are
                # skipped: they serve the release, so their startup succeeded.
                errors += self._guest_errors(instance)
            if instance.instance_status == "RUNNING":
                continue  # a past failed attempt that a later one overcame
            # What Compute Engine itself could not do (create the VM: quota, image, template...).
            for error in instance.last_attempt.errors.errors:
                if error.code not in TRANSIENT_INSTANCE_ERRORS:
                    errors.append(f"{instance.name or instance.instance}: {error.message or error.code}")
        return GroupHealth(
            exists=True,
            target_size=len(kept),
            healthy=healthy,
            instances=len(instances),
            errors=tuple(dict.fromkeys(errors)),
        )

    def _guest_errors(self, managed: compute_v1.ManagedInstance) -> list[str]:
        """The `release/` guest attributes of one managed instance, as "<instance>: <message>"."""
        location = instance_location(managed.instance)
        if location is None or not managed.instance_status:
            return []  # the VM does not exist yet: no guest has written anything
        zone, name = location
        attributes = self._call(
            lambda: self.instances.get_guest_attributes(
                request=compute_v1.GetGuestAttributesInstanceRequest(
                    project=self.project,
                    zone=zone,
                    instance=name,
                    query_path=f"{RELEASE_ERROR_NAMESPACE}/",
                )
            ),
            f"reading the guest attributes of {name}",
            # Not an error: the namespace exists only once the guest wrote to it (or the VM went).
            expected=_GONE,
        )
        if attributes is None:
            return []
        return [
            f"{name}: {entry.value}"
            for entry in attributes.query_value.items
            if entry.namespace == RELEASE_ERROR_NAMESPACE and entry.key == "error" and entry.value
        ]

    def delete_instance_group(self, env: EnvironmentConfig, name: str) -> None:
        self._delete(
            lambda: self.groups.delete(
                request=compute_v1.DeleteRegionInstanceGroupManagerRequest(
                    project=self.project, region=env.region, instance_group_manager=name
                )
            ),
            f"deleting instance group {name}",
        )

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
        """Patch the backends to what `change` makes of them (None: nothing to change)."""

        def patch(service: compute_v1.BackendService) -> Callable[[], bool] | None:
            backends = change(list(service.backends))
            if backends is None:
                return None
            request = compute_v1.PatchBackendServiceRequest(
                project=self.project,
                backend_service=env.backend_service,
                backend_service_resource=compute_v1.BackendService(
                    backends=backends, fingerprint=service.fingerprint
                ),
            )
            return lambda: self._finish(self.backend_services.patch(request=request))

        self._write_backend_service(env, patch, what)

    def _write_backend_service(
        self,
        env: EnvironmentConfig,
        write_for: Callable[[compute_v1.BackendService], Callable[[], bool] | None],
        what: str,
    ) -> None:
        """Read the backend service, then make the write `write_for` derives from it (None: none
        needed). The write carries the fingerprint read: a 412 means someone changed the service
        since, so it is read again."""
        for _attempt in range(MAX_FINGERPRINT_RETRIES):
            write = write_for(self._backend_service(env))
            if write is None:
                return
            if self._call(write, what, expected=(google_exceptions.PreconditionFailed,)):
                return
        raise ComputeUnavailable(f"{what}: backend service {env.backend_service} kept changing")

    def _backend_service(self, env: EnvironmentConfig) -> compute_v1.BackendService:
        return self._call(
            lambda: self.backend_services.get(
                request=compute_v1.GetBackendServiceRequest(
                    project=self.project, backend_service=env.backend_service
                )
            ),
            f"reading backend service {env.backend_service}",
        )

    def attached_groups(self, env: EnvironmentConfig) -> list[str]:
        return [self._group_name(backend) for backend in self._backend_service(env).backends]

    def attach_group(
        self,
        env: EnvironmentConfig,
        name: str,
        *,
        only_while: Callable[[], bool] | None = None,
        only_beside: str | None = None,
    ) -> None:
        link = self.group_link(env, name)
        what = f"attaching {name} to {env.backend_service}"

        def add(backends: Sequence[compute_v1.Backend]) -> list[compute_v1.Backend] | None:
            if any(self._is_group(b, name) for b in backends):
                return None
            if only_beside is not None and [self._group_name(b) for b in backends] != [only_beside]:
                raise PreconditionFailed(f"{what}: {only_beside} is no longer the only backend")
            if only_while is not None and not only_while():  # after each read, so after a 412 too
                raise PreconditionFailed(what)
            return [
                *backends,
                compute_v1.Backend(group=link, balancing_mode="UTILIZATION", capacity_scaler=1.0),
            ]

        self._change_backends(env, add, what)

    def keep_only_group(
        self, env: EnvironmentConfig, name: str, *, only_while: Callable[[], bool] | None = None
    ) -> list[str]:
        removed: list[str] = []

        def keep(backends: Sequence[compute_v1.Backend]) -> list[compute_v1.Backend] | None:
            kept = [b for b in backends if self._is_group(b, name)]
            removed[:] = [self._group_name(b) for b in backends if not self._is_group(b, name)]
            if not removed:
                return None
            if not kept:
                raise ComputeRefused(f"{name} is not attached to {env.backend_service}; refusing to empty it")
            if only_while is not None and not only_while():  # after each read, so after a 412 too
                raise PreconditionFailed(f"detaching all but {name} from {env.backend_service}")
            return kept

        self._change_backends(env, keep, f"detaching all but {name} from {env.backend_service}")
        return removed

    def detach_group(self, env: EnvironmentConfig, name: str, *, leave_empty: bool = True) -> None:
        # A patch cannot empty the list (an empty repeated field is left out): replace it all.
        def replace_without_group(service: compute_v1.BackendService) -> Callable[[], bool] | None:
            if not any(self._is_group(b, name) for b in service.backends):
                return None
            replacement = type(service).deserialize(type(service).serialize(service))
            kept = [b for b in service.backends if not self._is_group(b, name)]
            if not kept and not leave_empty:  # another caller's change since this one looked
                raise ComputeUnavailable(f"{name} is the only backend left; not detaching it")
            del replacement.backends[:]
            replacement.backends.extend(kept)
            request = compute_v1.UpdateBackendServiceRequest(
                project=self.project,
                backend_service=env.backend_service,
                backend_service_resource=replacement,
            )
            return lambda: self._finish(self.backend_services.update(request=request))

        self._write_backend_service(
            env, replace_without_group, f"detaching {name} from {env.backend_service}"
        )

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


def _reach_directly(client: Any) -> None:
    """Send an emulator client's requests straight to it: `requests` reads the proxy variables
    on every call, wrong for a loopback emulator (a proxy meant for the Internet would be asked)
    and slow (the whole environment walked twice per call). The transport has no such option."""
    session = getattr(getattr(client, "_transport", None), "_session", None)
    if session is not None:
        session.trust_env = False


def _created_at(timestamp: str) -> datetime | None:
    """Compute Engine's RFC 3339 `creationTimestamp`; None if absent or unreadable (never collected)."""
    if not timestamp:
        return None
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:  # permanent for this resource: without a time it is simply left alone
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def instance_location(link: str) -> tuple[str, str] | None:
    """(zone, name) of an instance URL; None for anything else.

    >>> instance_location("https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/instances/vm-1")
    ('us-central1-a', 'vm-1')
    >>> instance_location("") is None
    True
    """
    parts = link.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-4] == "zones" and parts[-2] == "instances":
        return parts[-3], parts[-1]
    return None
