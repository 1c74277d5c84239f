"""A probe whose verdict changes tells its group at once: a settled group only wakes by itself
every few seconds, so autohealing and `currentAction` depend on being told."""

from __future__ import annotations

import asyncio
from pathlib import Path

from compute_emulator.health import HealthChecker, ProbeSpec
from compute_emulator.instances import Instance, ReleaseMetadata

_BOUND_SECONDS = 10.0


def _spec() -> ProbeSpec:
    return ProbeSpec(
        path="projects/p/global/healthChecks/hc",
        kind="HTTP",
        request_path="/healthz",
        host=None,
        missing_named_port=None,
        interval=0.1,
        timeout=1.0,
        healthy_threshold=1,
        unhealthy_threshold=1,
        expected_response=None,
    )


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readline()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    await writer.drain()
    writer.close()


def test_each_change_of_a_probe_verdict_is_reported_once(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        server = await asyncio.start_server(_answer_ok, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        instance = Instance(
            project="p",
            zone="z",
            name="vm",
            template_path="projects/p/global/instanceTemplates/t",
            release=ReleaseMetadata(artifact_url=None, version="1.0.0"),
            state_dir=tmp_path,
            status="RUNNING",
            port=port,
            started_at=loop.time() - 1.0,
        )
        # The instance's web process is what `pid` looks at; any live process of ours will do.
        instance.process = await asyncio.create_subprocess_exec("sleep", "30")
        spec = _spec()
        seen: list[str] = []
        changed = asyncio.Event()

        def on_change() -> None:
            seen.append(instance.probes[spec.path].state)
            changed.set()

        checker = HealthChecker()
        try:
            checker.ensure(instance, spec, on_change=on_change)
            await asyncio.wait_for(changed.wait(), _BOUND_SECONDS)
            changed.clear()
            # Several more probes with the same verdict: no further report.
            successes = instance.probes[spec.path].consecutive_successes
            async with asyncio.timeout(_BOUND_SECONDS):
                while instance.probes[spec.path].consecutive_successes < successes + 3:
                    await asyncio.sleep(0.05)
            assert seen == ["HEALTHY"]
            server.close()  # nothing listens any more: the next probe fails
            await server.wait_closed()
            await asyncio.wait_for(changed.wait(), _BOUND_SECONDS)
        finally:
            await HealthChecker.stop_all(instance)
            await checker.close()
            instance.process.kill()
            await instance.process.wait()
        return seen

    assert asyncio.run(scenario()) == ["HEALTHY", "TIMEOUT"]
