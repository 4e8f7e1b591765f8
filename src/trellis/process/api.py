"""The JSON endpoints of task threads: tasks and their actions, threads of a record, my work,
team workload, the responsibility matrix, links for external participants.

Endpoints stay thin: reads start from ``queries`` (which applies visibility: a task someone may
not see is a 404), writes are ``services`` calls (rights, validation, history, audit, e-mail).
A page of tasks costs the same few queries whatever its size.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core import clock, registry
from trellis.core.api import (
    Id,
    Input,
    Timestamp,
    Version,
    json_response,
    refuse_unknown_params,
    text,
)
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion
from trellis.core.models import User
from trellis.core.paging import paginate
from trellis.core.visibility import can

from . import notify, queries, services
from .models import ExternalLink, Notification, Task, TaskEvent, Thread

router = Router(tags=["Tasks"])

StatusName = Literal[tuple(Task.Status.values)]
PriorityName = Literal[tuple(Task.Priority.values)]
AssigneeKind = Literal[tuple(Task.Assignee.values)]
ViewName = Literal[tuple(queries.VIEWS)]
StateName = Literal[tuple(queries.STATES)]
Language = Literal[tuple(code for code, _name in settings.LANGUAGES)]
# Every registered record type but the engine's own.
RecordType = Literal[
    tuple(t.key for t in registry.all_types() if t.model._meta.app_label != "process")
]
_LIMITS = settings.TRELLIS
PageNumber = Field(1, ge=1, le=10**9)
PageSize = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])
Title = text(min_length=1, max_length=services.MAX_TITLE)
LongText = text(max_length=services.MAX_TEXT)

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_CONFLICT = {
    "responses": {
        409: {
            "description": "The task's state does not allow this (e.g. someone else has "
            "claimed it, or it is done), or the `version` you sent is stale (see `current`).",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
    }
}


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


class TaskOut(Output):
    id: int
    thread_id: int
    thread_title: str
    record_type: str | None = Field(description="The kind of record the thread is about.")
    record_id: int | None
    title: str
    description: str
    task_type_id: int | None
    task_type_name: str | None
    assignee_kind: AssigneeKind = Field(
        description="`user`: `assignee_id` holds it; `team`: it waits in `team_id`'s queue; "
        "`external`: the participant `external_email` holds it."
    )
    assignee_id: int | None
    assignee_name: str | None
    team_id: int | None
    team_name: str | None
    external_email: str
    external_name: str
    language: str = Field(description="The language of the external participant's e-mail.")
    status: StatusName
    priority: PriorityName
    due_at: dt.datetime | None
    overdue: bool
    created_by_id: int | None
    created_by_name: str | None
    assigned_by_id: int | None
    assigned_at: dt.datetime
    handed_from_id: int | None = Field(description="The task whose completion asked for this.")
    completed_at: dt.datetime | None
    completed_by_id: int | None
    version: int = Field(description="Send it back with a versioned change.")
    created_at: dt.datetime
    updated_at: dt.datetime


class TaskPage(Output):
    items: list[TaskOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class TaskCompletedOut(Output):
    task: TaskOut
    next_task: TaskOut | None = Field(description="The next step, when one was given.")


class TaskAttachmentOut(Output):
    id: int
    filename: str
    content_type: str
    size: int
    allowed: bool = Field(description="False for a forbidden or oversized file from e-mail.")
    public: bool


class TaskEventOut(Output):
    id: int
    task_id: int
    kind: Literal[tuple(TaskEvent.Kind.values)]
    at: dt.datetime
    actor_id: int | None
    actor_name: str | None
    external_email: str = Field(description="The author, when an external participant acted.")
    body: str
    public: bool = Field(description="Whether the external participant sees it.")
    data: dict[str, Any]
    attachments: list[TaskAttachmentOut]


class TaskEventPage(Output):
    items: list[TaskEventOut]
    page: int
    page_size: int
    has_next: bool


class ThreadOut(Output):
    id: int
    title: str
    status: Literal[tuple(Thread.Status.values)]
    record_type: str | None
    record_id: int | None
    created_by_id: int | None
    created_by_name: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    tasks: list[TaskOut] = Field(description="The thread's tasks you may see, in order.")


class MyWorkSectionOut(Output):
    items: list[TaskOut]
    has_more: bool = Field(description="Whether more tasks belong here than are listed.")


class MyWorkOut(Output):
    open: MyWorkSectionOut = Field(description="Your open tasks that are not overdue.")
    overdue: MyWorkSectionOut
    handed_on: MyWorkSectionOut = Field(description="Tasks you gave to others that are still open.")
    queue: MyWorkSectionOut = Field(description="Tasks waiting in your team's queue.")


class ResponsiblePartyOut(Output):
    kind: AssigneeKind
    id: int | None = Field(description="The user or team; null for an external participant.")
    name: str
    email: str


class ResponsibilityOut(Output):
    responsible: list[ResponsiblePartyOut] = Field(description="Who holds the record's open tasks.")
    accountable: list[ResponsiblePartyOut] = Field(description="The record's owner.")
    consulted: list[ResponsiblePartyOut] = Field(
        description="Who held, completed or commented on its tasks before."
    )
    informed: list[ResponsiblePartyOut] = Field(description="Who created its threads and tasks.")


class TeamMemberLoadOut(Output):
    user_id: int
    name: str
    open: int
    overdue: int


class TeamWorkloadOut(Output):
    team_id: int
    team_name: str
    members: list[TeamMemberLoadOut]
    queue_open: int
    queue_overdue: int


class TaskLinkOut(Output):
    id: int
    email: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    uses: int = Field(description="How often it was used, refused uses included.")
    active: bool = Field(description="Neither expired nor revoked.")


class TaskTypeOut(Output):
    id: int
    code: str
    name: str
    name_ko: str
    requires_next_step: bool


class NotificationOut(Output):
    id: int
    task_id: int | None
    text: str
    link: str
    created_at: dt.datetime
    read_at: dt.datetime | None


class NotificationPage(Output):
    items: list[NotificationOut]
    page: int
    page_size: int
    has_next: bool


class TaskMailOut(Output):
    daily_digest: bool = Field(
        description="One e-mail a day with all your tasks instead of an e-mail for each task "
        "event; reminders still come in the app."
    )


class NotificationsReadOut(Output):
    marked: int = Field(description="How many notifications were unread and are read now.")


# Inputs.


class TaskFields(Input):
    title: Title
    description: LongText = ""
    task_type_id: Id | None = None
    user_id: Id | None = Field(None, description="Give the task to this user, ...")
    team_id: Id | None = Field(None, description="... or put it in this team's queue, ...")
    external_email: text(max_length=254) = Field(
        "",
        description="... or give it to an external participant, who is e-mailed the task and "
        "a link to act on it without an account.",
    )
    external_name: text(max_length=200) = ""
    language: Language | None = Field(
        None, description="The language of the participant's e-mail; yours by default."
    )
    due_at: Timestamp | None = Field(None, description="Must be in the future.")
    priority: PriorityName = "normal"


class TaskCreate(TaskFields):
    thread_id: Id | None = Field(None, description="Add the task to this open thread, ...")
    record_type: RecordType | None = Field(
        None, description="... or start a thread about this record (with `record_id`), ..."
    )
    record_id: Id | None = None
    thread_title: text(max_length=services.MAX_TITLE) = Field(
        "", description="... called this (by default the task's title)."
    )


class TaskEdit(Input):
    title: Title | None = None
    description: LongText | None = None
    task_type_id: Id | None = None
    due_at: Timestamp | None = None
    priority: PriorityName | None = None
    version: Version


class TaskListParams(Input):
    view: ViewName = Field(
        "all",
        description="Which tasks: "
        + "; ".join(f"`{name}` {meaning}" for name, meaning in queries.VIEWS.items())
        + ".",
    )
    status: StatusName | None = None
    state: StateName | None = Field(
        None,
        description="Only "
        + "; ".join(f"`{name}` {meaning}" for name, meaning in queries.STATES.items())
        + " (soonest due first).",
    )
    thread_id: Id | None = None
    record_type: RecordType | None = None
    record_id: Id | None = Field(None, description="With `record_type`: tasks about it.")
    assignee_id: Id | None = Field(None, description="Tasks this user holds.")
    queue_id: Id | None = Field(None, description="Tasks waiting in this team's queue.")
    page: int = PageNumber
    page_size: int = PageSize


class TaskPageParams(Input):
    page: int = PageNumber
    page_size: int = PageSize


class NotificationParams(TaskPageParams):
    unread: bool = Field(False, description="Only the unread ones.")


class TaskVersionIn(Input):
    version: Version | None = None


class TaskNoteIn(Input):
    note: LongText = ""
    version: Version | None = None


class TaskAssignIn(Input):
    user_id: Id | None = None
    team_id: Id | None = None
    external_email: text(max_length=254) = ""
    external_name: text(max_length=200) = ""
    language: Language | None = None
    note: LongText = Field("", description="Goes with the hand-off, in the task's history.")
    version: Version | None = None


class TaskCompleteIn(Input):
    next_step: TaskFields | None = Field(
        None, description="The next task of the thread: what, for whom, by when."
    )
    thread_finished: bool = Field(False, description="Instead of a next step: the work is done.")
    note: LongText = ""
    version: Version | None = None


class TaskMailIn(Input):
    daily_digest: bool


class TaskCommentIn(Input):
    body: text(min_length=1, max_length=services.MAX_TEXT)
    public: bool = Field(False, description="Share it with the task's external participant.")


# Rows.


def _name(user: User | None) -> str | None:
    return str(user) if user is not None else None


def _record_of(content_type_id: int | None, object_id: int | None) -> tuple[str | None, Any]:
    if content_type_id is None:
        return None, None
    model = ContentType.objects.get_for_id(content_type_id).model_class()
    return registry.for_model(model).key, object_id


def _task_row(task: Task, now: dt.datetime) -> dict[str, Any]:
    thread = task.thread
    record_type, record_id = _record_of(thread.content_type_id, thread.object_id)
    return {
        "id": task.pk,
        "thread_id": thread.pk,
        "thread_title": thread.title,
        "record_type": record_type,
        "record_id": record_id,
        "title": task.title,
        "description": task.description,
        "task_type_id": task.task_type_id,
        "task_type_name": task.task_type.label if task.task_type_id else None,
        "assignee_kind": task.assignee_kind,
        "assignee_id": task.owner_id,
        "assignee_name": _name(task.owner),
        "team_id": task.team_id,
        "team_name": task.team.name if task.team_id else None,
        "external_email": task.external_email,
        "external_name": task.external_name,
        "language": task.language,
        "status": task.status,
        "priority": task.priority,
        "due_at": task.due_at,
        "overdue": queries.is_overdue(task, now),
        "created_by_id": task.created_by_id,
        "created_by_name": _name(task.created_by),
        "assigned_by_id": task.assigned_by_id,
        "assigned_at": task.assigned_at,
        "handed_from_id": task.handed_from_id,
        "completed_at": task.completed_at,
        "completed_by_id": task.completed_by_id,
        "version": task.version,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }


def _written(user: User, task: Task) -> dict[str, Any]:
    """The answer to a write: the task as a read shows it, or, if the writer handed it to
    where they no longer see it, as the service left it."""
    try:
        return _task_row(queries.task(user, task.pk), clock.now())
    except NotFound:
        return _task_row(task, clock.now())


@contextmanager
def _answering_for(user: User, pk: int) -> Iterator[None]:
    """A stale version's 409 carries the task as it is now, as this API shows it."""
    try:
        yield
    except StaleVersion as conflict:
        conflict.current = _task_row(queries.task(user, pk), clock.now())
        raise


