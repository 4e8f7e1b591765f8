"""Fixed-window rate limits kept in the database, so every web and mail process counts together.

``hit(key, limit, window)`` counts one attempt and says whether it is still within the limit.
Old windows are deleted by the sweep.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

from . import clock, counters, sweep
from .models import RateCounter


def hit(key: str, limit: int, window_seconds: int) -> bool:
    """Count one attempt on ``key``; ``False`` once more than ``limit`` fell in this window."""
    return hit_many([key], limit, window_seconds)[0]


def hit_many(keys: list[str], limit: int, window_seconds: int) -> list[bool]:
    """``hit`` for each of ``keys`` in turn (a key may come more than once), in one statement;
    whether each attempt is within the limit."""
    if not keys:
        return []
    seconds = int(clock.now().timestamp())
    start = datetime.fromtimestamp(seconds - seconds % window_seconds, tz=UTC)
    stored = [key[:200] for key in keys]
    attempts = Counter(stored)
    totals = counters.increment_many(RateCounter, "hits", "key", attempts, window_start=start)
    # The attempts on a key here are the last ``attempts[key]`` of its total, in the order of
    # ``keys``.
    seen: Counter[str] = Counter()
    within = []
    for key in stored:
        seen[key] += 1
        within.append(totals[key] - attempts[key] + seen[key] <= limit)
    return within


def forget_old(max_age_seconds: int = 24 * 3600) -> int:
    """Delete windows older than a day; no limit here spans longer."""
    cutoff = clock.now() - timedelta(seconds=max_age_seconds)
    deleted, _ = RateCounter.objects.filter(window_start__lt=cutoff).delete()
    return deleted


sweep.register("rate-counters", forget_old)
