"""Every write to task threads. The web UI and the API come through here; the external
participant's link (``external``) and mail replies (``mailreplies``) use the ``*_locked``
functions after checking who is acting.

Each public function takes the actor first and the task by id, and:

- finds the task through ``queries.visible_tasks`` (a task the actor may not see is
  ``NotFound``; one they see but may not change is ``PermissionDenied``) and locks its row;
- checks the input (``ValidationFailed`` with field errors, nothing written) and the task's
  state (``Conflict``), and with a ``version`` refuses a stale write (``StaleVersion``);
- writes in one transaction, bumps the task's ``version``, writes the task's history
  (``TaskEvent``) and the audit row, and emits ``task.<what>`` after commit;
- tells the people concerned (``notify``).

A task has exactly one assignee: a user, a team's queue (``team_id`` alone) or an external
participant (``external_email``). Giving a task to an external participant sends them a link
(``external.issue``) and the task by e-mail; their earlier links stop working when the task is
given to someone else.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from trellis.core import audit, clock, events, records, registry
from trellis.core.errors import Conflict, NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, AuditEvent, Team, User
from trellis.core.services import system_user
from trellis.core.visibility import can, visible
from trellis.mail import outbound, parsing
from trellis.mail.inbound import one_line, storable
from trellis.mail.models import InboundMessage
from trellis.mail.parsing import Attachment

from . import external, notify, queries, reminders
from .models import (
    ExternalLink,
    Notification,
    Task,
    TaskAttachment,
    TaskEvent,
    TaskMailSettings,
    TaskType,
    Thread,
)

Status = Task.Status
Assignee = Task.Assignee
Kind = TaskEvent.Kind

MAX_TITLE = Task._meta.get_field("title").max_length
MAX_NAME = Task._meta.get_field("external_name").max_length
MAX_EMAIL = 254
MAX_TEXT = 20_000
OPEN_STATUSES = queries.OPEN_STATUSES
# Where ``set_status`` may move a task. Done is reached only by ``complete`` (it asks for the
# next step); done and cancelled are final.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.OPEN: frozenset({Status.IN_PROGRESS, Status.WAITING, Status.CANCELLED}),
    Status.IN_PROGRESS: frozenset({Status.OPEN, Status.WAITING, Status.CANCELLED}),
    Status.WAITING: frozenset({Status.OPEN, Status.IN_PROGRESS, Status.CANCELLED}),
}
# What describes a task, for ``create_task`` and for the next step of ``complete``.
TASK_FIELDS = (
    "title",
    "description",
    "task_type_id",
    "user_id",
    "team_id",
    "external_email",
    "external_name",
    "language",
    "due_at",
    "priority",
)
# ``create_task`` also says where the task goes: into a thread, or into a new one.
CREATE_FIELDS = (*TASK_FIELDS, "thread_id", "record_type", "record_id", "thread_title")
# ``create_tasks`` makes new threads about records, each with a task for a user or a team.
BATCH_FIELDS = (
    *(name for name in TASK_FIELDS if name not in ("external_email", "external_name", "language")),
    "record_type",
    "record_id",
)

# Called before a task is added to a thread or completed, with the thread and the task's type;
# a guard raises a ServiceError to refuse (a hold blocks the tasks of the types it names on
# the records waiting in it). Registered from ``AppConfig.ready``.
TaskGuard = Callable[[Thread, TaskType | None], None]
_task_guards: list[TaskGuard] = []


def register_task_guard(guard: TaskGuard) -> None:
    if guard not in _task_guards:
        _task_guards.append(guard)


def _check_task(thread: Thread, task_type: TaskType | None) -> None:
    for guard in _task_guards:
        guard(thread, task_type)


# Small checks.


def checked_id(value: Any, field: str | None = None) -> int:
    """An id from a caller; a bad one is a field error, or (without ``field``) not found."""
    try:
        number = int(value)
        if number < 1 or number > 2**63 - 1:
            raise ValueError
        return number
    except (TypeError, ValueError):
        if field is None:
            raise NotFound(_("No such task.")) from None
        raise ValidationFailed({field: [_("Give the id of an existing record.")]}) from None


def _given(value: Any) -> bool:
    return value not in (None, "")


def _text(
    value: Any, field: str, limit: int, errors: dict[str, list[str]], *, required: str = ""
) -> str:
    text = storable(value).strip() if isinstance(value, str) else ""
    if value not in (None, "") and not isinstance(value, str):
        errors[field] = [_("Give text.")]
    elif required and not text:
        errors[field] = [required]
    elif len(text) > limit:
        errors[field] = [_("At most %(n)d characters.") % {"n": limit}]
    return text


def _due(value: Any, field: str, errors: dict[str, list[str]]) -> dt.datetime | None:
    if not _given(value):
        return None
    try:
        if isinstance(value, str):
            value = parse_datetime(value.strip())
        if not isinstance(value, dt.datetime):
            raise ValueError
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
    except (ValueError, OverflowError):
        errors[field] = [_("Give a date and time.")]
        return None
    if value <= clock.now():
        errors[field] = [_("The due time is in the past.")]
    return value


def _language(value: Any, fallback: str) -> str | None:
    """A language code Trellis speaks; ``None`` for one it does not."""
    languages = {code for code, _name in settings.LANGUAGES}
    if not _given(value):
        return fallback if fallback in languages else settings.LANGUAGE_CODE
    return value if value in languages else None


def is_ours(address: str) -> bool:
    """Whether ``address`` is on Trellis' own mail domain (mail to it would come back)."""
    return address.rpartition("@")[2].lower() == settings.MAIL_DOMAIN.lower()


def _sees_record(user: User, content_type_id: int | None, object_id: int | None) -> bool:
    """Whether ``user`` may see the record a thread is about (yes for a free-standing one)."""
    if content_type_id is None:
        return True
    model = ContentType.objects.get_for_id(content_type_id).model_class()
    return model is not None and visible(user, model).filter(pk=object_id).exists()