def _page(items: list[Any], number: int, size: int, has_next: bool) -> dict[str, Any]:
    return {"items": items, "page": number, "page_size": size, "has_next": has_next}


def _may_view(user: User) -> None:
    if not can(user, "view", "task"):
        raise PermissionDenied(_("You may not see tasks."))


def _event_row(event: TaskEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "task_id": event.task_id,
        "kind": event.kind,
        "at": event.at,
        "actor_id": event.actor_id,
        "actor_name": _name(event.actor),
        "external_email": event.external_email,
        "body": event.body,
        "public": event.public,
        "data": event.data,
        "attachments": [
            {
                "id": a.pk,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "allowed": a.allowed,
                "public": a.public,
            }
            for a in event.attachments.all()
        ],
    }


def _thread_row(view: queries.ThreadView, now: dt.datetime) -> dict[str, Any]:
    thread = view.thread
    record_type, record_id = _record_of(thread.content_type_id, thread.object_id)
    return {
        "id": thread.pk,
        "title": thread.title,
        "status": thread.status,
        "record_type": record_type,
        "record_id": record_id,
        "created_by_id": thread.created_by_id,
        "created_by_name": _name(thread.created_by),
        "created_at": thread.created_at,
        "finished_at": thread.finished_at,
        "tasks": [_task_row(task, now) for task in view.tasks],
    }


