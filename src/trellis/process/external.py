"""What an external participant does through their link, without an account.

A link is a random 256-bit token; only its SHA-256 is stored, so the database does not hold
working links. The participant's page (mounted by the web UI at ``LINK_PATH``) calls these
functions with the token from its address and the visitor's IP address:

- ``open_link`` for reading: the task and what of its thread is shared with them
  (``shared``). A link works for reading until it expires or is revoked, also after the task
  is done, so the participant can see that it is closed.
- ``comment``, ``attach``, ``complete`` (with the next step, or saying the thread is
  finished): acting, refused once the task is done or cancelled.

Every use is logged (``ExternalLinkUse``), refused ones included, before the action runs, so
the log survives an action that fails. Call these outside any transaction of your own.
"""

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from trellis.core import clock, ratelimit
from trellis.core.errors import Conflict, NotFound, RateLimited, ServiceError, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, User, hash_token
from trellis.core.services import system_user
from trellis.core.visibility import can

from . import services
from .models import ExternalLink, ExternalLinkUse, Task, TaskAttachment, TaskEvent

# Where the web UI serves the participant's page.
LINK_PATH = "/task-link/{token}/"
TOKEN_BYTES = 32
# Uses per client address in a window: tokens cannot be guessed, this only stops floods.
PER_CLIENT = (300, 600)
# What a participant's next step may say; it always goes back to whoever gave them the task.
NEXT_STEP_FIELDS = ("title", "description", "due_at")

Outcome = ExternalLinkUse.Outcome


class LinkGone(ServiceError):
    """The link expired or was revoked."""

    status = 410
    title = "Gone"


def issue(task: Task, actor: User | None) -> tuple[ExternalLink, str]:
    """A new link for the task's participant; the token is returned here only."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = clock.now()
    link = ExternalLink.objects.create(
        task=task,
        email=task.external_email,
        token_hash=hash_token(token),
        created_at=now,
        created_by=actor if actor is not None and actor.username != SYSTEM_USERNAME else None,
        expires_at=now + timedelta(days=settings.TRELLIS["TASKS"]["LINK_DAYS"]),
    )
    return link, token


def link_url(token: str) -> str:
    return settings.TRELLIS["BASE_URL"] + LINK_PATH.format(token=token)


@dataclass(frozen=True)
class Access:
    link: ExternalLink
    task: Task

    @property
    def closed(self) -> bool:
        return self.task.is_closed


def open_link(token: str, *, ip: str = "") -> Access:
    """The link's task, for reading. ``NotFound`` for a token that is not a link,
    ``LinkGone`` for an expired or revoked one, ``RateLimited`` for a flood."""
    return _use(token, "view", ip, acting=False)


@dataclass
class SharedTask:
    task: Task
    events: list[TaskEvent] = field(default_factory=list)
    attachments: list[TaskAttachment] = field(default_factory=list)


@dataclass
class SharedThread:
    title: str
    # The link's task and the thread's other tasks of the same participant, oldest first.
    tasks: list[SharedTask]
    current: Task
    closed: bool


def shared(access: Access) -> SharedThread:
    """What of the thread the participant may read: their own tasks in it, with the events and
    files shared with them (``public``); nothing of anyone else's tasks."""
    task = access.task
    tasks = list(
        Task.objects.filter(thread_id=task.thread_id, external_email=access.link.email)
        .select_related("task_type")
        .order_by("created_at", "id")
    )
    if task.pk not in {t.pk for t in tasks}:
        tasks.append(task)
    by_id = {t.pk: SharedTask(t) for t in tasks}
    for event in TaskEvent.objects.filter(task_id__in=by_id, public=True).order_by("at", "id"):
        by_id[event.task_id].events.append(event)
    for attachment in (
        TaskAttachment.objects.filter(task_id__in=by_id, public=True, allowed=True)
        .defer("data")
        .order_by("id")
    ):
        by_id[attachment.task_id].attachments.append(attachment)
    return SharedThread(
        title=task.thread.title, tasks=list(by_id.values()), current=task, closed=task.is_closed
    )


def attachment(token: str, attachment_id: int, *, ip: str = "") -> TaskAttachment:
    """A file shared with the participant, to download; else ``NotFound``."""
    access = _use(token, "download", ip, acting=False)
    theirs = Task.objects.filter(
        thread_id=access.task.thread_id, external_email=access.link.email
    ).values_list("pk", flat=True)
    try:
        pk = services.checked_id(attachment_id)
    except NotFound:
        pk = None
    found = TaskAttachment.objects.filter(
        pk=pk, task_id__in=[access.task.pk, *theirs], public=True, allowed=True
    ).first()
    if found is None:
        raise NotFound(_("There is no such file."))
    return found


