"""The support desk's JSON endpoints: cases, their timelines and actions, the feature list.

Endpoints stay thin: reads start from ``queries`` (which applies visibility), writes are
``services`` calls (rights, validation, audit, timeline), and a case is created through the
same intake as mail and the web form (channel "api"). Rows are fetched with ``values()`` and
turned into JSON directly, so a page costs the same queries whatever its size. A case's access
key, and its hash, are never part of an answer.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, Version, json_response, refuse_unknown_params, text
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import User
from trellis.core.paging import paginate
from trellis.core.visibility import can

from . import intake, queries, services
from .models import Case, CaseAttachment, CaseEvent

router = Router(tags=["Cases"])

StatusName = Literal[tuple(Case.Status.values)]
KindName = Literal[tuple(Case.Kind.values)]
GivenKind = Literal[services.KINDS]
ViewName = Literal[tuple(queries.VIEWS)]
_LIMITS = settings.TRELLIS
PageNumber = Field(1, ge=1, le=10**9)
PageSize = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
# Actions answer 409 when the case's state does not allow them (e.g. claimed by someone else).
_CONFLICT = {
    "responses": {
        409: {
            "description": "The case's state does not allow this (e.g. someone else has "
            "claimed it), or the `version` you sent is stale (see `current`).",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
    }
}


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


class CaseOut(Output):
    id: int
    tracking_number: str = Field(description="What the customer quotes, e.g. CS-2026-000123.")
    subject: str
    status: StatusName
    kind: KindName = Field(description="The class triage gave it.")
    suggested_kind: KindName | Literal[""] = Field(
        description="The class the keyword model suggests from past cases; empty for none."
    )
    channel: Literal[tuple(Case.Channel.values)]
    priority: Literal[tuple(Case.Priority.values)]
    owner_id: int | None = Field(description="Null while the case waits in a queue.")
    owner_name: str | None
    team_id: int | None
    team_name: str | None
    contact_id: int | None
    account_id: int | None
    account_name: str | None
    product_id: int | None
    contract_id: int | None = Field(
        description="The support contract that covers the case; null: not covered."
    )
    feature_id: int | None = Field(description="For a feature request: the feature asked for.")
    merged_into_id: int | None
    split_from_id: int | None
    requester_email: str
    requester_name: str
    language: str
    acknowledged_at: dt.datetime | None
    first_response_at: dt.datetime | None
    resolved_at: dt.datetime | None
    version: int = Field(description="Send it back with a versioned change.")
    created_at: dt.datetime
    updated_at: dt.datetime


class CaseDetailOut(CaseOut):
    description: str = Field(description="The customer's first message.")


class CasePage(Output):
    items: list[CaseOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class CaseListParams(Input):
    view: ViewName = Field(
        "all",
        description="Which cases: "
        + "; ".join(f"`{name}` {meaning}" for name, meaning in queries.VIEWS.items())
        + ".",
    )
    q: text(max_length=200) | None = Field(
        None,
        description="A tracking number, or part of the subject or the customer's name or e-mail.",
    )
    status: StatusName | None = None
    kind: KindName | None = None
    page: int = PageNumber
    page_size: int = PageSize


class CaseCreate(Input):
    subject: text(max_length=300) = ""
    body: text(max_length=intake.MAX_BODY) = Field("", description="The customer's message.")
    requester_email: text(max_length=254) = Field(description="The customer's e-mail address.")
    requester_name: text(max_length=200) = ""
    language: Literal[tuple(code for code, _name in settings.LANGUAGES)] | None = Field(
        None, description="The customer's language; detected from the text when not given."
    )
    product_id: Id | None = None


class AssignIn(Input):
    user_id: Id | None = Field(None, description="The agent who takes the case over.")
    team_id: Id | None = Field(
        None, description="A team; alone, the case goes to that team's queue."
    )
    note: text(max_length=services.MAX_NOTE) = Field("", description="The internal hand-off note.")
    version: Version | None = None


class CaseEditIn(Input):
    # Absent: unchanged. Unlike the product, neither can be taken away (null is refused).
    subject: text(max_length=Case._meta.get_field("subject").max_length) = None
    priority: Literal[tuple(Case.Priority.values)] = None
    product_id: Id | None = Field(None, description="Null takes the product away.")
    version: Version


class StatusIn(Input):
    status: StatusName
    version: Version | None = None


class ClassifyIn(Input):
    kind: GivenKind
    feature_id: Id | None = Field(None, description="For a feature request: an existing feature.")
    feature_title: text(max_length=200) = Field(
        "", description="For a feature request: found by title (any letter case) or created."
    )


class ReplyIn(Input):
    body: text(max_length=services.MAX_REPLY)
    status: StatusName | None = Field(None, description="A status to set with the reply.")


class NoteIn(Input):
    body: text(max_length=services.MAX_NOTE)


class MergeIn(Input):
    target_id: Id = Field(description="The case this one is merged into.")


class SplitIn(Input):
    event_ids: list[Id] = Field(
        max_length=1000, description="Events of the customer's messages to move."
    )
    subject: text(max_length=300)


class AttachmentOut(Output):
    id: int
    filename: str
    content_type: str
    size: int
    allowed: bool = Field(description="False for a forbidden type or an oversized file.")
    public: bool


class EventOut(Output):
    id: int
    kind: Literal[tuple(CaseEvent.Kind.values)]
    public: bool = Field(description="Whether the customer sees it on the status page.")
    at: dt.datetime
    actor_id: int | None
    actor_name: str | None
    author: str = Field(description="The author as the customer sees it.")
    body: str
    html: str = Field(description="The sanitised HTML of an e-mail, if it had one.")
    data: dict[str, Any]
    attachments: list[AttachmentOut]


class EventPage(Output):
    items: list[EventOut]
    page: int
    page_size: int
    has_next: bool


class PageParams(Input):
    page: int = PageNumber
    page_size: int = PageSize


class CustomerOut(Output):
    email: str
    name: str
    account_id: int | None
    account_name: str


class FeatureOut(Output):
    id: int
    title: str
    description: str
    status: str
    product_id: int | None
    case_count: int = Field(description="Cases you may see that ask for it.")
    customers: list[CustomerOut] = Field(description="Who asked, one entry per e-mail address.")


class FeaturePage(Output):
    items: list[FeatureOut]
    page: int
    page_size: int
    has_next: bool


# Rows.

_COLUMNS = (
    "id",
    "tracking_number",
    "subject",
    "status",
    "kind",
    "suggested_kind",
    "channel",
    "priority",
    "owner_id",
    "team_id",
    "contact_id",
    "account_id",
    "product_id",
    "contract_id",
    "feature_id",
    "merged_into_id",
    "split_from_id",
    "requester_email",
    "requester_name",
    "language",
    "acknowledged_at",
    "first_response_at",
    "resolved_at",
    "version",
    "created_at",
    "updated_at",
)
_JOINED = (
    "owner__first_name",
    "owner__last_name",
    "owner__username",
    "team__name",
    "account__name",
)


def _person(first_name: str | None, last_name: str | None, username: str | None) -> str | None:
    # Same as User.__str__ (full name, else username), from the three joined columns.
    if username is None:
        return None
    return f"{first_name} {last_name}".strip() or username


def _present(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["owner_name"] = _person(
            row.pop("owner__first_name"), row.pop("owner__last_name"), row.pop("owner__username")
        )
        row["team_name"] = row.pop("team__name")
        row["account_name"] = row.pop("account__name")
    return rows


def _read(user: User, pk: int) -> dict[str, Any]:
    found = list(
        queries.case_queryset(user, view="all")
        .filter(pk=pk)
        .values(*_COLUMNS, *_JOINED, "description")[:1]
    )
    if not found:
        raise NotFound(_("No such case."))
    return _present(found)[0]


def _written(user: User, case: Case) -> dict[str, Any]:
    """The answer to a write: the case as a read shows it, or, if the writer handed it to
    someone they may not see the cases of, as the service left it."""
    try:
        return _read(user, case.pk)
    except NotFound:
        row = {column: getattr(case, column) for column in (*_COLUMNS, "description")}
        owner, team, account = case.owner, case.team, case.account
        row["owner_name"] = str(owner) if owner else None
        row["team_name"] = team.name if team else None
        row["account_name"] = account.name if account else None
        return row


@contextmanager
def _answering_for(user: User, pk: int) -> Iterator[None]:
    """A stale version's 409 carries the case as it is now, as this API shows it."""
    try:
        yield
    except StaleVersion as conflict:
        conflict.current = _read(user, pk)
        raise


