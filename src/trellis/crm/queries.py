"""Every read of CRM records, always through ``core.visibility``."""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Q, QuerySet, Sum

from trellis.core import audit, clock, registry
from trellis.core.errors import NotFound
from trellis.core.models import User
from trellis.core.paging import Page, paginate
from trellis.core.validators import search_query
from trellis.core.visibility import visible

from .models import Account, Activity, Contact, Lead, Opportunity, Order, OrderLine


@dataclass(frozen=True)
class ListSpec:
    """How one object type is listed: related rows to join, filters and orderings allowed."""

    select_related: tuple[str, ...]
    # filter name -> ORM lookup
    filters: dict[str, str]
    # ordering name -> field; every ordering ends with -id so pages are stable
    orderings: tuple[str, ...]


_COMMON_FILTERS = {"owner": "owner_id", "team": "team_id"}
_STAGE_FILTERS = {"stage": "stage_id", "pipeline": "stage__pipeline_id"}

LISTS: dict[str, ListSpec] = {
    "account": ListSpec(
        ("owner", "team"),
        {**_COMMON_FILTERS, **_STAGE_FILTERS, "industry": "industry", "country": "country"},
        ("name", "created_at", "updated_at"),
    ),
    "contact": ListSpec(
        ("owner", "team"),
        {**_COMMON_FILTERS, "account": "accounts"},
        ("name", "created_at", "updated_at"),
    ),
    "lead": ListSpec(
        ("owner", "team", "stage"),
        {**_COMMON_FILTERS, **_STAGE_FILTERS, "status": "status", "source": "source"},
        ("name", "created_at", "updated_at"),
    ),
    "opportunity": ListSpec(
        ("owner", "team", "account", "stage"),
        {
            **_COMMON_FILTERS,
            **_STAGE_FILTERS,
            "status": "status",
            "account": "account_id",
            "currency": "currency",
            "close_from": "expected_close_date__gte",
            "close_to": "expected_close_date__lte",
            "amount_min": "amount__gte",
            "amount_max": "amount__lte",
        },
        ("name", "amount", "expected_close_date", "created_at", "updated_at"),
    ),
    "product": ListSpec(
        ("owner", "team"),
        {**_COMMON_FILTERS, "is_active": "is_active", "currency": "currency"},
        ("name", "sku", "unit_price", "created_at"),
    ),
    "order": ListSpec(
        ("owner", "team", "account"),
        {**_COMMON_FILTERS, "status": "status", "account": "account_id"},
        ("order_date", "total", "created_at"),
    ),
    "activity": ListSpec(
        ("owner", "team", "content_type"),
        {**_COMMON_FILTERS, "kind": "kind", "is_voc": "is_voc"},
        ("occurred_at", "created_at"),
    ),
}

SEARCHABLE = ("account", "contact", "lead", "opportunity")


def model_for(object_type: str):
    try:
        return registry.get(object_type).model
    except KeyError:
        raise NotFound() from None


def records(
    user: User,
    object_type: str,
    *,
    q: str = "",
    filters: dict[str, Any] | None = None,
    ordering: str = "",
) -> QuerySet:
    """The records of a type the user may see, filtered, searched and in a stable order.

    Unknown filters and orderings are the caller's mistake; ``ValueError`` names them.
    """
    spec = LISTS[object_type]
    queryset = visible(user, model_for(object_type)).select_related(*spec.select_related)
    lookups = {}
    for name, value in (filters or {}).items():
        if value in (None, ""):
            continue
        if name not in spec.filters:
            raise ValueError(name)
        lookups[spec.filters[name]] = value
    if lookups:
        queryset = queryset.filter(**lookups)
    if q:
        queryset = search(queryset, q)
    field = ordering.removeprefix("-")
    if ordering and field not in spec.orderings:
        raise ValueError("ordering")
    return queryset.order_by(ordering, "-id") if ordering else queryset.order_by("-id")


def search(queryset: QuerySet, q: str) -> QuerySet:
    """Partial match on name, e-mail or phone, any script (see ``search_key``)."""
    if queryset.model in (Account, Contact, Lead, Opportunity):
        return queryset.filter(search_text__contains=search_query(q))
    return queryset.filter(Q(name__icontains=q) if hasattr(queryset.model, "name") else Q())


def page(
    user: User,
    object_type: str,
    *,
    q: str = "",
    filters: dict[str, Any] | None = None,
    ordering: str = "",
    number: int | None = 1,
    size: int | None = None,
) -> Page:
    queryset = records(user, object_type, q=q, filters=filters, ordering=ordering)
    return paginate(queryset, number, size)