# Assignees.


@dataclass(frozen=True)
class Holder:
    """Who a task is given to: exactly one of a user, a team's queue, an e-mail address."""

    kind: str
    user: User | None = None
    team: Team | None = None
    email: str = ""
    name: str = ""
    language: str = ""


def _assignable_users(pks: Iterable[int]) -> models.QuerySet[User]:
    return (
        User.objects.filter(pk__in=pks, is_active=True)
        .exclude(username=SYSTEM_USERNAME)
        .select_related("role")
    )


@dataclass
class _Known:
    """What checking a batch of new tasks reads once for all rather than once per task: the
    users, teams and task types named, and which of the records each user may see."""

    users: dict[int, User]
    teams: dict[int, Team]
    task_types: dict[int, TaskType]
    seen: dict[tuple[int, int], set[int]]

    @classmethod
    def of(cls, items: Sequence[Mapping[str, Any]], records: Iterable[models.Model]) -> "_Known":
        def ids(key: str) -> set[int]:
            return {checked_id(item[key], key) for item in items if _given(item.get(key))}

        users = {user.pk: user for user in _assignable_users(ids("user_id"))}
        by_type: dict[type[models.Model], set[int]] = {}
        for record in records:
            by_type.setdefault(type(record), set()).add(record.pk)
        seen = {}
        for model, pks in by_type.items():
            content_type_id = ContentType.objects.get_for_model(model).pk
            for user in users.values():
                seen[(user.pk, content_type_id)] = set(
                    visible(user, model).filter(pk__in=pks).values_list("pk", flat=True)
                )
        return cls(
            users=users,
            teams=Team.objects.in_bulk(ids("team_id")),
            task_types=TaskType.objects.filter(is_active=True).in_bulk(ids("task_type_id")),
            seen=seen,
        )

    def sees(self, user: User, content_type_id: int | None, object_id: int | None) -> bool:
        if content_type_id is None:
            return True
        return object_id in self.seen.get((user.pk, content_type_id), ())


def _holder(
    actor: User,
    data: Mapping[str, Any],
    errors: dict[str, list[str]],
    *,
    prefix: str = "",
    record: tuple[int | None, int | None] = (None, None),
    known: _Known | None = None,
) -> Holder | None:
    """The assignee ``data`` names (``user_id``, ``team_id`` or ``external_email``)."""
    given = [key for key in ("user_id", "team_id", "external_email") if _given(data.get(key))]
    if len(given) != 1:
        errors[prefix + "assignee"] = [
            _("Give exactly one assignee: a user, a team, or an external e-mail address.")
        ]
        return None
    if given == ["user_id"]:
        pk = checked_id(data["user_id"], prefix + "user_id")
        user = known.users.get(pk) if known else _assignable_users([pk]).first()
        if user is None:
            errors[prefix + "user_id"] = [_("No such user.")]
        elif not can(user, "edit", "task"):
            errors[prefix + "user_id"] = [_("%(name)s may not work on tasks.") % {"name": user}]
        elif not (known.sees(user, *record) if known else _sees_record(user, *record)):
            errors[prefix + "user_id"] = [
                _("%(name)s may not see the record this thread is about.") % {"name": user}
            ]
        else:
            return Holder(Assignee.USER, user=user)
        return None
    if given == ["team_id"]:
        pk = checked_id(data["team_id"], prefix + "team_id")
        team = known.teams.get(pk) if known else Team.objects.filter(pk=pk).first()
        if team is None:
            errors[prefix + "team_id"] = [_("No such team.")]
            return None
        return Holder(Assignee.TEAM, team=team)
    email = data["external_email"]
    email = email.strip().lower() if isinstance(email, str) else ""
    try:
        if len(email) > MAX_EMAIL:
            raise ValidationError("too long")
        validate_email(email)
    except ValidationError:
        errors[prefix + "external_email"] = [_("Enter a valid e-mail address.")]
        return None
    if is_ours(email):
        errors[prefix + "external_email"] = [
            _("This is an address of Trellis itself; give the participant's own address.")
        ]
        return None
    name = one_line(_text(data.get("external_name"), prefix + "external_name", MAX_NAME, errors))
    language = _language(data.get("language"), actor.language)
    if language is None:
        errors[prefix + "language"] = [_("Unknown language.")]
        return None
    return Holder(Assignee.EXTERNAL, email=email, name=name, language=language)


def party(task: Task) -> dict[str, Any]:
    """The task's assignee as a history entry keeps it (names as they were then)."""
    if task.assignee_kind == Assignee.USER:
        return {"kind": Assignee.USER, "id": task.owner_id, "name": str(task.owner), "email": ""}
    if task.assignee_kind == Assignee.TEAM:
        name = task.team.name if task.team_id else ""
        return {"kind": Assignee.TEAM, "id": task.team_id, "name": name, "email": ""}
    return {
        "kind": Assignee.EXTERNAL,
        "id": None,
        "name": task.external_name,
        "email": task.external_email,
    }


def _give(task: Task, holder: Holder, actor: User | None, now: dt.datetime) -> None:
    """Put ``holder`` on ``task`` (not saved). Reminders start over for the new holder."""
    task.assignee_kind = holder.kind
    task.owner = holder.user
    task.external_email = holder.email
    task.external_name = holder.name
    if holder.kind == Assignee.USER:
        task.team_id = holder.user.team_id
    elif holder.kind == Assignee.TEAM:
        task.team = holder.team
    else:
        task.language = holder.language
        task.team_id = actor.team_id if actor is not None else task.team_id
    task.assigned_by = actor if actor is not None and actor.username != SYSTEM_USERNAME else None
    task.assigned_at = now
    task.reminded_before_at = task.reminded_overdue_at = None
    task.next_reminder_at = reminders.schedule(task, now)


