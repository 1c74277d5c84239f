"""Deterministic identifiers, so a retried step finds what its first attempt created."""

from __future__ import annotations

import hashlib
import re

NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,29}")
"""App and environment names (CONTRACT §3), matched as a whole string (`fullmatch`): they become
parts of deployment ids, Compute Engine names and record keys.

>>> bool(NAME_PATTERN.fullmatch("hello-2")), bool(NAME_PATTERN.fullmatch("Hello"))
(True, False)
"""


def deployment_id_for(app: str, environment: str, build_id: str) -> str:
    """The deployment id of the (app, environment, build_id) idempotency key.

    Readable in the console, stable across redeliveries, and a valid Compute Engine name
    prefix (lowercase, starts with a letter):

    >>> deployment_id_for("hello", "staging", "build-42")
    'hello-staging-a0ab70131e5c'
    """
    digest = hashlib.sha256(f"{app}\0{environment}\0{build_id}".encode()).hexdigest()[:12]
    return f"{app}-{environment}-{digest}"
