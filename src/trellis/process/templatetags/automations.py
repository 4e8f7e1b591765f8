"""The navigation entry of automations, for the people who may define rules."""

from typing import Any

from django import template
from django.urls import reverse

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