def _announce(task: Task, actor: User, *, at: dt.datetime, by: str = "") -> None:
    """Tell the new holder: a user by notification and e-mail, a team in the app, an external
    participant by e-mail with a fresh link. ``by`` names who handed the task on."""
    by = by or str(actor)
    if task.assignee_kind == Assignee.USER:
        if task.owner_id != actor.pk:
            notify.assigned_to_user(task, task.owner, by)
    elif task.assignee_kind == Assignee.TEAM:
        notify.queued_for_team(task, actor, by)
    else:
        _send_link(task, actor, at=at, by=by)


def _send_link(task: Task, actor: User, *, at: dt.datetime, by: str = "") -> ExternalLink:
    link, token = external.issue(task, actor)
    message = notify.assigned_to_external(task, external.link_url(token), by or str(actor))
    _event(
        task,
        Kind.LINK_ISSUED,
        actor,
        at=at,
        outbound=message,
        data={"link": link.pk, "email": link.email, "expires_at": link.expires_at.isoformat()},
    )
    return link


def _revoke_links(task: Task, actor: User | None, *, keep_email: str = "", reason: str) -> None:
    """End the task's working links (but those of ``keep_email``)."""
    now = clock.now()
    links = ExternalLink.objects.filter(task=task, revoked_at__isnull=True, expires_at__gt=now)
    if keep_email:
        links = links.exclude(email=keep_email)
    for link in links.order_by("pk"):
        ExternalLink.objects.filter(pk=link.pk).update(revoked_at=now, revoked_by=actor)
        _event(
            task,
            Kind.LINK_REVOKED,
            actor,
            at=now,
            data={"link": link.pk, "email": link.email, "reason": reason},
        )


# Finding and writing.


def lock(actor: User, task_id: Any, version: int | None = None) -> Task:
    """The task, locked for this transaction, if the actor may see and change it."""
    pk = checked_id(task_id)
    found = queries.visible_tasks(actor).select_for_update(of=("self",)).filter(pk=pk)
    if not found.values_list("pk", flat=True).first():
        raise NotFound(_("No such task."))
    if not can(actor, "edit", "task"):
        raise PermissionDenied(_("You may not change tasks."))
    task = _read_locked(pk)
    if version is not None and task.version != version:
        raise StaleVersion(task)
    return task


def lock_unchecked(task_id: int) -> Task:
    """The task, locked, for callers that decided who may act themselves (links, mail)."""
    Task.objects.select_for_update().filter(pk=task_id).values_list("pk", flat=True).get()
    return _read_locked(task_id)


def _read_locked(pk: int) -> Task:
    # Read after the lock is held, not with it: PostgreSQL re-reads a locked row that changed
    # while we waited, but not the rows joined to it, so a joined holder could be stale.
    return Task.objects.select_related("thread", "task_type", "owner", "team").get(pk=pk)


def _save(task: Task, *fields: str) -> None:
    records.mark_changed(task)
    task.save(update_fields=[*dict.fromkeys(fields), "version", "updated_at"])


def _event(task: Task, kind: str, actor: User | None, **fields: Any) -> TaskEvent:
    event = _event_row(task, kind, actor, **fields)
    event.save()
    return event


def _event_row(
    task: Task,
    kind: str,
    actor: User | None,
    *,
    email: str = "",
    body: str = "",
    public: bool = False,
    data: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
    inbound: InboundMessage | None = None,
    outbound: Any = None,
) -> TaskEvent:
    """A history entry of ``task``, not saved."""
    return TaskEvent(
        task=task,
        thread_id=task.thread_id,
        kind=kind,
        at=at or clock.now(),
        actor=actor if actor is not None and actor.username != SYSTEM_USERNAME else None,
        external_email=email,
        body=body,
        public=public,
        data=data or {},
        inbound=inbound,
        outbound=outbound,
    )


def _audit(
    actor: User, task: Task, changes: dict[str, Any], action: str = AuditEvent.Action.UPDATED
) -> None:
    audit.record(actor, task, action, changes, one_line(task.title))


def _open(task: Task) -> None:
    if task.is_closed:
        raise Conflict(
            _("This task is %(status)s; it can no longer be changed.")
            % {"status": Status(task.status).label}
        )


def _held(task: Task) -> None:
    """Work on a queue task starts by claiming it."""
    if task.assignee_kind == Assignee.TEAM:
        raise Conflict(_("This task waits in a team's queue; claim it first."))


# Creating.


@dataclass(frozen=True)
class NewTask:
    title: str
    description: str
    task_type: TaskType | None
    holder: Holder
    due_at: dt.datetime | None
    priority: str


def _task_type(
    value: Any, field: str, errors: dict[str, list[str]], known: _Known | None = None
) -> TaskType | None:
    if not _given(value):
        return None
    pk = checked_id(value, field)
    if known is not None:
        found = known.task_types.get(pk)
    else:
        found = TaskType.objects.filter(pk=pk, is_active=True).first()
    if found is None:
        errors[field] = [_("No such task type.")]
    return found


def _checked_task(
    actor: User,
    data: Mapping[str, Any],
    errors: dict[str, list[str]],
    *,
    prefix: str = "",
    allowed: Iterable[str] = TASK_FIELDS,
    record: tuple[int | None, int | None] = (None, None),
    known: _Known | None = None,
) -> NewTask | None:
    """A task's fields from ``data``, or ``None`` with ``errors`` filled in (keys prefixed)."""
    before = len(errors)
    for key in data:
        if key not in allowed:
            errors[prefix + key] = [_("Unknown field.")]
    title = one_line(
        _text(data.get("title"), prefix + "title", MAX_TITLE, errors, required=_("Give a title."))
    )
    description = _text(data.get("description"), prefix + "description", MAX_TEXT, errors)
    task_type = _task_type(data.get("task_type_id"), prefix + "task_type_id", errors, known)
    priority = data.get("priority") or Task.Priority.NORMAL
    if priority not in Task.Priority.values:
        errors[prefix + "priority"] = [_("Unknown priority.")]
    due_at = _due(data.get("due_at"), prefix + "due_at", errors)
    holder = _holder(actor, data, errors, prefix=prefix, record=record, known=known)
    if len(errors) > before or holder is None:
        return None
    return NewTask(title, description, task_type, holder, due_at, priority)


