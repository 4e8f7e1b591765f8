"""CEL conditions: compiled once, checked against the fields a record type offers.

Conditions are written by admins (stage gates, approval entry conditions, automation rules) and
evaluated against a plain mapping built from a record (``context``). A condition that does not
compile, or names a field the type does not have, is refused when it is saved, with the position
of the error; at run time a condition that fails to evaluate counts as not holding.
"""

import datetime as dt
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

import cel
from django.db import models
from django.utils.translation import gettext as _

_POSITION = re.compile(r"<input>:(\d+):(\d+)")


class ConditionError(ValueError):
    """A condition that cannot be used; ``line`` and ``column`` point at the fault when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return _("%(message)s (line %(line)d, column %(column)d)") % {
            "message": self.message,
            "line": self.line,
            "column": self.column,
        }


@lru_cache(maxsize=1024)
def compile_condition(source: str) -> cel.Program:
    try:
        return cel.compile(source)
    except ValueError as exc:
        text = str(exc)
        found = _POSITION.search(text)
        detail = text.split("ERROR: ", 1)[-1].split("\n", 1)[0]
        # The parser's list of tokens it expected helps nobody who writes conditions.
        detail = _POSITION.sub("", detail).split(" expecting ", 1)[0].strip(" :")
        if found:
            raise ConditionError(
                _("The condition does not compile: %(detail)s") % {"detail": detail},
                int(found.group(1)),
                int(found.group(2)),
            ) from None
        raise ConditionError(_("The condition does not compile.")) from None


def check(source: str, fields: set[str]) -> None:
    """Raise ``ConditionError`` unless ``source`` compiles and reads only ``fields``."""
    program = compile_condition(source)
    unknown = sorted(set(program.references()["variables"]) - fields)
    if unknown:
        raise ConditionError(
            _("Unknown field: %(names)s. Fields you can use: %(fields)s.")
            % {"names": ", ".join(unknown), "fields": ", ".join(sorted(fields))}
        )


def holds(source: str, context: dict[str, Any]) -> bool:
    """Whether the condition is true for ``context``; false when it cannot be evaluated."""
    try:
        return compile_condition(source).execute(context) is True
    except (ConditionError, RuntimeError, ArithmeticError, TypeError, ValueError):
        return False


def fields_of(model: type[models.Model]) -> set[str]:
    """The names a condition may read on a record of ``model``."""
    return set(fields_by_name(model))


def fields_by_name(model: type[models.Model]) -> dict[str, models.Field]:
    """The fields of ``model`` by the names conditions read them under (``account_id``)."""
    return {_name(field): field for field in model._meta.concrete_fields}


def context(record: models.Model) -> dict[str, Any]:
    """A record's fields as CEL values: numbers as numbers, dates as ISO text, links as ids."""
    return {
        _name(field): _value(getattr(record, field.attname))
        for field in record._meta.concrete_fields
    }


def _name(field: models.Field) -> str:
    return field.attname if field.is_relation else field.name


def _value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value
