"""How pages show task threads: the navigation with its counts, the Tasks panel of a record's
page, and what each entry of a task's history says.

The record pages of other apps show the panel with ``{% tasks_panel record %}``: the engine
knows records only through the registry, so any registered type can have one.
"""

from typing import Any
from urllib.parse import urlencode

from django import template
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from trellis.core import registry
from trellis.core.visibility import can

from .. import queries
from ..models import Task, TaskEvent

register = template.Library()

Kind = TaskEvent.Kind
Assignee = Task.Assignee
# A count shown in the navigation stops here ("99+").
COUNT_CAP = 99


def _capped(count: int) -> str:
    return f"{COUNT_CAP}+" if count > COUNT_CAP else str(count)


@register.inclusion_tag("process/_nav.html", takes_context=True)
def process_nav(context: template.Context) -> dict[str, Any]:
    """My work, with the count of my overdue tasks, for those who may see tasks."""
    request = context["request"]
    user = request.user
    if not can(user, "view", "task"):
        return {"items": []}
    match = request.resolver_match
    current = match is not None and match.namespace == "process"
    overdue = queries.task_queryset(user, view="overdue").count()
    return {
        "items": [
            {
                "key": "work",
                "label": _("My work"),
                "url": reverse("process:my-work"),
                "current": current and match.url_name != "notifications",
                "count": _capped(overdue) if overdue else "",
                "count_label": _("%(n)s overdue") % {"n": overdue},
            }
        ]
    }


@register.inclusion_tag("process/_notifications_link.html", takes_context=True)
def notifications_link(context: template.Context) -> dict[str, Any]:
    """The notifications inbox, with how many are unread."""
    user = context["request"].user
    unread = queries.notifications(user, unread_only=True).count()
    return {"url": reverse("process:notifications"), "unread": _capped(unread) if unread else ""}


# The Tasks panel of a record's page.


@register.inclusion_tag("process/_tasks_panel.html", takes_context=True)
def tasks_panel(context: template.Context, record: models.Model) -> dict[str, Any]:
    """The task threads about ``record``, their tasks in order, and who is responsible."""
    user = context["request"].user
    if not can(user, "view", "task"):
        return {"show": False}
    key = registry.for_model(type(record)).key
    threads = queries.threads_for_record(user, key, record.pk)
    matrix = queries.responsibility(user, key, record.pk)
    add_url = ""
    if can(user, "create", "task"):
        query = urlencode({"record_type": key, "record_id": record.pk})
        add_url = f"{reverse('process:task-create')}?{query}"
    return {
        "show": True,
        "threads": threads,
        "add_url": add_url,
        "matrix": [
            (_("Responsible"), _("Who holds the open tasks"), matrix.responsible),
            (_("Accountable"), _("The record's owner"), matrix.accountable),
            (_("Consulted"), _("Who held, completed or commented on tasks"), matrix.consulted),
            (_("Informed"), _("Who started the threads and tasks"), matrix.informed),
        ],
    }


# Values.


@register.filter
def overdue(task: Task) -> bool:
    return queries.is_overdue(task)


@register.filter
def record_url(record: models.Model | None) -> str:
    """The page of a record of any registered type, or "" when it has none."""
    if record is None:
        return ""
    try:
        return reverse(registry.for_model(type(record)).detail_url_name, args=[record.pk])
    except (KeyError, NoReverseMatch):
        return ""


@register.filter
def type_name(record: models.Model) -> str:
    return capfirst(registry.for_model(type(record)).label)


@register.filter
def holder(task: Task) -> str:
    """Who holds the task, as people read it."""
    current = queries.holder(task)
    return party_name({"kind": current.kind, "name": current.name, "email": current.email})


def party_name(party: Any) -> str:
    """A user, a team's queue or an external participant, as a history entry keeps them."""
    if not isinstance(party, dict):
        return ""
    name = party.get("name") or ""
    if party.get("kind") == Assignee.TEAM:
        return _("the %(team)s queue") % {"team": name}
    if party.get("kind") == Assignee.EXTERNAL:
        email = party.get("email") or ""
        return f"{name} <{email}>" if name and name != email else email
    return name


# A task's history.


