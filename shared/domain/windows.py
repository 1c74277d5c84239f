"""Deploy windows and freezes: when an environment may start a deployment.

An environment's policy is a set of weekly windows, each in its own time zone, and a set of
absolute freezes. A deployment may start at an instant when that instant lies in a window (or
there are no windows at all) and in no freeze: freezes override windows. Rollbacks ignore the
policy; that rule lives with the callers, which know what a rollback is.

Windows are in local wall time, so "09:00-16:00 Europe/London" means nine to four on the
London clock in winter and in summer. A window opens at the first instant the local clock reads
its start and closes at the first instant it reads its end: on a day the clocks skip its start
(spring forward) it opens when the clock jumps past it; on a day they repeat its end (fall back)
it closes at the first reading. A window whose end is earlier than its start runs past
midnight into the next day; its `days` are the days it opens. "24:00" ends a window at midnight.

Both ranges are half-open: a window or freeze includes its start and excludes its end.
Every instant here is timezone-aware; arithmetic and comparisons are done in UTC, because Python
compares two datetimes of the same time zone by their wall time, ignoring DST folds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names as the pipeline file spells them, in `date.weekday()` order."""

MINUTES_PER_DAY = 24 * 60
SEARCH_DAYS = 731
"""How far ahead `next_opening` looks: a policy closed for longer than two years is closed
until someone changes it."""
MAX_SEARCH_STEPS = 10_000
"""A second bound on the search, counted in the window openings and freeze ends it visits."""

_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


class InvalidPolicy(ValueError):
    """A window or freeze that cannot mean anything. The message says why."""


