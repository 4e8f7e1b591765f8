"""Checks and normal forms for values people type: phone numbers, e-mails, registration numbers."""

import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _


def normalize_phone(value: str) -> str:
    """E.164 form (``+821012345678``) of a number written any usual way; raises if invalid."""
    value = (value or "").strip()
    if not value:
        return ""
    try:
        parsed = phonenumbers.parse(value, settings.TRELLIS["DEFAULT_PHONE_REGION"])
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(_("Enter a valid phone number."), code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(_("Enter a valid phone number."), code="invalid_phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def format_phone(e164: str) -> str:
    """How a stored number is shown: national form at home, international form abroad."""
    if not e164:
        return ""
    parsed = phonenumbers.parse(e164, None)
    region = settings.TRELLIS["DEFAULT_PHONE_REGION"]
    if phonenumbers.region_code_for_number(parsed) == region:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_email(value: str) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    validate_email(value)
    local, _at, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


_BRN_WEIGHTS = (1, 3, 7, 1, 3, 7, 1, 3, 5)


def normalize_business_registration_number(value: str) -> str:
    """A Korean business registration number (사업자등록번호) as ``123-45-67890``.

    Ten digits; the last is a check digit computed from the first nine.
    """
    value = (value or "").strip()
    if not value:
        return ""
    digits = re.sub(r"[\s-]", "", value)
    if not re.fullmatch(r"\d{10}", digits):
        raise ValidationError(
            _("A business registration number has 10 digits, like 123-45-67890."),
            code="invalid_brn",
        )
    numbers = [int(d) for d in digits]
    total = sum(n * w for n, w in zip(numbers, _BRN_WEIGHTS, strict=False))
    total += numbers[8] * 5 // 10
    if (10 - total % 10) % 10 != numbers[9]:
        raise ValidationError(
            _("This business registration number fails its check digit; check for a typo."),
            code="invalid_brn",
        )
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


def search_key(*parts: str) -> str:
    """The text a record is found by: lower-cased, with phone numbers also as bare digits.

    Stored in each searchable record's ``search_text`` column so that one trigram index answers
    a partial match on name, e-mail or phone, in Korean or English.
    """
    words = []
    for part in parts:
        if not part:
            continue
        words.append(part.lower())
        if part.startswith("+"):
            words.append(re.sub(r"\D", "", part))
            try:
                national = phonenumbers.format_number(
                    phonenumbers.parse(part, None), phonenumbers.PhoneNumberFormat.NATIONAL
                )
            except phonenumbers.NumberParseException:
                continue
            words.append(re.sub(r"\D", "", national))
    return " ".join(words)


def search_query(text: str) -> str:
    """What a typed query is matched as: the same normal form as ``search_key``."""
    text = text.strip().lower()
    if re.fullmatch(r"[\d\s()+-]{4,}", text):
        return re.sub(r"\D", "", text)
    return text
