"""Human-readable numbers that never repeat: ``CS-2026-004213``.

Numbers count up per prefix and year.

On PostgreSQL each prefix and year has a database sequence. ``nextval`` takes no lock that lasts
until the caller commits, so transactions that each open a case do not queue behind one
another; the price is a gap in the numbers where a transaction rolled back. The sequence is made
on first use, starting after what ``NumberSequence`` already counted for that year (numbers given
before sequences were used), under an advisory lock so that two first users do not both make it.

On SQLite one ``NumberSequence`` row per prefix and year holds the last number given, bumped by
an upsert; SQLite lets one writer in at a time anyway, and a rollback gives the number back.

``next_numbers`` takes several numbers in one statement (the mail intake numbers a batch of new
cases at once): increasing, and consecutive unless another transaction takes numbers of the
same sequence at the same moment (on PostgreSQL the two may then interleave).
"""

import re
import zlib

from django.db import connection

from . import clock, counters
from .models import NumberSequence

DIGITS = 6
_PREFIX = re.compile(r"[A-Z]{1,10}")


def next_number(prefix: str, year: int | None = None) -> str:
    return next_numbers(prefix, 1, year)[0]


def next_numbers(prefix: str, count: int, year: int | None = None) -> list[str]:
    """``count`` new numbers of ``prefix`` for ``year`` (this year by default), in increasing
    order."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"a number prefix is 1 to 10 capital letters, not {prefix!r}")
    if count < 1:
        return []
    year = year or clock.today().year
    if connection.vendor == "postgresql":
        values = _next_in_sequence(prefix, year, count)
    else:
        last = counters.increment(NumberSequence, "last", by=count, prefix=prefix, year=year)
        values = list(range(last - count + 1, last + 1))
    return [f"{prefix}-{year}-{value:0{DIGITS}d}" for value in values]


def _next_in_sequence(prefix: str, year: int, count: int) -> list[int]:
    # Only a checked prefix and an integer year are formatted into the name.
    name = f"number_{prefix.lower()}_{year:d}"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN to_regclass(%s) IS NULL THEN NULL "
            "ELSE nextval(%s::text::regclass) END FROM generate_series(1, %s)",
            [name, name, count],
        )
        values = [value for (value,) in cursor.fetchall()]
        if None not in values:
            return sorted(values)
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode())])
        counted = (
            NumberSequence.objects.filter(prefix=prefix, year=year)
            .values_list("last", flat=True)
            .first()
        )
        cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {name} START WITH {(counted or 0) + 1:d}")
        cursor.execute(
            "SELECT nextval(%s::text::regclass) FROM generate_series(1, %s)", [name, count]
        )
        return sorted(value for (value,) in cursor.fetchall())
