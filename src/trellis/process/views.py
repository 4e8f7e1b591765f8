"""The pages of task threads for people who log in: my work, a task and its thread, a new
task, the task list, a team's workload, notifications.

Views translate HTTP into calls and back. Reads go through ``process.queries`` and writes
through ``process.services``; domain errors become answers here: a hidden task or record is a
404 (never a 403 that would confirm it exists), a missing right a 403, a stale version, a task
someone else just claimed or one that is closed a 409 showing the task as it is now, invalid
input a 422 with the form and its errors. Every action posts a plain form and redirects on
success, so the pages work without JavaScript; htmx only refreshes the task list's results.

The external participant's page, which needs no login, is in ``participant``.
"""

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.datastructures import MultiValueDict
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from trellis.core import clock, errors
from trellis.core.forms import ServiceForm
from trellis.core.models import Team, User
from trellis.core.paging import paginate
from trellis.core.views import page_number, service_view
from trellis.core.visibility import can
from trellis.mail.parsing import safe_filename

from . import forms, notify, queries, services
from .models import Task, TaskEvent

# The element the task list's filters refresh.
RESULTS_TARGET = "task-results"

# The task list's tabs: the views ``queries.task_queryset`` knows.
TABS = (
    ("mine", gettext_lazy("My tasks")),
    ("overdue", gettext_lazy("Overdue")),
    ("queue", gettext_lazy("Team queue")),
    ("handed_on", gettext_lazy("Handed on")),
    ("all", gettext_lazy("All")),
)
TAB_KEYS = frozenset(key for key, _label in TABS)

STALE_NOTICE = gettext_lazy(
    "Someone else changed this task after you opened it. Here is the task as it is now; "
    "nothing was saved. Your entry is kept in the form: send it again if it still applies."
)

FormMaker = Callable[[Task, QueryDict | None, MultiValueDict | None], ServiceForm]


def _require(user: User, action: str) -> None:
    if not can(user, action, "task"):
        raise PermissionDenied(_("You may not do this with tasks."))


def _detail_url(pk: int, anchor: str = "") -> str:
    url = reverse("process:task-detail", args=[pk])
    return f"{url}#{anchor}" if anchor else url


def _with_records(user: User, tasks: Iterable[Task]) -> None:
    """Put on each task the record its thread is about (``task.record``), if the user sees it."""
    tasks = list(tasks)
    found = queries.thread_records(user, {task.thread for task in tasks})
    for task in tasks:
        task.record = found.get(task.thread_id)


def _after_write(user: User, pk: int, anchor: str = "") -> str:
    """The task's page, or My work when the write gave the task to where the user no longer
    sees it."""
    try:
        queries.task(user, pk)
    except errors.NotFound:
        return reverse("process:my-work")
    return _detail_url(pk, anchor)


# My work, the task list, the team's workload.


@service_view
@require_GET
def my_work(request: HttpRequest) -> HttpResponse:
    """My overdue and open tasks, my team's queue, and the tasks I handed on."""
    user = request.user
    _require(user, "view")
    work = queries.my_work(user)
    sections = [
        {
            "key": "overdue",
            "title": _("Overdue"),
            "part": work.overdue,
            "empty": _("Nothing is overdue."),
            "view": "overdue",
        },
        {
            "key": "open",
            "title": _("My open tasks"),
            "part": work.open,
            "empty": _("You hold no open task."),
            "view": "mine",
        },
        {
            "key": "queue",
            "title": _("My team's queue"),
            "part": work.queue,
            "empty": _("No task waits in your team's queue."),
            "view": "queue",
            "claim": True,
        },
        {
            "key": "handed_on",
            "title": _("Handed on, still open"),
            "part": work.handed_on,
            "empty": _("No task you handed on is still open."),
            "view": "handed_on",
        },
    ]
    _with_records(user, [task for section in sections for task in section["part"].tasks])
    context = {
        "sections": sections,
        "can_edit": can(user, "edit", "task"),
        "can_create": can(user, "create", "task"),
        "digest_form": forms.DigestForm(initial={"daily_digest": notify.wants_digest(user)}),
    }
    return render(request, "process/my_work.html", context)


@service_view
@require_POST
def digest(request: HttpRequest) -> HttpResponse:
    form = forms.DigestForm(request.POST)
    form.is_valid()
    enabled = bool(form.cleaned_data.get("daily_digest"))
    services.set_daily_digest(request.user, enabled)
    if enabled:
        messages.success(request, _("You get one e-mail a day with your tasks."))
    else:
        messages.success(request, _("You get an e-mail for each new task and reminder."))
    return redirect("process:my-work")


