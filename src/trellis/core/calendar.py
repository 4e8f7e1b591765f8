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
    """``days`` days after ``start``; business days skip weekends and public holidays and keep
    the local time of day (from a Saturday, one business day is the Monday)."""
    if not business:
        return start + dt.timedelta(days=days)
    zone = timezone.get_default_timezone()
    local = timezone.localtime(start, zone)
    day = local.date()
    remaining = days
    while remaining > 0:
        day += dt.timedelta(days=1)
        if is_business_day(day):
            remaining -= 1
    return timezone.make_aware(dt.datetime.combine(day, local.time()), zone)
