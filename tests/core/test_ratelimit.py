from datetime import timedelta

import time_machine
from django.utils import timezone

from trellis.core import ratelimit
from trellis.core.models import RateCounter


def test_the_limit_holds_within_a_window_and_resets_in_the_next(db):
    with time_machine.travel(timezone.now().replace(second=5), tick=False) as clock:
        assert [ratelimit.hit("ip:10.0.0.1", 3, 60) for _ in range(5)] == [
            True,
            True,
            True,
            False,
            False,
        ]
        # Another key has its own count.
        assert ratelimit.hit("ip:10.0.0.2", 3, 60)
        clock.shift(timedelta(seconds=60))
        assert ratelimit.hit("ip:10.0.0.1", 3, 60)
    assert RateCounter.objects.filter(key="ip:10.0.0.1").count() == 2


def test_old_windows_are_forgotten(db):
    with time_machine.travel(timezone.now() - timedelta(days=2), tick=False):
        ratelimit.hit("sender:a@example.com", 10, 600)
    ratelimit.hit("sender:a@example.com", 10, 600)
    assert ratelimit.forget_old() == 1
    assert RateCounter.objects.count() == 1


def test_hits_counted_together_are_judged_as_one_after_the_other(db):
    with time_machine.travel(timezone.now().replace(second=5), tick=False):
        assert ratelimit.hit("ip:10.0.0.1", 3, 60)
        keys = ["ip:10.0.0.1", "ip:10.0.0.2", "ip:10.0.0.1", "ip:10.0.0.1", "ip:10.0.0.2"]

        assert ratelimit.hit_many(keys, 3, 60) == [True, True, True, False, True]
        assert ratelimit.hit_many([], 3, 60) == []
        assert not ratelimit.hit("ip:10.0.0.1", 3, 60)
    assert dict(RateCounter.objects.values_list("key", "hits")) == {
        "ip:10.0.0.1": 5,
        "ip:10.0.0.2": 2,
    }
