"""The pipeline file's field checks: each reads one value or section and returns it typed, or
raises ConfigError naming the offending key. `shared.config` assembles the whole file from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.domain.naming import COMPUTE_NAME_PATTERN
from shared.domain.verification import SmokeCheck
from shared.domain.windows import (
    Freeze,
    InvalidPolicy,
    WeeklyWindow,
    parse_clock_time,
    parse_days,
    parse_instant,
    time_zone,
)

SMOKE_CHECK_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ConfigError(ValueError):
    """The pipeline file or an environment variable is invalid. The message names the key."""


@dataclass(frozen=True)
class Channel:
    """Where notifications go. The webhook URL is a secret: it is read from an env var."""

    kind: str  # "slack" | "google_chat" | "webhook"
    url_env: str

    KINDS = ("slack", "google_chat", "webhook")


def require(kind: type, value: Any, where: str) -> Any:
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def refuse_unknown_keys(table: Mapping[str, Any], where: str, allowed: Iterable[str], hint: str = "") -> None:
    """ConfigError naming the first key (in sorted order) of `table` that is not `allowed`: a
    misspelt key must not be silently ignored."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key{hint}")


def positive(value: Any, where: str) -> int:
    number = require(int, value, where)
    if number <= 0:
        raise ConfigError(f"{where}: must be > 0, got {number}")
    return int(number)


def non_negative(value: Any, where: str) -> int:
    number = require(int, value, where)
    if number < 0:
        raise ConfigError(f"{where}: must be >= 0, got {number}")
    return int(number)


def gce_name(value: Any, where: str) -> str:
    name = require(str, value, where)
    if not COMPUTE_NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} is not a valid Compute Engine resource name")
    return str(name)


def channels(raw: Any, where: str) -> tuple[Channel, ...]:
    channels = []
    for index, raw_channel in enumerate(require(list, raw, where)):
        channel_where = f"{where}[{index}]"
        table_keys(raw_channel, channel_where, ("kind", "url_env"), ())
        kind = require(str, raw_channel.get("kind"), f"{channel_where}.kind")
        if kind not in Channel.KINDS:
            raise ConfigError(f"{channel_where}.kind: must be one of {', '.join(Channel.KINDS)}")
        url_env = require(str, raw_channel.get("url_env"), f"{channel_where}.url_env")
        channels.append(Channel(kind=kind, url_env=url_env))
    return tuple(channels)


def operations(raw: Any) -> tuple[Channel, ...]:
    section = table_keys(raw, "operations", ("channels",), ())
    return channels(section.get("channels", []), "operations.channels")


def smoke_checks(raw: Any, where: str) -> tuple[SmokeCheck, ...]:
    checks = []
    for index, raw_check in enumerate(require(list, raw, where)):
        check_where = f"{where}[{index}]"
        require(dict, raw_check, check_where)
        refuse_unknown_keys(
            raw_check, check_where, ("method", "path", "expect_status", "body_contains", "timeout_seconds")
        )
        path = require(str, raw_check.get("path"), f"{check_where}.path")
        if not path.startswith("/"):
            raise ConfigError(f"{check_where}.path: must start with '/'")
        method = require(str, raw_check.get("method", "GET"), f"{check_where}.method").upper()
        if method not in SMOKE_CHECK_METHODS:
            raise ConfigError(f"{check_where}.method: must be one of {', '.join(SMOKE_CHECK_METHODS)}")
        status = require(int, raw_check.get("expect_status", 200), f"{check_where}.expect_status")
        if not 100 <= status <= 599:
            raise ConfigError(f"{check_where}.expect_status: must be an HTTP status, got {status}")
        body_contains = raw_check.get("body_contains")
        if body_contains is not None:
            require(str, body_contains, f"{check_where}.body_contains")
        timeout = raw_check.get("timeout_seconds", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ConfigError(f"{check_where}.timeout_seconds: must be a number in (0, 60], got {timeout!r}")
        checks.append(SmokeCheck(path, method, status, body_contains, float(timeout)))
    return tuple(checks)


def ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: must be a number between 0 and 1, got {value!r}")
    return float(value)


def identities(value: Any, where: str) -> tuple[str, ...]:
    """A list of caller patterns: e-mail addresses, or `*@domain`."""
    patterns = require(list, value, where)
    for index, pattern in enumerate(patterns):
        require(str, pattern, f"{where}[{index}]")
    return tuple(patterns)


_WINDOW_KEYS = ("days", "start", "end", "time_zone")
_FREEZE_KEYS = ("start", "end", "reason")


def table_keys(raw: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    table = require(dict, raw, where)
    refuse_unknown_keys(table, where, allowed, hint=f" (expected {', '.join(allowed)})")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where}.{key}: required")
    return dict(table)


def deploy_windows(raw: Any, where: str) -> tuple[WeeklyWindow, ...]:
    """`[{ days = ["mon", ...], start = "09:00", end = "16:00", time_zone = "Europe/London" }]`"""
    windows = []
    for index, raw_window in enumerate(require(list, raw, where)):
        at = f"{where}[{index}]"
        table = table_keys(raw_window, at, _WINDOW_KEYS, _WINDOW_KEYS)
        days = require(list, table["days"], f"{at}.days")
        for day_index, day in enumerate(days):
            require(str, day, f"{at}.days[{day_index}]")
        try:
            parsed_days = parse_days(days)
        except InvalidPolicy as exc:  # permanent: a bad pipeline file
            raise ConfigError(f"{at}.days: {exc}") from exc
        minutes = {}
        for key in ("start", "end"):
            text = require(str, table[key], f"{at}.{key}")
            try:
                minutes[key] = parse_clock_time(text, allow_midnight_end=key == "end")
            except InvalidPolicy as exc:  # permanent: a bad pipeline file
                raise ConfigError(f"{at}.{key}: {exc}") from exc
        zone_name = require(str, table["time_zone"], f"{at}.time_zone")
        try:
            time_zone(zone_name)
            windows.append(WeeklyWindow(parsed_days, minutes["start"], minutes["end"], zone_name))
        except InvalidPolicy as exc:  # permanent: a bad pipeline file (the message names the key)
            raise ConfigError(f"{at}.{exc}") from exc
    return tuple(windows)


def freezes(raw: Any, where: str) -> tuple[Freeze, ...]:
    """`[{ start = "2026-12-20T00:00:00Z", end = "2027-01-04T00:00:00Z", reason = "..." }]`; TOML's
    own offset date-times are accepted too. Times without an offset are refused: ambiguous."""
    freezes = []
    for index, raw_freeze in enumerate(require(list, raw, where)):
        at = f"{where}[{index}]"
        table = table_keys(raw_freeze, at, _FREEZE_KEYS, ("start", "end"))
        instants = {key: instant(table[key], f"{at}.{key}") for key in ("start", "end")}
        reason = require(str, table.get("reason", ""), f"{at}.reason")
        try:
            freezes.append(Freeze(instants["start"], instants["end"], reason))
        except InvalidPolicy as exc:  # permanent: a bad pipeline file (the message names the key)
            raise ConfigError(f"{at}.{exc}") from exc
    return tuple(freezes)


def instant(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{where}: {value.isoformat()} has no UTC offset (write e.g. ...T00:00:00Z)")
        return value.astimezone(UTC)
    text = require(str, value, where)
    try:
        return parse_instant(text)
    except InvalidPolicy as exc:  # permanent: a bad pipeline file
        raise ConfigError(f"{where}: {exc}") from exc
