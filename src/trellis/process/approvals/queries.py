"""Reads of approvals. A request is seen by whoever sees its record, and by the people it
involves (submitter, approvers, the process owner), who need it to act; anyone else gets 404."""

from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils.translation import gettext as _

from trellis.core import clock
from trellis.core.errors import NotFound
from trellis.core.models import User
from trellis.core.visibility import is_admin, visible

from . import subjects
from .models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalRequest,
    ApprovalStepRun,
    Delegation,
    ExceptionRequest,
)


def _involved(user: User) -> Q:
    mine = ApprovalAssignment.objects.filter(request=OuterRef("pk"), user=user)
    return Q(submitter=user) | Q(process__owner=user) | Q(Exists(mine))


def visible_requests(user: User) -> models.QuerySet[ApprovalRequest]:
    requests = ApprovalRequest.objects.select_related(
        "process", "process_version", "submitter", "content_type"
    )
    if is_admin(user):
        return requests
    seen = _involved(user)
    for subject in subjects.all_subjects():
        content_type = ContentType.objects.get_for_model(subject.model)
        seen |= Q(
            content_type=content_type,
            object_id__in=visible(user, subject.model).values("pk"),
        )
    return requests.filter(seen)


def may_see(user: User, request: ApprovalRequest) -> bool:
    # The facts at hand first; the visibility rules build a sub-query per kind of record.
    if request.submitter_id == user.pk or request.process.owner_id == user.pk or is_admin(user):
        return True
    if ApprovalAssignment.objects.filter(request=request, user=user).exists():
        return True
    return visible_requests(user).filter(pk=request.pk).exists()


def get(user: User, pk: int) -> ApprovalRequest:
    found = visible_requests(user).filter(pk=pk).first()
    if found is None:
        raise NotFound(_("No such approval request."))
    return found


def for_record(record: models.Model) -> list[ApprovalRequest]:
    """Every request about a record the caller has shown to be visible, newest first."""
    return list(
        ApprovalRequest.objects.filter(
            content_type=ContentType.objects.get_for_model(type(record)), object_id=record.pk
        )
        .select_related("process", "process_version", "submitter")
        .order_by("-submitted_at", "-pk")
    )


@dataclass
class InboxRow:
    assignment: ApprovalAssignment
    request: ApprovalRequest
    step: ApprovalStepRun
    record: Any
    overdue: bool


# The inbox counts stop here: the badge shows "999+" beyond, and the API says it is capped.
COUNT_CAP = 1000

# What the inbox page and ``GET /api/approvals/inbox`` show of an assignment, its request and
# its step; the processes and people, few and repeated, are read apart, so that the query
# joins three tables instead of seven (planning a seven-table join took 4-5 ms a call).
_INBOX_FIELDS = (
    "id",
    "status",
    "due_at",
    "on_behalf_of_id",
    "request",
    "request__object_id",
    "request__content_type_id",
    "request__process_id",
    "request__submitter_id",
    "step_run",
    "step_run__name",
)
_NAME_FIELDS = ("username", "first_name", "last_name")


def _waiting(user: User) -> models.QuerySet[ApprovalAssignment]:
    # A pending assignment always belongs to a pending step (the engine closes a step's
    # assignments when it closes the step), so the step run's status need not be joined.
    # No default order: it would join the step runs to sort what is only counted.
    return ApprovalAssignment.objects.filter(
        user=user, status=ApprovalAssignment.Status.PENDING
    ).order_by()


