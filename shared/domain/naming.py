"""Compute Engine resource names derived from the deployment id.

A retried step computes the same names, so it finds what its first attempt created. Names
follow GCE rules (RFC 1035: lowercase, starts with a letter, at most 63 characters); a long
deployment id is shortened and a hash of the whole id keeps the name unique.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
COMPUTE_NAME_PATTERN = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
"""A Compute Engine resource name (RFC 1035), matched as a whole string (`fullmatch`)."""


def _derived(deployment_id: str, suffix: str) -> str:
    candidate = f"{deployment_id}-{suffix}"
    if len(candidate) <= MAX_NAME:
        name = candidate
    else:
        digest = hashlib.sha256(deployment_id.encode()).hexdigest()[:8]
        keep = MAX_NAME - len(suffix) - len(digest) - 2
        name = f"{deployment_id[:keep].rstrip('-')}-{digest}-{suffix}"
    if not COMPUTE_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{deployment_id!r} does not give a valid Compute Engine name ({name!r})")
    return name


def instance_template_name(deployment_id: str) -> str:
    """
    >>> instance_template_name("hello-staging-a0ab70131e5c")
    'hello-staging-a0ab70131e5c-tpl'
    """
    return _derived(deployment_id, "tpl")


def instance_group_name(deployment_id: str) -> str:
    """
    >>> instance_group_name("hello-staging-a0ab70131e5c")
    'hello-staging-a0ab70131e5c-mig'
    """
    return _derived(deployment_id, "mig")


def deployment_id_of_group(name: str) -> str | None:
    """The deployment whose derived group name this is; None for a name not derived that way,
    or shortened with a hash (its deployment is then found through its record).

    >>> deployment_id_of_group("hello-staging-a0ab70131e5c-mig")
    'hello-staging-a0ab70131e5c'
    >>> deployment_id_of_group("hello-staging-base") is None
    True
    """
    if not name.endswith("-mig"):
        return None
    deployment_id = name.removesuffix("-mig")
    return deployment_id if instance_group_name(deployment_id) == name else None


def is_valid_name(name: str) -> bool:
    return bool(COMPUTE_NAME_PATTERN.fullmatch(name)) and len(name) <= MAX_NAME
