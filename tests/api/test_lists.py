"""Lists: pages, a stable order, filters, search, and a query count that ignores page size."""

import datetime as dt
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from trellis.crm.api import RECORD_TYPES

from .. import factories
from .conftest import assert_problem, token_client


def ids(answer) -> list[int]:
    assert answer.status_code == 200, answer.content
    return [item["id"] for item in answer.json()["items"]]


def test_pages_are_bounded_and_say_whether_more_follow(sales):
    account = factories.account(sales)
    deals = [factories.opportunity(sales, account_id=account.pk) for _ in range(7)]
    api = token_client(sales)

    first = api.get("opportunities/", page_size=3).json()
    assert (first["page"], first["page_size"], first["has_next"]) == (1, 3, True)
    last = api.get("opportunities/", page_size=3, page=3).json()
    assert (len(last["items"]), last["has_next"]) == (1, False)
    assert api.get("opportunities/", page=9).json()["items"] == []

    default = api.get("opportunities/").json()
    assert default["page_size"] == settings.TRELLIS["DEFAULT_PAGE_SIZE"]
    assert [d["id"] for d in default["items"]] == [d.pk for d in reversed(deals)]

    largest = settings.TRELLIS["MAX_PAGE_SIZE"]
    assert api.get("opportunities/", page_size=largest).status_code == 200
    assert_problem(api.get("opportunities/", page_size=largest + 1), 422, "page_size")
    assert_problem(api.get("opportunities/", page_size=0), 422, "page_size")
    assert_problem(api.get("opportunities/", page=0), 422, "page")
    assert_problem(api.get("opportunities/", page="two"), 422, "page")


def test_pages_keep_a_stable_order_when_values_tie(sales):
    account = factories.account(sales)
    for amount in (500, 100, 500, 300, 500, 100, 500):
        factories.opportunity(sales, account_id=account.pk, name="Same", amount=Decimal(amount))
    api = token_client(sales)
    for ordering in ("name", "-name", "amount", "-amount"):
        seen = []
        for page in (1, 2, 3):
            seen += api.get("opportunities/", ordering=ordering, page_size=3, page=page).json()[
                "items"
            ]
        assert len({d["id"] for d in seen}) == 7, ordering
        assert seen == api.get("opportunities/", ordering=ordering).json()["items"]
    by_amount = api.get("opportunities/", ordering="amount").json()["items"]
    assert [d["amount"] for d in by_amount] == ["100", "100", "300", "500", "500", "500", "500"]
    # Ties: newest first.
    assert by_amount[0]["id"] > by_amount[1]["id"]
    assert_problem(api.get("opportunities/", ordering="owner"), 422, "ordering")


def test_filters(sales):
    hanbit, nuri = factories.account(sales, name="Hanbit"), factories.account(sales, name="Nuri")
    small = factories.opportunity(
        sales, account_id=hanbit.pk, amount=Decimal(100), expected_close_date=dt.date(2026, 1, 10)
    )
    large = factories.opportunity(
        sales, account_id=hanbit.pk, amount=Decimal(9000), expected_close_date=dt.date(2026, 3, 1)
    )
    won = factories.opportunity(sales, account_id=nuri.pk, amount=Decimal(500), status="won")
    api = token_client(sales)

    assert ids(api.get("opportunities/", account=hanbit.pk)) == [large.pk, small.pk]
    assert ids(api.get("opportunities/", status="won")) == [won.pk]
    assert ids(api.get("opportunities/", amount_min=400, amount_max="600.5")) == [won.pk]
    assert ids(api.get("opportunities/", close_from="2026-02-01")) == [large.pk]
    assert ids(api.get("opportunities/", close_to="2026-02-01", owner=sales.pk)) == [small.pk]
    assert_problem(api.get("opportunities/", status="maybe"), 422, "status")
    assert_problem(api.get("opportunities/", close_from="2026-02-30"), 422, "close_from")
    assert_problem(api.get("opportunities/", stauts="won", colour="red"), 422, "stauts", "colour")


def test_filters_of_other_types(admin):
    api = token_client(admin)
    hanbit = factories.account(admin, name="Hanbit", industry="Software")
    factories.account(admin, name="Nuri", industry="Retail")
    kim = factories.contact(admin, accounts=[hanbit])
    factories.contact(admin)
    retired = factories.product(admin, is_active=False)
    factories.product(admin)
    assert ids(api.get("accounts/", industry="Software")) == [hanbit.pk]
    assert ids(api.get("contacts/", account=hanbit.pk)) == [kim.pk]
    assert ids(api.get("products/", is_active="false")) == [retired.pk]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("한빛", ["주식회사 한빛소프트"]),
        ("한빛소프", ["주식회사 한빛소프트"]),
        ("소프트", ["주식회사 한빛소프트", "누리소프트"]),
        ("HANBIT", ["Hanbit Trading"]),
        ("2255", ["주식회사 한빛소프트"]),
        ("010", []),
    ],
)
def test_search_matches_part_of_a_name_or_phone_in_any_script(query, found, sales):
    factories.account(sales, name="주식회사 한빛소프트", phone="02-2255-0114")
    factories.account(sales, name="누리소프트")
    factories.account(sales, name="Hanbit Trading")
    answer = token_client(sales).get("accounts/", q=query)
    assert sorted(a["name"] for a in answer.json()["items"]) == sorted(found)


def test_search_is_offered_where_it_works(admin):
    api = token_client(admin)
    assert api.get("products/", q="widget").status_code == 200
    assert_problem(api.get("orders/", q="anything"), 422, "q")


def _queries_for(api, path: str, page_size: int) -> int:
    with CaptureQueriesContext(connection) as context:
        answer = api.get(path, page_size=page_size)
    assert answer.status_code == 200
    assert len(answer.json()["items"]) == page_size
    return len(context)


@pytest.mark.parametrize("endpoints", RECORD_TYPES, ids=lambda e: e.key)
def test_a_list_costs_the_same_few_queries_whatever_its_size(endpoints, admin):
    account = factories.account(admin)
    product = factories.product(admin)
    make = {
        "account": lambda: factories.account(admin),
        "contact": lambda: factories.contact(admin, accounts=[account]),
        "lead": lambda: factories.lead(admin),
        "opportunity": lambda: factories.opportunity(admin, account_id=account.pk),
        "product": lambda: factories.product(admin),
        "order": lambda: factories.order(
            admin, account_id=account.pk, lines=[{"product_id": product.pk, "quantity": 1}] * 2
        ),
        "activity": lambda: factories.activity(admin, account),
    }[endpoints.key]
    for _ in range(50):
        make()
    api = token_client(admin)
    api.get("me")  # the token's first use records it; later requests only read
    small, large = (
        _queries_for(api, endpoints.path + "/", 5),
        _queries_for(api, endpoints.path + "/", 50),
    )
    assert small == large
    # At most: the token with its user and role, the rights, the page; one more for contacts'
    # accounts and orders' lines.
    assert large <= 4


def test_the_opportunity_list_makes_at_most_three_queries(sales):
    account = factories.account(sales)
    for _ in range(30):
        factories.opportunity(sales, account_id=account.pk)
    api = token_client(sales)
    api.get("me")
    assert _queries_for(api, "opportunities/", 25) <= 3
