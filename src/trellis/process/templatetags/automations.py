"""The navigation entry of automations, for the people who may define rules, and the name of
a kind of record in the reader's language."""

from typing import Any

from django import template
from django.urls import reverse

from trellis.core import registry

from ..automations import queries

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


@register.filter
def kind_label(object_type: str) -> str:
    """ "order" as the page's language names it (주문)."""
    try:
        return registry.get(object_type).label
    except KeyError:
        return object_type
