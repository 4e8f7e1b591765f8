"""Every read of tasks and threads, always through ``core.visibility``.

A task is visible when the user's right on tasks lets them see it (by its holder and team, see
``core.visibility``) and, for a task about a record, when they may see that record too: whoever
may not see an opportunity does not learn of the work on it. A thread is visible through its
visible tasks. Anything else is ``NotFound``.

Lists are bounded pages or short lists on indexed columns (holder, team, status, due time).
"""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.utils.translation import gettext as _

from trellis.core import clock, registry
from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, Scope, Team, User
from trellis.core.paging import Page, paginate
from trellis.core.visibility import can, right, visible

from .models import (
    ExternalLink,
    Notification,
    Task,
    TaskAttachment,
    TaskEvent,
    TaskType,
    Thread,
)

Status = Task.Status
Assignee = Task.Assignee
OPEN_STATUSES = (Status.OPEN, Status.IN_PROGRESS, Status.WAITING)
# view name -> what it shows
VIEWS = {
    "mine": "open tasks you hold",
    "overdue": "open tasks you hold whose due time has passed",
    "queue": "open tasks waiting in your team's queue",
    "handed_on": "open tasks you gave to someone else",
    "all": "every task you may see",
}
# state name -> what it keeps of a view
STATES = {
    "open": "tasks not done or cancelled",
    "overdue": "open tasks whose due time has passed",
}
# How many tasks each part of "my work" shows.
MY_WORK_ROWS = 50


def _record_condition(user: User) -> Q | None:
    """Tasks about records ``user`` may see (and free-standing ones); ``None``: all of them."""
    conditions = []
    for object_type in registry.all_types():
        if object_type.model._meta.app_label == Task._meta.app_label:
            continue
        scope = right(user, object_type.key)[0]
        if scope == Scope.ALL:
            continue
        content_type = ContentType.objects.get_for_model(object_type.model)
        elsewhere = ~Q(thread__content_type=content_type)
        if scope == Scope.NONE:
            conditions.append(elsewhere)
        else:
            # One index look-up per task, however many records the user may see.
            seen = visible(user, object_type.model).filter(pk=OuterRef("thread__object_id"))
            conditions.append(elsewhere | Q(Exists(seen)))
    if not conditions:
        return None
    combined = conditions[0]
    for condition in conditions[1:]:
        combined &= condition
    return combined


def visible_tasks(user: User) -> QuerySet[Task]:
    """Every task the user may see: the one door for reading tasks."""
    tasks = visible(user, Task)
    condition = _record_condition(user)
    return tasks if condition is None else tasks.filter(condition)


def threads(user: User) -> QuerySet[Thread]:
    """Threads with at least one task the user may see."""
    return Thread.objects.filter(pk__in=visible_tasks(user).values("thread_id"))


def _pk(value: Any, what: str) -> int:
    try:
        pk = int(value)
        if not 1 <= pk <= 2**63 - 1:
            raise ValueError
        return pk
    except (TypeError, ValueError):
        raise NotFound(what) from None


_JOINED = ("thread", "task_type", "owner", "team", "created_by", "assigned_by", "completed_by")


def task(user: User, pk: Any) -> Task:
    """One task the user may see, with its people and thread joined; else ``NotFound``."""
    found = (
        visible_tasks(user).select_related(*_JOINED).filter(pk=_pk(pk, _("No such task."))).first()
    )
    if found is None:
        raise NotFound(_("No such task."))
    return found


def _due_first(tasks: QuerySet[Task]) -> QuerySet[Task]:
    return tasks.order_by(F("due_at").asc(nulls_last=True), "id")


