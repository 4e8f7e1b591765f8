"""How pages show pipelines: the stage panel of a record's page, the "Pipelines" entry of the
navigation, and durations and amounts on the board.

The record pages of other apps show the panel with ``{% pipeline_panel record %}``: the engine
knows records only through ``subjects``, so any type that runs in pipelines has one, and a
record of another type shows nothing.
"""

import datetime as dt
from decimal import Decimal
from typing import Any

from django import template
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from trellis.core.money import MINOR_UNITS
from trellis.core.visibility import can

from ..pipelines import board, subjects
from ..pipelines.models import Pipeline

register = template.Library()


@register.inclusion_tag("pipelines/_record_panel.html", takes_context=True)
def pipeline_panel(context: template.Context, record: models.Model) -> dict[str, Any]:
    """Where ``record`` stands in its pipeline, its history, and the form to move it."""
    request = getattr(context, "request", None) or context["request"]
    found = board.panel(request.user, record)
    if found is None:
        return {"show": False}
    return {
        "show": True,
        "panel": found,
        "next_url": request.get_full_path(),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("pipelines/_nav_item.html", takes_context=True)
def pipelines_nav(context: template.Context) -> dict[str, Any]:
    """The "Pipelines" entry, for those who may see a kind of record that runs in pipelines."""
    # Called from inside another inclusion tag's template, whose context holds only what that
    # tag returned: the request is still the context's attribute.
    request = getattr(context, "request", None) or context["request"]
    user = request.user
    types = [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]
    if not types:
        return {"url": ""}
    try:
        url = reverse("pipelines:list")
    except NoReverseMatch:
        # Until the list of pipelines exists: the board of the default deal pipeline.
        candidates = Pipeline.objects.filter(object_type__in=types, is_active=True)
        default = (
            candidates.filter(object_type="opportunity", is_default=True).first()
            or candidates.order_by("-is_default", "pk").first()
        )
        url = reverse("pipelines:board", args=[default.pk]) if default else ""
    match = request.resolver_match
    return {
        "url": url,
        "current": match is not None and match.namespace == "pipelines",
    }


# Values.


@register.filter
def minor_units(amount: Decimal | None, currency: str) -> str:
    """An amount as a whole number of the currency's minor units (1500.25 USD -> 150025), for
    the board's script to add up without rounding."""
    if amount is None:
        return "0"
    digits = MINOR_UNITS.get(currency, 2)
    return str(int(Decimal(amount).scaleb(digits).to_integral_value()))


@register.filter
def currency_digits(currency: str) -> int:
    return MINOR_UNITS.get(currency, 2)


@register.filter
def duration(value: dt.timedelta | None) -> str:
    """A time in a stage as people say it: "3 days", "5 hours", "12 minutes"."""
    if value is None:
        return ""
    seconds = max(0, int(value.total_seconds()))
    days, rest = divmod(seconds, 86400)
    if days:
        return ngettext("%(n)d day", "%(n)d days", days) % {"n": days}
    hours = rest // 3600
    if hours:
        return ngettext("%(n)d hour", "%(n)d hours", hours) % {"n": hours}
    minutes = rest // 60
    if minutes:
        return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}
    return _("under a minute")


@register.filter
def dwell_limit(stage: Any) -> str:
    """A stage's expected maximum dwell time, e.g. "14 days" or "5 business days"."""
    if stage is None or stage.max_dwell_days is None:
        return ""
    n = stage.max_dwell_days
    if stage.dwell_in_business_days:
        return ngettext("%(n)d business day", "%(n)d business days", n) % {"n": n}
    return ngettext("%(n)d day", "%(n)d days", n) % {"n": n}
