"""Promotion (CONTRACT §4b): which release goes from one environment to the next.

Only a release that is or was live in the source environment can be promoted, and it goes as
it is: the same artifact, digest and version (no rebuild, no bump). It is refused when that
version is already live in the target, or on its way there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.domain.records import Deployment
from shared.domain.refusal import RequestRefused


class PromotionRefused(RequestRefused):
    """The promotion cannot be accepted; `http_status` is the CONTRACT §4b answer."""


class UnknownPromotion(PromotionRefused):
    """404: unknown app or environment, or a version never live in the source."""

    http_status = 404


class NotPromoter(PromotionRefused):
    """403: the caller is not a promoter of the target environment."""

    http_status = 403


class AlreadyThere(PromotionRefused):
    """409: the version is already live in the target, or on its way there."""

    http_status = 409


class SourceWithoutDigest(PromotionRefused):
    """409: the release has no artifact digest (recorded before CONTRACT v2)."""

    http_status = 409


@dataclass(frozen=True)
class PromotionSource:
    version: str
    deployment: Deployment
    """The source environment's deployment whose release is deployed again."""


def choose_promotion_source(
    source_live_history: Sequence[Deployment],
    source_live_version: str | None,
    version: str | None,
    from_environment: str,
) -> PromotionSource:
    """The source deployment: of `version`, or of the version live in the source right now.

    `source_live_history` holds the source environment's deployments that went live, most
    recent first.

    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> def live(i, v):
    ...     return Deployment.queued(deployment_id=i, app="a", environment="staging", version=v,
    ...         commit="c" * 40, build_id=i, artifact="gs://b/a.tar.gz", event={}, at=at)
    >>> choose_promotion_source([live("d2", "1.1.0"), live("d1", "1.0.0")], "1.1.0", None, "staging").version
    '1.1.0'
    >>> choose_promotion_source([live("d1", "1.0.0")], "1.0.0", "1.2.0", "staging")
    Traceback (most recent call last):
    ...
    shared.domain.promotion.UnknownPromotion: version 1.2.0 was never live in staging
    """
    wanted = version or source_live_version
    if wanted is None:
        raise UnknownPromotion(f"nothing is live in {from_environment}; name a version that was")
    for deployment in source_live_history:
        if deployment.version == wanted:
            return PromotionSource(version=wanted, deployment=deployment)
    raise UnknownPromotion(f"version {wanted} was never live in {from_environment}")


def check_not_already_there(
    version: str,
    target_live_version: str | None,
    target_unfinished: Iterable[Deployment],
    to_environment: str,
) -> None:
    """Raise `AlreadyThere` when `version` is live in the target or a deployment of it is on its way.

    >>> check_not_already_there("1.0.0", "1.0.0", [], "production")
    Traceback (most recent call last):
    ...
    shared.domain.promotion.AlreadyThere: version 1.0.0 is already live in production
    """
    if target_live_version == version:
        raise AlreadyThere(f"version {version} is already live in {to_environment}")
    for deployment in target_unfinished:
        if deployment.version == version:
            raise AlreadyThere(
                f"version {version} is already on its way to {to_environment}:"
                f" {deployment.deployment_id} is {deployment.status}"
            )
