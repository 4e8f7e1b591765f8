"""The timer sweep: one loop that asks each registered sweeper to fire what is due.

Apps register a function that finds due rows (by an indexed due time), fires them and marks them
done in one transaction, so two sweeps at once, or a sweep killed half-way, fire nothing twice.

Every loop starts its passes on the interval's boundaries of the clock (every 30 seconds: at :00
and :30), so the loops of all workers, on any machine, sweep at the same moments and share what
fell due between them: each takes the rows no other holds (``SKIP LOCKED``).
"""

import logging
import time
from collections.abc import Callable

from django.db import close_old_connections

log = logging.getLogger(__name__)

Sweeper = Callable[[], int]
_sweepers: dict[str, Sweeper] = {}


def register(name: str, sweeper: Sweeper) -> None:
    _sweepers[name] = sweeper


def sweep_once() -> dict[str, int]:
    """Run every sweeper once; return how many items each one fired."""
    fired = {}
    for name, sweeper in _sweepers.items():
        try:
            fired[name] = sweeper()
        except Exception:
            log.exception("sweeper %s failed; it will be retried on the next sweep", name)
            fired[name] = 0
    return fired


def seconds_to_next_pass(now: float, interval: float) -> float:
    """From ``now`` (seconds since the epoch) to the next boundary of ``interval``."""
    return interval - now % interval


def sweep_forever(interval: float) -> None:
    while True:
        close_old_connections()
        sweep_once()
        time.sleep(seconds_to_next_pass(time.time(), interval))
