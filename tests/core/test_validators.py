from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from trellis.core.money import validate_amount
from trellis.core.validators import (
    normalize_business_registration_number,
    normalize_email,
    normalize_phone,
    search_key,
    search_query,
)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("02-2255-0114", "+82222550114"),
        ("010 1234 5678", "+821012345678"),
        ("+82 10-1234-5678", "+821012345678"),
        ("+1 650-253-0000", "+16502530000"),
    ],
)
def test_phone_numbers_are_stored_in_one_form(typed, stored):
    assert normalize_phone(typed) == stored


@pytest.mark.parametrize("typed", ["abc", "123", "010-1234", "+999 1234"])
def test_invalid_phone_numbers_are_refused(typed):
    with pytest.raises(ValidationError):
        normalize_phone(typed)


def test_email_domain_is_lower_cased_but_local_part_kept():
    assert normalize_email("  Kim.MJ@Example.COM ") == "Kim.MJ@example.com"
    with pytest.raises(ValidationError):
        normalize_email("kim@")


@pytest.mark.parametrize("typed", ["124-81-00998", "1248100998", "124 81 00998"])
def test_valid_business_registration_numbers(typed):
    assert normalize_business_registration_number(typed) == "124-81-00998"


@pytest.mark.parametrize("typed", ["124-81-00997", "12481009", "abc-de-fghij"])
def test_invalid_business_registration_numbers(typed):
    with pytest.raises(ValidationError):
        normalize_business_registration_number(typed)


@given(st.integers(min_value=0, max_value=999_999_999))
def test_exactly_one_check_digit_is_valid_for_every_nine_digits(prefix):
    digits = f"{prefix:09d}"
    valid = []
    for check in range(10):
        try:
            normalize_business_registration_number(digits + str(check))
            valid.append(check)
        except ValidationError:
            pass
    assert len(valid) == 1


def test_krw_has_no_minor_unit_but_usd_has_cents():
    validate_amount(Decimal("1500"), "KRW")
    validate_amount(Decimal("15.25"), "USD")
    with pytest.raises(ValidationError):
        validate_amount(Decimal("1500.5"), "KRW")
    with pytest.raises(ValidationError):
        validate_amount(Decimal("15.255"), "USD")
    with pytest.raises(ValidationError):
        validate_amount(Decimal("-1"), "USD")
    with pytest.raises(ValidationError):
        validate_amount(Decimal("1"), "XYZ")


def test_a_phone_number_is_found_however_it_is_typed():
    key = search_key("한빛상사", "+82222550114")
    for typed in ["02-2255-0114", "2255-0114", "0222550114", "+82 2 2255 0114"]:
        assert search_query(typed) in key
    assert search_query("한빛") in key


@pytest.mark.parametrize(
    ("first", "last", "full"),
    [("서연", "최", "최서연"), ("Tom", "Baker", "Tom Baker"), ("Minji", "김", "Minji 김")],
)
def test_korean_names_are_written_family_name_first(first, last, full):
    from trellis.core.models import User

    assert User(first_name=first, last_name=last).get_full_name() == full