def task_queryset(
    user: User,
    *,
    view: str = "all",
    status: str | None = None,
    state: str | None = None,
    thread_id: int | None = None,
    record_type: str | None = None,
    record_id: int | None = None,
    assignee_id: int | None = None,
    queue_id: int | None = None,
) -> QuerySet[Task]:
    """The tasks of a view (``VIEWS``) the user may see, filtered, in the view's order.

    ``state`` keeps the open or the overdue ones (``STATES``); ``assignee_id`` those a user
    holds, ``queue_id`` those waiting in a team's queue. The views of open work, and lists
    filtered by state, list the soonest due first; the others the newest first.
    """
    errors = {}
    if view not in VIEWS:
        errors["view"] = [_("Unknown view.")]
    if status and status not in Status.values:
        errors["status"] = [_("Unknown status.")]
    if state and state not in STATES:
        errors["state"] = [_("Unknown state.")]
    if record_id is not None and not record_type:
        errors["record_type"] = [_("Say what kind of record it is.")]
    if errors:
        raise ValidationFailed(errors)
    tasks = visible_tasks(user).select_related(*_JOINED)
    working = Q(status__in=OPEN_STATUSES)
    if view == "mine":
        tasks = tasks.filter(working, owner_id=user.pk)
    elif view == "overdue":
        tasks = tasks.filter(working, owner_id=user.pk, due_at__lt=clock.now())
    elif view == "queue":
        tasks = tasks.filter(working, assignee_kind=Assignee.TEAM, team_id=user.team_id)
    elif view == "handed_on":
        tasks = tasks.filter(working, assigned_by_id=user.pk).exclude(owner_id=user.pk)
    if status:
        tasks = tasks.filter(status=status)
    if state == "open":
        tasks = tasks.filter(working)
    elif state == "overdue":
        tasks = tasks.filter(working, due_at__lt=clock.now())
    if assignee_id is not None:
        tasks = tasks.filter(assignee_kind=Assignee.USER, owner_id=assignee_id)
    if queue_id is not None:
        tasks = tasks.filter(assignee_kind=Assignee.TEAM, team_id=queue_id)
    if thread_id is not None:
        tasks = tasks.filter(thread_id=thread_id)
    if record_type:
        model = _model(record_type)
        tasks = tasks.filter(thread__content_type=ContentType.objects.get_for_model(model))
        if record_id is not None:
            tasks = tasks.filter(thread__object_id=record_id)
    if view in ("mine", "overdue", "queue") or state:
        return _due_first(tasks)
    return tasks.order_by("-id")


def tasks(user: User, *, page: int = 1, page_size: int | None = None, **filters: Any) -> Page:
    """One page of a task list; ``filters`` are those of ``task_queryset``."""
    return paginate(task_queryset(user, **filters), page, page_size)


def is_overdue(task: Task, now: dt.datetime | None = None) -> bool:
    return (
        task.status in OPEN_STATUSES
        and task.due_at is not None
        and task.due_at < (now or clock.now())
    )


# Threads.


@dataclass
class ThreadView:
    thread: Thread
    # The thread's tasks the user may see, in the order they were created.
    tasks: list[Task] = field(default_factory=list)


def thread(user: User, pk: Any) -> ThreadView:
    """One thread with the tasks of it the user may see; else ``NotFound``."""
    pk = _pk(pk, _("No such thread."))
    found = threads(user).select_related("created_by", "finished_by").filter(pk=pk).first()
    if found is None:
        raise NotFound(_("No such thread."))
    tasks = visible_tasks(user).select_related(*_JOINED).filter(thread=found)
    return ThreadView(found, list(tasks.order_by("created_at", "id")))


def _model(record_type: str) -> type[models.Model]:
    try:
        model = registry.get(record_type).model
    except KeyError:
        raise ValidationFailed({"record_type": [_("Unknown record type.")]}) from None
    if model._meta.app_label == Task._meta.app_label:
        raise ValidationFailed({"record_type": [_("Unknown record type.")]})
    return model


def record(user: User, record_type: str, record_id: Any) -> models.Model:
    """The record, if the user may see it, with its owner (the accountable one of
    ``responsibility``) joined; else ``NotFound``."""
    model = _model(record_type)
    records = visible(user, model)
    if any(f.name == "owner" and f.many_to_one for f in model._meta.get_fields()):
        records = records.select_related("owner")
    found = records.filter(pk=_pk(record_id, _("No such record."))).first()
    if found is None:
        raise NotFound(_("No such record."))
    return found


def threads_for_record(user: User, record_type: str, record_id: Any) -> list[ThreadView]:
    """The threads about a record, oldest first, each with its visible tasks in order: what
    the record's timeline shows. Two queries."""
    found = record(user, record_type, record_id)
    content_type = ContentType.objects.get_for_model(type(found))
    tasks = list(
        visible_tasks(user)
        .select_related(*_JOINED)
        .filter(thread__content_type=content_type, thread__object_id=found.pk)
        .order_by("thread__created_at", "thread_id", "created_at", "id")
    )
    views: dict[int, ThreadView] = {}
    for item in tasks:
        views.setdefault(item.thread_id, ThreadView(item.thread)).tasks.append(item)
    return list(views.values())


def thread_records(user: User, threads: Iterable[Thread]) -> dict[int, models.Model]:
    """The records ``threads`` are about, by thread id, those the user may see: one query per
    kind of record, however many threads."""
    wanted: dict[int, dict[int, list[int]]] = {}
    for item in threads:
        if item.content_type_id is not None:
            by_record = wanted.setdefault(item.content_type_id, {})
            by_record.setdefault(item.object_id, []).append(item.pk)
    found: dict[int, models.Model] = {}
    for content_type_id, by_record in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        if model is None or model._meta.app_label == Task._meta.app_label:
            continue
        for item in visible(user, model).filter(pk__in=list(by_record)):
            for thread_id in by_record[item.pk]:
                found[thread_id] = item
    return found


