"""Integrity at the instance, on the real local stack: an artifact whose bytes are not the ones the
build declared never starts, and the deployment fails at once, not at its deadline (CONTRACT §7).

It runs after test_release_pipeline.py (the story module, first, see conftest), whose first
test expects the session's first release: this test takes a version too (a failed release keeps
its version).
"""

from __future__ import annotations

from devstack.load import LoadGenerator
from shared.domain.naming import instance_group_name
from tests.e2e.conftest import Pipeline, artifact_digest, new_commit, wait_for


def _live_version(pipeline: Pipeline, environment: str) -> str:
    """The version live in `environment`, deploying one first if this session has none yet."""
    live = pipeline.environment(environment).get("live_version")
    if live:
        return str(live)
    first = pipeline.publish_build(environment, new_commit(), f"ci-integrity-base-{new_commit()[:8]}")
    assert pipeline.wait_status(first, "live", "failed")["status"] == "live"
    return str(pipeline.environment(environment)["live_version"])


def test_a_build_whose_digest_does_not_match_its_file_fails_within_seconds_and_never_serves(
    pipeline: Pipeline,
) -> None:
    environment = pipeline.config.apps["hello"].environments["staging"]
    live_version = _live_version(pipeline, "staging")
    wait_for(lambda: pipeline.serving("staging") == live_version, 10, "the live version to serve")
    before = pipeline.environment("staging")
    # The digest of another real artifact: what a file swapped after the build would look like.
    wrong_digest = artifact_digest(pipeline.artifacts["unhealthy"])
    assert wrong_digest != artifact_digest(pipeline.artifacts["hello"])

    with LoadGenerator(pipeline.url("staging")) as load:
        tampered = pipeline.publish_build(
            "staging", new_commit(), "ci-tampered", messages=["fix: tampered"], artifact_sha256=wrong_digest
        )
        failed = pipeline.wait_status(
            tampered, "failed", "live", timeout=environment.provisioning_deadline_seconds
        )
        report = load.stop()

    assert failed["status"] == "failed", "an artifact that failed its digest check went live"
    assert "artifact digest mismatch" in failed["history"][-1]["detail"]
    started = next(h["at"] for h in failed["history"] if h["status"] == "provisioning")
    assert (failed["finished_at"] - started).total_seconds() < environment.provisioning_deadline_seconds / 2
    assert {h["status"] for h in failed["history"]}.isdisjoint({"switching", "live"})
    assert failed["artifact_sha256"] == wrong_digest
    assert report.failed == 0, f"{report.failed} of {report.served + report.failed} requests failed"
    assert report.served > 0 and report.versions_seen() == {live_version}
    wait_for(
        lambda: not pipeline.group_exists("staging", instance_group_name(tampered)),
        15,
        "green to be deleted",
    )
    after = pipeline.environment("staging")
    assert (
        after["live_deployment_id"] == before["live_deployment_id"] and after["active_deployment_id"] is None
    )
    alert = wait_for(
        lambda: [
            n for n in pipeline.notifications() if n["deployment_id"] == tampered and n["status"] == "failed"
        ],
        15,
        "the failure alert",
    )
    assert "artifact digest mismatch" in alert[0]["text"]