def get(user: User, object_type: str, pk: int) -> Any:
    """One record the user may see, or ``NotFound`` (also when it exists but is hidden)."""
    spec = LISTS[object_type]
    found = (
        visible(user, model_for(object_type))
        .select_related(*spec.select_related)
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise NotFound()
    return found


def global_search(user: User, q: str, per_type: int = 5) -> dict[str, list[Any]]:
    """The first few matches of each searchable type, for the search box."""
    q = q.strip()
    if len(search_query(q)) < 2:
        return {}
    results = {}
    for object_type in SEARCHABLE:
        found = list(records(user, object_type, q=q)[:per_type])
        if found:
            results[object_type] = found
    return results


@dataclass
class TimelineEntry:
    at: dt.datetime
    kind: str  # "audit" or "activity"
    item: Any


def timeline(user: User, record: Any, limit: int = 100) -> list[TimelineEntry]:
    """Changes and activities on a record, newest first."""
    content_type = ContentType.objects.get_for_model(type(record))
    changes = [TimelineEntry(event.at, "audit", event) for event in audit.history(record)[:limit]]
    activities = [
        TimelineEntry(activity.occurred_at, "activity", activity)
        for activity in visible(user, Activity)
        .filter(content_type=content_type, object_id=record.pk)
        .select_related("owner")
        .order_by("-occurred_at", "-id")[:limit]
    ]
    return sorted(changes + activities, key=lambda e: e.at, reverse=True)[:limit]


def related_summary(user: User, account: Account) -> dict[str, list[Any]]:
    """What an account page shows beside the account: its people, deals and orders."""
    return {
        "contacts": list(visible(user, Contact).filter(accounts=account).order_by("name")[:50]),
        "opportunities": list(
            visible(user, Opportunity).filter(account=account).order_by("-id")[:50]
        ),
        "orders": list(visible(user, Order).filter(account=account).order_by("-id")[:50]),
    }


# Reads for the web UI's pages beside the lists.


def regarding(user: User, activities: Iterable[Activity]) -> dict[int, Any]:
    """The record each activity is about, keyed by activity id, one query per record type.

    A record the user may not see is left out, so a list of activities does not leak its name.
    """
    activities = list(activities)
    wanted: dict[int, set[int]] = defaultdict(set)
    for activity in activities:
        wanted[activity.content_type_id].add(activity.object_id)
    found: dict[int, dict[int, Any]] = {}
    for content_type_id, ids in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        try:
            registry.for_model(model)
        except KeyError:
            continue
        found[content_type_id] = visible(user, model).in_bulk(ids)
    return {
        activity.pk: found.get(activity.content_type_id, {}).get(activity.object_id)
        for activity in activities
    }


def labels(user: User, model: type[Any], ids: Iterable[int]) -> dict[int, str]:
    """Names of the records with these ids that the user may see (for ids in the audit log)."""
    return {pk: str(found) for pk, found in visible(user, model).in_bulk(set(ids)).items()}


def accounts_of(user: User, contact: Contact) -> list[Account]:
    """The accounts a contact works for, as far as the user may see them."""
    return list(visible(user, Account).filter(contacts=contact).order_by("name")[:50])


@dataclass
class MyWork:
    """What the home page shows a user about their own work."""

    open_opportunities: int
    # Sum of open amounts per currency: [{"currency": "KRW", "total": Decimal}, ...]
    pipeline: list[dict[str, Any]]
    open_leads: int
    closing_soon: list[Opportunity]
    activities_this_week: int
    recent_activities: list[Activity]


def my_work(user: User, limit: int = 6) -> MyWork:
    """The user's own open deals and leads, and their latest activities; all use owner indexes."""
    my_activities = records(user, "activity", filters={"owner": user.pk})
    open_deals = records(user, "opportunity", filters={"owner": user.pk, "status": "open"})
    pipeline = list(
        open_deals.order_by().values("currency").annotate(total=Sum("amount")).order_by("currency")
    )
    open_lead_states = [Lead.Status.NEW, Lead.Status.CONTACTED, Lead.Status.QUALIFIED]
    return MyWork(
        open_opportunities=open_deals.count(),
        pipeline=pipeline,
        open_leads=records(user, "lead", filters={"owner": user.pk})
        .filter(status__in=open_lead_states)
        .count(),
        closing_soon=list(
            open_deals.filter(expected_close_date__isnull=False).order_by(
                "expected_close_date", "-id"
            )[:limit]
        ),
        activities_this_week=my_activities.filter(
            occurred_at__gte=clock.now() - dt.timedelta(days=7)
        ).count(),
        recent_activities=list(my_activities.order_by("-occurred_at", "-id")[:limit]),
    )


def order_lines(order: Order) -> list[OrderLine]:
    """The lines of an order the caller has already got through ``get`` (they share its rights)."""
    return list(order.lines.select_related("product"))
