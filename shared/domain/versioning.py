"""Semantic versions per app, decided by conventional commits.

`fix:` bumps the patch, `feat:` the minor, `type!:` or a `BREAKING CHANGE:` footer the major;
an explicit bump overrides the messages. Anything else (chores, plain messages, no messages)
is a patch: a new commit always needs a new version because one version means one commit.
The first release of an app is its configured `first_version`; later ones bump from the
highest version ever released, not from what is live, so after a rollback the next release
still moves forward.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

import semver


class Bump(StrEnum):
    PATCH = "patch"
    MINOR = "minor"
    MAJOR = "major"


_RANK = {Bump.PATCH: 0, Bump.MINOR: 1, Bump.MAJOR: 2}
_HEADER = re.compile(r"^(?P<type>[A-Za-z]+)(?:\([^()\r\n]*\))?(?P<breaking>!)?:[ \t]")
_BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE:", re.MULTILINE)


def bump_for_message(message: str) -> Bump:
    """The bump one conventional-commit message asks for.

    >>> bump_for_message("fix(api): handle empty body")
    <Bump.PATCH: 'patch'>
    >>> bump_for_message("feat: dark mode")
    <Bump.MINOR: 'minor'>
    >>> bump_for_message("feat!: drop the v1 API")
    <Bump.MAJOR: 'major'>
    >>> bump_for_message("refactor: tidy\\n\\nBREAKING CHANGE: config keys renamed")
    <Bump.MAJOR: 'major'>
    """
    if _BREAKING_FOOTER.search(message):
        return Bump.MAJOR
    header = _HEADER.match(message.strip())
    if header is None:
        return Bump.PATCH
    if header.group("breaking"):
        return Bump.MAJOR
    return Bump.MINOR if header.group("type").lower() == "feat" else Bump.PATCH


def bump_for_messages(messages: Iterable[str]) -> Bump:
    """The largest bump any of the messages asks for; patch when there are none."""
    return max((bump_for_message(m) for m in messages), key=_RANK.__getitem__, default=Bump.PATCH)


def highest_version(versions: Iterable[str]) -> str | None:
    """
    >>> highest_version(["1.9.0", "1.10.0", "1.2.3"])
    '1.10.0'
    >>> highest_version([]) is None
    True
    """
    parsed = [semver.Version.parse(v) for v in versions]
    return str(max(parsed)) if parsed else None


def next_version(
    released_versions: Iterable[str],
    first_version: str,
    commit_messages: Iterable[str] = (),
    explicit_bump: Bump | None = None,
) -> str:
    """The version for a commit that has none yet.

    >>> next_version([], "1.0.0", ["feat: x"])
    '1.0.0'
    >>> next_version(["1.0.0", "1.1.0"], "1.0.0", ["feat: y"])
    '1.2.0'
    >>> next_version(["1.2.0"], "1.0.0", ["feat: y"], Bump.PATCH)
    '1.2.1'
    """
    highest = highest_version(released_versions)
    if highest is None:
        return str(semver.Version.parse(first_version))
    current = semver.Version.parse(highest)
    bump = explicit_bump or bump_for_messages(commit_messages)
    if bump is Bump.MAJOR:
        return str(current.bump_major())
    if bump is Bump.MINOR:
        return str(current.bump_minor())
    return str(current.bump_patch())


def is_version(text: str) -> bool:
    return semver.Version.is_valid(text)
