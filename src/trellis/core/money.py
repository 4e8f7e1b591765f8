"""Money is a Decimal with a currency; each currency has its own number of minor digits."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

# ISO 4217 minor units. KRW and JPY have none: 1,500원, never 1,500.50원.
MINOR_UNITS = {"KRW": 0, "JPY": 0, "USD": 2, "EUR": 2, "CNY": 2, "GBP": 2, "SGD": 2, "VND": 0}


class Currency(models.TextChoices):
    KRW = "KRW", _("Korean won")
    USD = "USD", _("US dollar")
    EUR = "EUR", _("Euro")
    JPY = "JPY", _("Japanese yen")
    CNY = "CNY", _("Chinese yuan")
    GBP = "GBP", _("Pound sterling")
    SGD = "SGD", _("Singapore dollar")
    VND = "VND", _("Vietnamese dong")


# Just under ten trillion: SQLite keeps decimals as 8-byte floats, exact to 15 significant
# digits, so every amount up to this one reads back as it was written on both databases.
MAX_AMOUNT = Decimal("9999999999999.99")


def validate_amount(amount: Decimal, currency: str, field: str = "amount") -> None:
    if currency not in MINOR_UNITS:
        raise ValidationError({"currency": _("Unknown currency %(c)s.") % {"c": currency}})
    if amount is None:
        return
    if amount < 0:
        raise ValidationError({field: _("An amount cannot be negative.")})
    if amount > MAX_AMOUNT:
        raise ValidationError({field: _("This amount is too large.")})
    digits = MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-digits)):
        if digits == 0:
            message = _("%(c)s has no minor unit; enter a whole amount.") % {"c": currency}
        else:
            message = _("%(c)s allows at most %(n)d decimal places.") % {"c": currency, "n": digits}
        raise ValidationError({field: message})


def format_money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return ""
    digits = MINOR_UNITS.get(currency, 2)
    return f"{amount:,.{digits}f} {currency}"
