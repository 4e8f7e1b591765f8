"""Fixed-window rate limits kept in the database, so every web and mail process counts together.

``hit(key, limit, window)`` counts one attempt and says whether it is still within the limit.
Old windows are deleted by the sweep.
"""

from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F

from . import clock, sweep
from .models import RateCounter


def hit(key: str, limit: int, window_seconds: int) -> bool:
    """Count one attempt on ``key``; ``False`` once more than ``limit`` fell in this window."""
    seconds = int(clock.now().timestamp())
    start = datetime.fromtimestamp(seconds - seconds % window_seconds, tz=UTC)
    key = key[:200]
    with transaction.atomic():
        counters = RateCounter.objects.filter(key=key, window_start=start)
        if not counters.update(hits=F("hits") + 1):
            try:
                with transaction.atomic():
                    RateCounter.objects.create(key=key, window_start=start, hits=1)
            except IntegrityError:
                counters.update(hits=F("hits") + 1)
        hits = counters.values_list("hits", flat=True).first() or 0
    return hits <= limit


def forget_old(max_age_seconds: int = 24 * 3600) -> int:
    """Delete windows older than a day; no limit here spans longer."""
    cutoff = clock.now() - timedelta(seconds=max_age_seconds)
    deleted, _ = RateCounter.objects.filter(window_start__lt=cutoff).delete()
    return deleted


sweep.register("rate-counters", forget_old)