def _party_rows(parties: list[queries.Party]) -> list[dict[str, Any]]:
    return [{"kind": p.kind, "id": p.id, "name": p.name, "email": p.email} for p in parties]


def _link_row(link: ExternalLink, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": link.pk,
        "email": link.email,
        "created_at": link.created_at,
        "expires_at": link.expires_at,
        "revoked_at": link.revoked_at,
        "last_used_at": link.last_used_at,
        "uses": getattr(link, "use_count", 0),
        "active": link.revoked_at is None and link.expires_at > now,
    }


# Tasks.


@router.get(
    "/tasks/",
    response=TaskPage,
    operation_id="list_tasks",
    summary="List tasks",
    description="The tasks you may see in one of the views (default `all`), a page at a time: "
    "the views of open work soonest due first, the others newest first.",
)
def list_tasks(request: HttpRequest, params: Query[TaskListParams]) -> HttpResponse:
    user = request.auth
    refuse_unknown_params(request.GET, TaskListParams.model_fields)
    _may_view(user)
    queryset = queries.task_queryset(
        user,
        view=params.view,
        status=params.status,
        state=params.state,
        thread_id=params.thread_id,
        record_type=params.record_type,
        record_id=params.record_id,
        assignee_id=params.assignee_id,
        queue_id=params.queue_id,
    )
    page = paginate(queryset, params.page, params.page_size)
    now = clock.now()
    items = [_task_row(task, now) for task in page.items]
    return json_response(_page(items, page.number, page.size, page.has_next))


