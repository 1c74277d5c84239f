"""Whether a recorded release can be deployed again (rollback, promotion) without a new build.

Since CONTRACT v2 an instance starts only an artifact whose SHA-256 the release names. A release
recorded before v2 has no digest until a new build of its commit brings one (the admission pins
it then), so sending it to an environment would be accepted and then fail at admission: a caller
asking for it is told up front, with what to do about it.
"""

from __future__ import annotations

from shared.domain.build_event import SHA256_PATTERN


def missing_digest_problem(version: str, commit: str, artifact_sha256: str) -> str | None:
    """Why the release `version` cannot be deployed again, or None if it can.

    >>> missing_digest_problem("1.2.0", "a" * 40, "0" * 64) is None
    True
    >>> print(missing_digest_problem("1.1.0", "abc1234" + "0" * 33, ""))
    version 1.1.0 was recorded before artifact digests (CONTRACT v2) and has no artifact_sha256, so no instance would start it; publish a build of commit abc1234 with its artifact_sha256 to make it deployable again
    """
    if SHA256_PATTERN.fullmatch(artifact_sha256):
        return None
    return (
        f"version {version} was recorded before artifact digests (CONTRACT v2) and has no "
        "artifact_sha256, so no instance would start it; publish a build of commit "
        f"{commit[:7]} with its artifact_sha256 to make it deployable again"
    )
