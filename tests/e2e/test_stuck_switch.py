"""A switch the load balancer never completes, on the local stack: the backend service's health
check is pinned (by an operator's mistake) to the live release's home page, so the load balancer
never sees the next release's green healthy, though green's own group does. The watchdog abandons
the switch a deadline after it began: the release fails saying why, the live release serves
throughout, green is deleted and the environment's lock is free for the next release.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from shared.domain.naming import instance_group_name
from tests.e2e.conftest import Load, Pipeline, new_commit, wait_for

pytestmark = pytest.mark.stack

ENVIRONMENT = "staging"
OPERATION_TIMEOUT_SECONDS = 30


class BackendHealthCheck:
    """Swap the environment's backend service onto another health check, and back."""

    def __init__(self, pipeline: Pipeline) -> None:
        options = ClientOptions(api_endpoint=f"http://{pipeline.stack.env['COMPUTE_EMULATOR_HOST']}")
        credentials = AnonymousCredentials()
        self.health_checks = compute_v1.HealthChecksClient(credentials=credentials, client_options=options)
        self.backend_services = compute_v1.BackendServicesClient(
            credentials=credentials, client_options=options
        )
        self.project = pipeline.project
        self.env = pipeline.config.apps["hello"].environments[ENVIRONMENT]

    def pin_to(self, body: str) -> str:
        """A copy of the environment's health check that also wants `body` from `/`; the backend
        service uses it from now on. Returns the one it used before (its link)."""
        original = self.health_checks.get(project=self.project, health_check=self.env.health_check)
        pinned = compute_v1.HealthCheck(
            name=f"{self.env.health_check}-pinned",
            type_="HTTP",
            http_health_check=compute_v1.HTTPHealthCheck(
                port_name=original.http_health_check.port_name,
                port_specification=original.http_health_check.port_specification,
                request_path="/",
                response=body,
            ),
            check_interval_sec=original.check_interval_sec,
            timeout_sec=original.timeout_sec,
            healthy_threshold=original.healthy_threshold,
            unhealthy_threshold=original.unhealthy_threshold,
        )
        self.health_checks.insert(project=self.project, health_check_resource=pinned).result(
            timeout=OPERATION_TIMEOUT_SECONDS
        )
        link = self.health_checks.get(project=self.project, health_check=pinned.name).self_link
        self.use(link)
        return str(original.self_link)

    def use(self, link: str) -> None:
        service = self.backend_services.get(project=self.project, backend_service=self.env.backend_service)
        self.backend_services.patch(
            project=self.project,
            backend_service=self.env.backend_service,
            backend_service_resource=compute_v1.BackendService(
                health_checks=[link], fingerprint=service.fingerprint
            ),
        ).result(timeout=OPERATION_TIMEOUT_SECONDS)

    def remove_pinned(self) -> None:
        self.health_checks.delete(
            project=self.project, health_check=f"{self.env.health_check}-pinned"
        ).result(timeout=OPERATION_TIMEOUT_SECONDS)


@pytest.fixture
def pinned_health_check(pipeline: Pipeline) -> Iterator[str]:
    """The live release's version, to which the backend service's health check is pinned for
    the test; the environment's own health check is back afterwards."""
    if pipeline.environment(ENVIRONMENT).get("live_deployment_id") is None:  # a fresh stack
        first = pipeline.publish_build(ENVIRONMENT, new_commit(), f"stuck-first-{new_commit()[:8]}")
        assert pipeline.wait_status(first, "live", "failed")["status"] == "live"
    wait_for(
        lambda: pipeline.environment(ENVIRONMENT).get("active_deployment_id") is None,
        120,
        f"the lock of {ENVIRONMENT} free (a bake window over)",
    )
    live_version = pipeline.serving(ENVIRONMENT)
    checks = BackendHealthCheck(pipeline)
    original = checks.pin_to(live_version)
    try:
        # The live release passes the pinned check: the load balancer keeps serving it.
        wait_for(lambda: _serves(pipeline, live_version), 30, "the live release to pass the pinned check")
        yield live_version
    finally:
        checks.use(original)
        checks.remove_pinned()


def _serves(pipeline: Pipeline, version: str) -> bool:
    try:
        return pipeline.serving(ENVIRONMENT) == version
    except requests.RequestException:  # a failed request: not yet
        return False


def test_a_switch_the_load_balancer_never_completes_is_abandoned_and_the_live_release_keeps_serving(
    pipeline: Pipeline, pinned_health_check: str
) -> None:
    live_version = pinned_health_check
    live_id = pipeline.environment(ENVIRONMENT)["live_deployment_id"]
    deadline = pipeline.config.apps["hello"].environments[ENVIRONMENT].provisioning_deadline_seconds
    with Load(pipeline.url(ENVIRONMENT)) as load:
        deployment_id = pipeline.publish_build(
            ENVIRONMENT, new_commit(), f"stuck-switch-{new_commit()[:8]}", messages=["fix: x"]
        )
        pipeline.wait_status(deployment_id, "switching", "failed", "live", timeout=90)
        failed = pipeline.wait_status(deployment_id, "failed", "live", timeout=3 * deadline + 30)
    statuses = [h["status"] for h in failed["history"]]
    assert failed["status"] == "failed" and "switching" in statuses, failed["history"]
    reason = f"the load balancer did not see green healthy within {deadline} s of the switch (watchdog)"
    assert failed["history"][-1]["detail"] == reason
    assert load.result.failures == [], load.result.failures[:5]
    assert load.result.total > 0
    assert pipeline.serving(ENVIRONMENT) == live_version
    state = pipeline.environment(ENVIRONMENT)
    assert state["live_deployment_id"] == live_id and state["active_deployment_id"] is None
    wait_for(
        lambda: not pipeline.group_exists(ENVIRONMENT, instance_group_name(deployment_id)),
        30,
        "the abandoned green to be deleted",
    )
    alerts: list[dict[str, Any]] = wait_for(
        lambda: [
            n
            for n in pipeline.notifications()
            if n.get("deployment_id") == deployment_id and n["status"] == "failed"
        ],
        15,
        "the failure's notification",
    )
    assert len(alerts) == 1 and reason in alerts[0]["detail"]