def _page(items: list[Any], number: int, size: int, has_next: bool) -> dict[str, Any]:
    return {"items": items, "page": number, "page_size": size, "has_next": has_next}


# Endpoints.


@router.get(
    "/cases/",
    response=CasePage,
    operation_id="list_cases",
    summary="List cases",
    description="The cases you may see in one of the agent views (default `all`), newest "
    "first (the queue: oldest first), a page at a time. An unknown query parameter is an "
    "error, not ignored.",
)
def list_cases(request: HttpRequest, params: Query[CaseListParams]) -> HttpResponse:
    user = request.auth
    refuse_unknown_params(request.GET, CaseListParams.model_fields)
    if not can(user, "view", "case"):
        raise PermissionDenied(_("You may not see cases."))
    queryset = queries.case_queryset(
        user, view=params.view, q=params.q or "", status=params.status, kind=params.kind
    )
    page = paginate(queryset.values(*_COLUMNS, *_JOINED), params.page, params.page_size)
    return json_response(_page(_present(page.items), page.number, page.size, page.has_next))


@router.post(
    "/cases/",
    response={201: CaseDetailOut},
    operation_id="create_case",
    summary="Open a case",
    description="A case on behalf of a customer, through the same intake as e-mail and the "
    "web form: it gets a tracking number, the customer becomes a contact, the assignment rules "
    "pick an owner, and the customer is e-mailed the acknowledgement with the status page "
    "link. Give a subject or a body (or both).",
)
def create_case(request: HttpRequest, payload: CaseCreate) -> HttpResponse:
    user = request.auth
    data = payload.model_dump()
    try:
        case, _key = intake.open_case(
            channel=Case.Channel.API,
            subject=data["subject"],
            body=data["body"],
            requester_email=data["requester_email"],
            requester_name=data["requester_name"],
            language=data["language"] or "",
            product=data["product_id"],
            actor=user,
        )
    except ValidationFailed as failure:
        failure.errors = {
            ("product_id" if key == "product" else key): messages
            for key, messages in failure.errors.items()
        }
        raise
    return json_response(_written(user, case), status=201)


