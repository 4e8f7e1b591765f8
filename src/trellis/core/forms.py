"""The base of forms whose values go to one service call.

Forms never write. A view hands the cleaned values to a service, which checks everything again
and owns the write; the errors a service reports (``ValidationFailed.errors``, keyed by the
service's names) come back onto the form's fields through ``add_service_errors``.
"""

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from django import forms
from django.utils.translation import gettext as _


class ServiceForm(forms.Form):
    """A form whose values go to one service call."""

    # A service's error key -> the form field it is about, where the names differ.
    error_fields: ClassVar[Mapping[str, str]] = {}
    # A service's key prefix -> the prefix of the form's fields, e.g. "next_step." -> "next_".
    error_prefixes: ClassVar[Mapping[str, str]] = {}
    # Keeps element ids unique on pages that show several forms with a field of the same name.
    id_prefix: ClassVar[str] = "id"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"{self.id_prefix}_%s")
        super().__init__(*args, **kwargs)

    def add_service_errors(self, errors: Mapping[str, Iterable[str]]) -> None:
        """Put a service's ``ValidationFailed.errors`` on the fields they are about; the rest
        on the form as a whole."""
        for key, messages in errors.items():
            name = self._field_for_error(key)
            for message in messages:
                self.add_error(name, str(message))

    def _field_for_error(self, key: str) -> str | None:
        for service_prefix, form_prefix in self.error_prefixes.items():
            if key.startswith(service_prefix):
                key = form_prefix + key.removeprefix(service_prefix)
        for name in (self.error_fields.get(key), key, key.removesuffix("_id")):
            if name in self.fields and not self.fields[name].widget.is_hidden:
                return name
        return None


def field_values(text: str) -> dict[str, str]:
    """Lines of ``field = value`` as typed in a box (blank lines skipped), by field name."""
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            raise forms.ValidationError(_("Line %(n)d: write field = value.") % {"n": number})
        values[name.strip()] = value.strip()
    return values
