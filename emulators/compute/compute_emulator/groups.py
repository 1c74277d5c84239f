"""Managed instance groups: keep `targetSize` instances running, verify and autoheal them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
from pathlib import Path
from typing import Any, Protocol

from .clock import new_fingerprint, new_id, rfc3339_now
from .health import HealthChecker, ProbeSpec
from .instances import RELEASE_ERROR_ATTRIBUTE, BootError, GuestRefusal, Instance, ReleaseMetadata

LOG = logging.getLogger(__name__)

_RECONCILE_TICK_SECONDS = 0.25
"""While an instance is starting, verifying or in its initial delay: the moments that change it
are partly time (the initial delay running out), so the group looks four times a second."""
_SETTLED_TICK_SECONDS = 2.0
"""A settled group looks only this often by itself: whatever changes it (a resize, an instance's
task ending, a probe turning healthy or unhealthy, a backend service attaching it) wakes it at
once. Two hundred groups ticking four times a second were a third of an idle emulator's loop."""
_BOOT_RETRY_FIRST_SECONDS = 2.0
_BOOT_RETRY_MAX_SECONDS = 30.0
_DRAIN_POLL_SECONDS = 0.05
_ACTIONS = (
    "abandoning",
    "creating",
    "creatingWithoutRetries",
    "deleting",
    "none",
    "recreating",
    "refreshing",
    "restarting",
    "resuming",
    "starting",
    "stopping",
    "suspending",
    "verifying",
)
_UNHEALTHY_STATES = {"UNHEALTHY", "TIMEOUT"}


class GroupContext(Protocol):
    """What a group needs from the rest of the emulator."""

    state_dir: Path
    health: HealthChecker

    def template_resource(self, path: str) -> dict[str, Any] | None: ...

    def health_check_resource(self, path: str) -> dict[str, Any] | None: ...

    def draining_timeout_for(self, group_path: str) -> float: ...

    def health_checks_serving(self, group_path: str) -> list[str]: ...


def release_from_template(template: dict[str, Any]) -> ReleaseMetadata:
    items = ((template.get("properties") or {}).get("metadata") or {}).get("items") or []
    metadata = {item.get("key"): item.get("value") for item in items}
    return ReleaseMetadata(
        artifact_url=metadata.get("release-artifact"),
        version=metadata.get("release-version") or "",
        artifact_sha256=metadata.get("release-artifact-sha256"),
    )


