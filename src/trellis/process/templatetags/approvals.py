"""How pages show approvals: the Approvals panel of a record's page and the navigation entry.

The record pages of other apps show the panel with ``{% approvals_panel record %}``: the engine
knows records only through ``approvals.subjects``, so a record of another type shows nothing.
"""

from typing import Any

from django import template
from django.db import models
from django.urls import reverse

from trellis.core.visibility import can

from ..approvals import queries, subjects
from ..approvals.models import ApprovalAssignment, ApprovalProcess, ApprovalRequest

register = template.Library()


@register.inclusion_tag("approvals/_record_panel.html", takes_context=True)
def approvals_panel(context: template.Context, record: models.Model) -> dict[str, Any]:
    """The record's pending request with its steps, the earlier ones, and the submit form."""
    request = getattr(context, "request", None) or context["request"]
    subject = subjects.for_model(type(record))
    if subject is None:
        return {"show": False}
    user = request.user
    requests = queries.for_record(record)
    pending = next((r for r in requests if r.status == ApprovalRequest.Status.PENDING), None)
    processes = []
    if pending is None and can(user, "edit", subject.object_type):
        processes = list(
            ApprovalProcess.objects.filter(object_type=subject.object_type, is_active=True)
        )
    steps = queries.steps_of(pending) if pending else []
    waiting_for_me = any(
        a.user_id == user.pk and a.status == ApprovalAssignment.Status.PENDING
        for run in steps
        if run.status == "pending"
        for a in run.assignments.all()
    )
    if not requests and not processes:
        return {"show": False}
    return {
        "show": True,
        "request": request,
        "record": record,
        "pending": pending,
        "steps": steps,
        "may_decide": waiting_for_me,
        "earlier": [r for r in requests if r is not pending][:10],
        "exceptions": queries.exceptions_for_record(record)[:20],
        "processes": processes,
        "submit_url": reverse("approvals:submit", args=[subject.object_type, record.pk]),
        "next_url": request.get_full_path(),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("approvals/_nav_item.html", takes_context=True)
def approvals_nav(context: template.Context) -> dict[str, Any]:
    """The "Approvals" entry, with how many wait for the user's decision."""
    request = getattr(context, "request", None) or context["request"]
    user = request.user
    if not user.is_authenticated:
        return {"url": ""}
    counts = queries.inbox_counts(user)
    match = request.resolver_match
    return {
        "url": reverse("approvals:inbox"),
        "count": counts["waiting"],
        "overdue": counts["overdue"],
        "current": match is not None and match.namespace == "approvals",
    }
