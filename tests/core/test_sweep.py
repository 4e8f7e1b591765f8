"""The sweep loop's timing: every loop sweeps at the same moments of the clock."""

import pytest

from trellis.core.sweep import seconds_to_next_pass


@pytest.mark.parametrize(
    ("now", "wait"),
    [
        (1_800_000_000.0, 30.0),  # on a boundary: the next one
        (1_800_000_001.5, 28.5),
        (1_800_000_029.9, 0.1),
        (1_800_000_047.0, 13.0),
    ],
)
def test_a_pass_starts_on_the_next_boundary_of_the_interval(now, wait):
    assert seconds_to_next_pass(now, 30) == pytest.approx(wait)


def test_loops_that_finish_at_different_times_meet_at_the_same_moment():
    # One loop's pass took 2 seconds, another's 11: both start their next pass at :30.
    first, second = 1_800_000_000.0 + 2, 1_800_000_000.0 + 11
    assert first + seconds_to_next_pass(first, 30) == second + seconds_to_next_pass(second, 30)
