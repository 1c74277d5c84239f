"""What every use case needs, plus the helpers they share for publishing."""

from __future__ import annotations

from dataclasses import dataclass

from shared import topology
from shared.config import EnvironmentConfig, PipelineConfig
from shared.domain.messages import StepMessage
from shared.domain.notify_message import DEDUPE_KEY_ATTRIBUTE, NotifyRequest
from shared.domain.records import Deployment
from shared.domain.status import DeploymentStatus
from shared.logging import get_logger
from shared.ports import Clock, Compute, Metrics, PermanentError, Publisher, SmokeProbe, Store
from shared.usecases.notify import facts_of

log = get_logger("usecases")


class NotReadyYet(Exception):
    """The step's precondition does not hold yet (green still warming up, cool-down not over).

    Transient by design: the entry point lets it raise, and the subscription's backoff
    redelivers the message later. That backoff is the cool-down's timer.
    """


class UnknownEnvironment(PermanentError):
    """The deployment names an app or environment the pipeline file does not declare."""


@dataclass(frozen=True)
class Services:
    config: PipelineConfig
    store: Store
    compute: Compute
    publisher: Publisher
    clock: Clock
    metrics: Metrics | None = None
    """The load balancer's request counts (Cloud Monitoring); None: verification by health only."""
    probe: SmokeProbe | None = None
    """Sends smoke checks to the preview; required where an environment declares any."""

    def environment_config(self, app: str, environment: str) -> EnvironmentConfig:
        env = self.config.environment(app, environment)
        if env is None:
            raise UnknownEnvironment(f"{app}/{environment} is not in the pipeline configuration")
        return env


def publish_step(services: Services, topic: str, deployment: Deployment) -> None:
    # The hints are the record's own fields as this step committed or read them: a later poll
    # uses them only to see that it must wait, and acts only on the record (domain/messages.py).
    message = StepMessage(
        deployment_id=deployment.deployment_id,
        app=deployment.app,
        environment=deployment.environment,
        instance_group=deployment.instance_group,
        cool_down_ends_at=deployment.not_before
        if deployment.status is DeploymentStatus.COOLING_DOWN
        else None,
        went_live_at=deployment.went_live_at if deployment.baking else None,
    )
    data, attributes = message.to_message()
    message_id = services.publisher.publish(topic, data, attributes)
    log.info(
        "published %s",
        topic,
        extra={"fields": {"topic": topic, "message_id": message_id, "step_for": deployment.deployment_id}},
    )


def publish_notify(services: Services, request: NotifyRequest) -> None:
    attributes = {
        key: value
        for key, value in (
            ("kind", request.kind),
            ("app", request.app),
            ("environment", request.environment),
            ("deployment_id", request.deployment_id),
            ("status", request.status),
            (DEDUPE_KEY_ATTRIBUTE, request.dedupe_key),
        )
        if value
    }
    services.publisher.publish(topology.NOTIFY, request.to_json(), attributes)


def notify_status(services: Services, deployment: Deployment, detail: str = "") -> None:
    """Announce the deployment's current status; on_notify sends it once per (deployment, status)."""
    status = str(deployment.status)
    publish_notify(
        services,
        NotifyRequest.for_deployment(
            app=deployment.app,
            environment=deployment.environment,
            deployment_id=deployment.deployment_id,
            version=deployment.version,
            status=status,
            detail=detail or (deployment.history[-1].detail if deployment.history else ""),
            facts=facts_of(deployment, status, services.clock.now()),
        ),
    )
