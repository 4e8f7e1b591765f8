"""Human-readable numbers that never repeat: ``CS-2026-004213``.

One row per prefix and year holds the last number given; taking the next one is a single upsert
that locks that row until the caller's transaction ends, so two processes never get the same
number, and a transaction that rolls back gives its number back. Take the number late in a
transaction: until it commits, everyone else who needs one waits.
"""

from . import clock, counters
from .models import NumberSequence

DIGITS = 6


def next_number(prefix: str, year: int | None = None) -> str:
    year = year or clock.today().year
    last = counters.increment(NumberSequence, "last", prefix=prefix, year=year)
    return f"{prefix}-{year}-{last:0{DIGITS}d}"
