"""Which Compute resources a crash left behind: named by the pipeline, needed by no record.

A step that dies between creating a template or group and recording it, or a clean-up that dies
half-way, leaves a resource that nothing will delete. The watchdog lists the resources, reads the
records, and collects (pure, here) those that
  - carry a name the pipeline's scheme gives a deployment of a configured environment
    (`shared.domain.naming`): anything else in the project is not ours to touch;
  - are named by no deployment that is in flight, live, or retained for a rollback (its clean-up
    still pending): those the pipeline itself still uses or will delete;
  - are older than a grace period (the owning environment's provisioning deadline): a resource
    created moments ago may belong to a step that has not recorded it yet, and any deployment
    that could still be creating it is failed by the watchdog once that deadline has passed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.domain.naming import MAX_NAME, instance_group_name, instance_template_name

ResourceKind = Literal["instance_group", "instance_template"]
_SUFFIX = {"instance_group": "mig", "instance_template": "tpl"}
_DEPLOYMENT_DIGEST = r"[0-9a-f]{12}"
_SHORTENED = re.compile(r"^(?P<prefix>[a-z][-a-z0-9]*?)-[0-9a-f]{8}-(?P<suffix>mig|tpl)$")


@dataclass(frozen=True)
class ListedResource:
    """A template or group as a listing shows it."""

    kind: ResourceKind
    name: str
    created_at: datetime | None
    """None when the API gave no creation time: such a resource is never collected."""
    region: str | None = None
    """Regional resources (groups) only."""


def named_for_environment(kind: ResourceKind, name: str, app: str, environment: str) -> bool:
    """Whether `name` is what `shared.domain.naming` gives a deployment of app/environment.

    >>> named_for_environment("instance_group", "hello-staging-a0ab70131e5c-mig", "hello", "staging")
    True
    >>> named_for_environment("instance_template", "hello-staging-a0ab70131e5c-mig", "hello", "staging")
    False
    >>> named_for_environment("instance_template", "hello-staging-base", "hello", "staging")
    False
    >>> named_for_environment("instance_group", "hello-production-a0ab70131e5c-mig", "hello", "staging")
    False

    A deployment id too long for a name is shortened and a digest added; such names match too:

    >>> long_app, long_env = "a" * 30, "b" * 30
    >>> from shared.domain.naming import instance_group_name
    >>> named_for_environment(
    ...     "instance_group", instance_group_name(f"{long_app}-{long_env}-0123456789ab"), long_app, long_env
    ... )
    True
    """
    suffix = _SUFFIX[kind]
    stem = f"{app}-{environment}-"
    if re.fullmatch(re.escape(stem) + _DEPLOYMENT_DIGEST + "-" + suffix, name):
        return True
    # Shortened form: `<first characters of the id>-<8 hex>-<suffix>`, used only when the plain
    # name would be too long.
    if len(stem) + 12 + 1 + len(suffix) <= MAX_NAME:
        return False
    shortened = _SHORTENED.match(name)
    if shortened is None or shortened["suffix"] != suffix:
        return False
    prefix = shortened["prefix"]
    if stem.startswith(prefix) or stem.rstrip("-").startswith(prefix):
        return True
    return prefix.startswith(stem) and re.fullmatch(r"[0-9a-f]{0,12}", prefix[len(stem) :]) is not None


def names_needed_by(
    deployment_ids: Iterable[str], recorded_names: Iterable[str | None] = ()
) -> frozenset[str]:
    """Every resource name the given deployments use or may be creating right now.

    >>> sorted(names_needed_by(["hello-staging-a0ab70131e5c"], ["hello-staging-000000000000-mig", None]))
    ['hello-staging-000000000000-mig', 'hello-staging-a0ab70131e5c-mig', 'hello-staging-a0ab70131e5c-tpl']
    """
    names: set[str] = {name for name in recorded_names if name}
    for deployment_id in deployment_ids:
        names.add(instance_group_name(deployment_id))
        names.add(instance_template_name(deployment_id))
    return frozenset(names)


def with_their_templates(names: frozenset[str]) -> frozenset[str]:
    """The names plus the template of every group among them (a kept group keeps its template).

    >>> sorted(with_their_templates(frozenset({"hello-staging-a0ab70131e5c-mig", "other"})))
    ['hello-staging-a0ab70131e5c-mig', 'hello-staging-a0ab70131e5c-tpl', 'other']
    """
    return names | {name.removesuffix("-mig") + "-tpl" for name in names if name.endswith("-mig")}


@dataclass(frozen=True)
class Owner:
    """An environment that may own a resource: its key and the grace period its resources get."""

    app: str
    environment: str
    region: str
    grace: timedelta


def owner_of(resource: ListedResource, owners: Sequence[Owner]) -> Owner | None:
    """The configured environment whose naming scheme (and region, for a group) fits the resource."""
    for owner in owners:
        if resource.region is not None and resource.region != owner.region:
            continue
        if named_for_environment(resource.kind, resource.name, owner.app, owner.environment):
            return owner
    return None


def leaked(
    resources: Iterable[ListedResource], needed: frozenset[str], owners: Sequence[Owner], now: datetime
) -> list[tuple[ListedResource, Owner]]:
    """The resources to collect, groups before templates (a template in use cannot be deleted).

    >>> from datetime import UTC
    >>> now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    >>> owner = Owner("hello", "staging", "us-central1", timedelta(seconds=30))
    >>> old, new = now - timedelta(minutes=5), now - timedelta(seconds=5)
    >>> found = leaked(
    ...     [
    ...         ListedResource("instance_template", "hello-staging-aaaaaaaaaaaa-tpl", old),
    ...         ListedResource("instance_group", "hello-staging-aaaaaaaaaaaa-mig", old, "us-central1"),
    ...         ListedResource("instance_group", "hello-staging-bbbbbbbbbbbb-mig", new, "us-central1"),
    ...         ListedResource("instance_group", "hello-staging-cccccccccccc-mig", old, "us-central1"),
    ...         ListedResource("instance_group", "someone-elses-group", old, "us-central1"),
    ...     ],
    ...     frozenset({"hello-staging-cccccccccccc-mig"}),
    ...     [owner],
    ...     now,
    ... )
    >>> [resource.name for resource, _ in found]
    ['hello-staging-aaaaaaaaaaaa-mig', 'hello-staging-aaaaaaaaaaaa-tpl']
    """
    found: list[tuple[ListedResource, Owner]] = []
    for resource in resources:
        if resource.name in needed or resource.created_at is None:
            continue
        owner = owner_of(resource, owners)
        if owner is None or now - resource.created_at < owner.grace:
            continue
        found.append((resource, owner))
    return sorted(found, key=lambda item: (item[0].kind != "instance_group", item[0].name))
