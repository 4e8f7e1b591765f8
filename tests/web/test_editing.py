"""Stale edits, invalid input and inline validation: the form says what is wrong, and nothing
is written."""

from decimal import Decimal

import pytest
from django.urls import reverse

from trellis.core import audit
from trellis.crm import services
from trellis.crm.models import Account, Activity, Opportunity

from .. import factories
from .conftest import form_data

pytestmark = pytest.mark.django_db


def test_a_stale_edit_shows_the_conflict_and_overwrites_nothing(login, sales):
    deal = factories.opportunity(sales, name="ERP 연동", amount=Decimal(1_000_000))
    client = login(sales)
    url = reverse("crm:opportunity-edit", args=[deal.pk])
    page = client.get(url)
    # Meanwhile someone else saves a change.
    services.update(sales, "opportunity", deal.pk, {"amount": Decimal(2_000_000)}, version=1)

    mine = form_data(page.context["form"], name="ERP 연동 2단계", probability="80")
    response = client.post(url, mine)

    assert response.status_code == 409
    assert "Someone else changed this record while you were editing." in response.text
    assert "Here are the current values; your changes are shown below." in response.text
    deal.refresh_from_db()
    assert (deal.name, deal.amount, deal.probability, deal.version) == (
        "ERP 연동",
        Decimal(2_000_000),
        10,
        2,
    )
    # The form now carries the current values and version, so saving again is deliberate.
    form = response.context["form"]
    assert form["version"].value() == 2
    assert form["amount"].value() == Decimal(2_000_000)
    # The user's own values are listed, the fields they changed only.
    changed = dict(response.context["your_changes"])
    assert changed["name"] == "ERP 연동 2단계"
    assert changed["probability"] == 80
    assert "ERP 연동 2단계" in response.text


def test_the_conflict_lists_typed_phones_and_chosen_accounts_as_entered(login, sales):
    hanbit = factories.account(sales, name="주식회사 한빛")
    contact = factories.contact(sales, name="김민지")
    client = login(sales)
    url = reverse("crm:contact-edit", args=[contact.pk])
    page = client.get(url)
    services.update(sales, "contact", contact.pk, {"title": "팀장"}, version=1)

    mine = form_data(page.context["form"], phone="010-1234-5678", accounts=[str(hanbit.pk)])
    response = client.post(url, mine)

    assert response.status_code == 409
    assert {name for name, _value in response.context["your_changes"]} == {"phone", "accounts"}
    assert "010-1234-5678" in response.text
    assert f'<a href="{reverse("crm:account-detail", args=[hanbit.pk])}">주식회사 한빛</a>' in (
        response.text
    )
    contact.refresh_from_db()
    assert (contact.phone, contact.accounts.count(), contact.version) == ("", 0, 2)


def test_invalid_input_rerenders_with_field_errors_and_writes_nothing(login, sales):
    client = login(sales)
    response = client.post(
        reverse("crm:account-create"),
        {
            "name": "",
            "phone": "12",
            "business_registration_number": "123-45-67890",
            "owner": sales.pk,
        },
    )
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert set(errors) == {"name", "phone", "business_registration_number"}
    assert "Enter a valid phone number." in response.text
    assert not Account.objects.exists()


def test_an_error_only_the_service_finds_lands_on_its_field(login, sales):
    """Only a note can be voice of the customer: a rule of the service, not of the form."""
    account = factories.account(sales)
    response = login(sales).post(
        reverse("crm:activity-create"),
        {
            "regarding": f"account:{account.pk}",
            "kind": "call",
            "subject": "통화",
            "occurred_at": "2025-03-02T10:30:00",
            "is_voc": "on",
            "owner": sales.pk,
        },
    )
    assert response.status_code == 422
    assert response.context["form"].errors["is_voc"] == [
        "Only a note can be marked as voice of the customer."
    ]
    assert not Activity.objects.exists()


def test_krw_amounts_with_decimals_are_refused(login, sales):
    account = factories.account(sales)
    response = login(sales).post(
        reverse("crm:opportunity-create"),
        {
            "name": "소수점 거래",
            "account": account.pk,
            "amount": "1000.50",
            "currency": "KRW",
            "probability": "10",
            "status": "open",
            "owner": sales.pk,
        },
    )
    assert response.status_code == 422
    assert "KRW has no minor unit" in response.context["form"].errors["amount"][0]
    assert not Opportunity.objects.exists()


def test_an_invalid_edit_keeps_the_record_as_it_was(login, sales):
    account = factories.account(sales, phone="02-2255-0114")
    client = login(sales)
    url = reverse("crm:account-edit", args=[account.pk])
    page = client.get(url)
    response = client.post(url, form_data(page.context["form"], phone="not a phone"))
    assert response.status_code == 422
    account.refresh_from_db()
    assert (account.phone, account.version) == ("+82222550114", 1)


def test_inline_validation_returns_one_fields_errors(login, sales):
    client = login(sales)
    url = reverse("crm:account-validate")
    bad = client.post(url, {"_field": "phone", "phone": "12", "name": "x"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 200
    assert "Enter a valid phone number." in bad.text
    good = client.post(url, {"_field": "phone", "phone": "02-2255-0114", "name": "x"})
    assert "<li>" not in good.text
    assert not Account.objects.exists()


def test_the_edit_form_shows_stored_values_as_people_type_them(login, sales):
    account = factories.account(sales, phone="02-2255-0114")
    deal = factories.opportunity(sales, amount=Decimal(48_000_000))
    client = login(sales)
    assert 'value="02-2255-0114"' in client.get(reverse("crm:account-edit", args=[account.pk])).text
    assert 'value="48000000"' in client.get(reverse("crm:opportunity-edit", args=[deal.pk])).text


def test_a_link_from_an_account_prefills_the_new_records_account(login, sales):
    account = factories.account(sales, name="주식회사 한빛")
    page = login(sales).get(reverse("crm:opportunity-create") + f"?account={account.pk}")
    assert page.context["form"]["account"].value() == str(account.pk)
    assert f'<option value="{account.pk}" selected>주식회사 한빛</option>' in page.text


def test_the_timeline_shows_old_and_new_values_with_the_actor(login, sales):
    account = factories.account(sales, industry="제조")
    services.update(sales, "account", account.pk, {"industry": "소프트웨어"}, version=1)
    page = login(sales).get(reverse("crm:account-detail", args=[account.pk]))
    assert "<del>제조</del>" in page.text
    assert "<ins>소프트웨어</ins>" in page.text
    assert str(sales) in page.text
    assert audit.history(account).count() == 2