@service_view
@require_GET
def task_list(request: HttpRequest) -> HttpResponse:
    """Tasks by tab (mine, overdue, queue, handed on, all), filtered."""
    user = request.user
    _require(user, "view")
    view = request.GET.get("view", "")
    if view not in TAB_KEYS:
        view = "all"
    filters = forms.TaskListFilters(request.GET)
    values = filters.values()
    page = queries.tasks(user, view=view, page=page_number(request), **values)
    _with_records(user, page.items)
    context = {
        "page": page,
        "view": view,
        "filters": filters,
        "filtered": any(values.values()),
        "results_target": RESULTS_TARGET,
        "can_edit": can(user, "edit", "task"),
        "can_create": can(user, "create", "task"),
        "tabs": [{"key": key, "label": label, "current": key == view} for key, label in TABS],
        "whose": _whose(values),
    }
    # htmx refreshes only the results as people filter; everything else gets the page.
    partial = request.htmx.target == RESULTS_TARGET and not request.htmx.history_restore_request
    template = "process/_task_results.html" if partial else "process/task_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _whose(values: dict[str, Any]) -> str:
    """Whose tasks the list shows, when it shows one person's or one queue's."""
    if values["assignee_id"]:
        person = User.objects.filter(pk=values["assignee_id"]).first()
        return _("Tasks %(name)s holds") % {"name": person} if person else ""
    if values["queue_id"]:
        team = Team.objects.filter(pk=values["queue_id"]).first()
        return _("Tasks waiting in the %(team)s queue") % {"team": team.name} if team else ""
    return ""


@service_view
@require_GET
def team_work(request: HttpRequest) -> HttpResponse:
    """Open and overdue tasks per member of a team (mine unless another is chosen)."""
    user = request.user
    _require(user, "view")
    picker = forms.TeamPicker(request.GET or None, initial={"team": user.team_id})
    team = picker.chosen() if "team" in request.GET else None
    team_id = team.pk if team else user.team_id
    load = queries.team_workload(user, team_id) if team_id else None
    return render(request, "process/team.html", {"picker": picker, "load": load})


# Notifications.


@service_view
@require_GET
def notifications(request: HttpRequest) -> HttpResponse:
    page = paginate(queries.notifications(request.user), page_number(request), None)
    return render(request, "process/notifications.html", {"page": page})


@service_view
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    marked = services.mark_read(request.user)
    if marked:
        messages.success(request, _("All notifications are marked read."))
    return redirect("process:notifications")