@router.get(
    "/cases/{id}",
    response=CaseDetailOut,
    operation_id="get_case",
    summary="Read a case",
)
def get_case(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_read(request.auth, id))


@router.patch(
    "/cases/{id}",
    response=CaseDetailOut,
    operation_id="edit_case",
    summary="Change a case's subject, priority or product",
    description="Only the fields you send change; `version` is required. The change is an "
    "internal entry on the case's timeline; the customer is not told.",
    openapi_extra=_CONFLICT,
)
def edit_case(request: HttpRequest, id: Id, payload: CaseEditIn) -> HttpResponse:
    user = request.auth
    data = payload.model_dump(exclude_unset=True)
    version = data.pop("version")
    with _answering_for(user, id):
        case = services.edit(user, id, data, version=version)
    return json_response(_written(user, case))


@router.post(
    "/cases/{id}/claim",
    response=CaseDetailOut,
    operation_id="claim_case",
    summary="Claim a case from the queue",
    description="You become its owner. Of two agents claiming at once exactly one gets it; "
    "the other gets 409 naming who has it. Claiming your own case again changes nothing.",
    openapi_extra=_CONFLICT,
)
def claim_case(request: HttpRequest, id: Id) -> HttpResponse:
    user = request.auth
    return json_response(_written(user, services.claim(user, id)))


