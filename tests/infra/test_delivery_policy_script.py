"""terraform/scripts/apply-delivery-policy.sh, run for real with a `gcloud` stand-in that
records its arguments: the policy lines Terraform outputs become the right subscription
updates, and the Pub/Sub service agent may take messages off each dead-lettered subscription."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shared import topology

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "terraform" / "scripts" / "apply-delivery-policy.sh"
AGENT = "serviceAccount:service-123@gcp-sa-pubsub.iam.gserviceaccount.com"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(tmp_path: Path, lines: list[str]) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls"
    gcloud = shims / "gcloud"
    # `eventarc triggers describe T` answers T's subscription (none for a trigger named
    # "missing"); every call is logged, one argument per line, calls separated by a blank line.
    gcloud.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$@" >> "{calls}"; echo >> "{calls}"\n'
        'if [ "$1 $2 $3" = "eventarc triggers describe" ] && [ "${4##*/}" != missing ]; then\n'
        '  echo "projects/p/subscriptions/sub-${4##*/}"\n'
        "fi\n"
    )
    gcloud.chmod(0o755)
    policy = tmp_path / "policy.txt"
    policy.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["bash", str(SCRIPT), str(policy), AGENT],
        env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    recorded = [block.splitlines() for block in calls.read_text().split("\n\n") if block.strip()]
    return result, recorded


def test_each_trigger_gets_its_backoff_attempts_and_dead_letter_topic(tmp_path: Path) -> None:
    with_dead_letter, without = topology.PUBSUB_TRIGGERS[0], topology.PUBSUB_TRIGGERS[-1]
    assert with_dead_letter.dead_letter_topic and not without.dead_letter_topic
    lines = [
        f"projects/p/locations/r/triggers/a projects/p/topics/{with_dead_letter.dead_letter_topic} "
        f"{with_dead_letter.max_delivery_attempts} {with_dead_letter.min_backoff_seconds}s "
        f"{with_dead_letter.max_backoff_seconds}s",
        f"projects/p/locations/r/triggers/b - {without.max_delivery_attempts} "
        f"{without.min_backoff_seconds}s {without.max_backoff_seconds}s",
    ]

    result, calls = run(tmp_path, lines)

    assert result.returncode == 0, result.stderr
    updates = [call for call in calls if call[:3] == ["pubsub", "subscriptions", "update"]]
    assert updates[0][3] == "projects/p/subscriptions/sub-a"
    assert f"--dead-letter-topic=projects/p/topics/{with_dead_letter.dead_letter_topic}" in updates[0]
    assert f"--max-delivery-attempts={with_dead_letter.max_delivery_attempts}" in updates[0]
    assert f"--min-retry-delay={with_dead_letter.min_backoff_seconds}s" in updates[0]
    assert f"--max-retry-delay={with_dead_letter.max_backoff_seconds}s" in updates[0]
    assert updates[1][3] == "projects/p/subscriptions/sub-b"
    assert not any(arg.startswith("--dead-letter-topic") for arg in updates[1])
    bindings = [call for call in calls if call[:3] == ["pubsub", "subscriptions", "add-iam-policy-binding"]]
    assert len(bindings) == 1
    assert bindings[0][3] == "projects/p/subscriptions/sub-a"
    assert f"--member={AGENT}" in bindings[0] and "--role=roles/pubsub.subscriber" in bindings[0]


def test_a_trigger_without_subscription_fails_the_step(tmp_path: Path) -> None:
    result, _ = run(tmp_path, ["projects/p/locations/r/triggers/missing - 5 1s 10s"])

    assert result.returncode != 0
    assert "no subscription behind" in result.stderr