def _record_of(
    actor: User, record_type: Any, record_id: Any, errors: dict[str, list[str]]
) -> models.Model | None:
    """The record a new thread is about, if the actor may see it."""
    if not _given(record_type) and not _given(record_id):
        return None
    if not _given(record_type):
        errors["record_type"] = [_("Say what kind of record it is.")]
        return None
    model = _thread_record_model(record_type)
    if model is None:
        errors["record_type"] = [_("Unknown record type.")]
        return None
    if not _given(record_id):
        errors["record_id"] = [_("Give the id of an existing record.")]
        return None
    found = visible(actor, model).filter(pk=checked_id(record_id, "record_id")).first()
    if found is None:
        errors["record_id"] = [_("No such record.")]
    return found


def _thread_record_model(record_type: Any) -> type[models.Model] | None:
    """The model of a registered type a thread may be about: any but the tasks' own."""
    try:
        model = registry.get(record_type).model
    except (KeyError, TypeError):
        return None
    return None if model._meta.app_label == Task._meta.app_label else model


def create_task(actor: User, data: Mapping[str, Any]) -> Task:
    """A new task: into the open thread ``thread_id``, or as the first of a new thread.

    A new thread is about the record ``record_type`` / ``record_id`` (any registered type the
    actor may see; neither for a free-standing thread) and is called ``thread_title`` (by
    default the task's title). The task's fields are ``TASK_FIELDS``.
    """
    if not can(actor, "create", "task"):
        raise PermissionDenied(_("You may not create tasks."))
    errors: dict[str, list[str]] = {}
    thread = None
    record = None
    if _given(data.get("thread_id")):
        thread = (
            queries.threads(actor).filter(pk=checked_id(data["thread_id"], "thread_id")).first()
        )
        if thread is None:
            errors["thread_id"] = [_("No such thread.")]
        for key in ("record_type", "record_id", "thread_title"):
            if _given(data.get(key)):
                errors[key] = [_("A task added to a thread is about the thread's record.")]
    else:
        record = _record_of(actor, data.get("record_type"), data.get("record_id"), errors)
    thread_title = one_line(_text(data.get("thread_title"), "thread_title", MAX_TITLE, errors))
    if thread is not None:
        where = (thread.content_type_id, thread.object_id)
    elif record is not None:
        where = (ContentType.objects.get_for_model(type(record)).pk, record.pk)
    else:
        where = (None, None)
    new = _checked_task(actor, data, errors, allowed=CREATE_FIELDS, record=where)
    if errors or new is None:
        raise ValidationFailed(errors)
    with transaction.atomic():
        now = clock.now()
        if thread is None:
            thread = Thread.objects.create(
                title=thread_title or new.title,
                content_type_id=where[0],
                object_id=where[1],
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            events.emit("thread.created", id=thread.pk, actor_id=actor.pk)
        else:
            thread = Thread.objects.select_for_update().get(pk=thread.pk)
            if thread.status != Thread.Status.OPEN:
                raise Conflict(_("This thread is finished; start a new one."))
            thread.updated_at = now
            thread.save(update_fields=["updated_at"])
        task = _add_task(actor, thread, new, now=now)
    return task


def create_tasks(actor: User, items: Sequence[Mapping[str, Any]]) -> list[Task]:
    """Many tasks, each the first of a new thread about a record (``record_type`` and
    ``record_id``) and given to a user or a team's queue: what ``create_task`` does for each,
    with each table written once for all of them. Refused as a whole when one item is wrong,
    with errors keyed ``<index>.<field>``; a caller that must save the others tries them one by
    one with ``create_task``."""
    if not can(actor, "create", "task"):
        raise PermissionDenied(_("You may not create tasks."))
    errors: dict[str, list[str]] = {}
    found = _records_for(actor, items, errors)
    known = _Known.of(items, [record for record in found if record is not None])
    checked: list[tuple[tuple[int, int], NewTask]] = []
    for index, (data, record) in enumerate(zip(items, found, strict=True)):
        if record is None:
            continue
        where = (ContentType.objects.get_for_model(type(record)).pk, record.pk)
        new = _checked_task(
            actor, data, errors, prefix=f"{index}.", allowed=BATCH_FIELDS, record=where, known=known
        )
        if new is not None:
            checked.append((where, new))
    if errors:
        raise ValidationFailed(errors)
    now = clock.now()
    with transaction.atomic():
        threads = Thread.objects.bulk_create(
            Thread(
                title=new.title,
                content_type_id=where[0],
                object_id=where[1],
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            for where, new in checked
        )
        tasks = Task.objects.bulk_create(
            _new_task(actor, thread, new, now=now)
            for thread, (_where, new) in zip(threads, checked, strict=True)
        )
        rows = [_creation_rows(actor, task, now=now) for task in tasks]
        TaskEvent.objects.bulk_create(event for event, _entry in rows)
        AuditEvent.objects.bulk_create(entry for _event, entry in rows)
        with notify.noticed_together(), outbound.queued_together():
            for task in tasks:
                _announce(task, actor, at=now)
        for task in tasks:
            events.emit("thread.created", id=task.thread_id, actor_id=actor.pk)
            _emit_created(actor, task)
    return tasks


def _records_for(
    actor: User, items: Sequence[Mapping[str, Any]], errors: dict[str, list[str]]
) -> list[models.Model | None]:
    """The record each item's new thread is about, if the actor may see it; one query per
    type of record."""
    wanted: list[tuple[type[models.Model], int] | None] = []
    for index, data in enumerate(items):
        model = _thread_record_model(data.get("record_type"))
        if model is None:
            errors[f"{index}.record_type"] = [_("Unknown record type.")]
            wanted.append(None)
            continue
        wanted.append((model, checked_id(data.get("record_id"), f"{index}.record_id")))
    by_model: dict[type[models.Model], set[int]] = {}
    for place in filter(None, wanted):
        by_model.setdefault(place[0], set()).add(place[1])
    seen = {
        (model, record.pk): record
        for model, pks in by_model.items()
        for record in visible(actor, model).filter(pk__in=pks).only("pk")
    }
    found: list[models.Model | None] = []
    for index, place in enumerate(wanted):
        record = seen.get(place) if place else None
        if place and record is None:
            errors[f"{index}.record_id"] = [_("No such record.")]
        found.append(record)
    return found


def _add_task(
    actor: User,
    thread: Thread,
    new: NewTask,
    *,
    now: dt.datetime,
    handed_from: Task | None = None,
    by: str = "",
) -> Task:
    """Write a checked task into ``thread`` and tell its assignee; ``by`` names who hands it on
    (the actor by default)."""
    task = _new_task(actor, thread, new, now=now, handed_from=handed_from)
    task.save()
    event, entry = _creation_rows(actor, task, now=now, handed_from=handed_from)
    event.save()
    _announce(task, actor, at=now, by=by)
    entry.save()
    _emit_created(actor, task, handed_from)
    return task


def _new_task(
    actor: User, thread: Thread, new: NewTask, *, now: dt.datetime, handed_from: Task | None = None
) -> Task:
    """The row of a checked new task in ``thread``, given to its holder; not saved."""
    _check_task(thread, new.task_type)
    task = Task(
        thread=thread,
        title=new.title,
        description=new.description,
        task_type=new.task_type,
        due_at=new.due_at,
        priority=new.priority,
        created_by=actor,
        handed_from=handed_from,
        language=actor.language or settings.LANGUAGE_CODE,
        created_at=now,
        updated_at=now,
    )
    _give(task, new.holder, actor, now)
    return task


def _creation_rows(
    actor: User, task: Task, *, now: dt.datetime, handed_from: Task | None = None
) -> tuple[TaskEvent, AuditEvent]:
    """The new task's first history entry and its audit row, not saved."""
    handed = handed_from.pk if handed_from else None
    event = _event_row(
        task,
        Kind.CREATED,
        actor,
        at=now,
        body=task.description,
        data={"to": party(task), "handed_from": handed},
    )
    entry = audit.entry(
        actor,
        task,
        AuditEvent.Action.CREATED,
        {
            "title": task.title,
            "thread": task.thread_id,
            "assignee": party(task),
            "due_at": task.due_at,
            "priority": task.priority,
            "handed_from": handed,
        },
        one_line(task.title),
    )
    return event, entry


def _emit_created(actor: User, task: Task, handed_from: Task | None = None) -> None:
    events.emit(
        "task.created",
        id=task.pk,
        thread_id=task.thread_id,
        actor_id=actor.pk,
        assignee_kind=task.assignee_kind,
        handed_from_id=handed_from.pk if handed_from else None,
    )


# Editing.


def edit(actor: User, task_id: int, data: Mapping[str, Any], *, version: int | None) -> Task:
    """Change title, description, type, due time or priority, if still at ``version``."""
    allowed = ("title", "description", "task_type_id", "due_at", "priority")
    with transaction.atomic():
        if version is None:
            raise ValidationFailed({"version": [_("Send the version you edited.")]})
        task = lock(actor, task_id, version)
        _open(task)
        errors: dict[str, list[str]] = {}
        for key in data:
            if key not in allowed:
                errors[key] = [_("Unknown field.")]
        after: dict[str, Any] = {}
        if "title" in data:
            after["title"] = one_line(
                _text(data["title"], "title", MAX_TITLE, errors, required=_("Give a title."))
            )
        if "description" in data:
            after["description"] = _text(data["description"], "description", MAX_TEXT, errors)
        if "task_type_id" in data:
            after["task_type"] = _task_type(data["task_type_id"], "task_type_id", errors)
        if "due_at" in data:
            after["due_at"] = _due(data["due_at"], "due_at", errors)
        if "priority" in data:
            after["priority"] = data["priority"]
            if data["priority"] not in Task.Priority.values:
                errors["priority"] = [_("Unknown priority.")]
        if errors:
            raise ValidationFailed(errors)
        before = audit.snapshot(task, list(after))
        changes = audit.diff(before, after)
        if not changes:
            return task
        for name, value in after.items():
            setattr(task, name, value)
        fields = list(after)
        if "due_at" in changes:
            task.reminded_before_at = task.reminded_overdue_at = None
            task.next_reminder_at = reminders.schedule(task, clock.now())
            fields += ["reminded_before_at", "reminded_overdue_at", "next_reminder_at"]
        _save(task, *fields)
        _event(task, Kind.EDITED, actor, data={"changes": changes})
        _audit(actor, task, changes)
        events.emit("task.edited", id=task.pk, actor_id=actor.pk, changed=sorted(changes))
    return task


# Assigning and claiming.


def assign(
    actor: User,
    task_id: int,
    *,
    user_id: int | None = None,
    team_id: int | None = None,
    external_email: str = "",
    external_name: str = "",
    language: str = "",
    note: str = "",
    version: int | None = None,
) -> Task:
    """Give the task to a user, a team's queue or an external participant.

    The history keeps who held it before (``assigned`` events with ``from`` and ``to``); the
    ``note`` goes with the hand-off. Work in progress starts over as open for the new holder.
    """
    with transaction.atomic():
        task = lock(actor, task_id, version)
        _open(task)
        errors: dict[str, list[str]] = {}
        note = _text(note, "note", MAX_TEXT, errors)
        values = {
            "user_id": user_id,
            "team_id": team_id,
            "external_email": external_email,
            "external_name": external_name,
            "language": language,
        }
        holder = _holder(
            actor, values, errors, record=(task.thread.content_type_id, task.thread.object_id)
        )
        if errors or holder is None:
            raise ValidationFailed(errors)
        before = party(task)
        same = (
            holder.kind == task.assignee_kind
            and (holder.user.pk if holder.user else None) == task.owner_id
            and (holder.team.pk if holder.team else task.team_id) == task.team_id
            and holder.email == task.external_email
        )
        if same and not note:
            return task
        now = clock.now()
        old_status = task.status
        if not same:
            if task.assignee_kind == Assignee.EXTERNAL:
                _revoke_links(task, actor, keep_email=holder.email, reason="reassigned")
            _give(task, holder, actor, now)
            task.status = Status.OPEN
        _save(
            task,
            "assignee_kind",
            "owner",
            "team",
            "external_email",
            "external_name",
            "language",
            "assigned_by",
            "assigned_at",
            "status",
            "reminded_before_at",
            "reminded_overdue_at",
            "next_reminder_at",
        )
        after = party(task)
        data = {"from": before, "to": after, "via": "assign"}
        if old_status != task.status:
            data["status"] = [old_status, task.status]
        _event(task, Kind.ASSIGNED, actor, at=now, body=note, data=data)
        if not same:
            _announce(task, actor, at=now)
        changes: dict[str, Any] = {"assignee": [before, after]} if not same else {}
        if note:
            changes["note"] = [None, note]
        if old_status != task.status:
            changes["status"] = [old_status, task.status]
        _audit(actor, task, changes)
        events.emit(
            "task.assigned",
            id=task.pk,
            actor_id=actor.pk,
            assignee_kind=task.assignee_kind,
            owner_id=task.owner_id,
            team_id=task.team_id,
        )
    return task


def claim(actor: User, task_id: int) -> Task:
    """Take a task from your team's queue. Of two members claiming at once exactly one gets it;
    the other gets ``Conflict`` naming who has it. Claiming your own task again changes nothing.
    """
    with transaction.atomic():
        task = lock(actor, task_id)
        if task.assignee_kind == Assignee.USER and task.owner_id == actor.pk:
            return task
        _open(task)
        if task.assignee_kind != Assignee.TEAM:
            raise Conflict(_taken(task))
        if task.team_id != actor.team_id and not actor.is_superuser:
            raise PermissionDenied(_("Only members of the task's team may claim it."))
        before = party(task)
        # The row is locked already; the condition makes sure of it even so: of two members
        # claiming at once, exactly one changes the row.
        claimed = Task.objects.filter(
            pk=task.pk, assignee_kind=Assignee.TEAM, status__in=OPEN_STATUSES
        ).update(assignee_kind=Assignee.USER, owner=actor)
        if not claimed:
            raise Conflict(_taken(Task.objects.select_related("owner").get(pk=task.pk)))
        now = clock.now()
        task.assignee_kind = Assignee.USER
        task.owner = actor
        task.assigned_by = actor
        task.assigned_at = now
        _save(task, "assigned_by", "assigned_at")
        _event(task, Kind.CLAIMED, actor, at=now, data={"from": before, "to": party(task)})
        _audit(actor, task, {"assignee": [before, party(task)]})
        events.emit("task.claimed", id=task.pk, actor_id=actor.pk, owner_id=actor.pk)
    return task


def _taken(task: Task) -> str:
    if task.assignee_kind == Assignee.USER:
        return _("%(name)s has already taken this task.") % {"name": task.owner}
    return _("This task is not waiting in a queue.")


# Status.


def set_status(
    actor: User, task_id: int, status: str, *, note: str = "", version: int | None = None
) -> Task:
    """Move a task along ``TRANSITIONS``: open, in progress, waiting on someone, cancelled.

    ``note`` says why (whom the task waits on, why it is cancelled). The same status again
    changes nothing.
    """
    with transaction.atomic():
        task = lock(actor, task_id, version)
        errors: dict[str, list[str]] = {}
        note = _text(note, "note", MAX_TEXT, errors)
        if status not in Status.values:
            errors["status"] = [_("Unknown status.")]
        elif status == Status.DONE:
            errors["status"] = [_("Complete the task to mark it done.")]
        if errors:
            raise ValidationFailed(errors)
        if status == task.status:
            return task
        _open(task)
        if status in (Status.IN_PROGRESS, Status.WAITING):
            _held(task)
        if status not in TRANSITIONS[task.status]:
            raise ValidationFailed(
                {
                    "status": [
                        _("A task that is %(old)s cannot become %(new)s.")
                        % {"old": Status(task.status).label, "new": Status(status).label}
                    ]
                }
            )
        old = task.status
        task.status = status
        fields = ["status"]
        if status == Status.CANCELLED:
            task.next_reminder_at = None
            fields.append("next_reminder_at")
        _save(task, *fields)
        _event(task, Kind.STATUS, actor, body=note, data={"from": old, "to": status})
        _audit(actor, task, {"status": [old, status]})
        events.emit("task.status_changed", id=task.pk, actor_id=actor.pk, old=old, new=status)
    return task


def start(actor: User, task_id: int, *, version: int | None = None) -> Task:
    return set_status(actor, task_id, Status.IN_PROGRESS, version=version)


def wait(actor: User, task_id: int, *, note: str = "", version: int | None = None) -> Task:
    """The task waits on someone; ``note`` says on whom."""
    return set_status(actor, task_id, Status.WAITING, note=note, version=version)


def cancel(actor: User, task_id: int, *, note: str = "", version: int | None = None) -> Task:
    return set_status(actor, task_id, Status.CANCELLED, note=note, version=version)


# Completing: what is the next step?


def complete(
    actor: User,
    task_id: int,
    *,
    next_step: Mapping[str, Any] | None = None,
    thread_finished: bool = False,
    note: str = "",
    version: int | None = None,
) -> Task:
    """Mark the task done, saying what comes next.

    ``next_step`` is the next task of the same thread (``TASK_FIELDS``: what, for whom, by
    when), or ``thread_finished`` says the work is over. A task whose type requires it must
    have one of the two. Returns the completed task; the next one is ``task.handed_to``.
    """
    with transaction.atomic():
        task = lock(actor, task_id, version)
        _open(task)
        _held(task)
        return complete_locked(
            task,
            actor=actor,
            by=str(actor),
            next_step=next_step,
            thread_finished=thread_finished,
            note=note,
        )


def complete_locked(
    task: Task,
    *,
    actor: User,
    by: str,
    next_step: Mapping[str, Any] | None,
    thread_finished: bool,
    note: str,
    external_email: str = "",
) -> Task:
    """Complete a locked, open task. ``actor`` acts (the system user for an external
    participant, whose address is ``external_email``); ``by`` names them to the others."""
    _check_task(task.thread, task.task_type)
    errors: dict[str, list[str]] = {}
    note = _text(note, "note", MAX_TEXT, errors)
    new = None
    if next_step is not None and not isinstance(next_step, Mapping):
        errors["next_step"] = [_("Describe the next task.")]
    elif next_step:
        if thread_finished:
            errors["thread_finished"] = [
                _("Either give the next step or say that the thread is finished, not both.")
            ]
        new = _checked_task(
            actor,
            next_step,
            errors,
            prefix="next_step.",
            record=(task.thread.content_type_id, task.thread.object_id),
        )
    elif task.task_type is not None and task.task_type.requires_next_step and not thread_finished:
        errors["next_step"] = [
            _("What is the next step? Give the next task, or say that the thread is finished.")
        ]
    if thread_finished and not errors:
        others = Task.objects.filter(thread_id=task.thread_id, status__in=OPEN_STATUSES).exclude(
            pk=task.pk
        )
        count = others.count()
        if count:
            errors["thread_finished"] = [
                ngettext(
                    "%(n)d other task of this thread is still open.",
                    "%(n)d other tasks of this thread are still open.",
                    count,
                )
                % {"n": count}
            ]
    if errors:
        raise ValidationFailed(errors)
    now = clock.now()
    old = task.status
    task.status = Status.DONE
    task.completed_at = now
    task.completed_by = actor if not external_email else None
    task.next_reminder_at = None
    _save(task, "status", "completed_at", "completed_by", "next_reminder_at")
    event = _event(
        task,
        Kind.COMPLETED,
        actor,
        email=external_email,
        at=now,
        body=note,
        public=bool(external_email) or task.assignee_kind == Assignee.EXTERNAL,
        data={"from": old, "thread_finished": thread_finished, "next_task": None},
    )
    next_task = None
    thread = Thread.objects.select_for_update().get(pk=task.thread_id)
    if new is not None:
        next_task = _add_task(actor, thread, new, now=now, handed_from=task, by=by)
        event.data["next_task"] = next_task.pk
        event.save(update_fields=["data"])
    if thread_finished:
        thread.status = Thread.Status.FINISHED
        thread.finished_at = now
        thread.finished_by = actor if not external_email else None
    thread.updated_at = now
    thread.save(update_fields=["status", "finished_at", "finished_by", "updated_at"])
    task.thread = thread
    changes: dict[str, Any] = {"status": [old, Status.DONE]}
    if next_task is not None:
        changes["next_task"] = [None, next_task.pk]
    if thread_finished:
        changes["thread_finished"] = [False, True]
    if external_email:
        changes["completed_by_email"] = [None, external_email]
    _audit(actor, task, changes)
    notify.completed(task, by, actor if not external_email else None)
    events.emit(
        "task.completed",
        id=task.pk,
        thread_id=task.thread_id,
        actor_id=actor.pk,
        next_task_id=next_task.pk if next_task else None,
        thread_finished=thread_finished,
    )
    if thread_finished:
        events.emit("thread.finished", id=thread.pk, actor_id=actor.pk)
    return task


# Comments and files.


def comment(actor: User, task_id: int, body: str, *, public: bool = False) -> TaskEvent:
    """A comment on the task; ``public`` shares it with the task's external participant, who
    is e-mailed it while the task is open. The version stays."""
    with transaction.atomic():
        task = lock(actor, task_id)
        return comment_locked(task, actor=actor, body=body, public=bool(public))


def comment_locked(
    task: Task,
    *,
    actor: User | None,
    body: str,
    public: bool,
    external_email: str = "",
    kind: str = Kind.COMMENTED,
    inbound: InboundMessage | None = None,
    data: dict[str, Any] | None = None,
) -> TaskEvent:
    errors: dict[str, list[str]] = {}
    body = _text(body, "body", MAX_TEXT, errors, required=_("Write a comment."))
    if errors:
        raise ValidationFailed(errors)
    event = _event(
        task,
        kind,
        actor,
        email=external_email,
        body=body,
        public=public,
        data=data,
        inbound=inbound,
    )
    Task.objects.filter(pk=task.pk).update(updated_at=event.at)
    if (
        public
        and not external_email
        and task.assignee_kind == Assignee.EXTERNAL
        and not task.is_closed
    ):
        event.outbound = notify.shared_comment(task, _author(actor), body)
        event.save(update_fields=["outbound"])
    if actor is not None and actor.username != SYSTEM_USERNAME:
        audit_actor = actor
    else:
        audit_actor = system_user()
    _audit(audit_actor, task, {"comment": [None, event.pk]})
    events.emit(
        "task.commented",
        id=task.pk,
        actor_id=audit_actor.pk,
        event_id=event.pk,
        public=public,
        external=bool(external_email),
    )
    return event


def _author(actor: User | None) -> str:
    return str(actor) if actor is not None else ""


def _judged(filename: str, content_type: str, data: bytes) -> dict[str, list[str]]:
    """Why an upload is refused: over the size limit, or a forbidden type."""
    mail = settings.TRELLIS["MAIL"]
    if len(data) > mail["MAX_ATTACHMENT_BYTES"]:
        limit = filesizeformat(mail["MAX_ATTACHMENT_BYTES"])
        return {"file": [_("The file is larger than %(limit)s.") % {"limit": limit}]}
    forbidden = tuple(e.lower() for e in mail["FORBIDDEN_EXTENSIONS"])
    # The parser's list of executable types, which no file name may disguise.
    if filename.lower().endswith(forbidden) or content_type in parsing._FORBIDDEN_TYPES:
        return {"file": [_("Files of this type are not accepted.")]}
    return {}


def attach(
    actor: User,
    task_id: int,
    *,
    filename: str,
    content_type: str,
    data: bytes,
    public: bool = False,
) -> TaskAttachment:
    """Attach a file to the task. Over the size limit or of a forbidden type it is refused
    (``ValidationFailed`` on ``file``) and nothing is written."""
    with transaction.atomic():
        task = lock(actor, task_id)
        return attach_locked(
            task,
            actor=actor,
            filename=filename,
            content_type=content_type,
            data=data,
            public=bool(public),
        )


def attach_locked(
    task: Task,
    *,
    actor: User | None,
    filename: str,
    content_type: str,
    data: bytes,
    public: bool,
    external_email: str = "",
) -> TaskAttachment:
    if not isinstance(data, bytes | bytearray | memoryview) or not len(data):
        raise ValidationFailed({"file": [_("Choose a file.")]})
    data = bytes(data)
    content_type = _content_type(content_type)
    name = parsing.safe_filename(filename if isinstance(filename, str) else "", content_type)
    refused = _judged(name, content_type, data)
    if refused:
        raise ValidationFailed(refused)
    event = _event(
        task,
        Kind.ATTACHED,
        actor,
        email=external_email,
        public=public,
        data={"filename": name, "size": len(data)},
    )
    [attachment] = save_attachments(
        task,
        event,
        [Attachment(name, content_type, data, True, len(data))],
        public=public,
        uploaded_by=actor,
        uploaded_by_email=external_email,
    )
    audit_actor = actor if actor is not None else system_user()
    _audit(audit_actor, task, {"attachment": [None, name]})
    events.emit("task.attached", id=task.pk, actor_id=audit_actor.pk, attachment_id=attachment.pk)
    return attachment


def _content_type(value: Any) -> str:
    value = (value or "").split(";")[0].strip().lower() if isinstance(value, str) else ""
    main, slash, sub = value.partition("/")
    if slash and main and sub and len(value) <= 100 and value.isascii() and " " not in value:
        return value
    return "application/octet-stream"


def save_attachments(
    task: Task,
    event: TaskEvent,
    attachments: Iterable[Attachment],
    *,
    public: bool,
    uploaded_by: User | None = None,
    uploaded_by_email: str = "",
) -> list[TaskAttachment]:
    """Keep files as judged (a forbidden or oversized one from mail is kept, never served)."""
    rows = [
        TaskAttachment(
            task=task,
            event=event,
            filename=parsing.safe_filename(a.filename, a.content_type),
            content_type=_content_type(a.content_type),
            size=max(a.size or 0, len(a.data or b"")),
            data=a.data if a.allowed else b"",
            allowed=a.allowed,
            public=public,
            uploaded_by=uploaded_by if uploaded_by and uploaded_by.pk else None,
            uploaded_by_email=uploaded_by_email,
            created_at=event.at,
        )
        for a in attachments
    ]
    return TaskAttachment.objects.bulk_create(rows)


# Links for external participants.


def revoke_link(actor: User, link_id: int) -> ExternalLink:
    """Stop a participant's link from working at once. Revoking twice changes nothing."""
    with transaction.atomic():
        link = (
            ExternalLink.objects.filter(
                pk=checked_id(link_id), task__in=queries.visible_tasks(actor).values("pk")
            )
            .select_related("task")
            .first()
        )
        if link is None:
            raise NotFound(_("No such link."))
        task = lock(actor, link.task_id)
        if link.revoked_at is not None:
            return link
        link.revoked_at = clock.now()
        link.revoked_by = actor
        link.save(update_fields=["revoked_at", "revoked_by"])
        _event(
            task,
            Kind.LINK_REVOKED,
            actor,
            at=link.revoked_at,
            data={"link": link.pk, "email": link.email, "reason": "revoked"},
        )
        _audit(actor, task, {"link_revoked": [None, link.pk]})
        events.emit("task.link_revoked", id=task.pk, actor_id=actor.pk, link_id=link.pk)
    return link


def send_new_link(actor: User, task_id: int) -> ExternalLink:
    """E-mail the task's external participant a fresh link (after one expired or was revoked).
    Their other links keep working until they expire."""
    with transaction.atomic():
        task = lock(actor, task_id)
        _open(task)
        if task.assignee_kind != Assignee.EXTERNAL:
            raise Conflict(_("This task has no external participant."))
        link = _send_link(task, actor, at=clock.now())
        _audit(actor, task, {"link_issued": [None, link.pk]})
        events.emit("task.link_issued", id=task.pk, actor_id=actor.pk, link_id=link.pk)
    return link


# A user's own things.


def mark_read(actor: User, notification_id: int | None = None) -> int:
    """Mark one of the actor's notifications read, or all of them; returns how many."""
    unread = Notification.objects.filter(user=actor, read_at__isnull=True)
    if notification_id is not None:
        pk = checked_id(notification_id)
        if not Notification.objects.filter(user=actor, pk=pk).exists():
            raise NotFound(_("No such notification."))
        unread = unread.filter(pk=pk)
    return unread.update(read_at=clock.now())


def set_daily_digest(actor: User, enabled: bool) -> TaskMailSettings:
    """One e-mail a day with all one's tasks, instead of an e-mail per task event."""
    preference, _created = TaskMailSettings.objects.update_or_create(
        user=actor, defaults={"daily_digest": bool(enabled)}
    )
    return preference
