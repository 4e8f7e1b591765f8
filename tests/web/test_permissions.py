"""Hidden records answer 404; missing rights answer 403 and hide the buttons."""

import pytest
from django.urls import reverse

from trellis.crm.models import Product

from .. import factories
from .conftest import KINDS

pytestmark = pytest.mark.django_db

# Product is visible to every sales user, so it cannot be hidden from one.
HIDEABLE = [kind for kind in KINDS if kind.key != "product"]


@pytest.mark.parametrize("kind", HIDEABLE, ids=lambda kind: kind.key)
def test_a_hidden_record_is_not_found_on_any_page(login, sales, outsider, kind):
    theirs = kind.make(outsider)
    client = login(sales)
    assert client.get(kind.url("detail", theirs.pk)).status_code == 404
    assert client.get(kind.url("edit", theirs.pk)).status_code == 404
    assert client.post(kind.url("edit", theirs.pk), {"version": 1}).status_code == 404
    assert client.get(kind.url("delete", theirs.pk)).status_code == 404
    assert kind.url("detail", theirs.pk) not in client.get(kind.url("list")).text


def test_a_hidden_record_looks_like_a_missing_one(login, sales, outsider):
    theirs = factories.opportunity(outsider)
    client = login(sales)
    hidden = client.get(reverse("crm:opportunity-detail", args=[theirs.pk]))
    missing = client.get(reverse("crm:opportunity-detail", args=[theirs.pk + 1000]))
    assert hidden.status_code == missing.status_code == 404
    assert theirs.name not in hidden.text


def test_without_the_create_right_there_is_no_button_and_the_page_is_forbidden(login, sales, admin):
    factories.product(admin)
    client = login(sales)
    listing = client.get(reverse("crm:product-list"))
    assert listing.status_code == 200
    assert reverse("crm:product-create") not in listing.text
    assert client.get(reverse("crm:product-create")).status_code == 403
    response = client.post(
        reverse("crm:product-create"),
        {"name": "Sneaky", "sku": "X-1", "unit_price": "1", "currency": "KRW", "owner": sales.pk},
    )
    assert response.status_code == 403
    assert not Product.objects.filter(sku="X-1").exists()


def test_without_edit_and_delete_rights_those_buttons_are_hidden_and_forbidden(login, sales, admin):
    product = factories.product(admin)
    client = login(sales)
    detail = client.get(reverse("crm:product-detail", args=[product.pk]))
    assert detail.status_code == 200
    assert reverse("crm:product-edit", args=[product.pk]) not in detail.text
    assert reverse("crm:product-delete", args=[product.pk]) not in detail.text
    edit = reverse("crm:product-edit", args=[product.pk])
    assert client.get(edit).status_code == 403
    assert client.post(edit, {"name": "Renamed", "version": 1}).status_code == 403
    delete = reverse("crm:product-delete", args=[product.pk])
    assert client.post(delete, {"version": 1}).status_code == 403
    product.refresh_from_db()
    assert product.version == 1


def test_a_user_who_may_see_nothing_of_a_type_gets_no_menu_entry_and_no_list(login, db):
    from trellis.core.models import Role

    support = factories.user(Role.SUPPORT, username="helpdesk")
    client = login(support)
    home = client.get(reverse("home"))
    assert reverse("crm:lead-list") not in home.text  # support sees no leads
    assert reverse("crm:account-list") in home.text
    assert client.get(reverse("crm:lead-list")).status_code == 403


def test_a_colleague_sees_team_records_but_not_own_only_ones(login, sales, other_sales):
    account = factories.account(other_sales)  # accounts: team scope for sales
    deal = factories.opportunity(other_sales, account_id=account.pk)  # own scope
    client = login(sales)
    assert client.get(reverse("crm:account-detail", args=[account.pk])).status_code == 200
    assert client.get(reverse("crm:opportunity-detail", args=[deal.pk])).status_code == 404
    # The account page lists only what the viewer may see beside it.
    page = client.get(reverse("crm:account-detail", args=[account.pk]))
    assert deal.name not in page.text
