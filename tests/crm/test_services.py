from decimal import Decimal

import pytest

from trellis.core import audit
from trellis.core.errors import NotFound, StaleVersion, ValidationFailed
from trellis.crm import queries, services
from trellis.crm.models import Account, Opportunity

from .. import factories


def test_create_normalises_and_audits(sales):
    account = services.create(
        sales,
        "account",
        {"name": "한빛상사", "phone": "02-2255-0114", "email": "Info@Hanbit.CO.KR"},
    )
    assert account.phone == "+82222550114"
    assert account.email == "Info@hanbit.co.kr"
    assert account.owner == sales
    assert account.team == sales.team
    [event] = audit.history(account)
    assert event.action == "created"
    assert event.actor == sales
    assert event.changes["name"] == "한빛상사"


def test_every_problem_is_reported_at_once_and_nothing_is_written(sales):
    with pytest.raises(ValidationFailed) as failure:
        services.create(
            sales,
            "account",
            {"name": "x" * 201, "phone": "12", "email": "no-at", "colour": "red"},
        )
    assert set(failure.value.errors) == {"name", "phone", "email", "colour"}
    assert not Account.objects.exists()


def test_stale_version_changes_nothing(sales):
    deal = factories.opportunity(sales, amount=Decimal(1000))
    services.update(sales, "opportunity", deal.pk, {"amount": Decimal(2000)}, version=1)
    with pytest.raises(StaleVersion) as conflict:
        services.update(sales, "opportunity", deal.pk, {"amount": Decimal(3000)}, version=1)
    assert conflict.value.current.amount == Decimal(2000)
    deal.refresh_from_db()
    assert (deal.amount, deal.version) == (Decimal(2000), 2)


def test_update_records_old_and_new_values(sales):
    deal = factories.opportunity(sales, amount=Decimal(1000))
    services.update(sales, "opportunity", deal.pk, {"amount": "1500", "probability": 40}, 1)
    latest = audit.history(deal).first()
    assert latest.changes == {"amount": ["1000", "1500"], "probability": [10, 40]}


def test_an_update_that_changes_nothing_keeps_the_version(sales):
    deal = factories.opportunity(sales, amount=Decimal(1000))
    same = services.update(sales, "opportunity", deal.pk, {"amount": "1000.00"}, 1)
    assert same.version == 1
    assert audit.history(deal).count() == 1


def test_a_record_of_another_team_cannot_be_linked(sales, outsider):
    theirs = factories.account(outsider)
    with pytest.raises(ValidationFailed) as failure:
        factories.opportunity(sales, account_id=theirs.pk)
    assert "account_id" in failure.value.errors
    assert not Opportunity.objects.exists()


def test_hidden_records_are_not_found(sales, outsider):
    theirs = factories.opportunity(outsider)
    with pytest.raises(NotFound):
        queries.get(sales, "opportunity", theirs.pk)
    with pytest.raises(NotFound):
        services.update(sales, "opportunity", theirs.pk, {"name": "mine"}, 1)


def test_order_total_follows_its_lines_in_krw(sales, admin):
    product = factories.product(admin, unit_price=Decimal(33_333))
    order = factories.order(
        sales,
        lines=[{"product_id": product.pk, "quantity": 3, "discount_pct": Decimal(10)}],
    )
    assert order.total == Decimal(89_999)  # 99,999 less 10% is 89,999.1; KRW has no minor unit


def test_global_search_finds_korean_partial_words_emails_and_phones(sales):
    factories.account(sales, name="주식회사 한빛소프트", phone="02-2255-0114")
    factories.contact(sales, name="김민지", email="minji.kim@hanbit.kr")
    factories.lead(sales, name="Lee Jun", phone="010-9876-5432")
    assert list(queries.global_search(sales, "한빛")) == ["account"]
    assert list(queries.global_search(sales, "민지")) == ["contact"]
    assert list(queries.global_search(sales, "HANBIT.KR")) == ["contact"]
    assert list(queries.global_search(sales, "9876-5432")) == ["lead"]
    assert list(queries.global_search(sales, "2255")) == ["account"]