class ManagedInstanceGroup:
    def __init__(
        self,
        context: GroupContext,
        project: str,
        scope: str,
        name: str,
        resource: dict[str, Any],
        zones: list[str],
    ) -> None:
        self.context = context
        self.project = project
        self.scope = scope  # "zones/<zone>" or "regions/<region>"
        self.name = name
        self.resource = resource  # the caller's fields, references already made relative
        self.zones = zones
        self.id = new_id()
        self.creation_timestamp = rfc3339_now()
        self.fingerprint = new_fingerprint()
        self.target_size = int(resource.get("targetSize", 0))
        self.instances: list[Instance] = []
        self.deleted = False
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.scope}/instanceGroupManagers/{self.name}"

    @property
    def group_path(self) -> str:
        return f"projects/{self.project}/{self.scope}/instanceGroups/{self.name}"

    @property
    def template_path(self) -> str:
        return str(self.resource["instanceTemplate"])

    @property
    def named_ports(self) -> dict[str, int]:
        return {port["name"]: int(port.get("port", 0)) for port in self.resource.get("namedPorts", [])}

    @property
    def autohealing(self) -> tuple[str, float] | None:
        policies = self.resource.get("autoHealingPolicies") or []
        if not policies or not policies[0].get("healthCheck"):
            return None
        return str(policies[0]["healthCheck"]), float(policies[0].get("initialDelaySec", 0))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name=f"group {self.path}")

    def resize(self, size: int) -> None:
        self.target_size = size
        self.fingerprint = new_fingerprint()
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def delete(self) -> None:
        """End every instance's process tree at once: no draining (detach from backends first)."""
        self.deleted = True
        self.wake()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for instance in self.instances:
            instance.current_action = "DELETING"
        await asyncio.gather(*(self._remove(instance, drain=False) for instance in list(self.instances)))

    def kill_now(self) -> None:
        for instance in self.instances:
            instance.stop_now()

    async def _run(self) -> None:
        while not self.deleted:
            settled = False
            try:
                settled = self._reconcile()
            except Exception:
                LOG.exception("reconciling %s failed; retrying", self.path)
            self._wake.clear()
            # `timeout` rather than `wait_for`: no task per wait (Python 3.11).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SETTLED_TICK_SECONDS if settled else _RECONCILE_TICK_SECONDS):
                    await self._wake.wait()

    def _busy(self, instance: Instance) -> bool:
        return instance.task is not None and not instance.task.done()

    def _reconcile(self) -> bool:
        """Converge on the target size, verify and heal; whether every instance has settled."""
        active = [i for i in self.instances if i.current_action != "DELETING"]
        while len(active) < self.target_size:
            instance = self._new_instance(active)
            self.instances.append(instance)
            active.append(instance)
            instance.task = asyncio.create_task(self._create(instance))
        if len(active) > self.target_size:
            for victim in self._pick_victims(active, len(active) - self.target_size):
                victim.current_action = "DELETING"
                victim.task = asyncio.create_task(self._remove(victim, drain=True))
            active = [i for i in self.instances if i.current_action != "DELETING"]
        loop_now = asyncio.get_running_loop().time()
        settled = len(active) == len(self.instances)
        for instance in active:
            if self._busy(instance):
                settled = False
                continue
            self._ensure_probes(instance)
            action_before = instance.current_action
            self._verify_or_heal(instance, loop_now)
            # An instance that only now left VERIFYING may need healing on the next pass, which
            # no probe change would wake the group for.
            settled = (
                settled
                and action_before == instance.current_action == "NONE"
                and not self._in_initial_delay(instance, loop_now)
            )
        return settled

    def _in_initial_delay(self, instance: Instance, now: float) -> bool:
        autohealing = self.autohealing
        return (
            autohealing is not None
            and instance.started_at is not None
            and now - instance.started_at < autohealing[1]
        )

    def _verify_or_heal(self, instance: Instance, now: float) -> None:
        autohealing = self.autohealing
        if autohealing is None:
            if instance.current_action == "VERIFYING":
                instance.current_action = "NONE"
            return
        state = instance.probes.get(autohealing[0])
        in_initial_delay = self._in_initial_delay(instance, now)
        if instance.current_action == "VERIFYING":
            if (state is not None and state.state == "HEALTHY") or not in_initial_delay:
                instance.current_action = "NONE"
            return
        if (
            instance.current_action == "NONE"
            and state is not None
            and state.state in _UNHEALTHY_STATES
            and not in_initial_delay
        ):
            instance.log(f"autohealing: health check reports {state.state} ({state.last_detail}); recreating")
            instance.current_action = "RECREATING"
            instance.task = asyncio.create_task(self._recreate(instance))

    def _new_instance(self, active: list[Instance]) -> Instance:
        per_zone = {zone: 0 for zone in self.zones}
        for instance in active:
            per_zone[instance.zone] = per_zone.get(instance.zone, 0) + 1
        zone = min(self.zones, key=lambda z: per_zone[z])
        name = self._free_instance_name({i.name for i in self.instances})
        template = self.context.template_resource(self.template_path) or {}
        return Instance(
            project=self.project,
            zone=zone,
            name=name,
            template_path=self.template_path,
            release=release_from_template(template),
            state_dir=self.context.state_dir,
        )

    def _free_instance_name(self, taken: set[str]) -> str:
        """`base-xxxx` with a random suffix, or `vm-001`, `vm-002`... for a base like `vm-###`."""
        base = str(self.resource["baseInstanceName"])
        if base.endswith("#"):
            digits = len(base) - len(base.rstrip("#"))
            prefix = base[: len(base) - digits]
            number = 1
            while f"{prefix}{number:0{digits}d}" in taken:
                number += 1
            return f"{prefix}{number:0{digits}d}"
        while True:
            suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
            if f"{base}-{suffix}" not in taken:
                return f"{base}-{suffix}"

    def _pick_victims(self, active: list[Instance], count: int) -> list[Instance]:
        """Like a real MIG: first instances that are not running, then unhealthy ones, newest first."""

        def rank(instance: Instance) -> tuple[int, int, tuple[int, ...]]:
            running = instance.status == "RUNNING"
            healthy = any(p.state == "HEALTHY" for p in instance.probes.values()) or not instance.probes
            return (int(running), int(healthy), _negated(instance.creation_timestamp))

        return sorted(active, key=rank)[:count]

    def _ensure_probes(self, instance: Instance) -> None:
        wanted = list(self.context.health_checks_serving(self.group_path))
        if self.autohealing is not None:
            wanted.append(self.autohealing[0])
        for health_check in wanted:
            if health_check in instance.probe_tasks:
                continue
            resource = self.context.health_check_resource(health_check)
            if resource is not None:
                spec = ProbeSpec.from_resource(health_check, resource, self.named_ports)
                self.context.health.ensure(instance, spec, on_change=self.wake)

    async def _create(self, instance: Instance) -> None:
        await self._boot_until_started(instance)
        if instance.current_action in ("CREATING", "RECREATING"):
            instance.current_action = "VERIFYING"
            self._ensure_probes(instance)
        self.wake()

    async def _recreate(self, instance: Instance) -> None:
        await instance.stop()
        HealthChecker.reset(instance)
        # A recreated VM is a new VM: what the old guest wrote is gone with it.
        instance.guest_attributes.clear()
        instance.status = "PROVISIONING"
        await self._boot_until_started(instance)
        if instance.current_action == "RECREATING":
            instance.current_action = "VERIFYING"
        self.wake()

    async def _boot_until_started(self, instance: Instance) -> None:
        delay = _BOOT_RETRY_FIRST_SECONDS
        while not self.deleted and instance.current_action != "DELETING":
            try:
                await instance.boot()
                return
            except GuestRefusal as exc:
                # Not a creation failure: the VM is up and its startup refused the release. Like
                # a startup script it says so in a guest attribute; the health check, finding
                # nothing listening, then has autohealing recreate the VM.
                instance.guest_attributes[RELEASE_ERROR_ATTRIBUTE] = str(exc)
                instance.status = "RUNNING"
                instance.started_at = asyncio.get_running_loop().time()
                instance.last_errors = []
                instance.log(f"the release was refused at startup; nothing serves: {exc}")
                return
            except BootError as exc:
                message = str(exc)
            except Exception as exc:
                LOG.exception("starting %s failed", instance.path)
                message = f"starting the instance failed: {exc}"
            instance.status = "PROVISIONING"
            instance.last_errors = [{"code": "CONDITION_NOT_MET", "message": message}]
            instance.log(f"instance creation failed, retrying in {delay:.0f}s: {message}")
            await self._sleep_unless_removed(instance, delay)
            delay = min(delay * 2, _BOOT_RETRY_MAX_SECONDS)

    async def _sleep_unless_removed(self, instance: Instance, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.deleted and instance.current_action != "DELETING" and loop.time() < deadline:
            await asyncio.sleep(min(0.2, deadline - loop.time()))

    async def _remove(self, instance: Instance, drain: bool) -> None:
        previous = instance.task
        if previous is not None and previous is not asyncio.current_task() and not previous.done():
            # A boot in progress ends on its own once it sees DELETING; never cancel a spawn half-way.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(previous), 60)
        instance.draining = True
        if drain:
            timeout = self.context.draining_timeout_for(self.group_path)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while instance.in_flight > 0 and loop.time() < deadline:
                await asyncio.sleep(_DRAIN_POLL_SECONDS)
        await HealthChecker.stop_all(instance)
        await instance.stop()
        if instance in self.instances:
            self.instances.remove(instance)
        self.wake()

    # -- views ------------------------------------------------------------------------------

    def is_stable(self) -> bool:
        return len(self.instances) == self.target_size and all(
            i.current_action == "NONE" and i.status == "RUNNING" for i in self.instances
        )

    def to_json(self, base_url: str) -> dict[str, Any]:
        counts = dict.fromkeys(_ACTIONS, 0)
        for instance in self.instances:
            key = {"CREATING": "creating", "DELETING": "deleting", "RECREATING": "recreating"}.get(
                instance.current_action, instance.current_action.lower()
            )
            counts[key] = counts.get(key, 0) + 1
        scope_url = base_url + f"projects/{self.project}/{self.scope}"
        body: dict[str, Any] = {
            "kind": "compute#instanceGroupManager",
            "id": self.id,
            "creationTimestamp": self.creation_timestamp,
            "name": self.name,
            "instanceTemplate": base_url + self.template_path,
            "versions": [{"instanceTemplate": base_url + self.template_path}],
            "instanceGroup": base_url + self.group_path,
            "baseInstanceName": self.resource["baseInstanceName"],
            "fingerprint": self.fingerprint,
            "currentActions": counts,
            "status": {
                "isStable": self.is_stable(),
                "versionTarget": {"isReached": all(i.current_action == "NONE" for i in self.instances)},
                "allInstancesConfig": {"effective": True},
                "stateful": {"hasStatefulConfig": False, "perInstanceConfigs": {"allEffective": True}},
            },
            "targetSize": self.target_size,
            "selfLink": base_url + self.path,
            "listManagedInstancesResults": "PAGELESS",
        }
        if self.scope.startswith("zones/"):
            body["zone"] = scope_url
        else:
            body["region"] = scope_url
            body["distributionPolicy"] = {
                "zones": [{"zone": base_url + f"projects/{self.project}/zones/{z}"} for z in self.zones],
                "targetShape": self.resource.get("distributionPolicy", {}).get("targetShape", "EVEN"),
            }
        if "description" in self.resource:
            body["description"] = self.resource["description"]
        if self.resource.get("namedPorts"):
            body["namedPorts"] = self.resource["namedPorts"]
        if self.autohealing is not None:
            health_check, delay = self.autohealing
            body["autoHealingPolicies"] = [
                {"healthCheck": base_url + health_check, "initialDelaySec": int(delay)}
            ]
        if "updatePolicy" in self.resource:
            body["updatePolicy"] = self.resource["updatePolicy"]
        return body

    def instance_group_json(self, base_url: str) -> dict[str, Any]:
        """The unmanaged view of the same group (instanceGroups), which backend services point at."""
        body: dict[str, Any] = {
            "kind": "compute#instanceGroup",
            "id": self.id,
            "creationTimestamp": self.creation_timestamp,
            "name": self.name,
            "description": "This instance group is controlled by Instance Group Manager "
            f"'{self.name}'. To modify instances in this group, use the Instance Group Manager API.",
            "fingerprint": self.fingerprint,
            "size": len(self.instances),
            "selfLink": base_url + self.group_path,
        }
        scope_key = "zone" if self.scope.startswith("zones/") else "region"
        body[scope_key] = base_url + f"projects/{self.project}/{self.scope}"
        if self.resource.get("namedPorts"):
            body["namedPorts"] = self.resource["namedPorts"]
        return body

    def managed_instances_json(self, base_url: str) -> list[dict[str, Any]]:
        autohealing = self.autohealing
        items = []
        for instance in self.instances:
            item: dict[str, Any] = {
                "instance": base_url + instance.path,
                "name": instance.name,
                "currentAction": instance.current_action,
                "version": {"instanceTemplate": base_url + instance.template_path},
            }
            if instance.status != "PROVISIONING":
                # Before its first start the instance does not exist yet: no id, no status.
                item["id"] = instance.id
                item["instanceStatus"] = instance.status
            if autohealing is not None:
                probe = instance.probes.get(autohealing[0])
                state = "DRAINING" if instance.draining else (probe.state if probe else "UNKNOWN")
                item["instanceHealth"] = [
                    {"healthCheck": base_url + autohealing[0], "detailedHealthState": state}
                ]
            if instance.last_errors:
                item["lastAttempt"] = {"errors": {"errors": instance.last_errors}}
            items.append(item)
        return items


def _negated(timestamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in timestamp)