def _with_attachments(events: QuerySet[TaskEvent]) -> QuerySet[TaskEvent]:
    files = TaskAttachment.objects.defer("data").order_by("id")
    return events.select_related("actor").prefetch_related(Prefetch("attachments", files))


def task_events(task: Task) -> QuerySet[TaskEvent]:
    """A task's history, oldest first, with actors and files (without their bytes).

    Take ``task`` from ``task()``: its history shares its rights.
    """
    return _with_attachments(TaskEvent.objects.filter(task=task)).order_by("at", "id")


def thread_timeline(view: ThreadView) -> list[TaskEvent]:
    """The history of a thread's visible tasks, oldest first (take ``view`` from ``thread``)."""
    ids = [item.pk for item in view.tasks]
    events = TaskEvent.objects.filter(thread=view.thread, task_id__in=ids)
    return list(_with_attachments(events).order_by("at", "id"))


def attachment(task: Task, attachment_id: Any) -> TaskAttachment:
    """A file of ``task`` that may be served; else ``NotFound``. Take ``task`` from ``task()``."""
    pk = _pk(attachment_id, _("There is no such file."))
    found = task.attachments.filter(pk=pk, allowed=True).first()
    if found is None:
        raise NotFound(_("There is no such file."))
    return found


def links(task: Task) -> list[ExternalLink]:
    """The task's links for external participants, newest first, each with ``use_count``."""
    return list(
        ExternalLink.objects.filter(task=task)
        .annotate(use_count=Count("uses"))
        .select_related("created_by", "revoked_by")
        .order_by("-id")
    )


# My work.


@dataclass
class Section:
    tasks: list[Task]
    # Whether more tasks belong here than the list holds.
    has_more: bool


def _section(tasks: QuerySet[Task]) -> Section:
    rows = list(tasks[: MY_WORK_ROWS + 1])
    return Section(rows[:MY_WORK_ROWS], len(rows) > MY_WORK_ROWS)


@dataclass
class MyWork:
    open: Section
    overdue: Section
    handed_on: Section
    queue: Section


def my_work(user: User) -> MyWork:
    """The user's open tasks (not overdue), overdue tasks, tasks they handed on that are still
    open, and their team's queue; each soonest due first, at most ``MY_WORK_ROWS``."""
    now = clock.now()
    mine = task_queryset(user, view="mine")
    return MyWork(
        open=_section(mine.exclude(due_at__lt=now)),
        overdue=_section(task_queryset(user, view="overdue")),
        handed_on=_section(_due_first(task_queryset(user, view="handed_on"))),
        queue=_section(task_queryset(user, view="queue")),
    )


# Who is responsible.


@dataclass(frozen=True)
class Party:
    kind: str  # "user", "team" or "external"
    id: int | None
    name: str
    email: str = ""

    @property
    def key(self) -> tuple[str, Any]:
        return (self.kind, self.id if self.kind != Assignee.EXTERNAL else self.email)


@dataclass
class Responsibility:
    """Who is responsible, accountable, consulted and informed about a record's work."""

    responsible: list[Party]
    accountable: list[Party]
    consulted: list[Party]
    informed: list[Party]


def _user_party(user: User) -> Party:
    return Party(Assignee.USER, user.pk, str(user), user.email)


def _people(users: Iterable[User | None]) -> list[Party]:
    """Parties for real people: the system user stands for no one."""
    return [_user_party(u) for u in users if isinstance(u, User) and u.username != SYSTEM_USERNAME]


def holder(task: Task) -> Party:
    if task.assignee_kind == Assignee.USER:
        return _user_party(task.owner)
    if task.assignee_kind == Assignee.TEAM:
        return Party(Assignee.TEAM, task.team_id, task.team.name if task.team_id else "")
    return Party(
        Assignee.EXTERNAL, None, task.external_name or task.external_email, task.external_email
    )


def responsibility(user: User, record_type: str, record_id: Any) -> Responsibility:
    """The RACI of a record's task threads.

    Responsible: who holds its open tasks. Accountable: the record's owner, if it has one.
    Consulted: who held its tasks before, completed them, or commented. Informed: who
    created its threads and tasks (there are no watchers yet). Each person appears once, in the
    first of consulted and informed that fits, and not there when responsible or accountable.
    """
    found = record(user, record_type, record_id)
    content_type = ContentType.objects.get_for_model(type(found))
    tasks = list(
        visible_tasks(user)
        .select_related("owner", "team", "created_by", "thread__created_by")
        .filter(thread__content_type=content_type, thread__object_id=found.pk)
        .order_by("created_at", "id")
    )
    responsible = _unique(holder(t) for t in tasks if t.status in OPEN_STATUSES)
    accountable = _people([getattr(found, "owner", None)])
    taken = {p.key for p in responsible} | {p.key for p in accountable}
    earlier = [holder(t) for t in tasks if t.status not in OPEN_STATUSES]
    earlier += _people_in_history([t.pk for t in tasks])
    consulted = [p for p in _unique(earlier) if p.key not in taken]
    taken |= {p.key for p in consulted}
    creators = _people(t.created_by for t in tasks) + _people(t.thread.created_by for t in tasks)
    informed = [p for p in _unique(creators) if p.key not in taken]
    return Responsibility(responsible, accountable, consulted, informed)


