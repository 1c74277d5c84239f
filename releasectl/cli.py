"""`releasectl`'s commands: each runs one command line parsed by `releasectl.arguments` (whose
`DESCRIPTION` is the tool's help) and answers with its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from releasectl.arguments import UsageError, build_parser
from releasectl.records import RecordsUnavailable, environment_releases, environment_status, firestore_client
from releasectl.remote import (
    ENDPOINTS,
    BadInput,
    OperationFailed,
    build_message,
    identity_token,
    publish_build_succeeded,
    request_decision,
    request_promotion,
    request_rollback,
)
from releasectl.watch import watch_deployment
from releasectl.windows import deploy_window_line, deploy_window_status
from shared.adapters.delivery_records import FirestoreDeliveryRecords
from shared.adapters.firestore_store import StoreUnavailable
from shared.artifact import ArtifactError, build_artifact, sha256_of_file, sha256_of_url
from shared.config import ConfigError, EnvironmentConfig, load_pipeline_config
from shared.domain.metrics import PHASES, Percentiles, format_seconds
from shared.usecases.delivery import window_metrics

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _environment_config(app: str, environment: str) -> EnvironmentConfig | None:
    """The environment in the pipeline file; an unknown app or environment is bad input."""
    try:
        config = load_pipeline_config()
    except ConfigError:
        return None  # Without the pipeline file (e.g. on a CI runner) the environment is unknown.
    if app not in config.apps:
        raise BadInput(f"unknown app {app!r}")
    found = config.environment(app, environment)
    if found is None:
        raise BadInput(f"app {app!r} has no environment {environment!r}")
    return found


def _url_of(app: str, environment: str) -> str | None:
    """The environment's public URL from the pipeline file, if it is available here."""
    found = _environment_config(app, environment)
    return (found.url or None) if found else None


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _short_time(text: str | None) -> str | None:
    return text.replace("T", " ")[:19] if text else None


