"""The business calendar: working days are Monday to Friday, public holidays excepted.

Holidays are those of ``TRELLIS["HOLIDAY_COUNTRY"]`` (Korea unless set), from the ``holidays``
package. Local days are the server's time zone (TIME_ZONE), whoever's request leads here.
"""

import datetime as dt
from functools import lru_cache

import holidays
from django.conf import settings
from django.utils import timezone


@lru_cache(maxsize=4)
def _holidays(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


def is_business_day(day: dt.date) -> bool:
    country = settings.TRELLIS.get("HOLIDAY_COUNTRY", "KR")
    return day.weekday() < 5 and day not in _holidays(country)


def add_days(start: dt.datetime, days: int, *, business: bool = False) -> dt.datetime:
    """``days`` days after ``start`` (before it when negative); business days skip weekends and
    public holidays and keep the local time of day (from a Saturday, one business day is the
    Monday, and minus one the Friday)."""
    if not business:
        return start + dt.timedelta(days=days)
    zone = timezone.get_default_timezone()
    local = timezone.localtime(start, zone)
    day = local.date()
    step = dt.timedelta(days=1 if days >= 0 else -1)
    remaining = abs(days)
    while remaining > 0:
        day += step
        if is_business_day(day):
            remaining -= 1
    return timezone.make_aware(dt.datetime.combine(day, local.time()), zone)


def working_hours() -> tuple[dt.time, dt.time]:
    """The start and end of a business day, from ``TRELLIS["BUSINESS_HOURS"]`` ("HH:MM")."""
    start, end = settings.TRELLIS.get("BUSINESS_HOURS", ("09:00", "18:00"))
    return dt.time.fromisoformat(start), dt.time.fromisoformat(end)


def add_business_hours(start: dt.datetime, hours: float) -> dt.datetime:
    """The moment ``hours`` of working time after ``start``: only business days count, and on
    them only the working hours. From outside working hours, counting starts at the next
    opening; a span that ends exactly at closing time ends then, not the next morning."""
    zone = timezone.get_default_timezone()
    opens, closes = working_hours()
    local = timezone.localtime(start, zone)
    day, at = local.date(), local.time().replace(tzinfo=None)
    remaining = dt.timedelta(hours=hours)
    while True:
        if not is_business_day(day) or at >= closes:
            day, at = _next_business_day(day), opens
            continue
        at = max(at, opens)
        here = dt.datetime.combine(day, at)
        left_today = dt.datetime.combine(day, closes) - here
        if remaining <= left_today:
            return timezone.make_aware(here + remaining, zone)
        remaining -= left_today
        day, at = _next_business_day(day), opens


def _next_business_day(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while not is_business_day(day):
        day += dt.timedelta(days=1)
    return day