@router.post(
    "/tasks/",
    response={201: TaskOut},
    operation_id="create_task",
    summary="Create a task",
    description="A task in an open thread (`thread_id`), or the first task of a new thread, "
    "about a record (`record_type`, `record_id`) or free-standing. Give exactly one assignee: "
    "`user_id`, `team_id` or `external_email`. The assignee is told.",
)
def create_task(request: HttpRequest, payload: TaskCreate) -> HttpResponse:
    user = request.auth
    task = services.create_task(user, payload.model_dump())
    return json_response(_written(user, task), status=201)


@router.get("/tasks/{id}", response=TaskOut, operation_id="get_task", summary="Read a task")
def get_task(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_task_row(queries.task(request.auth, id), clock.now()))


@router.patch(
    "/tasks/{id}",
    response=TaskOut,
    operation_id="edit_task",
    summary="Edit a task",
    description="Title, description, type, due time or priority; only the fields you send. "
    "Send the task's `version`.",
)
def edit_task(request: HttpRequest, id: Id, payload: TaskEdit) -> HttpResponse:
    user = request.auth
    data = payload.model_dump(exclude_unset=True)
    version = data.pop("version")
    with _answering_for(user, id):
        task = services.edit(user, id, data, version=version)
    return json_response(_written(user, task))