def inbox(user: User, limit: int = 100) -> list[InboxRow]:
    """The steps waiting for ``user``'s decision, the soonest due first."""
    assignments = (
        _waiting(user)
        .select_related("request", "step_run")
        .only(*_INBOX_FIELDS)
        .order_by(models.F("due_at").asc(nulls_last=True), "id")[:limit]
    )
    now = clock.now()
    rows = list(assignments)
    if not rows:
        return []
    processes = ApprovalProcess.objects.only("name", "name_ko", "object_type").in_bulk(
        {a.request.process_id for a in rows}
    )
    people = User.objects.only(*_NAME_FIELDS).in_bulk(
        {a.request.submitter_id for a in rows} | {a.on_behalf_of_id for a in rows} - {None}
    )
    for a in rows:
        a.request.process = processes[a.request.process_id]
        a.request.submitter = people[a.request.submitter_id]
        a.on_behalf_of = people.get(a.on_behalf_of_id)
    records = _records([a.request for a in rows])
    return [
        InboxRow(
            assignment=a,
            request=a.request,
            step=a.step_run,
            record=records.get((a.request.content_type_id, a.request.object_id)),
            overdue=a.due_at is not None and a.due_at < now,
        )
        for a in rows
    ]


def inbox_counts(user: User) -> dict[str, int]:
    """How many wait for ``user`` and how many of them are overdue, each at most
    ``COUNT_CAP``: counting a backlog of tens of thousands on every page costs tens of ms."""
    waiting = _waiting(user)
    return {
        "waiting": waiting[:COUNT_CAP].count(),
        "overdue": waiting.filter(due_at__lt=clock.now())[:COUNT_CAP].count(),
    }


# The fields records of the registered types are named by (``__str__``).
_LABEL_FIELDS = ("name", "sku", "subject", "title")


def _records(requests: list[ApprovalRequest]) -> dict[tuple[int, int], Any]:
    """The records of ``requests``, one query per kind of record."""
    wanted: dict[int, set[int]] = {}
    for request in requests:
        wanted.setdefault(request.content_type_id, set()).add(request.object_id)
    found = {}
    for content_type_id, ids in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        if model is None:
            continue
        # The inbox shows a record by its name: reading whole rows was a third of its time.
        # (A record whose label needs another field still shows, at one query more each.)
        names = [f.name for f in model._meta.concrete_fields if f.name in _LABEL_FIELDS]
        for pk, record in model._default_manager.only(*names).in_bulk(ids).items():
            found[(content_type_id, pk)] = record
    return found


def steps_of(request: ApprovalRequest) -> list[ApprovalStepRun]:
    return list(
        ApprovalStepRun.objects.filter(request=request)
        .prefetch_related(
            models.Prefetch(
                "assignments",
                queryset=ApprovalAssignment.objects.select_related("user", "on_behalf_of").order_by(
                    "pk"
                ),
            )
        )
        .order_by("seq")
    )


def history_of(request: ApprovalRequest) -> list[ApprovalEvent]:
    return list(
        ApprovalEvent.objects.filter(request=request)
        .select_related("actor", "on_behalf_of")
        .order_by("at", "pk")
    )


def exceptions_of(request: ApprovalRequest) -> list[ExceptionRequest]:
    return list(
        ExceptionRequest.objects.filter(request=request)
        .select_related("requested_by", "decided_by", "process")
        .order_by("requested_at", "pk")
    )


def exceptions_for_record(record: models.Model) -> list[ExceptionRequest]:
    return list(
        ExceptionRequest.objects.filter(
            content_type=ContentType.objects.get_for_model(type(record)), object_id=record.pk
        )
        .select_related("requested_by", "decided_by", "process")
        .order_by("-requested_at", "-pk")
    )


def exceptions_to_decide(user: User) -> models.QuerySet[ExceptionRequest]:
    """Pending exception requests ``user`` may decide."""
    pending = ExceptionRequest.objects.filter(status=ExceptionRequest.Status.PENDING)
    if not is_admin(user):
        pending = pending.filter(process__owner=user).exclude(requested_by=user)
    return pending.select_related("requested_by", "process", "request").order_by("requested_at")


def processes(user: User) -> models.QuerySet[ApprovalProcess]:
    """Processes of the kinds of record the user may see."""
    from trellis.core.visibility import can

    types = [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]
    return ApprovalProcess.objects.filter(object_type__in=types).select_related("owner")


def delegations(user: User) -> models.QuerySet[Delegation]:
    return (
        Delegation.objects.filter(user=user, ends_at__gt=clock.now())
        .select_related("delegate")
        .order_by("starts_at")
    )
