"""Reads of approvals. A request is seen by whoever sees its record, and by the people it
involves (submitter, approvers, the process owner), who need it to act; anyone else gets 404."""

import datetime as dt
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One step waiting for an approver, as the inbox page and ``GET /api/approvals/inbox``
    show it: plain values, so that a page of 100 rows builds no model instances for them."""

    request_id: int
    process_name: str  # in the reader's language
    object_type: str
    object_id: int
    record_name: str | None  # None when the record is gone
    step_name: str
    submitter_name: str
    # The approver this one stands in for while they are away (delegation), if any.
    on_behalf_of_id: int | None
    on_behalf_of_name: str | None
    due_at: dt.datetime | None
    overdue: bool


# The inbox counts stop here: the badge shows "999+" beyond, and the API says it is capped.
COUNT_CAP = 1000

# What the inbox shows of an assignment, its request and its step, read as plain values:
# building model instances of the three for each row took 30% of the call. The processes and
# people, few and repeated, are read apart, so that the query joins three tables instead of
# seven (planning a seven-table join took 4-5 ms a call).
_INBOX_COLUMNS = (
    "request_id",
    "request__object_id",
    "request__content_type_id",
    "request__process_id",
    "request__submitter_id",
    "step_run__name",
    "on_behalf_of_id",
    "due_at",
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
    """The steps waiting for ``user``'s decision, the soonest due first (no due time last)."""
    waiting = list(
        _waiting(user)
        .order_by(models.F("due_at").asc(nulls_last=True), "id")
        .values_list(*_INBOX_COLUMNS, named=True)[:limit]
    )
    if not waiting:
        return []
    processes = ApprovalProcess.objects.only("name", "name_ko", "object_type").in_bulk(
        {row.request__process_id for row in waiting}
    )
    people = _names_of_people(
        {row.request__submitter_id for row in waiting}
        | {row.on_behalf_of_id for row in waiting} - {None}
    )
    records = _names_of_records(
        {(row.request__content_type_id, row.request__object_id) for row in waiting}
    )
    now = clock.now()
    return [
        InboxRow(
            request_id=row.request_id,
            process_name=processes[row.request__process_id].label,
            object_type=processes[row.request__process_id].object_type,
            object_id=row.request__object_id,
            record_name=records.get((row.request__content_type_id, row.request__object_id)),
            step_name=row.step_run__name,
            submitter_name=people[row.request__submitter_id],
            on_behalf_of_id=row.on_behalf_of_id,
            on_behalf_of_name=people.get(row.on_behalf_of_id),
            due_at=row.due_at,
            overdue=row.due_at is not None and row.due_at < now,
        )
        for row in waiting
    ]


def inbox_counts(user: User) -> dict[str, int]:
    """How many wait for ``user`` and how many of them are overdue, each at most
    ``COUNT_CAP``: counting a backlog of tens of thousands on every page costs tens of ms."""
    waiting = _waiting(user)
    return {
        "waiting": waiting[:COUNT_CAP].count(),
        "overdue": waiting.filter(due_at__lt=clock.now())[:COUNT_CAP].count(),
    }


def _names_of_people(ids: set[int]) -> dict[int, str]:
    # Through ``User.__str__``, which writes a Korean name family name first.
    return {pk: str(person) for pk, person in User.objects.only(*_NAME_FIELDS).in_bulk(ids).items()}


# The fields records of the registered types are named by (``__str__``).
_LABEL_FIELDS = ("name", "sku", "subject", "title")


def _names_of_records(keys: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The names of the records (content type id, object id), one query per kind of record."""
    wanted: dict[int, set[int]] = {}
    for content_type_id, object_id in keys:
        wanted.setdefault(content_type_id, set()).add(object_id)
    found = {}
    for content_type_id, ids in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        if model is None:
            continue
        # A record is named by its own ``__str__``, which the engine cannot know, so the
        # records are still built, but from their name fields alone: reading whole rows was a
        # third of the call. (A record whose name needs another field still shows, at one
        # query more each.)
        names = [f.name for f in model._meta.concrete_fields if f.name in _LABEL_FIELDS]
        for pk, record in model._default_manager.only(*names).in_bulk(ids).items():
            found[(content_type_id, pk)] = str(record)
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
