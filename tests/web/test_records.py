"""List, detail, create, edit and delete work for every record type."""

import pytest
from django.urls import reverse

from trellis.core import audit
from trellis.crm import queries

from .conftest import form_data

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client, admin, kind):
    record = kind.make(admin)
    for url in (
        kind.url("list"),
        kind.url("create"),
        kind.url("detail", record.pk),
        kind.url("edit", record.pk),
        kind.url("delete", record.pk),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_list_shows_the_records_with_a_create_button(login, admin, kind):
    record = kind.make(admin)
    response = login(admin).get(kind.url("list"))
    assert response.status_code == 200
    assert kind.url("detail", record.pk) in response.text
    assert f'href="{kind.url("create")}"' in response.text


def test_detail_shows_the_fields_and_the_timeline(login, admin, kind):
    record = kind.make(admin)
    response = login(admin).get(kind.url("detail", record.pk))
    assert response.status_code == 200
    assert str(record) in response.text
    assert 'class="timeline"' in response.text
    assert kind.url("edit", record.pk) in response.text


def test_create_goes_through_the_service(login, admin, kind):
    client = login(admin)
    assert client.get(kind.url("create")).status_code == 200
    response = client.post(kind.url("create"), kind.new(admin))
    assert response.status_code == 302, response.context["form"].errors
    model = queries.model_for(kind.key)
    created = model.objects.latest("pk")
    assert response.url == kind.url("detail", created.pk)
    assert created.owner == admin
    # The service wrote the audit event: the web did not save the model itself.
    assert audit.history(created).first().action == "created"


def test_edit_changes_one_field_and_bumps_the_version(login, admin, kind):
    record = kind.make(admin)
    client = login(admin)
    page = client.get(kind.url("edit", record.pk))
    assert page.status_code == 200
    field, value = kind.change
    response = client.post(
        kind.url("edit", record.pk), form_data(page.context["form"], **{field: value})
    )
    assert response.status_code == 302, response.context["form"].errors
    record.refresh_from_db()
    assert str(getattr(record, field)) == value
    assert record.version == 2
    latest = audit.history(record).first()
    assert list(latest.changes) == [field]


def test_saving_an_unchanged_form_changes_nothing(login, admin, kind):
    """Values shown as people type them (phones, amounts) come back as the same values."""
    record = kind.make(admin)
    client = login(admin)
    page = client.get(kind.url("edit", record.pk))
    response = client.post(kind.url("edit", record.pk), form_data(page.context["form"]))
    assert response.status_code == 302
    record.refresh_from_db()
    assert record.version == 1
    assert audit.history(record).count() == 1


def test_delete_asks_first_then_deletes(login, admin, kind):
    record = kind.make(admin)
    client = login(admin)
    confirm = client.get(kind.url("delete", record.pk))
    assert confirm.status_code == 200
    response = client.post(kind.url("delete", record.pk), {"version": record.version})
    assert response.status_code == 302
    assert response.url == kind.url("list")
    assert not type(record).objects.filter(pk=record.pk).exists()


def test_delete_of_a_record_in_use_explains_and_keeps_it(login, admin):
    from .. import factories

    deal = factories.opportunity(admin)
    client = login(admin)
    url = reverse("crm:account-delete", args=[deal.account_id])
    response = client.post(url, {"version": 1}, follow=True)
    assert deal.account.__class__.objects.filter(pk=deal.account_id).exists()
    assert "Other records still refer to this one" in response.text


def test_delete_with_a_stale_version_deletes_nothing(login, admin, kind):
    record = kind.make(admin)
    response = login(admin).post(kind.url("delete", record.pk), {"version": 99}, follow=True)
    assert type(record).objects.filter(pk=record.pk).exists()
    assert "Someone else changed this record" in response.text
