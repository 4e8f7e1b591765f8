"""Bounded pages with a stable order, for every list in the UI and the API."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

# Past this offset a list asks for narrower filters instead of scanning ever deeper.
MAX_OFFSET = 10_000


@dataclass
class Page:
    items: list[Any]
    number: int
    size: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def clamp_page_size(size: int | None) -> int:
    limits = settings.TRELLIS
    if not size or size < 1:
        return limits["DEFAULT_PAGE_SIZE"]
    return min(size, limits["MAX_PAGE_SIZE"])


def paginate(queryset: QuerySet, number: int | None, size: int | None) -> Page:
    """One page of an ordered queryset, without counting the whole table.

    Fetching one row more than the page tells whether a next page exists, so a page costs the
    same on ten thousand rows as on a million.
    """
    size = clamp_page_size(size)
    number = max(number or 1, 1)
    offset = (number - 1) * size
    if offset > MAX_OFFSET:
        return Page(items=[], number=number, size=size, has_next=False)
    rows = list(queryset[offset : offset + size + 1])
    return Page(items=rows[:size], number=number, size=size, has_next=len(rows) > size)