@register.simple_tag
def event_author(event: TaskEvent) -> str:
    """Who did it: a user by name, an external participant by address, else Trellis itself."""
    if event.actor_id is not None:
        return str(event.actor)
    if event.external_email:
        return event.external_email
    return "Trellis"


def _when(value: Any) -> str:
    moment = parse_datetime(value) if isinstance(value, str) else None
    return date_format(localtime(moment), "SHORT_DATETIME_FORMAT") if moment else ""


def _status(value: Any) -> str:
    return Task.Status(value).label if value in Task.Status.values else str(value or "")


def _arrow(old: Any, new: Any) -> SafeString:
    return format_html(
        '{} <span class="arrow" aria-label="{}">→</span> {}', old, _("changed to"), new
    )


_EDITED_LABELS = {
    "title": lambda: _("Title"),
    "description": lambda: _("Description"),
    "task_type": lambda: _("Type"),
    "due_at": lambda: _("Due"),
    "priority": lambda: _("Priority"),
}


def _edited_value(name: str, value: Any) -> str:
    if value in (None, ""):
        return "—"
    if name == "due_at":
        return _when(value)
    if name == "priority":
        return Task.Priority(value).label if value in Task.Priority.values else str(value)
    if isinstance(value, dict):
        return str(value.get("label") or "")
    return str(value)


def _edited(changes: dict[str, Any]) -> SafeString:
    parts = []
    for name, change in changes.items():
        if name not in _EDITED_LABELS or not isinstance(change, list) or len(change) != 2:
            continue
        label = _EDITED_LABELS[name]()
        if name == "description":
            parts.append((label, _("changed")))
        else:
            old, new = (_edited_value(name, value) for value in change)
            parts.append((label, _arrow(old, new)))
    return format_html_join(" · ", "{}: {}", parts)


def _task_link(pk: Any, text: str) -> SafeString | str:
    if not isinstance(pk, int):
        return text
    return format_html('<a href="{}">{}</a>', reverse("process:task-detail", args=[pk]), text)


@register.simple_tag
def event_summary(event: TaskEvent) -> SafeString | str:
    """One line saying what a history entry did: to whom a task went, which status it took,
    what changed, what comes next, which reminder or link went out."""
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.kind
    if kind == Kind.CREATED:
        text = _("For %(holder)s.") % {"holder": party_name(data.get("to"))}
        if data.get("handed_from"):
            return format_html(
                "{} {}", text, _task_link(data["handed_from"], _("The next step of a task."))
            )
        return text
    if kind == Kind.ASSIGNED:
        before, after = data.get("from"), data.get("to")
        if before == after:
            return ""
        return format_html(
            "{} {}",
            _("Handed on:"),
            _arrow(party_name(before), party_name(after)),
        )
    if kind == Kind.CLAIMED:
        return _("%(holder)s took it from %(queue)s.") % {
            "holder": party_name(data.get("to")),
            "queue": party_name(data.get("from")),
        }
    if kind == Kind.STATUS:
        return _arrow(_status(data.get("from")), _status(data.get("to")))
    if kind == Kind.EDITED and isinstance(data.get("changes"), dict):
        return _edited(data["changes"])
    if kind == Kind.COMPLETED:
        if data.get("next_task"):
            return _task_link(data["next_task"], _("Handed on with the next step."))
        if data.get("thread_finished"):
            return _("The thread is finished.")
        return _("Done, with no next step.")
    if kind == Kind.REMINDER:
        to = ", ".join(str(name) for name in data.get("to") or [])
        if data.get("reminder") == "overdue":
            return _("Overdue reminder to %(to)s.") % {"to": to}
        return _("Due-soon reminder to %(to)s.") % {"to": to}
    if kind == Kind.LINK_ISSUED:
        return _("A link went to %(email)s; it works until %(until)s.") % {
            "email": data.get("email", ""),
            "until": _when(data.get("expires_at")),
        }
    if kind == Kind.LINK_USED:
        return _("%(email)s opened their link.") % {"email": event.external_email}
    if kind == Kind.LINK_REVOKED:
        if data.get("reason") == "reassigned":
            return _("The link of %(email)s stopped working: the task went to someone else.") % {
                "email": data.get("email", "")
            }
        return _("The link of %(email)s was revoked.") % {"email": data.get("email", "")}
    if kind == Kind.MAIL_REPLY:
        return pgettext("task history", "By e-mail.")
    return ""
