"""How CRM values look on a page: money with its currency, phones, choices by label, links.

Every page shows a value through ``show`` so a list cell, a detail field, a conflict notice and a
timeline entry render the same value the same way.
"""

import contextlib
import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.template.defaultfilters import linebreaksbr
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.formats import date_format, number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.timezone import is_aware, localtime
from django.utils.translation import gettext as _

from trellis.core import clock, registry
from trellis.core.models import AuditEvent
from trellis.core.money import format_money
from trellis.core.validators import format_phone
from trellis.core.visibility import can

from .. import queries
from ..forms import MONEY_FIELDS, PHONE_FIELDS

register = template.Library()

EMPTY = mark_safe('<span class="empty">—</span>')

# Choice fields shown as coloured badges, and numbers that are percentages.
BADGE_FIELDS = frozenset({"status", "kind"})
PERCENT_FIELDS = frozenset({"probability", "discount_pct"})

# Labels of values that are not model fields.
_EXTRA_LABELS = {"regarding": lambda: _("Regarding"), "lines": lambda: _("Order lines")}


def model_field(model: type[models.Model], name: str) -> models.Field | None:
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


def label(model: type[models.Model], name: str) -> str:
    field = model_field(model, name)
    if field is not None and hasattr(field, "verbose_name"):
        return capfirst(field.verbose_name)
    if name in _EXTRA_LABELS:
        return _EXTRA_LABELS[name]()
    return capfirst(name.replace("_", " "))


def record_link(record: Any) -> SafeString | str:
    """A link to a record's page when it has one, else its name."""
    try:
        url_name = registry.for_model(type(record)).detail_url_name
        return format_html('<a href="{}">{}</a>', reverse(url_name, args=[record.pk]), record)
    except (KeyError, NoReverseMatch):
        return str(record)


def show(field: models.Field | None, value: Any, currency: str | None = None) -> Any:
    """One value of a field as people read it."""
    if value is None or value == "":
        return EMPTY
    if field is None:
        return record_link(value) if isinstance(value, models.Model) else value
    if field.many_to_many:  # the records themselves, already read through visibility
        return format_html_join(", ", "{}", ((record_link(r),) for r in value)) or EMPTY
    if field.is_relation:
        return record_link(value)
    if field.choices:
        shown = dict(field.flatchoices).get(value, value)
        if field.name in BADGE_FIELDS:
            return format_html(
                '<span class="{} {}-{}">{}</span>', field.name, field.name, value, shown
            )
        return shown
    if isinstance(field, models.BooleanField):
        return _("Yes") if value else _("No")
    if field.name in MONEY_FIELDS and currency:
        return format_money(Decimal(value), currency)
    if field.name in PHONE_FIELDS and value.startswith("+"):
        return format_phone(value)  # stored numbers are E.164; typed ones are shown as typed
    if isinstance(value, dt.datetime):
        return date_format(localtime(value) if is_aware(value) else value, "SHORT_DATETIME_FORMAT")
    if isinstance(value, dt.date):
        return date_format(value, "DATE_FORMAT")
    if isinstance(field, models.URLField):
        return format_html('<a href="{}" rel="noopener noreferrer">{}</a>', value, value)
    if isinstance(field, models.EmailField):
        return format_html('<a href="mailto:{}">{}</a>', value, value)
    if isinstance(field, models.TextField):
        return linebreaksbr(value, autoescape=True)
    if field.name in PERCENT_FIELDS:
        return f"{number_format(value)}%"
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return number_format(value, force_grouping=True)
    return value


@register.simple_tag
def field_value(record: models.Model, name: str) -> Any:
    """A field of a record, or an attribute a view set on it (such as ``regarding``)."""
    return show(model_field(type(record), name), getattr(record, name, None), _currency(record))


@register.simple_tag
def show_as(record: models.Model, name: str, value: Any) -> Any:
    """Another value for one of a record's fields, shown as that field would show it."""
    return show(model_field(type(record), name), value, _currency(record))


@register.simple_tag
def field_label(record: models.Model, name: str) -> str:
    return label(type(record), name)


def _currency(record: Any) -> str | None:
    return getattr(record, "currency", None)


@register.filter
def money(amount: Decimal | None, currency: str) -> str:
    return format_money(amount, currency)


@register.filter
def phone(value: str) -> str:
    return format_phone(value)


@register.filter
def detail_url(record: models.Model) -> str:
    return reverse(registry.for_model(type(record)).detail_url_name, args=[record.pk])


@register.filter
def type_label(record: models.Model) -> str:
    return capfirst(registry.for_model(type(record)).label)


# The timeline.


@register.simple_tag
def audit_changes(
    event: AuditEvent, record: models.Model, names: dict[str, dict[int, str]]
) -> list[tuple[str, Any, Any]]:
    """(label, old, new) for each field an audit event records; old is None for a creation.

    ``names`` maps a many-to-many field to the labels of the related ids the user may see.
    """
    model = type(record)
    rows = []
    for name, change in event.changes.items():
        if event.action == AuditEvent.Action.UPDATED:
            old, new = change
        else:
            old, new = None, change
        field = model_field(model, name)
        old_shown = (
            None
            if event.action != AuditEvent.Action.UPDATED
            else _audit_value(field, old, record, names)
        )
        rows.append((label(model, name), old_shown, _audit_value(field, new, record, names)))
    return rows


def _audit_value(
    field: models.Field | None, value: Any, record: Any, names: dict[str, dict[int, str]]
) -> Any:
    """An audit log value (stored as JSON) shown like the live field."""
    if value is None or value == "" or field is None:
        return show(field, value)
    if field.many_to_many:
        labels = names.get(field.name, {})
        shown = [labels.get(pk) or f"#{pk}" for pk in value]
        return ", ".join(shown) if shown else EMPTY
    if isinstance(value, dict):  # a foreign key, stored with its label at the time
        return value.get("label") or f"#{value.get('id')}"
    if isinstance(field, models.DateTimeField):
        value = parse_datetime(value) or value
    elif isinstance(field, models.DateField):
        value = parse_date(value) or value
    elif isinstance(field, models.DecimalField):
        with contextlib.suppress(InvalidOperation, TypeError):
            value = Decimal(value)
    return show(field, value, _currency(record))


# Navigation and the home page.


@register.inclusion_tag("crm/_nav.html", takes_context=True)
def crm_nav(context: template.Context) -> dict[str, Any]:
    """The record types the user may see, the current one marked."""
    request = context["request"]
    match = request.resolver_match
    current = match.url_name.partition("-")[0] if match and match.namespace == "crm" else ""
    items = [
        {
            "key": object_type,
            "label": capfirst(registry.get(object_type).label_plural),
            "url": reverse(f"crm:{object_type}-list"),
            "current": object_type == current,
        }
        for object_type in queries.LISTS
        if can(request.user, "view", object_type)
    ]
    return {"items": items}


@register.inclusion_tag("crm/_dashboard.html", takes_context=True)
def crm_dashboard(context: template.Context) -> dict[str, Any]:
    user = context["request"].user
    work = queries.my_work(user)
    regarding = queries.regarding(user, work.recent_activities)
    for activity in work.recent_activities:
        activity.regarding = regarding.get(activity.pk)
    return {
        "work": work,
        "today": clock.today(),
        "can_view": {key: can(user, "view", key) for key in ("opportunity", "lead", "activity")},
        "can_create": {
            key: can(user, "create", key) for key in ("account", "contact", "lead", "opportunity")
        },
    }
