"""Timestamps and identifiers in Compute Engine's formats."""

from __future__ import annotations

import base64
import os
import secrets
from datetime import UTC, datetime


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    """A 64-bit resource id; JSON carries uint64 as a decimal string."""
    return str(secrets.randbits(63) | (1 << 62))


def new_fingerprint() -> str:
    return base64.urlsafe_b64encode(os.urandom(8)).decode("ascii")
