"""Business-hours arithmetic: working hours only, on business days only (Korean holidays)."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from trellis.core.calendar import add_business_hours, add_days

SEOUL = ZoneInfo("Asia/Seoul")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SEOUL)


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        # Within one day.
        (at(2026, 3, 3, 10, 0), 3, at(2026, 3, 3, 13, 0)),
        # Ending exactly at closing time ends then.
        (at(2026, 3, 3, 10, 0), 8, at(2026, 3, 3, 18, 0)),
        # Friday 17:00 before the holiday Monday 25 May 2026: one hour on Friday, seven on
        # Tuesday.
        (at(2026, 5, 22, 17, 0), 8, at(2026, 5, 26, 16, 0)),
        # From a Saturday evening, counting starts on Monday morning.
        (at(2026, 3, 7, 20, 0), 2, at(2026, 3, 9, 11, 0)),
        # Before opening, counting starts at opening.
        (at(2026, 3, 3, 6, 30), 1, at(2026, 3, 3, 10, 0)),
        # After closing, the next business day; the holiday Monday 2 March is skipped.
        (at(2026, 2, 27, 19, 0), 9, at(2026, 3, 3, 18, 0)),
        # Many days: 27 hours are three days of nine.
        (at(2026, 3, 3, 9, 0), 27, at(2026, 3, 5, 18, 0)),
    ],
)
def test_business_hours_skip_nights_weekends_and_holidays(start, hours, expected):
    assert add_business_hours(start, hours) == expected


def test_working_hours_come_from_settings(settings):
    settings.TRELLIS = {**settings.TRELLIS, "BUSINESS_HOURS": ("08:30", "17:30")}
    assert add_business_hours(at(2026, 3, 3, 17, 0), 1) == at(2026, 3, 4, 9, 0)


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # Three business days before Friday 13 March 2026 is Tuesday the 10th.
        (dt.datetime(2026, 3, 13, 9, 0), -3, dt.datetime(2026, 3, 10, 9, 0)),
        # One business day before Tuesday 3 March 2026 skips the holiday Monday (substitute
        # holiday for 1 March) and the weekend: Friday 27 February.
        (dt.datetime(2026, 3, 3, 9, 0), -1, dt.datetime(2026, 2, 27, 9, 0)),
        # From a Saturday, minus one is the Friday, plus one the Monday.
        (dt.datetime(2026, 3, 7, 14, 0), -1, dt.datetime(2026, 3, 6, 14, 0)),
        (dt.datetime(2026, 3, 7, 14, 0), 1, dt.datetime(2026, 3, 9, 14, 0)),
    ],
)
def test_business_days_count_back_as_well_as_forward(start, days, expected):
    got = add_days(start.replace(tzinfo=SEOUL), days, business=True)
    assert got == expected.replace(tzinfo=SEOUL)
