"""The gcloud CLI against the emulator (skipped, with the reason shown, when gcloud is missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from emulator_helpers import (
    ZONE,
    Emulator,
    insert_healthy_group,
    insert_template,
    pid_alive,
    process_group_alive,
)

GCLOUD = shutil.which("gcloud")
pytestmark = [
    pytest.mark.gcloud,
    pytest.mark.skipif(GCLOUD is None, reason="gcloud CLI not installed; the gcloud checks cannot run"),
]


def gcloud(emulator: Emulator, project: str, config_dir: Path, *args: str) -> Any:
    token = config_dir / "token"
    token.write_text("local-token\n")
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_CORE_PROJECT": project,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": emulator.api_root,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    assert GCLOUD is not None
    result = subprocess.run(
        [GCLOUD, *args, f"--access-token-file={token}", "--format=json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"gcloud {' '.join(args)} failed:\n{result.stderr}"
    return json.loads(result.stdout or "null")


def test_gcloud_lists_describes_and_deletes_templates_and_managed_groups(
    emulator: Emulator, project: str, health_check: str, artifacts: dict[str, str], tmp_path: Path
) -> None:
    insert_template(emulator, project, "hello-1-0-0", artifacts["hello"], "1.0.0")
    insert_healthy_group(emulator, project, "blue", "hello-1-0-0", 2, health_check)

    templates = gcloud(emulator, project, tmp_path, "compute", "instance-templates", "list")
    assert [t["name"] for t in templates] == ["hello-1-0-0"]

    groups = gcloud(emulator, project, tmp_path, "compute", "instance-groups", "managed", "list")
    assert [(g["name"], g["targetSize"]) for g in groups] == [("blue", 2)]

    described = gcloud(
        emulator,
        project,
        tmp_path,
        "compute",
        "instance-groups",
        "managed",
        "describe",
        "blue",
        f"--zone={ZONE}",
    )
    assert described["status"]["isStable"] is True
    assert described["currentActions"]["none"] == 2

    instances = gcloud(
        emulator,
        project,
        tmp_path,
        "compute",
        "instance-groups",
        "managed",
        "list-instances",
        "blue",
        f"--zone={ZONE}",
    )
    assert len(instances) == 2
    assert {i["instanceStatus"] for i in instances} == {"RUNNING"}
    assert {i["instanceHealth"][0]["detailedHealthState"] for i in instances} == {"HEALTHY"}

    pids = [item["pid"] for item in emulator.processes(project)]
    gcloud(
        emulator,
        project,
        tmp_path,
        "compute",
        "instance-groups",
        "managed",
        "delete",
        "blue",
        f"--zone={ZONE}",
        "--quiet",
    )
    assert not [pid for pid in pids if pid_alive(pid) or process_group_alive(pid)]
    gcloud(emulator, project, tmp_path, "compute", "instance-templates", "delete", "hello-1-0-0", "--quiet")
    assert gcloud(emulator, project, tmp_path, "compute", "instance-templates", "list") == []
