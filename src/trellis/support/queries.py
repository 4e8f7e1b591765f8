"""Every read of support cases, always through ``core.visibility``.

Lists are bounded pages in a stable order on indexed columns (owner, team, status, kind); a page
costs the same queries whatever its size. A case the user may not see is ``NotFound``.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils.translation import gettext as _

from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import Team, User
from trellis.core.paging import Page, paginate
from trellis.core.visibility import can, visible
from trellis.crm.models import Account, Contact, Opportunity

from . import contracts as support_contracts
from .assignment import WORKING_STATUSES
from .models import Case, CaseAttachment, CaseEvent, Feature, ReplyTemplate, SupportContract

# view name -> what it shows
VIEWS = {
    "mine": "cases you own",
    "queue": "unowned cases waiting in your team's queue or the general queue",
    "team": "cases of your team",
    "all": "every case you may see",
    "unclassified": "cases nobody has classified yet",
    "defects": "cases classified as defects",
    "features": "cases classified as feature requests",
}
_VIEW_KINDS = {
    "unclassified": Case.Kind.UNCLASSIFIED,
    "defects": Case.Kind.DEFECT,
    "features": Case.Kind.FEATURE_REQUEST,
}
TRACKING_NUMBER = re.compile(r"^\s*([A-Za-z]{2}-\d{4}-\d{6})\s*$")
# Related records shown beside a case, at most this many of each.
SIDEBAR_ROWS = 10
# Nav badges show at most this (the UI writes it as e.g. "999+").
COUNT_CAP = 999


def _queue_filter(user: User) -> Q:
    teams = Q(team__isnull=True)
    if user.team_id is not None:
        teams |= Q(team_id=user.team_id)
    return Q(owner__isnull=True, status__in=WORKING_STATUSES) & teams


def _team_filter(user: User) -> Q:
    return Q(owner_id=user.pk) if user.team_id is None else Q(team_id=user.team_id)


def case_queryset(
    user: User,
    *,
    view: str = "mine",
    q: str = "",
    status: str | None = None,
    kind: str | None = None,
) -> QuerySet[Case]:
    """The cases of a view the user may see, filtered, in the view's order (no page yet).

    An unknown view, status or class is ``ValidationFailed`` naming it.
    """
    errors = {}
    if view not in VIEWS:
        errors["view"] = [_("Unknown view.")]
    if status and status not in Case.Status.values:
        errors["status"] = [_("Unknown status.")]
    if kind and kind not in Case.Kind.values:
        errors["kind"] = [_("Unknown class.")]
    if errors:
        raise ValidationFailed(errors)
    queryset = visible(user, Case).select_related("owner", "team", "account")
    if view == "mine":
        queryset = queryset.filter(owner_id=user.pk)
    elif view == "queue":
        queryset = queryset.filter(_queue_filter(user))
    elif view == "team":
        queryset = queryset.filter(_team_filter(user))
    elif view in _VIEW_KINDS:
        queryset = queryset.filter(kind=_VIEW_KINDS[view])
    if status:
        queryset = queryset.filter(status=status)
    if kind:
        queryset = queryset.filter(kind=kind)
    q = (q or "").strip()
    if q:
        queryset = search(queryset, q)
    # The queue is worked oldest first; every other list shows the newest first.
    return queryset.order_by("id" if view == "queue" else "-id")


def search(queryset: QuerySet[Case], q: str) -> QuerySet[Case]:
    """A tracking number finds its case; other text matches subject, customer name or e-mail."""
    number = TRACKING_NUMBER.match(q)
    if number:
        return queryset.filter(tracking_number=number.group(1).upper())
    return queryset.filter(
        Q(subject__icontains=q)
        | Q(requester_name__icontains=q)
        | Q(requester_email__icontains=q)
        | Q(tracking_number__icontains=q)
    )


def cases(
    user: User,
    *,
    view: str = "mine",
    q: str = "",
    status: str | None = None,
    kind: str | None = None,
    page: int = 1,
    page_size: int | None = None,
) -> Page:
    """One page of a case list: ``view`` is one of ``VIEWS``; owner, team and account joined."""
    queryset = case_queryset(user, view=view, q=q, status=status, kind=kind)
    return paginate(queryset, page, page_size)


def case(user: User, pk: Any) -> Case:
    """One case the user may see, with its people and records joined; else ``NotFound``."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(_("No such case.")) from None
    found = (
        visible(user, Case)
        .select_related(
            "owner",
            "team",
            "contact",
            "account",
            "product",
            "feature",
            "merged_into",
            "split_from",
            "contract",
        )
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise NotFound(_("No such case."))
    return found


def case_numbered(user: User, tracking_number: str) -> Case | None:
    """The case with this tracking number (any letter case), if the user may see it."""
    number = tracking_number.strip().upper()
    return visible(user, Case).filter(tracking_number=number).first()


def timeline(case: Case, *, public_only: bool = False) -> list[CaseEvent]:
    """A case's events, oldest first, with their actors and attachments (without the bytes).

    ``public_only``: what the customer may see, with only the attachments shown to them.
    Take ``case`` from ``case()`` (or the portal's key check): the timeline shares its rights.
    """
    attachments = CaseAttachment.objects.defer("data").order_by("id")
    events = CaseEvent.objects.filter(case=case)
    if public_only:
        events = events.filter(public=True)
        attachments = attachments.filter(public=True)
    return list(
        events.select_related("actor")
        .prefetch_related(Prefetch("attachments", queryset=attachments))
        .order_by("at", "id")
    )


@dataclass
class Sidebar:
    """What an agent sees beside a case: the customer and their dealings with us."""

    contact: Contact | None = None
    account: Account | None = None
    contracts: list[SupportContract] = field(default_factory=list)
    opportunities: list[Opportunity] = field(default_factory=list)
    past_cases: list[Case] = field(default_factory=list)


def sidebar(user: User, case: Case) -> Sidebar:
    """The customer's contact, account, contracts, open opportunities and other cases.

    Each is read through the user's visibility: a record they may not see is left out.
    """
    result = Sidebar()
    if case.contact_id is not None:
        result.contact = visible(user, Contact).filter(pk=case.contact_id).first()
    if case.account_id is not None:
        result.account = visible(user, Account).filter(pk=case.account_id).first()
    elif result.contact is not None:
        result.account = visible(user, Account).filter(contacts=result.contact).first()
    if result.account is not None:
        result.contracts = support_contracts.account_contracts(user, result.account, SIDEBAR_ROWS)
        result.opportunities = list(
            visible(user, Opportunity)
            .filter(account=result.account, status=Opportunity.Status.OPEN)
            .order_by("-id")[:SIDEBAR_ROWS]
        )
    # Intake stores addresses in lower case, so the exact match can use the index.
    same_customer = Q(requester_email=case.requester_email)
    if case.contact_id is not None:
        same_customer |= Q(contact_id=case.contact_id)
    result.past_cases = list(
        visible(user, Case)
        .filter(same_customer)
        .exclude(pk=case.pk)
        .select_related("owner")
        .order_by("-id")[:SIDEBAR_ROWS]
    )
    return result


@dataclass(frozen=True)
class Customer:
    """A customer who asked for a feature."""

    email: str
    name: str
    account_id: int | None
    account_name: str


@dataclass
class FeatureSummary:
    feature: Feature
    case_count: int = 0
    customers: list[Customer] = field(default_factory=list)


def features(user: User) -> list[FeatureSummary]:
    """The product-feedback list: each feature, how many cases asked for it and who asked.

    Most asked-for first. Only cases the user may see are counted. Two queries in all.
    """
    if not can(user, "view", "case"):
        raise PermissionDenied(_("You may not see cases."))
    summaries = {
        feature.pk: FeatureSummary(feature)
        for feature in Feature.objects.select_related("product").order_by("title")
    }
    rows = (
        visible(user, Case)
        .filter(feature__isnull=False)
        .order_by()
        .values("feature_id", "requester_email", "requester_name", "account_id", "account__name")
        .annotate(n=Count("pk"))
        .order_by("feature_id", "requester_email", "requester_name")
    )
    seen: set[tuple[int, str]] = set()
    for row in rows:
        summary = summaries.get(row["feature_id"])
        if summary is None:
            continue
        summary.case_count += row["n"]
        key = (row["feature_id"], row["requester_email"].casefold())
        if key in seen:
            continue
        seen.add(key)
        summary.customers.append(
            Customer(
                email=row["requester_email"],
                name=row["requester_name"],
                account_id=row["account_id"],
                account_name=row["account__name"] or "",
            )
        )
    return sorted(summaries.values(), key=lambda s: (-s.case_count, s.feature.title.casefold()))


def queue_counts(user: User) -> dict[str, int]:
    """Cases still being worked on per view, for the navigation badges, in one query.

    Keys are the ``VIEWS`` names; a count above ``COUNT_CAP`` is given as ``COUNT_CAP``.
    """
    working = visible(user, Case).filter(status__in=WORKING_STATUSES)
    filters = {
        "mine": Q(owner_id=user.pk),
        "queue": _queue_filter(user),
        "team": _team_filter(user),
        "all": Q(),
        **{view: Q(kind=kind) for view, kind in _VIEW_KINDS.items()},
    }
    counts = working.aggregate(
        **{view: Count("pk", filter=condition or None) for view, condition in filters.items()}
    )
    return {view: min(counts[view] or 0, COUNT_CAP) for view in VIEWS}


def reply_templates(user: User, language: str = "") -> list[ReplyTemplate]:
    """The reply templates an agent may pick from: those in ``language``, or all of them when
    none is."""
    if not can(user, "edit", "case"):
        return []
    templates = list(ReplyTemplate.objects.order_by("name", "language", "id")[:200])
    primary = (language or "").split("-")[0].casefold()
    same = [t for t in templates if t.language.split("-")[0].casefold() == primary]
    return same or templates


def assignment_names(timeline: Iterable[CaseEvent]) -> dict[str, dict[int, str]]:
    """Names for the owner and team ids of assignment events that were stored without them:
    ``{"users": {id: name}, "teams": {id: name}}``."""
    user_ids, team_ids = set(), set()
    for event in timeline:
        if event.kind != CaseEvent.Kind.ASSIGNED or not isinstance(event.data, dict):
            continue
        if isinstance(event.data.get("owner"), int) and not event.data.get("owner_name"):
            user_ids.add(event.data["owner"])
        if isinstance(event.data.get("team"), int) and not event.data.get("team_name"):
            team_ids.add(event.data["team"])
    users = User.objects.filter(pk__in=user_ids) if user_ids else []
    teams = Team.objects.filter(pk__in=team_ids) if team_ids else []
    return {
        "users": {user.pk: str(user) for user in users},
        "teams": {team.pk: team.name for team in teams},
    }


def loose_attachments(case: Case) -> list[CaseAttachment]:
    """Files of the case that belong to no timeline entry (without the bytes)."""
    return list(case.attachments.filter(event__isnull=True).defer("data"))


def attachment(case: Case, attachment_id: int) -> CaseAttachment:
    """A file of ``case`` that may be served (not forbidden, not oversized); else ``NotFound``.

    Take ``case`` from ``case()``: the file shares its rights.
    """
    found = case.attachments.filter(pk=attachment_id, allowed=True).first()
    if found is None:
        raise NotFound(_("There is no such file."))
    return found
