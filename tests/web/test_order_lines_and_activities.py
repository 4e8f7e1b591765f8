"""The order lines editor and logging activities from a record's page."""

from decimal import Decimal

import pytest
from django.urls import reverse

from trellis.crm import services
from trellis.crm.models import Activity

from .. import factories

pytestmark = pytest.mark.django_db


def _lines_post(order, rows, version=None):
    """The editor's POST: management form, version, and one row per line."""
    data = {
        "version": order.version if version is None else version,
        "lines-TOTAL_FORMS": len(rows),
        "lines-INITIAL_FORMS": 0,
        "lines-MIN_NUM_FORMS": 0,
        "lines-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        for name, value in row.items():
            data[f"lines-{index}-{name}"] = value
    return data


def test_the_editor_sets_lines_and_the_total(login, sales, admin):
    product = factories.product(admin, unit_price=Decimal(33_333))
    order = factories.order(sales)
    client = login(sales)
    page = client.get(reverse("crm:order-detail", args=[order.pk]))
    assert 'name="lines-TOTAL_FORMS"' in page.text
    rows = [
        {"product": product.pk, "quantity": "3", "unit_price": "", "discount_pct": "10"},
        {"product": "", "quantity": "", "unit_price": "", "discount_pct": ""},  # blank extra row
    ]
    response = client.post(reverse("crm:order-lines", args=[order.pk]), _lines_post(order, rows))
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.total == Decimal(89_999)
    assert order.version == 2
    detail = client.get(reverse("crm:order-detail", args=[order.pk]))
    assert "89,999 KRW" in detail.text


def test_a_bad_line_shows_its_error_and_keeps_the_old_lines(login, sales, admin):
    product = factories.product(admin)
    order = factories.order(sales, lines=[{"product_id": product.pk, "quantity": 2}])
    rows = [{"product": product.pk, "quantity": "1", "unit_price": "100.5", "discount_pct": ""}]
    response = login(sales).post(
        reverse("crm:order-lines", args=[order.pk]), _lines_post(order, rows)
    )
    assert response.status_code == 422
    assert "KRW has no minor unit" in response.text
    order.refresh_from_db()
    assert (order.total, order.version, order.lines.count()) == (Decimal(100_000), 1, 1)


def test_stale_lines_are_not_saved(login, sales, admin):
    product = factories.product(admin)
    order = factories.order(sales)
    services.update(sales, "order", order.pk, {"notes": "changed"}, version=1)
    rows = [{"product": product.pk, "quantity": "1", "unit_price": "", "discount_pct": ""}]
    response = login(sales).post(
        reverse("crm:order-lines", args=[order.pk]), _lines_post(order, rows, version=1)
    )
    assert response.status_code == 409
    assert "Someone else changed this order" in response.text
    assert not order.lines.exists()


def test_a_line_can_be_removed(login, sales, admin):
    product = factories.product(admin)
    order = factories.order(sales, lines=[{"product_id": product.pk, "quantity": 2}])
    client = login(sales)
    formset = client.get(reverse("crm:order-detail", args=[order.pk])).context["line_formset"]
    data = _lines_post(order, [])
    data.update({"lines-TOTAL_FORMS": 1, "lines-INITIAL_FORMS": 1})
    initial = formset.forms[0].initial
    data.update(
        {
            "lines-0-product": initial["product"],
            "lines-0-quantity": initial["quantity"],
            "lines-0-unit_price": initial["unit_price"],
            "lines-0-DELETE": "on",
        }
    )
    response = client.post(reverse("crm:order-lines", args=[order.pk]), data)
    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.total, order.lines.count()) == (Decimal(0), 0)


def test_log_a_voice_of_the_customer_note_on_an_account(login, sales):
    account = factories.account(sales, name="주식회사 한빛")
    client = login(sales)
    detail = client.get(reverse("crm:account-detail", args=[account.pk]))
    assert reverse("crm:account-log-activity", args=[account.pk]) in detail.text
    response = client.post(
        reverse("crm:account-log-activity", args=[account.pk]),
        {
            "kind": "note",
            "subject": "보고서 내보내기가 느리다는 의견",
            "occurred_at": "2025-03-02T10:30:00",
            "is_voc": "on",
        },
    )
    assert response.status_code == 302
    note = Activity.objects.get()
    assert (note.related, note.is_voc, note.owner) == (account, True, sales)
    timeline = client.get(reverse("crm:account-detail", args=[account.pk])).text
    assert "보고서 내보내기가 느리다는 의견" in timeline
    assert 'class="badge voc"' in timeline


def test_an_invalid_activity_stays_on_the_page_with_its_errors(login, sales):
    account = factories.account(sales)
    response = login(sales).post(
        reverse("crm:account-log-activity", args=[account.pk]),
        {"kind": "meeting", "subject": "", "occurred_at": "2025-03-02T10:30:00", "is_voc": "on"},
    )
    assert response.status_code == 422
    form = response.context["activity_form"]
    assert "subject" in form.errors
    assert not Activity.objects.exists()


def test_an_activity_cannot_be_logged_on_a_hidden_record(login, sales, outsider):
    theirs = factories.account(outsider)
    response = login(sales).post(
        reverse("crm:account-log-activity", args=[theirs.pk]),
        {"kind": "call", "subject": "x", "occurred_at": "2025-03-02T10:30:00"},
    )
    assert response.status_code == 404
    assert not Activity.objects.exists()


def test_the_account_page_shows_its_contacts_deals_and_orders(login, sales):
    account = factories.account(sales, name="주식회사 한빛")
    contact = factories.contact(sales, name="김민지", accounts=[account.pk])
    deal = factories.opportunity(sales, name="ERP 연동", account_id=account.pk)
    order = factories.order(sales, account_id=account.pk)
    page = login(sales).get(reverse("crm:account-detail", args=[account.pk]))
    for record, name in ((contact, "contact"), (deal, "opportunity"), (order, "order")):
        assert reverse(f"crm:{name}-detail", args=[record.pk]) in page.text
    assert f"{reverse('crm:contact-create')}?accounts={account.pk}" in page.text


def test_an_activity_page_links_to_what_it_is_about(login, sales):
    account = factories.account(sales, name="주식회사 한빛")
    call = factories.activity(sales, account, subject="도입 일정 통화")
    page = login(sales).get(reverse("crm:activity-detail", args=[call.pk]))
    assert reverse("crm:account-detail", args=[account.pk]) in page.text
    listing = login(sales).get(reverse("crm:activity-list"))
    assert "주식회사 한빛" in listing.text
