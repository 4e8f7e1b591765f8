"""Telling people about tasks: in-app notifications and e-mail.

Users get a ``Notification`` at once and, unless they chose the daily digest, an e-mail. An
external participant gets e-mail only, in the task's language. Every task e-mail has the task's
reply address as Reply-To (``mail.outbound.queue`` with the task as record), so a reply comes
back to the task; each carries ``Auto-Submitted`` (RFC 3834) so that auto-responders keep quiet.

Callers queue inside their transaction; the mail is sent after it commits.
"""

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings
from django.db import models
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from trellis.core import clock, registry
from trellis.core.models import SYSTEM_USERNAME, User
from trellis.mail import outbound
from trellis.mail.inbound import one_line
from trellis.mail.models import OutboundMessage

from .models import Notification, Task, TaskMailSettings

AUTO_GENERATED = "auto-generated"
AUTO_REPLIED = "auto-replied"
# Subjects quote a task's title, cut to leave room for our words (300 in all).
_TITLE_ROOM = 200
_NOTIFICATION_LENGTH = Notification._meta.get_field("text").max_length


@dataclass
class _Together:
    notices: list[Notification] = field(default_factory=list)
    digest: dict[int, bool] = field(default_factory=dict)


_together: ContextVar[_Together | None] = ContextVar("notify_together", default=None)


@contextmanager
def noticed_together() -> Iterator[None]:
    """Notices made inside the block are written in one statement when it ends, and each
    user's digest choice is read once: for services that tell many people at once. Until the
    block ends, a notice ``notice`` returned has no ``pk``. If the block raises, nothing of it
    is written."""
    together = _Together()
    token = _together.set(together)
    try:
        yield
    finally:
        _together.reset(token)
    Notification.objects.bulk_create(together.notices)


def language_of(user: User) -> str:
    return user.language or settings.LANGUAGE_CODE


def task_path(task: Task) -> str:
    """The task's page in the web UI, or "" while no page is mounted for tasks."""
    return registry.detail_path("process:task-detail", task.pk)


def _link(task: Task) -> str:
    path = task_path(task)
    return settings.TRELLIS["BASE_URL"] + path if path else ""


def _title(task: Task) -> str:
    title = one_line(task.title)
    return title if len(title) <= _TITLE_ROOM else title[: _TITLE_ROOM - 1].rstrip() + "…"


def local_time(at: dt.datetime | None) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M") if at else ""


def wants_digest(user: User) -> bool:
    together = _together.get()
    if together is not None and user.pk in together.digest:
        return together.digest[user.pk]
    wants = TaskMailSettings.objects.filter(pk=user.pk, daily_digest=True).exists()
    if together is not None:
        together.digest[user.pk] = wants
    return wants


def _render(template: str, **context: object) -> str:
    return render_to_string(f"process/mail/{template}.txt", context).strip() + "\n"


def _send(
    to: str,
    subject: str,
    text: str,
    *,
    record: models.Model | None,
    auto: str = AUTO_GENERATED,
    in_reply_to: str = "",
) -> OutboundMessage:
    return outbound.queue(
        to=[to],
        subject=one_line(subject)[:300],
        text=text,
        record=record,
        in_reply_to=in_reply_to,
        references=[in_reply_to] if in_reply_to else [],
        headers={"Auto-Submitted": auto},
    )


def _notify(user: User, task: Task, text: str) -> Notification:
    return notice(user, text, link=task_path(task), task=task)


def notice(user: User, text: str, *, link: str = "", task: Task | None = None) -> Notification:
    """A message in ``user``'s notifications inbox; other apps leave theirs here too (e.g. the
    support desk's "the customer wrote")."""
    made = Notification(user=user, task=task, text=one_line(text)[:_NOTIFICATION_LENGTH], link=link)
    together = _together.get()
    if together is not None:
        together.notices.append(made)
    else:
        made.save()
    return made


def _task_context(task: Task) -> dict[str, object]:
    return {
        "task": task,
        "title": one_line(task.title),
        "thread_title": one_line(task.thread.title),
        "description": task.description,
        "due": local_time(task.due_at),
        "priority": Task.Priority(task.priority).label,
        "link": _link(task),
    }


# Users.


def assigned_to_user(task: Task, user: User, by: str) -> None:
    """``user`` now holds ``task``: a notification, and an e-mail unless they take a digest."""
    with translation.override(language_of(user)):
        text = _("%(actor)s gave you a task: %(title)s") % {"actor": by, "title": _title(task)}
        _notify(user, task, text)
        if user.email and not wants_digest(user):
            body = _render("assigned", actor=by, name=str(user), **_task_context(task))
            _send(user.email, text, body, record=task)


def queued_for_team(task: Task, actor: User, by: str) -> None:
    """A task waits in a team's queue: each member (but the actor) hears of it in the app."""
    for member in team_members(task.team_id, exclude=actor):
        with translation.override(language_of(member)):
            _notify(
                member,
                task,
                _("%(actor)s put a task in your team's queue: %(title)s")
                % {"actor": by, "title": _title(task)},
            )