@router.post(
    "/cases/{id}/assign",
    response=CaseDetailOut,
    operation_id="assign_case",
    summary="Hand a case over",
    description="To an agent (`user_id`, and their team unless `team_id` says otherwise) or to "
    "a team's queue (`team_id` alone), with an internal hand-off note. The customer sees no "
    "change. With `version`, only if the case is still at that version.",
    openapi_extra=_CONFLICT,
)
def assign_case(request: HttpRequest, id: Id, payload: AssignIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        case = services.assign(
            user,
            id,
            user_id=payload.user_id,
            team_id=payload.team_id,
            note=payload.note,
            version=payload.version,
        )
    return json_response(_written(user, case))


@router.post(
    "/cases/{id}/status",
    response=CaseDetailOut,
    operation_id="set_case_status",
    summary="Set a case's status",
    description="Along the allowed transitions (a case never goes back to `new`; a closed case "
    "can only be reopened). The customer sees the change and is e-mailed. With `version`, "
    "only if the case is still at that version.",
    openapi_extra=_CONFLICT,
)
def set_case_status(request: HttpRequest, id: Id, payload: StatusIn) -> HttpResponse:
    user = request.auth
    with _answering_for(user, id):
        case = services.set_status(user, id, payload.status, version=payload.version)
    return json_response(_written(user, case))


@router.post(
    "/cases/{id}/classify",
    response=CaseDetailOut,
    operation_id="classify_case",
    summary="Classify a case",
    description="A feature request names its feature (`feature_id`, or `feature_title` to find "
    "or create one); it leaves the defect queue, goes on the product-feedback list, and the "
    "customer is told.",
    openapi_extra=_CONFLICT,
)
def classify_case(request: HttpRequest, id: Id, payload: ClassifyIn) -> HttpResponse:
    user = request.auth
    case = services.classify(
        user,
        id,
        payload.kind,
        feature_title=payload.feature_title,
        feature_id=payload.feature_id,
    )
    return json_response(_written(user, case))


@router.post(
    "/cases/{id}/reply",
    response={201: EventOut},
    operation_id="reply_to_case",
    summary="Reply to the customer",
    description="A public reply, e-mailed to the customer with the thread quoted. An unowned "
    "case becomes yours. `status` changes the status in the same step.",
    openapi_extra=_CONFLICT,
)
def reply_to_case(request: HttpRequest, id: Id, payload: ReplyIn) -> HttpResponse:
    event = services.reply(request.auth, id, payload.body, status=payload.status)
    return json_response(_events([event.pk])[0], status=201)


@router.post(
    "/cases/{id}/notes",
    response={201: EventOut},
    operation_id="add_case_note",
    summary="Add an internal note",
    description="The customer never sees it.",
)
def add_case_note(request: HttpRequest, id: Id, payload: NoteIn) -> HttpResponse:
    event = services.add_note(request.auth, id, payload.body)
    return json_response(_events([event.pk])[0], status=201)


@router.post(
    "/cases/{id}/merge",
    response=CaseDetailOut,
    operation_id="merge_case",
    summary="Merge a duplicate into another case",
    description="Both cases must be from the same customer. The answer is the target case, "
    "which now also holds this case's history; this case is closed and later mail to it lands "
    "in the target.",
    openapi_extra=_CONFLICT,
)
def merge_case(request: HttpRequest, id: Id, payload: MergeIn) -> HttpResponse:
    user = request.auth
    return json_response(_written(user, services.merge(user, id, payload.target_id)))


@router.post(
    "/cases/{id}/split",
    response={201: CaseDetailOut},
    operation_id="split_case",
    summary="Split messages off into a new case",
    description="The chosen customer messages move to a new case with its own tracking number, "
    "for the same customer; the answer is the new case.",
    openapi_extra=_CONFLICT,
)
def split_case(request: HttpRequest, id: Id, payload: SplitIn) -> HttpResponse:
    user = request.auth
    case = services.split(user, id, payload.event_ids, subject=payload.subject)
    return json_response(_written(user, case), status=201)


_EVENT_COLUMNS = (
    "id",
    "kind",
    "public",
    "at",
    "actor_id",
    "actor__first_name",
    "actor__last_name",
    "actor__username",
    "author",
    "body",
    "html",
    "data",
)
_ATTACHMENT_COLUMNS = ("id", "event_id", "filename", "content_type", "size", "allowed", "public")


def _present_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event rows -> the API's events, with their attachments (one query for the page)."""
    attached = defaultdict(list)
    if rows:
        for attachment in (
            CaseAttachment.objects.filter(event_id__in=[row["id"] for row in rows])
            .order_by("id")
            .values(*_ATTACHMENT_COLUMNS)
        ):
            attached[attachment.pop("event_id")].append(attachment)
    for row in rows:
        row["actor_name"] = _person(
            row.pop("actor__first_name"), row.pop("actor__last_name"), row.pop("actor__username")
        )
        row["attachments"] = attached[row["id"]]
    return rows


def _events(ids: list[int]) -> list[dict[str, Any]]:
    rows = list(CaseEvent.objects.filter(pk__in=ids).order_by("at", "id").values(*_EVENT_COLUMNS))
    return _present_events(rows)


@router.get(
    "/cases/{id}/events",
    response=EventPage,
    operation_id="list_case_events",
    summary="A case's timeline",
    description="Oldest first: customer messages, replies, internal notes, status changes, "
    "hand-offs. `public` says what the customer sees.",
)
def list_case_events(request: HttpRequest, id: Id, params: Query[PageParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, PageParams.model_fields)
    case = queries.case(request.auth, id)
    events = CaseEvent.objects.filter(case=case).order_by("at", "id").values(*_EVENT_COLUMNS)
    page = paginate(events, params.page, params.page_size)
    items = _present_events(page.items)
    return json_response(_page(items, page.number, page.size, page.has_next))


@router.get(
    "/features/",
    response=FeaturePage,
    operation_id="list_features",
    tags=["Feature requests"],
    summary="The product-feedback list",
    description="Each feature customers asked for, with the number of cases asking and who "
    "asked; most asked for first.",
)
def list_features(request: HttpRequest, params: Query[PageParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, PageParams.model_fields)
    summaries = queries.features(request.auth)
    start = (params.page - 1) * params.page_size
    chosen = summaries[start : start + params.page_size]
    items = [
        {
            "id": summary.feature.pk,
            "title": summary.feature.title,
            "description": summary.feature.description,
            "status": summary.feature.status,
            "product_id": summary.feature.product_id,
            "case_count": summary.case_count,
            "customers": [asdict(customer) for customer in summary.customers],
        }
        for summary in chosen
    ]
    has_next = start + params.page_size < len(summaries)
    return json_response(_page(items, params.page, params.page_size, has_next))