def _unique(parties: Iterable[Party]) -> list[Party]:
    seen: dict[tuple[str, Any], Party] = {}
    for item in parties:
        seen.setdefault(item.key, item)
    return list(seen.values())


_HISTORY_KINDS = (
    TaskEvent.Kind.ASSIGNED,
    TaskEvent.Kind.CLAIMED,
    TaskEvent.Kind.COMMENTED,
    TaskEvent.Kind.MAIL_REPLY,
    TaskEvent.Kind.COMPLETED,
)


def _people_in_history(task_ids: list[int]) -> list[Party]:
    """Earlier holders (from hand-offs and claims) and everyone who commented or completed."""
    rows = list(
        TaskEvent.objects.filter(task_id__in=task_ids, kind__in=_HISTORY_KINDS)
        .order_by("at", "id")
        .values("kind", "actor_id", "external_email", "data")
    )
    user_ids = {row["actor_id"] for row in rows if row["actor_id"]}
    for row in rows:
        before = row["data"].get("from") if isinstance(row["data"], dict) else None
        if isinstance(before, dict) and before.get("kind") == Assignee.USER:
            user_ids.add(before.get("id"))
    users = {u.pk: u for u in User.objects.filter(pk__in=user_ids)}
    found: list[Party] = []
    for row in rows:
        before = row["data"].get("from") if isinstance(row["data"], dict) else None
        if row["kind"] in (TaskEvent.Kind.ASSIGNED, TaskEvent.Kind.CLAIMED) and isinstance(
            before, dict
        ):
            if before.get("kind") == Assignee.USER and before.get("id") in users:
                found += _people([users[before["id"]]])
            elif before.get("kind") == Assignee.TEAM and before.get("id"):
                found.append(Party(Assignee.TEAM, before["id"], before.get("name", "")))
            elif before.get("kind") == Assignee.EXTERNAL and before.get("email"):
                found.append(
                    Party(
                        Assignee.EXTERNAL,
                        None,
                        before.get("name") or before["email"],
                        before["email"],
                    )
                )
            continue
        if row["actor_id"] in users:
            found += _people([users[row["actor_id"]]])
        elif row["external_email"]:
            email = row["external_email"]
            found.append(Party(Assignee.EXTERNAL, None, email, email))
    return found


# Team workload.


@dataclass(frozen=True)
class MemberLoad:
    user: User
    open: int
    overdue: int


@dataclass
class Workload:
    team: Team
    members: list[MemberLoad]
    queue_open: int
    queue_overdue: int


def team_workload(user: User, team_id: Any) -> Workload:
    """Open and overdue tasks per member of a team, and in its queue: two aggregate queries.

    Only tasks the user may see are counted.
    """
    if not can(user, "view", "task"):
        raise PermissionDenied(_("You may not see tasks."))
    team = Team.objects.filter(pk=_pk(team_id, _("No such team."))).first()
    if team is None:
        raise NotFound(_("No such team."))
    now = clock.now()
    members = list(
        User.objects.filter(team=team, is_active=True)
        .exclude(username=SYSTEM_USERNAME)
        .order_by("first_name", "last_name", "username")
    )
    working = visible_tasks(user).filter(status__in=OPEN_STATUSES)
    late = Q(due_at__lt=now)
    counts = {
        row["owner_id"]: row
        for row in working.filter(assignee_kind=Assignee.USER, owner__in=members)
        .order_by()
        .values("owner_id")
        .annotate(open=Count("pk"), overdue=Count("pk", filter=late))
    }
    queue = working.filter(assignee_kind=Assignee.TEAM, team=team).aggregate(
        open=Count("pk"), overdue=Count("pk", filter=late)
    )
    return Workload(
        team=team,
        members=[
            MemberLoad(
                member,
                counts.get(member.pk, {}).get("open", 0),
                counts.get(member.pk, {}).get("overdue", 0),
            )
            for member in members
        ],
        queue_open=queue["open"] or 0,
        queue_overdue=queue["overdue"] or 0,
    )


# Small things.


def task_types() -> list[TaskType]:
    """The task types one may choose, by name."""
    return list(TaskType.objects.filter(is_active=True).order_by("name", "id"))


def notifications(user: User, *, unread_only: bool = False) -> QuerySet[Notification]:
    """The user's own notifications, newest first."""
    found = Notification.objects.filter(user=user)
    if unread_only:
        found = found.filter(read_at__isnull=True)
    return found.order_by("-id")
