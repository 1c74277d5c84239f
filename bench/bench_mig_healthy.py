"""Time from a managed instance group's insert to all its instances RUNNING and HEALTHY.

Starts its own emulator and deploys the sample app with a health check probing every second
(healthyThreshold 1), for a few group sizes, one group at a time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from compute_emulator.launcher import EmulatorProcess
from google.cloud import compute_v1

from shared.artifact import build_artifact

from .compute_setup import (
    HEALTH_CHECK_URL,
    PROJECT,
    TEMPLATE_URL,
    ZONE,
    client_options,
    create_template_and_health_check,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 2, 4)
HEALTHY_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.05


def prepare(options: dict[str, Any], artifact: Path) -> None:
    create_template_and_health_check(options, artifact)


def time_group(groups: compute_v1.InstanceGroupManagersClient, size: int) -> tuple[float, float]:
    """Seconds from insert to all RUNNING, and to all HEALTHY."""
    name = f"bench-{size}"
    started = time.perf_counter()
    groups.insert(
        project=PROJECT,
        zone=ZONE,
        instance_group_manager_resource=compute_v1.InstanceGroupManager(
            name=name,
            base_instance_name=name,
            instance_template=TEMPLATE_URL,
            target_size=size,
            named_ports=[compute_v1.NamedPort(name="http", port=8080)],
            auto_healing_policies=[
                compute_v1.InstanceGroupManagerAutoHealingPolicy(
                    health_check=HEALTH_CHECK_URL, initial_delay_sec=30
                )
            ],
        ),
    ).result(timeout=30)
    running_at = 0.0
    while True:
        managed = list(groups.list_managed_instances(project=PROJECT, zone=ZONE, instance_group_manager=name))
        elapsed = time.perf_counter() - started
        if not running_at and len(managed) == size and all(m.instance_status == "RUNNING" for m in managed):
            running_at = elapsed
        healthy = [m for m in managed if [h.detailed_health_state for h in m.instance_health] == ["HEALTHY"]]
        if len(healthy) == size:
            break
        if elapsed > HEALTHY_TIMEOUT_SECONDS:
            raise TimeoutError(f"{name} did not become HEALTHY within {HEALTHY_TIMEOUT_SECONDS}s")
        time.sleep(POLL_SECONDS)
    groups.delete(project=PROJECT, zone=ZONE, instance_group_manager=name).result(timeout=60)
    return running_at, elapsed


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-mig-") as tmp:
        artifact = build_artifact(REPO_ROOT / "examples" / "hello", Path(tmp) / "dist")
        with EmulatorProcess.start(Path(tmp) / "emulator") as emulator:
            options = client_options(emulator.endpoint)
            prepare(options, artifact)
            groups = compute_v1.InstanceGroupManagersClient(**options)
            results = [(size, *time_group(groups, size)) for size in SIZES]
    print("MIG insert to all instances HEALTHY (sample app; health check every 1 s, healthyThreshold 1)")
    print(f"{'instances':>10}{'all RUNNING s':>16}{'all HEALTHY s':>16}")
    for size, running, healthy in results:
        print(f"{size:>10}{running:>16.2f}{healthy:>16.2f}")


if __name__ == "__main__":
    main()