@dataclass(frozen=True)
class WeeklyWindow:
    """Every week on `days`, from `start_minute` to `end_minute` (minutes after local midnight)."""

    days: frozenset[int]
    """`date.weekday()` numbers: Monday is 0."""
    start_minute: int
    end_minute: int
    """After `start_minute`, or at most it: then the window ends on the next day."""
    time_zone: str

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(range(7)):
            raise InvalidPolicy("days: expected one or more of " + ", ".join(DAY_NAMES))
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise InvalidPolicy(f"start: {self.start_minute} is not a minute of the day")
        if not 0 < self.end_minute <= MINUTES_PER_DAY:
            raise InvalidPolicy(f"end: {self.end_minute} is not a minute of the day")
        if self.start_minute == self.end_minute:
            raise InvalidPolicy("start and end are equal: the window would be empty or a whole day")
        time_zone(self.time_zone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def crosses_midnight(self) -> bool:
        return self.end_minute < self.start_minute

    def occurrences(self, around: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The window's [opens, closes) instants in UTC, for the local days from the day before
        `around` to a week after it, in order. Days the clock change leaves empty are skipped."""
        zone = self.zone
        first_day = around.astimezone(zone).date() - timedelta(days=1)
        for offset in range(9):
            day = first_day + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            end_minute = self.end_minute + (MINUTES_PER_DAY if self.crosses_midnight else 0)
            opens = first_instant_at(_wall(day, self.start_minute), zone)
            closes = first_instant_at(_wall(day, end_minute), zone)
            if opens < closes:
                yield opens, closes


@dataclass(frozen=True)
class Freeze:
    """No deployment starts from `start` until `end` (UTC instants)."""

    start: datetime
    end: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidPolicy("a freeze's start and end need a UTC offset (e.g. 2026-12-20T00:00:00Z)")
        if self.end <= self.start:
            raise InvalidPolicy("end: must be after start")

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class DeployPolicy:
    """An environment's windows and freezes. Without windows the environment is open whenever
    no freeze covers the instant; without either it is always open."""

    windows: tuple[WeeklyWindow, ...] = ()
    freezes: tuple[Freeze, ...] = ()

    @property
    def restricts(self) -> bool:
        return bool(self.windows or self.freezes)

    @property
    def display_zone(self) -> ZoneInfo:
        """The zone local times are shown in: the first window's, else UTC."""
        return self.windows[0].zone if self.windows else ZoneInfo("UTC")

    def freeze_at(self, at: datetime) -> Freeze | None:
        return next((freeze for freeze in self.freezes if freeze.covers(at)), None)


ALWAYS_OPEN = DeployPolicy()


def is_open(policy: DeployPolicy, at: datetime) -> bool:
    """Whether a deployment may start at `at`.

    >>> london = WeeklyWindow(frozenset({0, 1, 2, 3}), 9 * 60, 16 * 60, "Europe/London")
    >>> policy = DeployPolicy(windows=(london,))
    >>> is_open(policy, datetime(2026, 12, 1, 9, 0, tzinfo=UTC))   # Tuesday, 09:00 GMT
    True
    >>> is_open(policy, datetime(2026, 7, 7, 8, 30, tzinfo=UTC))   # Tuesday, 09:30 BST
    True
    >>> is_open(policy, datetime(2026, 7, 7, 15, 30, tzinfo=UTC))  # Tuesday, 16:30 BST
    False
    >>> is_open(policy, datetime(2026, 12, 4, 10, 0, tzinfo=UTC))  # Friday
    False
    >>> is_open(ALWAYS_OPEN, datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    True
    """
    _check_aware(at)
    if policy.freeze_at(at) is not None:
        return False
    if not policy.windows:
        return True
    return any(opens <= at < closes for window in policy.windows for opens, closes in window.occurrences(at))


def may_start_now(policy: DeployPolicy, at: datetime, *, rollback: bool) -> bool:
    """Whether a deployment ready at `at` may take its environment: rollbacks always may.

    >>> closed = DeployPolicy(freezes=(Freeze(datetime(2026, 12, 20, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC)),))
    >>> may_start_now(closed, datetime(2026, 12, 24, tzinfo=UTC), rollback=False)
    False
    >>> may_start_now(closed, datetime(2026, 12, 24, tzinfo=UTC), rollback=True)
    True
    """
    return rollback or is_open(policy, at)


def next_opening(policy: DeployPolicy, at: datetime) -> datetime | None:
    """The first instant at or after `at` when a deployment may start (`at` itself when open),
    in UTC; None if there is none within `SEARCH_DAYS`.

    >>> london = WeeklyWindow(frozenset({0, 1, 2, 3}), 9 * 60, 16 * 60, "Europe/London")
    >>> policy = DeployPolicy(windows=(london,))
    >>> next_opening(policy, datetime(2026, 12, 3, 17, 0, tzinfo=UTC))  # Thursday evening
    datetime.datetime(2026, 12, 7, 9, 0, tzinfo=datetime.timezone.utc)
    >>> year_end = Freeze(datetime(2026, 12, 20, tzinfo=UTC), datetime(2027, 1, 4, 12, tzinfo=UTC))
    >>> frozen = DeployPolicy(windows=(london,), freezes=(year_end,))
    >>> next_opening(frozen, datetime(2026, 12, 21, 10, 0, tzinfo=UTC))  # Monday 04:00 in the freeze
    datetime.datetime(2027, 1, 4, 12, 0, tzinfo=datetime.timezone.utc)
    >>> forever = Freeze(datetime(2026, 1, 1, tzinfo=UTC), datetime(2036, 1, 1, tzinfo=UTC))
    >>> next_opening(DeployPolicy(freezes=(forever,)), datetime(2026, 6, 1, tzinfo=UTC)) is None
    True
    """
    _check_aware(at)
    start = at.astimezone(UTC)
    horizon = start + timedelta(days=SEARCH_DAYS)
    candidate = start
    for _ in range(MAX_SEARCH_STEPS):
        candidate = _after_freezes(policy.freezes, candidate)
        if candidate >= horizon:
            return None
        if not policy.windows:
            return candidate
        opening = _next_window_instant(policy.windows, candidate)
        if opening == candidate:
            return candidate
        # Either a window opens later (it may lie in a freeze: look again from there), or no
        # window of the coming week opens at all (every opening skipped by a clock change).
        candidate = opening if opening is not None else candidate + timedelta(days=7)
    return None


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, or `InvalidPolicy`.

    >>> time_zone("Europe/London").key
    'Europe/London'
    >>> time_zone("Mars/Olympus")
    Traceback (most recent call last):
    ...
    shared.domain.windows.InvalidPolicy: time_zone: 'Mars/Olympus' is not an IANA time zone
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # permanent: no such zone (or a path-like name)
        raise InvalidPolicy(f"time_zone: {name!r} is not an IANA time zone") from exc


def parse_clock_time(text: str, *, allow_midnight_end: bool = False) -> int:
    """Minutes after midnight of a 24-hour "HH:MM"; "24:00" only where it ends a window.

    >>> parse_clock_time("09:30")
    570
    >>> parse_clock_time("24:00", allow_midnight_end=True)
    1440
    >>> parse_clock_time("9:30")
    Traceback (most recent call last):
    ...
    shared.domain.windows.InvalidPolicy: '9:30' is not a 24-hour time HH:MM
    """
    if not _CLOCK_TIME.fullmatch(text) or (text == "24:00" and not allow_midnight_end):
        raise InvalidPolicy(
            f"{text!r} is not a 24-hour time HH:MM" + (" (or 24:00)" if allow_midnight_end else "")
        )
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def parse_days(names: Sequence[str]) -> frozenset[int]:
    """Weekday numbers of day names, which must be distinct.

    >>> sorted(parse_days(["mon", "tue", "fri"]))
    [0, 1, 4]
    >>> parse_days(["mon", "Mon"])
    Traceback (most recent call last):
    ...
    shared.domain.windows.InvalidPolicy: 'Mon' is not one of mon, tue, wed, thu, fri, sat, sun
    """
    days: set[int] = set()
    for name in names:
        if name not in DAY_NAMES:
            raise InvalidPolicy(f"{name!r} is not one of {', '.join(DAY_NAMES)}")
        if DAY_NAMES.index(name) in days:
            raise InvalidPolicy(f"{name!r} is listed twice")
        days.add(DAY_NAMES.index(name))
    if not days:
        raise InvalidPolicy("at least one day is required")
    return frozenset(days)


def parse_instant(text: str) -> datetime:
    """An RFC 3339 instant with a UTC offset, as UTC.

    >>> parse_instant("2026-12-20T00:00:00+01:00")
    datetime.datetime(2026, 12, 19, 23, 0, tzinfo=datetime.timezone.utc)
    >>> parse_instant("2026-12-20T00:00:00")
    Traceback (most recent call last):
    ...
    shared.domain.windows.InvalidPolicy: '2026-12-20T00:00:00' is not an RFC 3339 time with an offset
    """
    if not _RFC3339.fullmatch(text):
        raise InvalidPolicy(f"{text!r} is not an RFC 3339 time with an offset")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError as exc:  # permanent: shaped like a time but not one (month 13, hour 25)
        raise InvalidPolicy(f"{text!r} is not an RFC 3339 time with an offset") from exc
    return parsed.astimezone(UTC)


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")


def rfc3339(at: datetime) -> str:
    """`at` in UTC as RFC 3339 text.

    >>> rfc3339(datetime(2027, 1, 4, 9, 0, tzinfo=UTC))
    '2027-01-04T09:00:00Z'
    """
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_time(at: datetime, zone: ZoneInfo) -> str:
    """`at` on the local clock of `zone`, for people.

    >>> local_time(datetime(2026, 7, 6, 8, 0, tzinfo=UTC), ZoneInfo("Europe/London"))
    'Mon 2026-07-06 09:00 BST, Europe/London'
    """
    return f"{at.astimezone(zone):%a %Y-%m-%d %H:%M %Z}, {zone.key}"


def waiting_note(policy: DeployPolicy, at: datetime) -> str:
    """The history line of a deployment that is ready at `at` but may not start yet: why, and
    until when (RFC 3339 and on the policy's local clock).

    >>> london = WeeklyWindow(frozenset({0, 1, 2, 3}), 9 * 60, 16 * 60, "Europe/London")
    >>> waiting_note(DeployPolicy(windows=(london,)), datetime(2026, 12, 3, 17, 0, tzinfo=UTC))
    'outside the deploy windows: waiting until 2026-12-07T09:00:00Z (Mon 2026-12-07 09:00 GMT, Europe/London)'
    """
    why = closed_because(policy, at)
    opening = next_opening(policy, at)
    if opening is None:
        return f"{why}: no deploy window opens within {SEARCH_DAYS} days; waiting for a policy change"
    return f"{why}: waiting until {rfc3339(opening)} ({local_time(opening, policy.display_zone)})"


def closed_because(policy: DeployPolicy, at: datetime) -> str:
    """Why a deployment may not start at `at` (a closed instant): a freeze, or no window.

    >>> freeze = Freeze(datetime(2026, 12, 20, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC), "year-end")
    >>> closed_because(DeployPolicy(freezes=(freeze,)), datetime(2026, 12, 24, tzinfo=UTC))
    'deploy freeze (year-end)'
    """
    freeze = policy.freeze_at(at)
    if freeze is None:
        return "outside the deploy windows"
    return f"deploy freeze ({freeze.reason})" if freeze.reason else "deploy freeze"


def _check_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone")


def _wall(day: date, minute: int) -> datetime:
    """A naive local wall-clock time: `minute` minutes after the midnight starting `day`."""
    return datetime(day.year, day.month, day.day) + timedelta(minutes=minute)


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def first_instant_at(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the clock of `zone` reads `wall` or later.

    An ordinary wall time happens once; a repeated one (clocks go back) the first time; a skipped
    one (clocks go forward) at the jump.

    >>> london = ZoneInfo("Europe/London")
    >>> first_instant_at(datetime(2026, 3, 29, 1, 30), london)   # skipped: 01:00 GMT -> 02:00 BST
    datetime.datetime(2026, 3, 29, 1, 0, tzinfo=datetime.timezone.utc)
    >>> first_instant_at(datetime(2026, 10, 25, 1, 30), london)  # repeated: the BST reading
    datetime.datetime(2026, 10, 25, 0, 30, tzinfo=datetime.timezone.utc)
    """
    readings = sorted(
        (wall.replace(tzinfo=zone, fold=0).astimezone(UTC), wall.replace(tzinfo=zone, fold=1).astimezone(UTC))
    )
    for reading in readings:
        if _local(reading, zone) == wall:
            return reading
    # Skipped: the clock reads less than `wall` at the earlier reading and more at the later
    # one, with one jump between. Halve the range to the second (zones change on whole seconds).
    before, after = readings
    while after - before > timedelta(seconds=1):
        middle = before + timedelta(seconds=int((after - before).total_seconds()) // 2)
        if _local(middle, zone) >= wall:
            after = middle
        else:
            before = middle
    return after


def _after_freezes(freezes: Sequence[Freeze], at: datetime) -> datetime:
    """The first instant at or after `at` that no freeze covers.

    One pass in order of start is enough: moving forward never lands in a freeze that starts
    earlier than the one just left, unless that freeze also covered the earlier instant.
    """
    for freeze in sorted(freezes, key=lambda f: f.start):
        if freeze.covers(at):
            at = freeze.end.astimezone(UTC)
    return at


def _next_window_instant(windows: Sequence[WeeklyWindow], at: datetime) -> datetime | None:
    """The first instant at or after `at` inside a window, looking a week ahead; None if no
    window opens in that week."""
    candidates = [
        max(opens, at) for window in windows for opens, closes in window.occurrences(at) if closes > at
    ]
    return min(candidates, default=None)
