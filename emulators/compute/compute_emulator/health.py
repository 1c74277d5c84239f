"""Health checks probe each instance for real, honouring interval, timeout and thresholds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .instances import Instance, ProbeState

_FIRST_PROBE_SECONDS = 0.25


@dataclass(frozen=True)
class ProbeSpec:
    path: str  # the health check's resource path, the key in Instance.probes
    kind: str  # "HTTP" or "TCP"
    request_path: str
    host: str | None
    # Every port maps to the instance's one process port, but a named port the group does not
    # declare fails the probe, as it would on Compute Engine.
    missing_named_port: str | None
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    expected_response: str | None

    @classmethod
    def from_resource(cls, path: str, resource: dict[str, Any], named_ports: dict[str, int]) -> ProbeSpec:
        kind = resource.get("type", "HTTP")
        details: dict[str, Any] = (
            resource.get("httpHealthCheck" if kind == "HTTP" else "tcpHealthCheck") or {}
        )
        missing_named_port = None
        if details.get("portSpecification") == "USE_NAMED_PORT" or (
            "portName" in details and "port" not in details
        ):
            port_name = details.get("portName", "http")
            if port_name not in named_ports:
                missing_named_port = port_name
        return cls(
            path=path,
            kind=kind,
            request_path=details.get("requestPath", "/"),
            host=details.get("host"),
            missing_named_port=missing_named_port,
            interval=float(resource.get("checkIntervalSec", 5)),
            timeout=float(resource.get("timeoutSec", 5)),
            healthy_threshold=int(resource.get("healthyThreshold", 2)),
            unhealthy_threshold=int(resource.get("unhealthyThreshold", 2)),
            expected_response=details.get("response"),
        )


class HealthChecker:
    """Runs one probe loop per (instance, health check)."""

    def __init__(self) -> None:
        # A fresh connection per probe, as a real prober opens one, so a dead server shows at once.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0), auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def ensure(self, instance: Instance, spec: ProbeSpec, on_change: Callable[[], None]) -> None:
        """Probe `instance` with `spec` from now on; `on_change` is called whenever its state changes."""
        if spec.path in instance.probe_tasks:
            return
        instance.probes[spec.path] = ProbeState()
        instance.probe_tasks[spec.path] = asyncio.create_task(
            self._loop(instance, spec, on_change), name=f"probe {instance.name} {spec.path}"
        )

    @staticmethod
    def reset(instance: Instance) -> None:
        for key in instance.probes:
            instance.probes[key] = ProbeState()

    @staticmethod
    async def stop_all(instance: Instance) -> None:
        tasks = list(instance.probe_tasks.values())
        instance.probe_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, instance: Instance, spec: ProbeSpec, on_change: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        # The first probe of a freshly started process waits a moment instead of racing its bind.
        first_probe_after = min(spec.interval, _FIRST_PROBE_SECONDS)
        while True:
            started = loop.time()
            port = instance.port
            if instance.status != "RUNNING" or instance.started_at is None:
                await asyncio.sleep(first_probe_after)
                continue
            if started < instance.started_at + first_probe_after:
                await asyncio.sleep(instance.started_at + first_probe_after - started)
                continue
            if port is None:
                # A VM that runs while its startup refused the release: nothing ever listens.
                outcome, detail = "timeout", "nothing listens: the release did not start"
            elif instance.pid is None:
                # Its web process exited. A VM's address is its own, so no other process could
                # answer in its place; here another instance may listen on the port by now.
                outcome, detail = "timeout", "nothing listens: the web process exited"
            else:
                outcome, detail = await self._probe_once(spec, port)
            probe = instance.probes.setdefault(spec.path, ProbeState())
            before = probe.state
            self._record(probe, spec, outcome, detail)
            if probe.state != before:
                # Each change of health is in the instance's log: when it turned healthy is what
                # a boot-to-healthy measurement needs, and why it turned unhealthy helps a reader.
                instance.log(f"health {spec.path}: {before} -> {probe.state} ({detail})")
                on_change()
            await asyncio.sleep(max(0.0, spec.interval - (loop.time() - started)))

    async def _probe_once(self, spec: ProbeSpec, port: int) -> tuple[str, str]:
        # Outcomes follow detailedHealthState: "timeout" when no connection can be made or no answer
        # comes in time (TIMEOUT), "fail" when the instance answers but not as required (UNHEALTHY).
        if spec.missing_named_port is not None:
            return "timeout", f"the group has no named port {spec.missing_named_port!r}"
        if spec.kind == "TCP":
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), spec.timeout)
            except TimeoutError:
                return "timeout", f"no connection within {spec.timeout}s"
            except OSError as exc:
                return "timeout", str(exc)
            writer.close()
            return "ok", "connected"
        if not spec.expected_response:
            return await _probe_status(spec, port)
        headers = {"Host": spec.host} if spec.host else {}
        try:
            async with self._client().get(
                f"http://127.0.0.1:{port}{spec.request_path}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
        except TimeoutError:
            return "timeout", f"no answer within {spec.timeout}s"
        except aiohttp.ClientConnectionError as exc:
            return "timeout", str(exc) or type(exc).__name__
        except aiohttp.ClientError as exc:
            return "fail", str(exc) or type(exc).__name__
        if response.status != 200:
            return "fail", f"HTTP {response.status}"
        if spec.expected_response and spec.expected_response.encode() not in body[:1024]:
            return "fail", "response does not contain the expected text"
        return "ok", "HTTP 200"

    @staticmethod
    def _record(state: ProbeState, spec: ProbeSpec, outcome: str, detail: str) -> None:
        state.last_detail = detail
        if outcome == "ok":
            state.consecutive_successes += 1
            state.consecutive_failures = 0
            if state.consecutive_successes >= spec.healthy_threshold:
                state.state = "HEALTHY"
        else:
            state.consecutive_failures += 1
            state.consecutive_successes = 0
            if state.consecutive_failures >= spec.unhealthy_threshold:
                state.state = "TIMEOUT" if outcome == "timeout" else "UNHEALTHY"


_STATUS_LINE_LIMIT = 1024


async def _probe_status(spec: ProbeSpec, port: int) -> tuple[str, str]:
    """One HTTP probe that only needs the status code, spoken directly on a fresh connection.

    Cheap on purpose: every instance is probed every interval on the emulator's one event loop,
    and with a hundred instances an HTTP client's machinery per probe took a third of that loop,
    slowing every API call. One request line, one status line read, then the connection closes.
    """
    host = spec.host or f"127.0.0.1:{port}"
    request = (
        f"GET {spec.request_path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: GoogleHC/1.0\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(spec.timeout):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                return "timeout", str(exc) or type(exc).__name__
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return "timeout", f"no answer within {spec.timeout}s"
    except OSError as exc:  # reset while sending or reading: the instance is not serving
        return "timeout", str(exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    parts = status_line[:_STATUS_LINE_LIMIT].decode("latin-1", errors="replace").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        return ("timeout", "connection closed without an answer") if not status_line else ("fail", "not HTTP")
    if parts[1] != "200":
        return "fail", f"HTTP {parts[1]}"
    return "ok", "HTTP 200"
