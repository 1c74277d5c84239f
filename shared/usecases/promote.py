"""promote: deploy a release that is or was live in one environment to the next (CONTRACT §4b).

Same artifact, digest and version: the source deployment's build event goes again, for the
target environment, through a release request that records who asked. Where the target is not
`auto_deploy` the deployment then waits for an approver like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.identity import CallerCheck
from shared.domain.promotion import (
    NotPromoter,
    SourceWithoutDigest,
    UnknownPromotion,
    check_not_already_there,
    choose_promotion_source,
)
from shared.domain.release_request import RequestKind
from shared.domain.status import UNFINISHED, DeploymentStatus
from shared.usecases.release_requests import request_redeploy
from shared.usecases.services import Services


@dataclass(frozen=True)
class PromotionAccepted:
    deployment_id: str
    version: str
    status: DeploymentStatus
    """What the deployment starts as: `awaiting_approval` where the target needs an approval."""


def request_promotion(
    services: Services,
    *,
    app: str,
    from_environment: str,
    to_environment: str,
    caller: str,
    caller_matches: CallerCheck,
    version: str | None = None,
    reason: str | None = None,
) -> PromotionAccepted:
    """Record and publish the promotion; raises `PromotionRefused` subclasses (403, 404, 409)."""
    source_env = services.config.environment(app, from_environment)
    target_env = services.config.environment(app, to_environment)
    if source_env is None or target_env is None:
        missing = from_environment if source_env is None else to_environment
        raise UnknownPromotion(f"unknown app or environment {app}/{missing}")
    if not caller_matches(target_env.promotion_callers):
        raise NotPromoter(f"{caller} may not promote into {app}/{to_environment}")

    source_state = services.store.get_environment(app, from_environment)
    source = choose_promotion_source(
        services.store.live_history(app, from_environment),
        source_state.live_version if source_state else None,
        version,
        from_environment,
    )
    target_state = services.store.get_environment(app, to_environment)
    check_not_already_there(
        source.version,
        target_state.live_version if target_state else None,
        services.store.deployments_of_environment(app, to_environment, sorted(UNFINISHED)),
        to_environment,
    )
    deployment_id = request_redeploy(
        services,
        kind=RequestKind.PROMOTION,
        source=source.deployment,
        version=source.version,
        environment=to_environment,
        requested_by=caller,
        reason=reason,
        unavailable=UnknownPromotion,
        without_digest=SourceWithoutDigest,
        promoted_from=from_environment,
    )
    status = DeploymentStatus.QUEUED if target_env.auto_deploy else DeploymentStatus.AWAITING_APPROVAL
    return PromotionAccepted(deployment_id=deployment_id, version=source.version, status=status)
