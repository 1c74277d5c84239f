"""Deploy windows and freezes (shared/domain/windows.py) and their place in the pipeline file."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from releasectl.windows import deploy_window_line, deploy_window_status
from shared.config import ConfigError, parse_pipeline_config
from shared.domain.windows import (
    ALWAYS_OPEN,
    DeployPolicy,
    Freeze,
    InvalidPolicy,
    WeeklyWindow,
    is_open,
    next_opening,
    waiting_note,
)
from tests.unit.test_config import VALID

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
LONDON = "Europe/London"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(days: set[int], start: str, end: str, zone: str = LONDON) -> WeeklyWindow:
    def minutes(text: str) -> int:
        hours, mins = text.split(":")
        return int(hours) * 60 + int(mins)

    return WeeklyWindow(frozenset(days), minutes(start), minutes(end), zone)


WORKING_HOURS = window({MON, TUE, WED, THU}, "09:00", "16:00")
"""Mon-Thu 09:00-16:00 on the London clock."""


def policy(*windows: WeeklyWindow, freezes: tuple[Freeze, ...] = ()) -> DeployPolicy:
    return DeployPolicy(windows=windows, freezes=freezes)


# ---- is_open ------------------------------------------------------------------------------


def test_no_windows_and_no_freezes_is_always_open() -> None:
    for hour in range(0, 24 * 7, 5):
        at = utc(2026, 3, 23) + timedelta(hours=hour)
        assert is_open(ALWAYS_OPEN, at)
        assert next_opening(ALWAYS_OPEN, at) == at


def test_a_window_includes_its_start_and_excludes_its_end() -> None:
    london = policy(WORKING_HOURS)
    assert not is_open(london, utc(2026, 12, 1, 8, 59, 59))
    assert is_open(london, utc(2026, 12, 1, 9, 0))
    assert is_open(london, utc(2026, 12, 1, 15, 59, 59))
    assert not is_open(london, utc(2026, 12, 1, 16, 0))


def test_windows_follow_the_local_clock_across_daylight_saving() -> None:
    london = policy(WORKING_HOURS)
    # In summer (BST, UTC+1) 09:00 London is 08:00 UTC.
    assert is_open(london, utc(2026, 7, 6, 8, 0))
    assert not is_open(london, utc(2026, 7, 6, 15, 0))
    # The Monday after the clocks go forward (29 March 2026) and after they go back (25 October).
    assert next_opening(london, utc(2026, 3, 29, 12, 0)) == utc(2026, 3, 30, 8, 0)
    assert next_opening(london, utc(2026, 10, 25, 12, 0)) == utc(2026, 10, 26, 9, 0)


def test_a_window_whose_start_the_clocks_skip_opens_at_the_jump() -> None:
    # On 29 March 2026 London goes from 01:00 GMT straight to 02:00 BST: 01:30 never happens.
    night = policy(window({SUN}, "01:30", "03:00"))
    assert next_opening(night, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert not is_open(night, utc(2026, 3, 29, 0, 59))
    assert is_open(night, utc(2026, 3, 29, 1, 0))  # 02:00 BST
    assert not is_open(night, utc(2026, 3, 29, 2, 0))  # 03:00 BST


def test_a_window_inside_the_skipped_hour_does_not_happen_that_day() -> None:
    skipped = policy(window({SUN}, "01:15", "01:45"))
    assert next_opening(skipped, utc(2026, 3, 28, 12, 0)) == utc(2026, 4, 5, 0, 15)  # next Sunday, BST


def test_a_window_ending_in_the_repeated_hour_closes_at_its_first_reading() -> None:
    # On 25 October 2026 London reads 01:00-02:00 twice (BST, then GMT).
    early = policy(window({SUN}, "00:30", "01:30"))
    assert is_open(early, utc(2026, 10, 24, 23, 30))  # 00:30 BST
    assert is_open(early, utc(2026, 10, 25, 0, 29))  # 01:29 BST
    assert not is_open(early, utc(2026, 10, 25, 0, 30))  # 01:30 BST
    assert not is_open(early, utc(2026, 10, 25, 1, 0))  # 01:00 GMT, the second reading


def test_a_window_across_midnight_belongs_to_the_day_it_opens() -> None:
    night = policy(window({FRI}, "22:00", "02:00", NEW_YORK))
    # Friday 4 December 2026, 22:00 EST is Saturday 03:00 UTC; it closes Saturday 02:00 EST.
    assert not is_open(night, utc(2026, 12, 5, 2, 59))
    assert is_open(night, utc(2026, 12, 5, 3, 0))
    assert is_open(night, utc(2026, 12, 5, 6, 59))
    assert not is_open(night, utc(2026, 12, 5, 7, 0))
    # Not on the Saturday night: the window opens on Fridays only.
    assert not is_open(night, utc(2026, 12, 6, 4, 0))
    assert next_opening(night, utc(2026, 12, 5, 7, 0)) == utc(2026, 12, 12, 3, 0)


def test_a_window_may_end_at_midnight() -> None:
    evening = policy(window({WED}, "20:00", "24:00", "UTC"))
    assert is_open(evening, utc(2026, 12, 2, 23, 59, 59))
    assert not is_open(evening, utc(2026, 12, 3, 0, 0))


def test_several_windows_in_different_zones_open_at_the_earliest() -> None:
    two = policy(WORKING_HOURS, window({FRI}, "09:00", "12:00", NEW_YORK))
    # Thursday 16:00 London: the next is Friday 09:00 New York (14:00 UTC), before Monday London.
    assert next_opening(two, utc(2026, 12, 3, 16, 0)) == utc(2026, 12, 4, 14, 0)


# ---- freezes ------------------------------------------------------------------------------

YEAR_END = Freeze(utc(2026, 12, 20), utc(2027, 1, 4), "year-end")


def test_a_freeze_closes_an_environment_without_windows_until_it_ends() -> None:
    frozen = policy(freezes=(YEAR_END,))
    assert is_open(frozen, utc(2026, 12, 19, 23, 59, 59))
    assert not is_open(frozen, utc(2026, 12, 20))
    assert next_opening(frozen, utc(2026, 12, 25, 12)) == utc(2027, 1, 4)
    assert is_open(frozen, utc(2027, 1, 4))


def test_a_freeze_inside_a_window_closes_it_and_the_window_reopens_when_it_ends() -> None:
    lunch = Freeze(utc(2026, 12, 1, 12, 0), utc(2026, 12, 1, 13, 30), "incident review")
    london = policy(WORKING_HOURS, freezes=(lunch,))
    assert is_open(london, utc(2026, 12, 1, 11, 59))
    assert not is_open(london, utc(2026, 12, 1, 12, 0))
    assert next_opening(london, utc(2026, 12, 1, 12, 0)) == utc(2026, 12, 1, 13, 30)


def test_a_freeze_ending_outside_the_windows_waits_for_the_next_window() -> None:
    # The freeze ends Monday 4 January 2027 00:00 UTC; the next window opens at 09:00 that day.
    london = policy(WORKING_HOURS, freezes=(YEAR_END,))
    assert next_opening(london, utc(2026, 12, 21, 10)) == utc(2027, 1, 4, 9, 0)


def test_a_freeze_ending_in_the_middle_of_a_window_opens_at_its_end() -> None:
    freeze = Freeze(utc(2026, 12, 20), utc(2027, 1, 5, 11, 15))
    london = policy(WORKING_HOURS, freezes=(freeze,))
    assert next_opening(london, utc(2026, 12, 21, 10)) == utc(2027, 1, 5, 11, 15)


def test_overlapping_and_back_to_back_freezes_count_as_one() -> None:
    freezes = (
        Freeze(utc(2026, 12, 1), utc(2026, 12, 3)),
        Freeze(utc(2026, 12, 2), utc(2026, 12, 5)),
        Freeze(utc(2026, 12, 5), utc(2026, 12, 6)),
    )
    assert next_opening(policy(freezes=freezes), utc(2026, 12, 1, 1)) == utc(2026, 12, 6)
    # Listed in any order.
    assert next_opening(policy(freezes=freezes[::-1]), utc(2026, 12, 1, 1)) == utc(2026, 12, 6)


def test_no_window_ever_open_gives_none() -> None:
    forever = Freeze(utc(2026, 1, 1), utc(2040, 1, 1), "moratorium")
    assert next_opening(policy(WORKING_HOURS, freezes=(forever,)), utc(2026, 6, 1)) is None
    assert next_opening(policy(freezes=(forever,)), utc(2026, 6, 1)) is None


def test_the_next_opening_is_open_and_nothing_before_it_is() -> None:
    """A brute-force cross-check, minute by minute, over two weeks around a clock change."""
    subject = policy(
        WORKING_HOURS,
        window({SAT}, "23:30", "01:45", LONDON),
        freezes=(Freeze(utc(2026, 3, 30, 10, 0), utc(2026, 3, 31, 9, 30)),),
    )
    start = utc(2026, 3, 26, 0, 0)
    minutes = [start + timedelta(minutes=m) for m in range(14 * 24 * 60)]
    states = [is_open(subject, at) for at in minutes]
    # From the first ten days: each has an opening within the four days that follow.
    for index in range(0, 10 * 24 * 60, 37):
        opening = next_opening(subject, minutes[index])
        assert opening is not None
        expected = next(minutes[j] for j in range(index, len(minutes)) if states[j])
        assert opening == expected, minutes[index]


def test_instants_without_a_time_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        is_open(ALWAYS_OPEN, datetime(2026, 1, 1))


# ---- the history line --------------------------------------------------------------------


def test_the_waiting_note_says_why_and_until_when_in_utc_and_local_time() -> None:
    london = policy(WORKING_HOURS, freezes=(YEAR_END,))
    assert waiting_note(london, utc(2026, 12, 21, 10)) == (
        "deploy freeze (year-end): waiting until 2027-01-04T09:00:00Z (Mon 2027-01-04 09:00 GMT, Europe/London)"
    )
    assert waiting_note(policy(WORKING_HOURS), utc(2026, 7, 3, 12)) == (
        "outside the deploy windows: waiting until 2026-07-06T08:00:00Z (Mon 2026-07-06 09:00 BST, Europe/London)"
    )
    forever = Freeze(utc(2026, 1, 1), utc(2040, 1, 1))
    assert "no deploy window opens" in waiting_note(policy(freezes=(forever,)), utc(2026, 6, 1))


# ---- values refuse nonsense --------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeeklyWindow(frozenset(), 0, 60, LONDON), "days"),
        (lambda: WeeklyWindow(frozenset({7}), 0, 60, LONDON), "days"),
        (lambda: WeeklyWindow(frozenset({MON}), 60, 60, LONDON), "equal"),
        (lambda: WeeklyWindow(frozenset({MON}), 0, 60, "Europe/Nowhere"), "time_zone"),
        (lambda: Freeze(utc(2026, 1, 2), utc(2026, 1, 1)), "after start"),
        (lambda: Freeze(datetime(2026, 1, 1), datetime(2026, 1, 2)), "offset"),
    ],
)
def test_invalid_windows_and_freezes_are_refused(make: Any, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        make()


# ---- the pipeline file -------------------------------------------------------------------


def staging_with(**keys: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document["apps"]["hello"]["environments"]["staging"].update(keys)
    return document


def test_the_pipeline_file_declares_windows_and_freezes_per_environment() -> None:
    document = tomllib.loads(
        """
        [apps.hello.environments.staging]
        base_instance_template = "hello-staging-base"
        health_check = "hello-staging-hc"
        backend_service = "hello-staging-backend"
        deploy_windows = [
          { days = ["mon", "tue", "wed", "thu"], start = "09:00", end = "16:00", time_zone = "Europe/London" },
          { days = ["fri"], start = "22:00", end = "02:00", time_zone = "America/New_York" },
        ]
        freezes = [
          { start = "2026-12-20T00:00:00Z", end = "2027-01-04T00:00:00Z", reason = "year-end" },
          { start = 2027-03-01T09:00:00+01:00, end = 2027-03-01T12:00:00+01:00 },
        ]
        """
    )
    staging = parse_pipeline_config(document).environment("hello", "staging")
    assert staging is not None
    assert staging.deploy_windows == (
        WORKING_HOURS,
        window({FRI}, "22:00", "02:00", NEW_YORK),
    )
    assert staging.freezes == (
        YEAR_END,
        Freeze(utc(2027, 3, 1, 8, 0), utc(2027, 3, 1, 11, 0)),
    )
    assert staging.deploy_policy.restricts


def test_an_environment_without_windows_or_freezes_is_always_open() -> None:
    staging = parse_pipeline_config(VALID).environment("hello", "staging")
    assert staging is not None
    assert staging.deploy_policy == ALWAYS_OPEN
    assert not staging.deploy_policy.restricts


def test_app_defaults_may_declare_a_freeze_for_every_environment() -> None:
    document = copy.deepcopy(VALID)
    document["apps"]["hello"]["defaults"]["freezes"] = [
        {"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "year-end"}
    ]
    staging = parse_pipeline_config(document).environment("hello", "staging")
    assert staging is not None
    assert staging.freezes == (YEAR_END,)


GOOD_WINDOW = {"days": ["mon"], "start": "09:00", "end": "16:00", "time_zone": LONDON}
GOOD_FREEZE = {"start": "2026-12-20T00:00:00Z", "end": "2027-01-04T00:00:00Z"}


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"deploy_windows": {"days": ["mon"]}}, "staging.deploy_windows: expected list"),
        ({"deploy_windows": ["mon"]}, "deploy_windows[0]: expected dict"),
        ({"deploy_windows": [{**GOOD_WINDOW, "zone": "UTC"}]}, "deploy_windows[0].zone: unknown key"),
        (
            {"deploy_windows": [{k: v for k, v in GOOD_WINDOW.items() if k != "time_zone"}]},
            "[0].time_zone: required",
        ),
        ({"deploy_windows": [{**GOOD_WINDOW, "days": []}]}, "[0].days: at least one day"),
        ({"deploy_windows": [{**GOOD_WINDOW, "days": ["monday"]}]}, "[0].days: 'monday' is not one of"),
        ({"deploy_windows": [{**GOOD_WINDOW, "days": ["mon", "mon"]}]}, "[0].days: 'mon' is listed twice"),
        ({"deploy_windows": [{**GOOD_WINDOW, "days": [1]}]}, "[0].days[0]: expected str"),
        ({"deploy_windows": [{**GOOD_WINDOW, "start": "9:00"}]}, "[0].start: '9:00' is not a 24-hour time"),
        ({"deploy_windows": [{**GOOD_WINDOW, "start": "09:00\n"}]}, "[0].start:"),
        ({"deploy_windows": [{**GOOD_WINDOW, "start": "24:00"}]}, "[0].start:"),
        ({"deploy_windows": [{**GOOD_WINDOW, "end": "25:00"}]}, "[0].end:"),
        ({"deploy_windows": [{**GOOD_WINDOW, "end": "09:00"}]}, "[0].start and end are equal"),
        ({"deploy_windows": [{**GOOD_WINDOW, "time_zone": "London"}]}, "[0].time_zone: 'London' is not"),
        ({"deploy_windows": [{**GOOD_WINDOW, "time_zone": "../etc/passwd"}]}, "[0].time_zone:"),
        ({"freezes": [{"start": GOOD_FREEZE["start"]}]}, "freezes[0].end: required"),
        ({"freezes": [{**GOOD_FREEZE, "why": "x"}]}, "freezes[0].why: unknown key"),
        (
            {"freezes": [{**GOOD_FREEZE, "end": "2027-01-04"}]},
            "freezes[0].end: '2027-01-04' is not an RFC 3339",
        ),
        ({"freezes": [{**GOOD_FREEZE, "end": "2027-01-04T00:00:00"}]}, "freezes[0].end: "),
        ({"freezes": [{**GOOD_FREEZE, "end": "2027-13-04T00:00:00Z"}]}, "freezes[0].end: "),
        (
            {"freezes": [{**GOOD_FREEZE, "end": datetime(2027, 1, 4)}]},
            "freezes[0].end: 2027-01-04T00:00:00 has no",
        ),
        ({"freezes": [{**GOOD_FREEZE, "end": GOOD_FREEZE["start"]}]}, "freezes[0].end: must be after start"),
        ({"freezes": [{**GOOD_FREEZE, "reason": 3}]}, "freezes[0].reason: expected str"),
    ],
)
def test_bad_windows_and_freezes_are_refused_naming_the_key(keys: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_pipeline_config(staging_with(**keys))
    assert "apps.hello.environments.staging." in str(raised.value)
    assert named in str(raised.value)


# ---- releasectl status ---------------------------------------------------------------------


def test_status_says_null_when_a_deployment_could_start_now_and_when_the_next_window_opens() -> None:
    london = policy(WORKING_HOURS, freezes=(YEAR_END,))
    inside = utc(2026, 12, 1, 10)
    assert deploy_window_status(london, inside) == {"next_deploy_window": None, "deploy_window_open": True}
    assert deploy_window_status(ALWAYS_OPEN, inside) == {
        "next_deploy_window": None,
        "deploy_window_open": True,
    }
    assert deploy_window_status(london, utc(2026, 12, 21, 10)) == {
        "next_deploy_window": "2027-01-04T09:00:00Z",
        "deploy_window_open": False,
    }
    forever = Freeze(utc(2026, 1, 1), utc(2040, 1, 1))
    assert deploy_window_status(policy(freezes=(forever,)), inside) == {
        "next_deploy_window": None,
        "deploy_window_open": False,
    }
    # Without the pipeline file the policy is unknown: neither open nor closed.
    assert deploy_window_status(None, inside) == {"next_deploy_window": None, "deploy_window_open": None}


def test_status_for_humans_says_open_closed_or_unrestricted() -> None:
    london = policy(WORKING_HOURS, freezes=(YEAR_END,))
    assert deploy_window_line(london, utc(2026, 12, 1, 10)) == "open now"
    assert (
        deploy_window_line(ALWAYS_OPEN, utc(2026, 12, 1, 10)) == "always open (no deploy windows or freezes)"
    )
    assert deploy_window_line(london, utc(2026, 12, 21, 10)) == (
        "closed (deploy freeze (year-end)); opens 2027-01-04T09:00:00Z (Mon 2027-01-04 09:00 GMT, Europe/London)"
    )
    assert deploy_window_line(None, utc(2026, 12, 1, 10)) is None