@service_view
@require_POST
def notification_open(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark one notification read and go where it points."""
    services.mark_read(request.user, pk)
    found = queries.notifications(request.user).filter(pk=pk).first()
    link = found.link if found is not None else ""
    if link and url_has_allowed_host_and_scheme(link, allowed_hosts={request.get_host()}):
        return redirect(link)
    return redirect("process:notifications")


# A new task.


@service_view
def task_create(request: HttpRequest) -> HttpResponse:
    """A new task: the first of a thread about a record (``?record_type=&record_id=``), the next
    of an open thread (``?thread=``), or a free-standing one."""
    user = request.user
    _require(user, "create")
    thread, record = _where(request, user)
    form = forms.TaskForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.service_data()
            if thread is not None:
                data["thread_id"] = thread.pk
            elif record is not None:
                data["record_type"] = request.GET["record_type"]
                data["record_id"] = record.pk
            try:
                task = services.create_task(user, data)
            except errors.ValidationFailed as exc:
                form.add_service_errors(exc.errors)
            except errors.Conflict as exc:
                form.add_error(None, exc.detail)
                status = 409
            else:
                messages.success(request, _("The task “%(title)s” was created.") % {"title": task})
                return redirect(_after_write(user, task.pk))
        status = status if status != 200 else 422
    context = {"form": form, "thread": thread, "record": record}
    return render(request, "process/task_form.html", context, status=status)


def _where(request: HttpRequest, user: User) -> tuple[Any, Any]:
    """The thread or the record a new task is for, from the address; 404 if not visible."""
    if request.GET.get("thread"):
        return queries.thread(user, request.GET["thread"]).thread, None
    record_type = request.GET.get("record_type", "")
    if record_type or request.GET.get("record_id"):
        try:
            return None, queries.record(user, record_type, request.GET.get("record_id"))
        except errors.ValidationFailed as exc:
            raise errors.NotFound(_("No such record.")) from exc
    return None, None


# One task.


@service_view
@require_GET
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _task_page(request, queries.task(request.user, pk))


def _task_page(
    request: HttpRequest, task: Task, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The task, its thread in order with every task's history, and its actions; ``extra``
    holds forms to show as posted, or a notice."""
    user = request.user
    thread = queries.thread(user, task.thread_id)
    history: dict[int, list[TaskEvent]] = {item.pk: [] for item in thread.tasks}
    for event in queries.thread_timeline(thread):
        history[event.task_id].append(event)
    _with_records(user, [task])
    can_edit = can(user, "edit", "task")
    context: dict[str, Any] = {
        "task": task,
        "thread": thread.thread,
        "steps": [{"task": item, "events": history[item.pk]} for item in thread.tasks],
        "next_tasks": [item for item in thread.tasks if item.handed_from_id == task.pk],
        "links": queries.links(task),
        "now": clock.now(),
        "can_edit": can_edit,
        "can_create": can(user, "create", "task"),
        "is_open": not task.is_closed,
        "in_queue": task.assignee_kind == Task.Assignee.TEAM,
        "claimable": (
            task.assignee_kind == Task.Assignee.TEAM
            and not task.is_closed
            and (task.team_id == user.team_id or user.is_superuser)
        ),
        "external": task.assignee_kind == Task.Assignee.EXTERNAL,
    }
    if can_edit and not task.is_closed:
        for name, make in ACTION_FORMS.items():
            context[name] = make(task, None, None)
    context.update(extra)
    return render(request, "process/task_detail.html", context, status=status)


def _versioned(form_class: type[ServiceForm]) -> FormMaker:
    def make(task: Task, data: QueryDict | None, files: MultiValueDict | None) -> Any:
        return form_class(data, initial={"version": task.version})

    return make


def _edit_form(task: Task, data: QueryDict | None, files: MultiValueDict | None) -> Any:
    initial = {
        "title": task.title,
        "description": task.description,
        "task_type": task.task_type_id,
        "due_at": task.due_at,
        "priority": task.priority,
        "version": task.version,
    }
    return forms.EditForm(data, task=task, initial=initial)


def _complete_form(task: Task, data: QueryDict | None, files: MultiValueDict | None) -> Any:
    required = task.task_type is not None and task.task_type.requires_next_step
    return forms.CompleteForm(data, requires_next_step=required, initial={"version": task.version})


# Each action form of the task page, by the name the template knows it by.
ACTION_FORMS: dict[str, FormMaker] = {
    "start_form": _versioned(forms.VersionForm),
    "wait_form": _versioned(forms.WaitForm),
    "cancel_form": _versioned(forms.CancelForm),
    "reassign_form": _versioned(forms.ReassignForm),
    "complete_form": _complete_form,
    "edit_form": _edit_form,
    "comment_form": lambda task, data, files: forms.CommentForm(data),
    "attach_form": lambda task, data, files: forms.AttachForm(data, files),
}


def _act(
    request: HttpRequest,
    pk: int,
    name: str,
    perform: Callable[[User, Task, dict[str, Any], Any], tuple[str, str]],
) -> HttpResponse:
    """Run one action: 422 with the form for bad input, 409 for a stale version or a conflict.

    ``perform`` gets the cleaned values and the form, calls the service, and returns where to
    go and what to say when it worked.
    """
    user = request.user
    task = queries.task(user, pk)
    _require(user, "edit")
    make = ACTION_FORMS[name]
    form = make(task, request.POST, request.FILES)
    if form.is_valid():
        try:
            url, message = perform(user, task, form.cleaned_data, form)
        except errors.StaleVersion:
            return _conflict_page(request, pk, name, str(STALE_NOTICE))
        except errors.Conflict as exc:
            return _conflict_page(request, pk, name, exc.detail)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, message)
            return redirect(url)
    return _task_page(request, task, status=422, **{name: form})


def _conflict_page(request: HttpRequest, pk: int, name: str, notice: str) -> HttpResponse:
    """The task as it is now, with the person's entry kept, at the current version."""
    task = queries.task(request.user, pk)
    data = request.POST.copy()
    if "version" in data:
        data["version"] = str(task.version)
    form = ACTION_FORMS[name](task, data, None)
    form.is_valid()
    return _task_page(request, task, status=409, conflict=notice, **{name: form})