def team_members(team_id: int | None, exclude: User | None = None) -> list[User]:
    if team_id is None:
        return []
    members = User.objects.filter(team_id=team_id, is_active=True).exclude(username=SYSTEM_USERNAME)
    if exclude is not None:
        members = members.exclude(pk=exclude.pk)
    return list(members.order_by("pk"))


def completed(task: Task, by: str, completer: User | None) -> None:
    """Whoever handed the task out, whoever created it and whoever started its thread hear that
    it is done."""
    people = {
        person.pk: person
        for person in (task.assigned_by, task.created_by, task.thread.created_by)
        if person is not None and person.is_active and person != completer
    }
    for person in people.values():
        if person.username == SYSTEM_USERNAME:
            continue
        with translation.override(language_of(person)):
            _notify(
                person,
                task,
                _("%(who)s completed the task: %(title)s") % {"who": by, "title": _title(task)},
            )


# External participants.


def assigned_to_external(task: Task, link_url: str, by: str) -> OutboundMessage:
    """The task, its link and how to answer by e-mail, to the participant."""
    with translation.override(task.language):
        subject = _("Task for you: %(title)s") % {"title": _title(task)}
        body = _render(
            "external_assigned",
            actor=by,
            name=one_line(task.external_name),
            **{**_task_context(task), "link": link_url},
        )
    return _send(task.external_email, subject, body, record=task)


def shared_comment(task: Task, author: str, body: str) -> OutboundMessage:
    """A comment shared with the participant of an open task."""
    with translation.override(task.language):
        subject = _("New comment on your task: %(title)s") % {"title": _title(task)}
        text = _render(
            "comment",
            author=author,
            body=body,
            name=one_line(task.external_name),
            **_task_context(task),
        )
    return _send(task.external_email, subject, text, record=task)


# Reminders and digests.


def reminder(task: Task, kind: str) -> list[str]:
    """Remind whoever holds ``task`` that it is due soon (``before``) or overdue; returns
    who was told (user names and e-mail addresses)."""
    told: list[str] = []
    if task.assignee_kind == Task.Assignee.EXTERNAL:
        with translation.override(task.language):
            _send(
                task.external_email,
                _reminder_subject(task, kind),
                _render(
                    "reminder",
                    kind=kind,
                    external=True,
                    name=one_line(task.external_name),
                    **_task_context(task),
                ),
                record=task,
            )
        return [task.external_email]
    if task.assignee_kind == Task.Assignee.USER:
        people = [task.owner] if task.owner.is_active else []
    else:
        people = team_members(task.team_id)
    for person in people:
        with translation.override(language_of(person)):
            subject = _reminder_subject(task, kind)
            _notify(person, task, subject)
            if person.email and not wants_digest(person):
                text = _render(
                    "reminder",
                    kind=kind,
                    external=False,
                    queue=task.assignee_kind == Task.Assignee.TEAM,
                    name=str(person),
                    **_task_context(task),
                )
                _send(person.email, subject, text, record=task)
        told.append(person.username)
    return told


def _reminder_subject(task: Task, kind: str) -> str:
    if kind == "overdue":
        return _("Overdue: %(title)s") % {"title": _title(task)}
    return _("Due soon: %(title)s (%(due)s)") % {
        "title": _title(task),
        "due": local_time(task.due_at),
    }


def digest(
    user: User, overdue: Iterable[Task], open_tasks: Iterable[Task], queue: Iterable[Task]
) -> OutboundMessage | None:
    """One e-mail with the user's overdue and open tasks and their team's queue."""
    sections = [list(overdue), list(open_tasks), list(queue)]
    if not user.email or not any(sections):
        return None
    with translation.override(language_of(user)):
        day = timezone.localdate(clock.now())
        subject = _("Your tasks for %(day)s") % {"day": day.isoformat()}
        rows = [[_digest_row(task) for task in section] for section in sections]
        text = _render("digest", name=str(user), overdue=rows[0], open_tasks=rows[1], queue=rows[2])
    return _send(user.email, subject, text, record=None)


def _digest_row(task: Task) -> dict[str, str]:
    return {"title": one_line(task.title), "due": local_time(task.due_at), "link": _link(task)}


# Answers to mail.


def reply_refused(
    to: str, reason: str, subject: str, *, language: str, record: models.Model, in_reply_to: str
) -> OutboundMessage:
    """Why a reply was not added to a task. The answer belongs to the refused message itself,
    so an answer to it is kept in the quarantine and never answered again."""
    with translation.override(language):
        text = _render("reply_refused", reason=reason, subject=one_line(subject))
        title = _("Your message was not added to a task: %(subject)s") % {
            "subject": one_line(subject)[:_TITLE_ROOM]
        }
    return _send(to, title, text, record=record, auto=AUTO_REPLIED, in_reply_to=in_reply_to)


def completion_refused(
    to: str, task: Task, reason: str, *, external: bool, language: str, in_reply_to: str
) -> OutboundMessage:
    """The reply was added to the task as a comment, but could not complete it."""
    with translation.override(language):
        subject = _("Your task is not completed yet: %(title)s") % {"title": _title(task)}
        text = _render(
            "completion_refused", reason=reason, external=external, **_task_context(task)
        )
    return _send(to, subject, text, record=task, auto=AUTO_REPLIED, in_reply_to=in_reply_to)
