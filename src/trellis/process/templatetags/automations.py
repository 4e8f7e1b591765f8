"""The navigation entry of automations, for the people who may define rules; the Holds and
rules panel of a record's page; and the name of a kind of record in the reader's language."""

from typing import Any

from django import template
from django.db import models
from django.urls import reverse

from trellis.core import clock, registry

from ..automations import queries, subjects
from ..automations.models import RuleRun

register = template.Library()


@register.inclusion_tag("automations/_nav_item.html", takes_context=True)
def automations_nav(context: template.Context) -> dict[str, Any]:
    request = context["request"]
    user = request.user
    if not user.is_authenticated or not queries.definable_types(user):
        return {"url": ""}
    match = request.resolver_match
    return {
        "url": reverse("automations:rule-list"),
        "current": match is not None and match.namespace == "automations",
    }


# Runs worth showing on the record's page: those that did something or should have.
_SHOWN_RUNS = (RuleRun.Outcome.FIRED, RuleRun.Outcome.FAILED, RuleRun.Outcome.STOPPED)


@register.inclusion_tag("automations/_record_panel.html", takes_context=True)
def automations_panel(context: template.Context, record: models.Model) -> dict[str, Any]:
    """The holds the record waits in (and since when), and the latest rules that acted on it;
    nothing for a record no rule or hold has touched."""
    request = context["request"]
    object_type = registry.for_model(type(record)).key
    if subjects.find(object_type) is None:
        return {"show": False}
    user = request.user
    placements = queries.placements_of(user, object_type, record.pk)
    waiting = [p for p in placements if p.released_at is None]
    runs = [
        run
        for run in queries.runs_of_record(user, object_type, record.pk, limit=20)
        if run.outcome in _SHOWN_RUNS
    ][:5]
    if not waiting and not runs:
        return {"show": False}
    return {
        "show": True,
        "waiting": waiting,
        "runs": runs,
        "now": clock.now(),
        "rules_visible": object_type in queries.definable_types(user),
    }


@register.filter
def kind_label(object_type: str) -> str:
    """ "order" as the page's language names it (주문)."""
    try:
        return registry.get(object_type).label
    except KeyError:
        return object_type
