"""The `releasectl` command line: its commands, options and the checks on their values.

A bad value is a usage error (exit 2, one line on stderr) before any command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from releasectl.remote import ENDPOINTS
from shared.domain.build_event import DEPLOYMENT_ID_PATTERN
from shared.domain.identifiers import NAME_PATTERN
from shared.usecases.delivery import DEFAULT_WINDOW_DAYS

DESCRIPTION = """`releasectl`: publish builds, read release state and metrics, watch deployments, roll back,
promote, approve or reject (CONTRACT §5).

Exit codes: 0 success, 1 the operation failed, 2 bad usage or input (one line on stderr).
`--json` prints exactly one JSON document on stdout; progress then goes to stderr.
"""
"""What `releasectl --help` says first."""

NumberT = TypeVar("NumberT", int, float)

DEFAULT_WATCH_TIMEOUT_SECONDS = 600.0


class UsageError(Exception):
    """Bad command line: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    """Usage errors become one line on stderr and exit 2, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _name(kind: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise argparse.ArgumentTypeError(f"{kind} {value!r} must match {NAME_PATTERN.pattern}")
        return value

    return check


def _deployment_id(value: str) -> str:
    if not DEPLOYMENT_ID_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a deployment id")
    return value


def _positive(convert: Callable[[str], NumberT], kind: str) -> Callable[[str], NumberT]:
    def check(value: str) -> NumberT:
        try:
            number = convert(value)
        except ValueError as exc:  # permanent: bad command line
            raise argparse.ArgumentTypeError(f"{value!r} is not {kind}") from exc
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
        return number

    return check


_positive_int = _positive(int, "an integer")
_positive_float = _positive(float, "a number")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="releasectl", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--app", required=True, type=_name("app"))
        sub.add_argument("--env", required=True, type=_name("environment"), dest="environment")

    def json_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--json", action="store_true", help="print exactly one JSON document")

    publish = commands.add_parser("publish", help="publish build-succeeded (what CI runs)")
    target(publish)
    publish.add_argument("--commit", required=True)
    publish.add_argument("--build-id", required=True)
    publish.add_argument("--artifact", required=True, help="gs://… or file:///… URL of the .tar.gz")
    publish.add_argument(
        "--artifact-sha256",
        help="SHA-256 of the artifact file (64 lowercase hex); computed for a file:/// artifact if omitted",
    )
    publish.add_argument(
        "--committed-at", help="RFC 3339 time of the commit, e.g. from git show -s --format=%%cI"
    )
    publish.add_argument("--commit-message", action="append", default=[], dest="commit_messages")
    publish.add_argument("--bump", choices=("major", "minor", "patch"))
    publish.add_argument("--branch")
    publish.add_argument("--build-url")
    publish.add_argument("--triggered-by")
    json_flag(publish)

    status = commands.add_parser("status", help="what is live in an environment, and what is coming")
    target(status)
    json_flag(status)

    releases = commands.add_parser("releases", help="an environment's deployments, newest first")
    target(releases)
    releases.add_argument("--limit", type=_positive_int, default=20)
    json_flag(releases)

    rollback = commands.add_parser("rollback", help="roll an environment back (CONTRACT §4)")
    target(rollback)
    rollback.add_argument(
        "--to", dest="to_version", help="the version to go back to (default: the previous one)"
    )
    rollback.add_argument("--reason")
    json_flag(rollback)

    promote = commands.add_parser(
        "promote", help="deploy a release live in one environment to another (CONTRACT §4b)"
    )
    promote.add_argument("--app", required=True, type=_name("app"))
    promote.add_argument("--from", required=True, type=_name("environment"), dest="from_environment")
    promote.add_argument("--to", required=True, type=_name("environment"), dest="to_environment")
    promote.add_argument("--version", help="a version that is or was live there (default: the live one)")
    promote.add_argument("--reason")
    json_flag(promote)

    approve = commands.add_parser("approve", help="approve a deployment awaiting approval (CONTRACT §4c)")
    approve.add_argument("deployment_id", type=_deployment_id)
    approve.add_argument("--reason")
    json_flag(approve)

    reject = commands.add_parser("reject", help="reject a deployment awaiting approval (CONTRACT §4c)")
    reject.add_argument("deployment_id", type=_deployment_id)
    reject.add_argument("--reason", required=True)
    json_flag(reject)

    watch = commands.add_parser("watch", help="follow a deployment until it is live or has failed")
    watch.add_argument("deployment_id")
    watch.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_WATCH_TIMEOUT_SECONDS, help="seconds"
    )
    json_flag(watch)

    package = commands.add_parser("package", help="build the release artifact (CONTRACT §7)")
    package.add_argument("source_dir", type=Path)
    package.add_argument("--out", required=True, type=Path)
    json_flag(package)

    metrics = commands.add_parser("metrics", help="delivery metrics: the four keys and phase durations")
    metrics.add_argument("--app", required=True, type=_name("app"))
    metrics.add_argument(
        "--env", type=_name("environment"), dest="environment", help="one environment (default: all)"
    )
    metrics.add_argument(
        "--since",
        type=_positive_int,
        default=DEFAULT_WINDOW_DAYS,
        dest="since_days",
        metavar="DAYS",
        help=f"the window, in days up to now (default {DEFAULT_WINDOW_DAYS})",
    )
    json_flag(metrics)

    token = commands.add_parser("token", help="print an identity token the pipeline's HTTP functions accept")
    token.add_argument("--email", help="locally: mint the token for this identity instead of yours")
    token.add_argument(
        "--for",
        dest="endpoint",
        choices=sorted(ENDPOINTS),
        default="rollback",
        help="the function the token is for (its audience); default rollback",
    )
    json_flag(token)
    return parser