@service_view
@require_POST
def task_claim(request: HttpRequest, pk: int) -> HttpResponse:
    """Take a task from the team's queue; when someone was quicker, say who has it."""
    user = request.user
    queries.task(user, pk)
    _require(user, "edit")
    try:
        claimed = services.claim(user, pk)
    except errors.Conflict as exc:
        return _task_page(request, queries.task(user, pk), status=409, conflict=exc.detail)
    messages.success(request, _("You took the task “%(title)s”.") % {"title": claimed})
    return redirect(_detail_url(pk))


@service_view
@require_POST
def task_start(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        services.start(user, task.pk, version=data["version"])
        return _detail_url(task.pk), _("The task is in progress.")

    return _act(request, pk, "start_form", perform)


@service_view
@require_POST
def task_wait(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        services.wait(user, task.pk, note=data["note"].strip(), version=data["version"])
        return _detail_url(task.pk, "thread"), _("The task is waiting on someone.")

    return _act(request, pk, "wait_form", perform)


@service_view
@require_POST
def task_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        services.cancel(user, task.pk, note=data["note"].strip(), version=data["version"])
        return _detail_url(task.pk, "thread"), _("The task is cancelled.")

    return _act(request, pk, "cancel_form", perform)


@service_view
@require_POST
def task_edit(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        services.edit(user, task.pk, form.changes(), version=data["version"])
        return _detail_url(task.pk, "thread"), _("The task is saved.")

    return _act(request, pk, "edit_form", perform)


@service_view
@require_POST
def task_reassign(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        services.assign(
            user,
            task.pk,
            **forms.holder_values(data),
            note=data["note"].strip(),
            version=data["version"],
        )
        return _after_write(user, task.pk, "thread"), _("The task was handed on.")

    return _act(request, pk, "reassign_form", perform)


@service_view
@require_POST
def task_complete(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        done = services.complete(
            user,
            task.pk,
            next_step=form.next_step(),
            thread_finished=form.thread_finished,
            note=data["note"].strip(),
            version=data["version"],
        )
        following = done.handed_to.order_by("id").first()
        if following is not None:
            message = _("The task is done. The next step, “%(title)s”, is handed on.") % {
                "title": following
            }
        elif form.thread_finished:
            message = _("The task is done, and the thread is finished.")
        else:
            message = _("The task is done.")
        return _detail_url(task.pk, "thread"), message

    return _act(request, pk, "complete_form", perform)


@service_view
@require_POST
def task_comment(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        event = services.comment(user, task.pk, data["body"], public=data["public"])
        return _detail_url(task.pk, f"event-{event.pk}"), _("The comment was added.")

    return _act(request, pk, "comment_form", perform)


@service_view
@require_POST
def task_attach(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, task: Task, data: dict[str, Any], form: Any) -> tuple[str, str]:
        filename, content_type, content = data["file"]
        attachment = services.attach(
            user,
            task.pk,
            filename=filename,
            content_type=content_type,
            data=content,
            public=data["public"],
        )
        message = _("“%(name)s” was attached.") % {"name": attachment.filename}
        return _detail_url(task.pk, "thread"), message

    return _act(request, pk, "attach_form", perform)


# Links for the external participant.


@service_view
@require_POST
def task_send_link(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    task = queries.task(user, pk)
    _require(user, "edit")
    try:
        link = services.send_new_link(user, pk)
    except errors.Conflict as exc:
        return _task_page(request, queries.task(user, pk), status=409, conflict=exc.detail)
    messages.success(request, _("A new link was sent to %(email)s.") % {"email": link.email})
    return redirect(_detail_url(task.pk, "links"))


@service_view
@require_POST
def link_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    _require(user, "edit")
    link = services.revoke_link(user, pk)
    messages.success(request, _("The link of %(email)s no longer works.") % {"email": link.email})
    return redirect(_detail_url(link.task_id, "links"))


# Files.


@service_view
@require_GET
def task_attachment(request: HttpRequest, pk: int, attachment_id: int) -> HttpResponse:
    """A file of the task, always as a download; forbidden or oversized files are never
    served."""
    attachment = queries.attachment(queries.task(request.user, pk), attachment_id)
    return download(attachment.filename, bytes(attachment.data))


def download(filename: str, data: bytes) -> HttpResponse:
    """A file as a download, never rendered in our origin: it may run no script."""
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, safe_filename(filename))
    response["Content-Length"] = str(len(data))
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
