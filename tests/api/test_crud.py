"""Create, read, list, change and delete every record type, as a script and as a browser."""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from trellis.core import audit, registry
from trellis.crm.api import RECORD_TYPES

from .. import factories
from .conftest import assert_problem, session_client, token_client

ENDPOINTS = {endpoints.key: endpoints for endpoints in RECORD_TYPES}


@dataclass
class Case:
    path: str
    create: Callable[[SimpleNamespace], dict[str, Any]]
    created: Callable[[SimpleNamespace], dict[str, Any]]
    change: dict[str, Any]
    changed: dict[str, Any]


CASES = {
    "account": Case(
        "accounts",
        lambda r: {
            "name": "주식회사 한빛소프트",
            "phone": "02-2255-0114",
            "email": "Info@Hanbit.CO.KR",
        },
        lambda r: {"phone": "+82222550114", "email": "Info@hanbit.co.kr", "country": "KR"},
        {"industry": "Software"},
        {"industry": "Software"},
    ),
    "contact": Case(
        "contacts",
        lambda r: {"name": "김민지", "email": "minji@example.com", "account_ids": [r.account.pk]},
        lambda r: {"account_ids": [r.account.pk]},
        {"title": "CTO", "account_ids": []},
        {"title": "CTO", "account_ids": []},
    ),
    "lead": Case(
        "leads",
        lambda r: {"name": "이준호", "company": "Nuri Tech", "source": "web"},
        lambda r: {"status": "new", "source": "web"},
        {"status": "qualified"},
        {"status": "qualified"},
    ),
    "opportunity": Case(
        "opportunities",
        lambda r: {
            "name": "ERP renewal",
            "account_id": r.account.pk,
            "amount": "15000000",
            "expected_close_date": "2026-03-31",
        },
        lambda r: {"amount": "15000000", "account_name": "Hanbit", "probability": 10},
        {"amount": 18_000_000, "probability": 60},
        {"amount": "18000000", "probability": 60},
    ),
    "product": Case(
        "products",
        lambda r: {"name": "Support plan", "sku": "SUP-1", "unit_price": "99.5", "currency": "USD"},
        lambda r: {"unit_price": "99.50", "is_active": True},
        {"unit_price": 120},
        {"unit_price": "120.00"},
    ),
    "order": Case(
        "orders",
        lambda r: {
            "account_id": r.account.pk,
            "lines": [{"product_id": r.product.pk, "quantity": 3, "discount_pct": 10}],
        },
        lambda r: {
            "total": "135000",
            "status": "draft",
            "lines": [
                {
                    "id": r.any_id,
                    "product_id": r.product.pk,
                    "product_name": r.product.name,
                    "quantity": 3,
                    "unit_price": "50000",
                    "discount_pct": "10.00",
                }
            ],
        },
        {"status": "placed", "notes": "급함"},
        {"status": "placed", "notes": "급함", "total": "135000"},
    ),
    "activity": Case(
        "activities",
        lambda r: {
            "related_type": "opportunity",
            "related_id": r.deal.pk,
            "subject": "첫 미팅",
            "kind": "meeting",
        },
        lambda r: {"related_type": "opportunity", "related_id": r.deal.pk, "is_voc": False},
        {"body": "Went well"},
        {"body": "Went well"},
    ),
}


class AnyId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)


@pytest.fixture
def related(admin):
    account = factories.account(admin, name="Hanbit")
    return SimpleNamespace(
        account=account,
        product=factories.product(admin, unit_price=Decimal(50_000)),
        deal=factories.opportunity(admin, account_id=account.pk),
        any_id=AnyId(),
    )


def conforms(key: str, record: dict) -> dict:
    """The answer follows the OpenAPI schema the endpoint declares."""
    ENDPOINTS[key].Out.model_validate(record)
    return record