class _Output:
    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr

    def document(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")

    def line(self, text: str = "") -> None:
        """Human output; in JSON mode it goes to stderr, keeping stdout one document."""
        (self.stderr if self.as_json else self.stdout).write(text + "\n")
        (self.stderr if self.as_json else self.stdout).flush()


def _publish(args: argparse.Namespace, out: _Output) -> int:
    artifact_sha256 = args.artifact_sha256
    if artifact_sha256 is None:
        if not args.artifact.startswith("file:"):
            raise BadInput(
                "--artifact-sha256 is required for a gs:// artifact (sha256sum of the uploaded file)"
            )
        try:
            artifact_sha256 = sha256_of_url(args.artifact)
        except ArtifactError as exc:  # permanent: the named file cannot be read
            raise BadInput(str(exc)) from exc
    data, attributes = build_message(
        app=args.app,
        environment=args.environment,
        commit=args.commit,
        build_id=args.build_id,
        artifact=args.artifact,
        artifact_sha256=artifact_sha256,
        committed_at=args.committed_at,
        commit_messages=args.commit_messages,
        bump=args.bump,
        branch=args.branch,
        build_url=args.build_url,
        triggered_by=args.triggered_by,
    )
    message_id = publish_build_succeeded(data, attributes)
    if out.as_json:
        out.document({"message_id": message_id})
    else:
        out.line(message_id)
    return EXIT_OK


def _status(args: argparse.Namespace, out: _Output) -> int:
    env = _environment_config(args.app, args.environment)
    url = (env.url or None) if env else None
    preview_url = (env.preview_url or None) if env else None
    policy = env.deploy_policy if env else None
    now = datetime.now(UTC)
    status = environment_status(firestore_client(), args.app, args.environment, url, preview_url)
    status.update(deploy_window_status(policy, now))
    if out.as_json:
        out.document(status)
        return EXIT_OK
    out.line(f"{args.app} on {args.environment}" + (f"   {url}" if url else ""))
    live = status["live"]
    if live:
        commit = (live["commit"] or "")[:7] or "-"
        out.line(
            f"  live:         {live['version']}  ({live['deployment_id']}, commit {commit},"
            f" since {_short_time(live['since']) or '-'})"
        )
    else:
        out.line("  live:         nothing yet")
    for row in status.get("awaiting_approval") or []:
        out.line(
            f"  awaiting approval: {row['version']}  ({row['deployment_id']},"
            f" requested by {row['requested_by'] or 'CI'}); releasectl approve {row['deployment_id']}"
        )
    verification = (live or {}).get("verification")
    if verification:
        out.line(f"  verification: {verification['state']}  ({verification['detail']})")
    if status["in_progress"]:
        if status["preview_url"]:
            out.line(f"  preview:      {status['preview_url']}")
        out.line("  in progress:")
        for row in status["in_progress"]:
            out.line(
                f"    {row['version'] or '(version pending)'}  {row['status']}  ({row['deployment_id']})"
            )
    else:
        out.line("  in progress:  none")
    window = deploy_window_line(policy, now)
    if window:
        out.line(f"  deploy window: {window}")
    return EXIT_OK


def _releases(args: argparse.Namespace, out: _Output) -> int:
    _url_of(args.app, args.environment)
    rows = environment_releases(firestore_client(), args.app, args.environment, args.limit)
    if out.as_json:
        out.document(rows)
        return EXIT_OK
    if not rows:
        out.line(f"no deployments of {args.app} on {args.environment} yet")
        return EXIT_OK
    out.line(
        _table(
            [
                "version",
                "status",
                "deployment",
                "commit",
                "created",
                "finished",
                "triggered by",
                "rollback of",
            ],
            [
                [
                    r["version"],
                    r["status"],
                    r["deployment_id"],
                    (r["commit"] or "")[:7] or None,
                    _short_time(r["created_at"]),
                    _short_time(r["finished_at"]),
                    r["triggered_by"],
                    r["rollback_of"],
                ]
                for r in rows
            ],
        )
    )
    return EXIT_OK


def _rollback(args: argparse.Namespace, out: _Output) -> int:
    accepted = request_rollback(args.app, args.environment, args.to_version, args.reason)
    if out.as_json:
        out.document(accepted.body)
    else:
        out.line(
            f"rollback accepted: {args.app} {accepted.version} is being deployed to {args.environment}"
            f" as {accepted.deployment_id}"
            + (f" (rolling back {accepted.rollback_of})" if accepted.rollback_of else "")
        )
        out.line(f"follow it with: releasectl watch {accepted.deployment_id}")
    return EXIT_OK


def _promote(args: argparse.Namespace, out: _Output) -> int:
    if args.from_environment == args.to_environment:
        raise BadInput("--from and --to must name different environments")
    accepted = request_promotion(
        args.app, args.from_environment, args.to_environment, args.version, args.reason
    )
    if out.as_json:
        out.document(accepted)
        return EXIT_OK
    out.line(
        f"promotion accepted: {args.app} {accepted.get('version')} from {args.from_environment} to"
        f" {args.to_environment} as {accepted.get('deployment_id')} ({accepted.get('status')})"
    )
    if accepted.get("status") == "awaiting_approval":
        out.line(f"an approver other than you runs: releasectl approve {accepted.get('deployment_id')}")
    out.line(f"follow it with: releasectl watch {accepted.get('deployment_id')}")
    return EXIT_OK


def _decide(decision: str) -> Callable[[argparse.Namespace, _Output], int]:
    def run_decision(args: argparse.Namespace, out: _Output) -> int:
        taken = request_decision(args.deployment_id, decision, args.reason)
        if out.as_json:
            out.document(taken)
        else:
            out.line(f"{args.deployment_id}: {decision}d; it is now {taken.get('status')}")
        return EXIT_OK

    return run_decision


def _watch(args: argparse.Namespace, out: _Output) -> int:
    outcome = watch_deployment(firestore_client(), args.deployment_id, args.timeout, out.line)
    if outcome.timed_out:
        state = outcome.status or "not recorded"
        out.line(f"gave up after {args.timeout:g} s: {args.deployment_id} is still {state}")
    elif outcome.succeeded:
        out.line(f"{args.deployment_id} is {outcome.status} ({outcome.elapsed_seconds:.1f} s watched)")
    else:
        out.line(f"{args.deployment_id} ended {outcome.status}")
    if out.as_json:
        out.document(outcome.as_json())
    return EXIT_OK if outcome.succeeded else EXIT_FAILED


def _package(args: argparse.Namespace, out: _Output) -> int:
    try:
        artifact = build_artifact(args.source_dir, args.out)
    except (ArtifactError, FileNotFoundError, NotADirectoryError) as exc:  # permanent: fix the source tree
        raise BadInput(str(exc)) from exc
    resolved = artifact.resolve()
    if out.as_json:
        out.document({"path": str(resolved), "sha256": sha256_of_file(resolved), "uri": resolved.as_uri()})
    else:
        out.line(str(resolved))
    return EXIT_OK


def _check_app(app: str, environment: str | None) -> None:
    """An app or environment the pipeline file does not declare is bad input (when the file is here)."""
    if environment is not None:
        _url_of(app, environment)
        return
    try:
        config = load_pipeline_config()
    except ConfigError:
        return  # Without the pipeline file (e.g. on a CI runner) the records alone decide.
    if app not in config.apps:
        raise BadInput(f"unknown app {app!r}")


_KEY_ROWS = (
    ("deployment frequency", "deployment_frequency"),
    ("lead time (p50 / p90)", "lead_time"),
    ("change failure rate", "change_failure_rate"),
    ("time to restore (p50 / p90)", "time_to_restore"),
)


def _metrics(args: argparse.Namespace, out: _Output) -> int:
    _check_app(args.app, args.environment)
    records = FirestoreDeliveryRecords(firestore_client())
    try:
        result = window_metrics(
            records,
            app=args.app,
            environment=args.environment,
            days=args.since_days,
            now=datetime.now(UTC),
        )
    except StoreUnavailable as exc:  # transient or a missing index: this run failed
        raise RecordsUnavailable(str(exc)) from exc
    if out.as_json:
        out.document(result.to_json())
        return EXIT_OK
    where = f"on {args.environment}" if args.environment else "on every environment"
    out.line(
        f"{args.app} {where}, last {args.since_days} days (since {_short_time(result.since.isoformat())} UTC):"
        f" {result.deployments} deployments went live"
    )
    frequency = result.deployment_frequency_per_day
    rate = result.change_failure_rate
    values = {
        "deployment_frequency": "-" if frequency is None else f"{frequency:.2f} a day",
        "lead_time": _pair(result.lead_time_seconds),
        "change_failure_rate": "-" if rate is None else f"{rate:.0%} ({result.change_failures} rolled back)",
        "time_to_restore": _pair(result.time_to_restore_seconds),
    }
    bands = result.bands
    out.line()
    out.line(_table(["key", "value", "band"], [[label, values[key], bands[key]] for label, key in _KEY_ROWS]))
    out.line()
    out.line(
        _table(
            ["phase", "p50", "p90"],
            [
                [
                    phase.replace("_", " "),
                    format_seconds(result.phases[phase].p50),
                    format_seconds(result.phases[phase].p90),
                ]
                for phase in PHASES
            ],
        )
    )
    return EXIT_OK


def _pair(values: Percentiles) -> str:
    if values.p50 is None:
        return "-"
    return f"{format_seconds(values.p50)} / {format_seconds(values.p90)}"


def _token(args: argparse.Namespace, out: _Output) -> int:
    token = identity_token(ENDPOINTS[args.endpoint], email=args.email)
    if out.as_json:
        out.document({"token": token})
    else:
        out.line(token)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, _Output], int]] = {
    "publish": _publish,
    "status": _status,
    "releases": _releases,
    "rollback": _rollback,
    "promote": _promote,
    "approve": _decide("approve"),
    "reject": _decide("reject"),
    "watch": _watch,
    "package": _package,
    "metrics": _metrics,
    "token": _token,
}


def run(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one command and return its exit code (for tests and embedding)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(stdout):
            args = parser.parse_args(argv)
    except UsageError as exc:  # permanent: fix the command line
        stderr.write(f"releasectl: {_one_line(exc)}\n")
        return EXIT_USAGE
    except SystemExit as exit_request:  # --help has been printed
        return int(exit_request.code or 0)
    out = _Output(bool(getattr(args, "json", False)), stdout, stderr)
    try:
        return _COMMANDS[args.command](args, out)
    except BadInput as exc:  # permanent for this invocation: the user must change the input
        stderr.write(f"releasectl: {_one_line(exc)}\n")
        return EXIT_USAGE
    except (OperationFailed, RecordsUnavailable) as exc:  # may be transient; rerunning may help
        stderr.write(f"releasectl: {_one_line(exc)}\n")
        return EXIT_FAILED


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def main() -> None:
    sys.exit(run())
