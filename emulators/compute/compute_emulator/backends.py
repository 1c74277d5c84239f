"""Backend services: each one is a real local HTTP load balancer.

The proxy sends a request only to HEALTHY, RUNNING instances of the groups currently attached,
choosing the least busy (round-robin among equals). A patch that removes a group drains it: no new
requests go there, requests already in flight may finish until `drainingTimeoutSec`, then are cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from .clock import new_fingerprint, new_id, rfc3339_now
from .groups import ManagedInstanceGroup
from .instances import Instance
from .monitoring import RequestCounts

LOG = logging.getLogger(__name__)

DEFAULT_DRAINING_TIMEOUT_SECONDS = 300
DEFAULT_TIMEOUT_SECONDS = 30
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class BackendContext(Protocol):
    @property
    def request_counts(self) -> RequestCounts:
        """Where the load balancer counts its answers (the Monitoring emulator reads them)."""
        ...

    def group(self, group_path: str) -> ManagedInstanceGroup | None: ...


class BackendService:
    def __init__(self, context: BackendContext, project: str, name: str, resource: dict[str, Any]) -> None:
        self.context = context
        self.project = project
        self.name = name
        self.resource = resource  # the caller's fields, references already made relative
        self.id = new_id()
        self.creation_timestamp = rfc3339_now()
        self.fingerprint = new_fingerprint()
        self.port: int | None = None
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._requests_by_group: dict[str, set[asyncio.Task[Any]]] = {}
        self._rotation = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def path(self) -> str:
        return f"projects/{self.project}/global/backendServices/{self.name}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_check_paths(self) -> list[str]:
        return [str(path) for path in self.resource.get("healthChecks", [])]

    @property
    def draining_timeout(self) -> float:
        draining = self.resource.get("connectionDraining") or {}
        return float(draining.get("drainingTimeoutSec", DEFAULT_DRAINING_TIMEOUT_SECONDS))

    @property
    def timeout(self) -> float:
        return float(self.resource.get("timeoutSec", DEFAULT_TIMEOUT_SECONDS))

    @property
    def resource(self) -> dict[str, Any]:
        return self._resource

    @resource.setter
    def resource(self, resource: dict[str, Any]) -> None:
        self._resource = resource
        # `serves` is asked by every group's reconcile, several times a second each: with a
        # hundred groups and a hundred services, building the list on every question took a
        # sixth of the event loop.
        self._attached = frozenset(self.attached_groups())

    def attached_groups(self) -> list[str]:
        return [str(backend["group"]) for backend in self._resource.get("backends", [])]

    def serves(self, group_path: str) -> bool:
        return group_path in self._attached or group_path in self._draining

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        # Keep-alive connections to the instances keep the proxy's added latency small.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        for task in self._draining.values():
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def replace_resource(self, resource: dict[str, Any]) -> None:
        """Apply an update; groups no longer attached start draining."""
        before = set(self.attached_groups())
        self.resource = resource
        self.fingerprint = new_fingerprint()
        after = set(self.attached_groups())
        for group_path in before - after:
            self._start_drain(group_path)
        for group_path in after & set(self._draining):
            self._draining.pop(group_path).cancel()

    def _start_drain(self, group_path: str) -> None:
        timeout = self.draining_timeout
        LOG.info("%s: draining %s for up to %ss", self.name, group_path, timeout)
        self._draining[group_path] = asyncio.create_task(self._drain(group_path, timeout))

    async def _drain(self, group_path: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._requests_by_group.get(group_path) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        leftovers = list(self._requests_by_group.get(group_path, ()))
        if leftovers:
            LOG.info("%s: draining %s timed out; cutting %d requests", self.name, group_path, len(leftovers))
        for task in leftovers:
            task.cancel()
        self._draining.pop(group_path, None)

    # -- routing ----------------------------------------------------------------------------

    def is_healthy(self, instance: Instance) -> bool:
        if not instance.is_serving():
            return False
        checks = self.health_check_paths
        if not checks:
            return True
        probes = [instance.probes.get(path) for path in checks]
        return all(probe is not None and probe.state == "HEALTHY" for probe in probes)

    def _candidates(self) -> list[tuple[str, Instance]]:
        found: list[tuple[str, Instance]] = []
        for backend in self.resource.get("backends", []):
            if float(backend.get("capacityScaler", 1.0)) <= 0:
                continue
            group = self.context.group(str(backend["group"]))
            if group is None:
                continue
            found.extend((group.group_path, i) for i in group.instances if self.is_healthy(i))
        return found

    def _pick(self) -> tuple[str, Instance] | None:
        candidates = self._candidates()
        if not candidates:
            return None
        turn = next(self._rotation)
        least = min(instance.in_flight for _, instance in candidates)
        idle = [c for c in candidates if c[1].in_flight == least]
        return idle[turn % len(idle)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        choice = self._pick()
        counts = self.context.request_counts
        if choice is None:
            # Counted as Cloud Load Balancing does: a request with no backend selected.
            counts.record(self.project, self.name, None, 503)
            return web.Response(
                status=503, text="no healthy backend\n", headers={"Via": "1.1 compute-emulator"}
            )
        group_path, instance = choice
        task = asyncio.current_task()
        assert task is not None
        in_group = self._requests_by_group.setdefault(group_path, set())
        in_group.add(task)
        instance.in_flight += 1
        try:
            response = await self._forward(request, instance)
            # Every answer on behalf of the group counts, the proxy's own 502/504 included: on
            # Cloud Load Balancing those are the backend's failures too.
            counts.record(self.project, self.name, group_path, response.status)
            return response
        finally:
            instance.in_flight -= 1
            in_group.discard(task)

    async def _forward(self, request: web.Request, instance: Instance) -> web.StreamResponse:
        port = instance.port
        if port is None or self._session is None:
            return _bad_gateway("the instance stopped")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        peer = request.remote or "127.0.0.1"
        forwarded_for = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        headers["Via"] = "1.1 compute-emulator"
        body = await request.read() if request.can_read_body else None
        try:
            async with self._session.request(
                request.method,
                f"http://127.0.0.1:{port}{request.rel_url}",
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as upstream:
                payload = await upstream.read()
                reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=reply_headers)
        except TimeoutError:
            return _bad_gateway(f"the instance did not answer within {self.timeout}s", status=504)
        except aiohttp.ClientError as exc:
            return _bad_gateway(f"upstream error: {exc or type(exc).__name__}")

    # -- views ------------------------------------------------------------------------------

    def health_of(self, group: ManagedInstanceGroup, base_url: str) -> list[dict[str, Any]]:
        statuses = []
        for instance in group.instances:
            statuses.append(
                {
                    "instance": base_url + instance.path,
                    "ipAddress": "127.0.0.1",
                    "port": instance.port or 0,
                    "healthState": "HEALTHY" if self.is_healthy(instance) else "UNHEALTHY",
                }
            )
        return statuses

    def to_json(self, base_url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            key: value for key, value in self.resource.items() if key not in _REFERENCE_FIELDS
        }
        body.update(
            {
                "kind": "compute#backendService",
                "id": self.id,
                "creationTimestamp": self.creation_timestamp,
                "name": self.name,
                "selfLink": base_url + self.path,
                "fingerprint": self.fingerprint,
                "protocol": self.resource.get("protocol", "HTTP"),
                "port": self.resource.get("port", 80),
                "portName": self.resource.get("portName", "http"),
                "timeoutSec": int(self.timeout),
                "connectionDraining": {"drainingTimeoutSec": int(self.draining_timeout)},
                "loadBalancingScheme": self.resource.get("loadBalancingScheme", "EXTERNAL"),
                "sessionAffinity": self.resource.get("sessionAffinity", "NONE"),
            }
        )
        if self.health_check_paths:
            body["healthChecks"] = [base_url + path for path in self.health_check_paths]
        backends = []
        for backend in self.resource.get("backends", []):
            rendered = dict(backend)
            rendered["group"] = base_url + str(backend["group"])
            rendered.setdefault("balancingMode", "UTILIZATION")
            rendered.setdefault("capacityScaler", 1.0)
            backends.append(rendered)
        if backends:
            body["backends"] = backends
        return body


_REFERENCE_FIELDS = {"backends", "healthChecks"}


def _bad_gateway(reason: str, status: int = 502) -> web.Response:
    return web.Response(status=status, text=f"{reason}\n", headers={"Via": "1.1 compute-emulator"})


async def close_all(services: list[BackendService]) -> None:
    for service in services:
        with contextlib.suppress(Exception):
            await service.close()
