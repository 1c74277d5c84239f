"""The release pipeline end to end on the local stack, told in order on app `hello`.

The tests share one stack and run in file order: each leaves `staging` with a live release,
which is what the next one starts from. Bounded polls everywhere; no test sleeps a fixed time.
"""

from __future__ import annotations

import time

from google.api_core.datetime_helpers import DatetimeWithNanoseconds

from tests.e2e.conftest import Load, Pipeline, new_commit, wait_for

CONTRACT_DEPLOYMENT_FIELDS = {
    "app", "environment", "version", "commit", "build_id", "artifact", "status", "created_at",
    "updated_at", "finished_at", "rollback_of", "triggered_by", "history",
}  # fmt: skip
HAPPY_PATH = ["queued", "provisioning", "cooling_down", "switching", "live"]


def test_first_build_goes_live_then_a_feature_replaces_it_with_zero_failed_requests(
    pipeline: Pipeline,
) -> None:
    first = pipeline.publish_build(
        "staging", new_commit(), "ci-1", messages=["feat: hello world"], triggered_by="ci@hello.local"
    )
    live = pipeline.wait_status(first, "live", "failed")
    assert live["status"] == "live" and live["version"] == "1.0.0"
    wait_for(lambda: pipeline.serving("staging") == "1.0.0", 10, "staging to serve 1.0.0")

    with Load(pipeline.url("staging")) as load:
        second = pipeline.publish_build("staging", new_commit(), "ci-2", messages=["feat: greet by name"])
        cooling = pipeline.wait_status(second, "cooling_down", "switching", "live", "failed", timeout=60)
        assert cooling["status"] == "cooling_down", "the cool-down was skipped"
        during: set[str] = set()
        while (doc := pipeline.deployment(second)) and doc["status"] == "cooling_down":
            during.add(pipeline.serving("staging"))
            time.sleep(0.1)
        assert during == {"1.0.0"}, f"served {during} during the cool-down"
        after = pipeline.wait_status(second, "live", "failed")
        assert after["status"] == "live" and after["version"] == "1.1.0"
        served_after = {pipeline.serving("staging") for _ in range(20)}
        assert served_after == {"1.1.0"}, f"served {served_after} after the switch"
    assert load.result.failures == [], f"{len(load.result.failures)} of {load.result.total} requests failed"
    assert load.result.ok > 50 and set(load.result.bodies) == {"1.0.0", "1.1.0"}

    retired = pipeline.deployment(first)
    assert retired is not None and retired["status"] == "retired"
    environment = pipeline.environment("staging")
    assert environment["live_deployment_id"] == second and environment["live_version"] == "1.1.0"

    # CONTRACT §6: field names, Firestore timestamps, ordered history.
    assert CONTRACT_DEPLOYMENT_FIELDS <= set(after)
    assert [h["status"] for h in after["history"]] == HAPPY_PATH
    assert [h["status"] for h in retired["history"]] == [*HAPPY_PATH, "retired"]
    stamps = [h["at"] for h in after["history"]]
    assert stamps == sorted(stamps) and all(isinstance(s, DatetimeWithNanoseconds) for s in stamps)
    for key in ("created_at", "updated_at", "finished_at"):
        assert isinstance(after[key], DatetimeWithNanoseconds), key
    assert retired["triggered_by"] == "ci@hello.local" and retired["rollback_of"] is None
    release = pipeline.document("releases", "hello@1.1.0")
    assert release is not None and release["commit"] == after["commit"]
    assert release["commit_messages"] == ["feat: greet by name"]
    assert isinstance(release["created_at"], DatetimeWithNanoseconds)
    notified = {(n["deployment_id"], n["status"]) for n in pipeline.notifications()}
    assert {(first, "live"), (second, "live")} <= notified
