"""on_start_rolling_replace: build green beside blue, then start the cool-down."""

from __future__ import annotations

from datetime import timedelta

from shared import topology
from shared.domain.messages import StepMessage
from shared.domain.naming import instance_group_name, instance_template_name
from shared.domain.records import Deployment
from shared.domain.retention import is_adoptable, retained_deployment_for
from shared.domain.status import DeploymentStatus
from shared.logging import get_logger
from shared.ports import PermanentError, Transaction
from shared.usecases.lifecycle import delete_green, fail_deployment
from shared.usecases.services import Services, publish_step

log = get_logger("provision")


def start_rolling_replace(services: Services, message: StepMessage) -> Deployment | None:
    """Create this release's template and green MIG (not attached), then move to cooling_down.

    Safe to repeat: names come from the deployment id, so a redelivery finds what an earlier
    attempt made, and the status change only happens from `provisioning`.
    """
    deployment = services.store.get_deployment(message.deployment_id)
    if deployment is None:
        log.error("no such deployment; dropping the message")
        return None
    if deployment.status is DeploymentStatus.COOLING_DOWN:
        # An earlier attempt committed but may have crashed before publishing: publish again;
        # cool-down-complete is idempotent.
        publish_step(services, topology.COOL_DOWN_COMPLETE, deployment)
        return deployment
    if deployment.status is not DeploymentStatus.PROVISIONING:
        log.info("deployment is %s; nothing to provision", deployment.status)
        return None

    if deployment.rollback_of is not None:
        adopted = _adopt_retained_group(services, deployment)
        if adopted is not None:
            publish_step(services, topology.COOL_DOWN_COMPLETE, adopted)
            return adopted

    env = services.environment_config(deployment.app, deployment.environment)
    template = instance_template_name(deployment.deployment_id)
    group = instance_group_name(deployment.deployment_id)
    try:
        services.compute.ensure_instance_template(
            env,
            template,
            version=deployment.version,
            artifact=deployment.artifact,
            artifact_sha256=deployment.artifact_sha256,
        )
        services.compute.ensure_instance_group(env, group, template=template)
        preview = env.preview()
        if preview is not None:
            # Green is reachable before the switch only through the preview, where its smoke
            # checks run; an earlier release's green left there goes.
            services.compute.attach_group(preview, group)
            services.compute.keep_only_group(preview, group)
    except PermanentError as exc:  # permanent: configuration or request refused; retrying cannot help
        fail_deployment(services, deployment.deployment_id, f"cannot create green: {exc}")
        return None

    now = services.clock.now()
    not_before = now + timedelta(seconds=env.cool_down_seconds)

    def to_cooling_down(current: Deployment) -> Deployment | None:
        if current.status is not DeploymentStatus.PROVISIONING:
            return None
        return current.advance(
            DeploymentStatus.COOLING_DOWN,
            now,
            f"green {group} requested with {env.instance_count} instances; cool-down {env.cool_down_seconds} s",
            instance_template=template,
            instance_group=group,
            not_before=not_before,
        )

    # One record changes: a compare-and-set, not a transaction.
    latest = services.store.update_deployment(deployment.deployment_id, to_cooling_down)
    if latest is None:
        return None
    if latest.status is DeploymentStatus.COOLING_DOWN:
        # By this write, or by a duplicate of this step that may have ended before publishing:
        # the cool-down step is idempotent.
        log.info("green requested; cooling down until %s", latest.not_before)
        publish_step(services, topology.COOL_DOWN_COMPLETE, latest)
    elif latest.status in (DeploymentStatus.FAILED, DeploymentStatus.CANCELLED):
        # It ended (e.g. the watchdog failed it) while green was being made: do not leak green.
        delete_green(services, latest)
    return latest


def _adopt_retained_group(services: Services, deployment: Deployment) -> Deployment | None:
    """A rollback to a release whose retired group is still running takes that group over.

    One transaction cancels the retired deployment's clean-up and gives its group to this one,
    so the group has exactly one owner whatever happens next. No cool-down: the group served
    this release until its switch; the cool-down step still checks its health before traffic
    moves. Returns None (build green the normal way) when there is nothing to adopt.
    """
    now = services.clock.now()
    candidate = retained_deployment_for(
        deployment, services.store.live_history(deployment.app, deployment.environment), now
    )
    if candidate is None:
        return None

    def work(tx: Transaction) -> Deployment | None:
        current = tx.deployment(deployment.deployment_id)
        retained = tx.deployment(candidate.deployment_id)
        if current is None or current.status is not DeploymentStatus.PROVISIONING or retained is None:
            return None
        # Re-checked inside the transaction: the watchdog or another rollback may have moved first.
        if not is_adoptable(retained, current, now):
            return None
        tx.put_deployment(retained.with_changes(now, cleanup_due_at=None, adopted_by=current.deployment_id))
        cooling = current.advance(
            DeploymentStatus.COOLING_DOWN,
            now,
            f"traffic switch to the retained group {retained.instance_group} of {retained.deployment_id}"
            f" ({retained.version}); no cool-down, health checked before the switch",
            instance_template=retained.instance_template,
            instance_group=retained.instance_group,
            not_before=now,
        )
        tx.put_deployment(cooling)
        return cooling

    adopted = services.store.atomically(work)
    if adopted is not None:
        log.info("adopted retained group %s of %s", adopted.instance_group, candidate.deployment_id)
    return adopted
