import threading

import pytest
from django.db import connection, transaction

from trellis.core import numbering
from trellis.core.models import NumberSequence

from ..concurrency import OwnConnections

pytestmark = pytest.mark.django_db


def test_numbers_count_up_per_prefix_and_year():
    first = numbering.next_number("TS", 2031)
    second = numbering.next_number("TS", 2031)
    other_year = numbering.next_number("TS", 2032)

    assert first == "TS-2031-000001"
    assert second == "TS-2031-000002"
    assert other_year == "TS-2032-000001"


def test_a_year_already_counted_goes_on_after_its_last_number():
    NumberSequence.objects.create(prefix="TC", year=2031, last=41)

    assert numbering.next_number("TC", 2031) == "TC-2031-000042"


@pytest.mark.parametrize("prefix", ["", "cs", "C1", "CS; DROP TABLE x", "ABCDEFGHIJK"])
def test_a_prefix_that_is_not_capital_letters_is_refused(prefix):
    with pytest.raises(ValueError):
        numbering.next_number(prefix, 2031)


def test_a_rolled_back_number_is_never_given_twice():
    numbering.next_number("TR", 2031)
    with pytest.raises(RuntimeError), transaction.atomic():
        taken = numbering.next_number("TR", 2031)
        raise RuntimeError("the case could not be saved")

    again = numbering.next_number("TR", 2031)
    # SQLite gives the number back; PostgreSQL's sequence leaves a gap. Never the same twice
    # once committed, and never lower.
    assert again >= taken
    assert (again == taken) == (connection.vendor == "sqlite")


def test_numbers_taken_at_once_are_all_different(transactional_db):
    start = threading.Barrier(4, timeout=30)

    def take_five():
        start.wait()
        numbers = []
        for _ in range(5):
            with transaction.atomic():
                numbers.append(numbering.next_number("TP", 2031))
        return numbers

    outcomes = OwnConnections().run(*[take_five] * 4)

    numbers = [n for outcome in outcomes for n in outcome]
    assert len(set(numbers)) == 20, outcomes
    assert sorted(numbers) == [f"TP-2031-{n:06d}" for n in range(1, 21)]


def test_numbers_taken_together_are_consecutive_and_follow_the_last_one():
    assert numbering.next_number("TM", 2031) == "TM-2031-000001"

    assert numbering.next_numbers("TM", 3, 2031) == [
        "TM-2031-000002",
        "TM-2031-000003",
        "TM-2031-000004",
    ]
    assert numbering.next_numbers("TM", 0, 2031) == []
    assert numbering.next_number("TM", 2031) == "TM-2031-000005"


def test_numbers_taken_together_on_first_use_go_on_after_what_was_counted():
    NumberSequence.objects.create(prefix="TF", year=2031, last=9)

    assert numbering.next_numbers("TF", 2, 2031) == ["TF-2031-000010", "TF-2031-000011"]