@pytest.mark.parametrize("client_for", [token_client, session_client], ids=["token", "session"])
@pytest.mark.parametrize("key", CASES)
def test_record_lifecycle(key, client_for, admin, related):
    case, api = CASES[key], client_for(admin)
    model = registry.get(key).model

    created = api.post(case.path + "/", case.create(related))
    assert created.status_code == 201, created.content
    record = conforms(key, created.json())
    assert record.items() >= {"version": 1, "owner_id": admin.pk, "owner_name": str(admin)}.items()
    assert record.items() >= case.created(related).items()
    item = f"{case.path}/{record['id']}"

    assert api.get(item).json() == record
    listed = api.get(case.path + "/").json()
    assert listed["items"][0] == record
    conforms(key, listed["items"][0])

    changed = api.patch(item, {"version": 1, **case.change})
    assert changed.status_code == 200, changed.content
    current = conforms(key, changed.json())
    assert current["version"] == 2
    assert current.items() >= case.changed.items()

    conflict = assert_problem(api.patch(item, {"version": 1, **case.change}), 409)
    assert conflict["current"] == current
    assert_problem(api.delete(item, version=1), 409)
    assert model.objects.filter(pk=record["id"]).exists()

    assert api.delete(item, version=2).status_code == 204
    assert not model.objects.filter(pk=record["id"]).exists()
    assert_problem(api.get(item), 404)
    actions = [event.action for event in audit.history(model(pk=record["id"]))]
    assert actions == ["deleted", "updated", "created"]


def test_a_change_without_a_difference_keeps_the_version(admin, related):
    api = token_client(admin)
    deal = related.deal
    answer = api.patch(f"opportunities/{deal.pk}", {"version": 1, "amount": "1000000.00"})
    assert answer.json()["version"] == 1


def test_session_writes_need_the_csrf_token(admin):
    api = session_client(admin, csrf=False)
    assert api.get("accounts/").status_code == 200
    body = assert_problem(api.post("accounts/", {"name": "Hanbit"}), 403)
    assert "CSRF" in body["detail"]
    assert not registry.get("account").model.objects.exists()


def test_order_lines_are_replaced_as_one_versioned_change(admin, related):
    api = token_client(admin)
    order = api.post("orders/", {"account_id": related.account.pk}).json()
    assert (order["total"], order["lines"]) == ("0", [])
    other = factories.product(admin, name="Install", unit_price=Decimal(300_000))
    lines = [
        {"product_id": related.product.pk, "quantity": 2},
        {"product_id": other.pk, "quantity": 1, "unit_price": 250_000, "discount_pct": "20"},
    ]
    answer = api.put(f"orders/{order['id']}/lines", {"version": 1, "lines": lines})
    assert answer.status_code == 200, answer.content
    changed = conforms("order", answer.json())
    assert changed["version"] == 2
    assert changed["total"] == "300000"  # 2 * 50,000 + 250,000 * 0.8
    assert [line["product_name"] for line in changed["lines"]] == [related.product.name, "Install"]

    stale = assert_problem(api.put(f"orders/{order['id']}/lines", {"version": 1, "lines": []}), 409)
    assert stale["current"] == changed
    assert api.get(f"orders/{order['id']}").json()["lines"] == changed["lines"]


def test_activities_can_be_listed_for_one_record(admin, related):
    api = token_client(admin)
    other = factories.opportunity(admin, account_id=related.account.pk)
    mine = factories.activity(admin, related.deal, subject="About the deal")
    factories.activity(admin, other, subject="About another deal")
    factories.activity(admin, related.account, subject="About the account")

    answer = api.get("activities/", related_type="opportunity", related_id=related.deal.pk)
    assert [a["id"] for a in answer.json()["items"]] == [mine.pk]
    everything = api.get("activities/", related_type="opportunity").json()["items"]
    assert {a["subject"] for a in everything} == {"About the deal", "About another deal"}


def test_a_record_given_away_on_creation_is_still_answered(sales, other_sales):
    # Sales see only their own leads: one created for a colleague is at once out of sight.
    api = token_client(sales)
    answer = api.post("leads/", {"name": "For a colleague", "owner_id": other_sales.pk})
    assert answer.status_code == 201, answer.content
    lead = conforms("lead", answer.json())
    assert (lead["owner_id"], lead["owner_name"]) == (other_sales.pk, str(other_sales))
    assert_problem(api.get(f"leads/{lead['id']}"), 404)


def test_listing_activities_by_related_id_needs_the_type(admin):
    assert_problem(token_client(admin).get("activities/", related_id=1), 422, "related_type")