@router.post(
    "/tasks/{id}/claim",
    response=TaskOut,
    operation_id="claim_task",
    summary="Claim a task from your team's queue",
    description="You become its assignee. Of two members claiming at once exactly one gets it; "
    "the other gets 409 naming who has it.",
    openapi_extra=_CONFLICT,
)
def claim_task(request: HttpRequest, id: Id) -> HttpResponse:
    user = request.auth
    return json_response(_written(user, services.claim(user, id)))


@router.post(
    "/tasks/{id}/start",
    response=TaskOut,
    operation_id="start_task",
    summary="Start working on a task",
    openapi_extra=_CONFLICT,
)
def start_task(request: HttpRequest, id: Id, payload: TaskVersionIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        task = services.start(user, id, version=payload.version)
    return json_response(_written(user, task))


@router.post(
    "/tasks/{id}/wait",
    response=TaskOut,
    operation_id="wait_on_someone",
    summary="Mark a task as waiting on someone",
    description="`note` says on whom or what.",
    openapi_extra=_CONFLICT,
)
def wait_on_someone(request: HttpRequest, id: Id, payload: TaskNoteIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        task = services.wait(user, id, note=payload.note, version=payload.version)
    return json_response(_written(user, task))


@router.post(
    "/tasks/{id}/cancel",
    response=TaskOut,
    operation_id="cancel_task",
    summary="Cancel a task",
    description="`note` says why.",
    openapi_extra=_CONFLICT,
)
def cancel_task(request: HttpRequest, id: Id, payload: TaskNoteIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        task = services.cancel(user, id, note=payload.note, version=payload.version)
    return json_response(_written(user, task))


@router.post(
    "/tasks/{id}/complete",
    response=TaskCompletedOut,
    operation_id="complete_task",
    summary="Complete a task, with the next step",
    description="What is the next step? Give `next_step` (the next task of the thread: what, "
    "for whom, by when) or `thread_finished`. A task whose type requires it must have one "
    "of the two.",
    openapi_extra=_CONFLICT,
)
def complete_task(request: HttpRequest, id: Id, payload: TaskCompleteIn) -> HttpResponse:
    user = request.auth
    next_step = payload.next_step.model_dump() if payload.next_step is not None else None
    with _answering_for(user, id):
        task = services.complete(
            user,
            id,
            next_step=next_step,
            thread_finished=payload.thread_finished,
            note=payload.note,
            version=payload.version,
        )
    following = task.handed_to.order_by("id").first()
    return json_response(
        {
            "task": _written(user, task),
            "next_task": _written(user, following) if following is not None else None,
        }
    )


@router.post(
    "/tasks/{id}/reassign",
    response=TaskOut,
    operation_id="reassign_task",
    summary="Give a task to someone else",
    description="To a user, a team's queue or an external participant (exactly one). The "
    "history keeps who held it before; the new assignee is told.",
    openapi_extra=_CONFLICT,
)
def reassign_task(request: HttpRequest, id: Id, payload: TaskAssignIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        task = services.assign(
            user,
            id,
            user_id=payload.user_id,
            team_id=payload.team_id,
            external_email=payload.external_email,
            external_name=payload.external_name,
            language=payload.language or "",
            note=payload.note,
            version=payload.version,
        )
    return json_response(_written(user, task))


@router.post(
    "/tasks/{id}/comments",
    response={201: TaskEventOut},
    operation_id="comment_on_task",
    summary="Comment on a task",
    description="With `public`, the external participant sees it and, while the task is open, "
    "is e-mailed it.",
)
def comment_on_task(request: HttpRequest, id: Id, payload: TaskCommentIn) -> HttpResponse:
    event = services.comment(request.auth, id, payload.body, public=payload.public)
    found = queries.task_events(event.task).get(pk=event.pk)
    return json_response(_event_row(found), status=201)


@router.get(
    "/tasks/{id}/events",
    response=TaskEventPage,
    operation_id="list_task_events",
    summary="A task's history",
    description="Oldest first: creation, hand-offs (from whom to whom), claims, status "
    "changes, comments, replies by e-mail, completion, reminders, link uses.",
)
def list_task_events(request: HttpRequest, id: Id, params: Query[TaskPageParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, TaskPageParams.model_fields)
    task = queries.task(request.auth, id)
    page = paginate(queries.task_events(task), params.page, params.page_size)
    items = [_event_row(event) for event in page.items]
    return json_response(_page(items, page.number, page.size, page.has_next))


# Links for external participants.


@router.get(
    "/tasks/{id}/links",
    response=list[TaskLinkOut],
    operation_id="list_task_links",
    tags=["Task links"],
    summary="A task's links for external participants",
    description="Newest first. The links themselves are never shown again after they are sent.",
)
def list_task_links(request: HttpRequest, id: Id) -> HttpResponse:
    task = queries.task(request.auth, id)
    now = clock.now()
    return json_response([_link_row(link, now) for link in queries.links(task)])


@router.post(
    "/tasks/{id}/links",
    response={201: TaskLinkOut},
    operation_id="send_task_link",
    tags=["Task links"],
    summary="Send the external participant a new link",
    description="E.g. after their link expired or was revoked.",
    openapi_extra=_CONFLICT,
)
def send_task_link(request: HttpRequest, id: Id) -> HttpResponse:
    link = services.send_new_link(request.auth, id)
    return json_response(_link_row(link, clock.now()), status=201)


@router.post(
    "/task-links/{id}/revoke",
    response=TaskLinkOut,
    operation_id="revoke_task_link",
    tags=["Task links"],
    summary="Revoke a link",
    description="It stops working at once; every later use is refused and logged.",
)
def revoke_task_link(request: HttpRequest, id: Id) -> HttpResponse:
    link = services.revoke_link(request.auth, id)
    return json_response(_link_row(link, clock.now()))


# Threads, records, people.


@router.get(
    "/threads/{id}",
    response=ThreadOut,
    operation_id="get_thread",
    summary="Read a thread",
    description="With its tasks you may see, in the order they were created.",
)
def get_thread(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_thread_row(queries.thread(request.auth, id), clock.now()))


@router.get(
    "/records/{record_type}/{id}/threads",
    response=list[ThreadOut],
    operation_id="list_record_threads",
    summary="The task threads of a record",
    description="Oldest first, each with its tasks in order: the record's timeline of work.",
)
def list_record_threads(request: HttpRequest, record_type: RecordType, id: Id) -> HttpResponse:
    now = clock.now()
    views = queries.threads_for_record(request.auth, record_type, id)
    return json_response([_thread_row(view, now) for view in views])


@router.get(
    "/records/{record_type}/{id}/responsibility",
    response=ResponsibilityOut,
    operation_id="get_record_responsibility",
    summary="Who is responsible for a record's work",
    description="The RACI of the record's task threads: responsible (who holds the open "
    "tasks), accountable (the record's owner), consulted (earlier holders and commenters), "
    "informed (who created the threads and tasks).",
)
def get_record_responsibility(
    request: HttpRequest, record_type: RecordType, id: Id
) -> HttpResponse:
    found = queries.responsibility(request.auth, record_type, id)
    return json_response(
        {
            "responsible": _party_rows(found.responsible),
            "accountable": _party_rows(found.accountable),
            "consulted": _party_rows(found.consulted),
            "informed": _party_rows(found.informed),
        }
    )


@router.get(
    "/my-work",
    response=MyWorkOut,
    operation_id="get_my_work",
    summary="My work",
    description="Your open and overdue tasks, the tasks you handed on that are still open, and "
    "your team's queue; each soonest due first, at most "
    f"{queries.MY_WORK_ROWS}.",
)
def get_my_work(request: HttpRequest) -> HttpResponse:
    user = request.auth
    _may_view(user)
    work = queries.my_work(user)
    now = clock.now()

    def section(part: queries.Section) -> dict[str, Any]:
        return {"items": [_task_row(t, now) for t in part.tasks], "has_more": part.has_more}

    return json_response(
        {
            "open": section(work.open),
            "overdue": section(work.overdue),
            "handed_on": section(work.handed_on),
            "queue": section(work.queue),
        }
    )


@router.get(
    "/my-work/mail",
    response=TaskMailOut,
    operation_id="get_task_mail",
    summary="How you get task e-mail",
)
def get_task_mail(request: HttpRequest) -> HttpResponse:
    return json_response({"daily_digest": notify.wants_digest(request.auth)})


@router.put(
    "/my-work/mail",
    response=TaskMailOut,
    operation_id="set_task_mail",
    summary="Choose the daily digest, or an e-mail for each task event",
)
def set_task_mail(request: HttpRequest, payload: TaskMailIn) -> HttpResponse:
    preference = services.set_daily_digest(request.auth, payload.daily_digest)
    return json_response({"daily_digest": preference.daily_digest})


@router.get(
    "/teams/{id}/workload",
    response=TeamWorkloadOut,
    operation_id="get_team_workload",
    summary="A team's workload",
    description="Open and overdue tasks per member, and in the team's queue, counting the "
    "tasks you may see.",
)
def get_team_workload(request: HttpRequest, id: Id) -> HttpResponse:
    load = queries.team_workload(request.auth, id)
    return json_response(
        {
            "team_id": load.team.pk,
            "team_name": load.team.name,
            "members": [
                {"user_id": m.user.pk, "name": str(m.user), "open": m.open, "overdue": m.overdue}
                for m in load.members
            ],
            "queue_open": load.queue_open,
            "queue_overdue": load.queue_overdue,
        }
    )


@router.get(
    "/task-types/",
    response=list[TaskTypeOut],
    operation_id="list_task_types",
    summary="Task types",
    description="The active task types; `requires_next_step` says that completing asks for the "
    "next step or for the thread to be finished.",
)
def list_task_types(request: HttpRequest) -> HttpResponse:
    _may_view(request.auth)
    rows = [
        {
            "id": t.pk,
            "code": t.code,
            "name": t.name,
            "name_ko": t.name_ko,
            "requires_next_step": t.requires_next_step,
        }
        for t in queries.task_types()
    ]
    return json_response(rows)


# Notifications.


def _notification_row(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.pk,
        "task_id": notification.task_id,
        "text": notification.text,
        "link": notification.link,
        "created_at": notification.created_at,
        "read_at": notification.read_at,
    }


@router.get(
    "/notifications/",
    response=NotificationPage,
    operation_id="list_notifications",
    tags=["Notifications"],
    summary="My notifications",
    description="Newest first.",
)
def list_notifications(request: HttpRequest, params: Query[NotificationParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, NotificationParams.model_fields)
    found = queries.notifications(request.auth, unread_only=params.unread)
    page = paginate(found, params.page, params.page_size)
    items = [_notification_row(n) for n in page.items]
    return json_response(_page(items, page.number, page.size, page.has_next))


@router.post(
    "/notifications/read",
    response=NotificationsReadOut,
    operation_id="read_all_notifications",
    tags=["Notifications"],
    summary="Mark all my notifications read",
)
def read_all_notifications(request: HttpRequest) -> HttpResponse:
    return json_response({"marked": services.mark_read(request.auth)})


@router.post(
    "/notifications/{id}/read",
    response=NotificationsReadOut,
    operation_id="read_notification",
    tags=["Notifications"],
    summary="Mark a notification read",
)
def read_notification(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response({"marked": services.mark_read(request.auth, id)})