def comment(token: str, body: str, *, ip: str = "") -> TaskEvent:
    """The participant's comment on their task; the people inside see it in its history."""
    access = _use(token, "comment", ip, acting=True)
    with transaction.atomic():
        task = _locked_open(access)
        return services.comment_locked(
            task, actor=None, body=body, public=True, external_email=access.link.email
        )


def attach(
    token: str, *, filename: str, content_type: str, data: bytes, ip: str = ""
) -> TaskAttachment:
    """A file from the participant. Too large or of a forbidden type: ``ValidationFailed``
    on ``file``, and nothing is written."""
    access = _use(token, "attach", ip, acting=True)
    with transaction.atomic():
        task = _locked_open(access)
        return services.attach_locked(
            task,
            actor=None,
            filename=filename,
            content_type=content_type,
            data=data,
            public=True,
            external_email=access.link.email,
        )


def complete(
    token: str,
    *,
    next_step: Mapping[str, Any] | None = None,
    thread_finished: bool = False,
    note: str = "",
    ip: str = "",
) -> Task:
    """The participant marks their task done. ``next_step`` (``NEXT_STEP_FIELDS``: what, by
    when) becomes the next task of the thread, for whoever gave them this one, or
    ``thread_finished`` says the work is over; a task whose type requires it must have one of
    the two."""
    access = _use(token, "complete", ip, acting=True)
    with transaction.atomic():
        task = _locked_open(access)
        step = None
        if next_step:
            unknown = [key for key in next_step if key not in NEXT_STEP_FIELDS]
            if unknown:
                raise ValidationFailed(
                    {f"next_step.{key}": [_("Unknown field.")] for key in unknown}
                )
            step = {**next_step, "user_id": _back_to(task).pk}
        email = access.link.email
        return services.complete_locked(
            task,
            actor=system_user(),
            by=task.external_name or email,
            next_step=step,
            thread_finished=bool(thread_finished),
            note=note,
            external_email=email,
        )


def _back_to(task: Task) -> User:
    """Who gets the participant's next step: whoever gave them the task, else its creator,
    else the thread's creator."""
    for person in (task.assigned_by, task.created_by, task.thread.created_by):
        if (
            person is not None
            and person.is_active
            and person.username != SYSTEM_USERNAME
            and can(person, "edit", "task")
        ):
            return person
    raise ValidationFailed(
        {"next_step": [_("Nobody can take on a next step here; please reply by e-mail instead.")]}
    )


def _locked_open(access: Access) -> Task:
    task = services.lock_unchecked(access.task.pk)
    if task.is_closed:
        raise Conflict(_("This task is closed."))
    return task


def _client(ip: str) -> str | None:
    try:
        return str(ipaddress.ip_address((ip or "").strip()))
    except ValueError:
        return None


def _find(token: Any) -> ExternalLink:
    # A real token is 43 characters; anything far off is not worth a query.
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise NotFound(_("This link is not valid."))
    link = (
        ExternalLink.objects.select_related(
            "task", "task__thread", "task__task_type", "task__thread__created_by"
        )
        .filter(token_hash=hash_token(token))
        .first()
    )
    if link is None:
        raise NotFound(_("This link is not valid."))
    return link


def _use(token: str, action: str, ip: str, *, acting: bool) -> Access:
    """Find the link, log this use of it, and refuse it if it no longer works."""
    client = _client(ip)
    if not ratelimit.hit(f"task-link:{client or '-'}", *PER_CLIENT):
        raise RateLimited(_("Too many requests. Please wait a few minutes."))
    link = _find(token)
    now = clock.now()
    if link.revoked_at is not None:
        outcome = Outcome.REVOKED
    elif now >= link.expires_at:
        outcome = Outcome.EXPIRED
    elif acting and link.task.is_closed:
        outcome = Outcome.CLOSED
    else:
        outcome = Outcome.OK
    with transaction.atomic():
        ExternalLinkUse.objects.create(link=link, at=now, action=action, outcome=outcome, ip=client)
        if outcome == Outcome.OK:
            first = ExternalLink.objects.filter(pk=link.pk, last_used_at__isnull=True).update(
                last_used_at=now
            )
            if not first:
                ExternalLink.objects.filter(pk=link.pk).update(last_used_at=now)
            else:
                # The history notes the first time the participant came; the log has the rest.
                TaskEvent.objects.create(
                    task=link.task,
                    thread_id=link.task.thread_id,
                    kind=TaskEvent.Kind.LINK_USED,
                    at=now,
                    external_email=link.email,
                    data={"link": link.pk, "action": action},
                )
    if outcome == Outcome.REVOKED:
        raise LinkGone(_("This link was revoked. Ask the person who sent it for a new one."))
    if outcome == Outcome.EXPIRED:
        raise LinkGone(_("This link has expired. Ask the person who sent it for a new one."))
    if outcome == Outcome.CLOSED:
        raise Conflict(_("This task is closed."))
    return Access(link, link.task)
