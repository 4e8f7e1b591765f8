"""Human-readable numbers that never repeat: ``CS-2026-004213``.

One row per prefix and year holds the last number given; taking the next one locks that row, so
two processes never get the same number. Numbers are not reused when a transaction rolls back
after taking one; a gap is harmless, a duplicate is not.
"""

from django.db import IntegrityError, transaction
from django.db.models import F

from . import clock
from .models import NumberSequence

DIGITS = 6


def next_number(prefix: str, year: int | None = None) -> str:
    year = year or clock.today().year
    with transaction.atomic():
        updated = NumberSequence.objects.filter(prefix=prefix, year=year).update(last=F("last") + 1)
        if not updated:
            try:
                with transaction.atomic():
                    NumberSequence.objects.create(prefix=prefix, year=year, last=1)
            except IntegrityError:
                # Another process created the row first; take the next number from it.
                NumberSequence.objects.filter(prefix=prefix, year=year).update(last=F("last") + 1)
        last = NumberSequence.objects.get(prefix=prefix, year=year).last
    return f"{prefix}-{year}-{last:0{DIGITS}d}"
