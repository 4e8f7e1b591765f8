"""While a request is pending its record is locked on every channel; a change of a material
field of an approved record reopens approval."""

from decimal import Decimal

import pytest
from django.test import Client

from tests import factories
from trellis.core.errors import ValidationFailed
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.process.approvals import services
from trellis.process.approvals.models import ApprovalRequest
from trellis.process.pipelines import services as pipelines
from trellis.process.pipelines.models import Stage, StageChange

from ...api.conftest import assert_problem, token_client
from .conftest import deal, define, step


@pytest.fixture
def locked(people):
    define(people["admin"], editable_fields=["description"])
    opportunity = deal(people["seller"])
    request = services.submit(people["seller"], "opportunity", opportunity.pk)
    return opportunity, request


def test_the_service_refuses_an_edit_naming_the_request(people, locked):
    opportunity, request = locked
    with pytest.raises(ValidationFailed, match=f"#{request.pk}") as refused:
        crm.update(people["seller"], "opportunity", opportunity.pk, {"amount": 1}, 1)
    assert refused.value.status == 409
    stored = Opportunity.objects.get(pk=opportunity.pk)
    assert (stored.amount, stored.version) == (Decimal(80_000_000), opportunity.version)
    with pytest.raises(ValidationFailed):
        crm.delete(people["seller"], "opportunity", opportunity.pk)
    assert Opportunity.objects.filter(pk=opportunity.pk).exists()


def test_editable_fields_approvers_and_admins_may_still_edit(people, locked):
    opportunity, _request = locked
    version = opportunity.version
    saved = crm.update(
        people["seller"], "opportunity", opportunity.pk, {"description": "typo"}, version
    )
    saved = crm.update(people["boss"], "opportunity", opportunity.pk, {"name": "B"}, saved.version)
    saved = crm.update(people["admin"], "opportunity", opportunity.pk, {"name": "C"}, saved.version)
    assert saved.name == "C"


def test_the_edit_page_shows_the_lock(people, locked):
    opportunity, request = locked
    client = Client()
    client.force_login(people["seller"])
    response = client.post(
        f"/crm/opportunities/{opportunity.pk}/edit/",
        {
            "name": "New name",
            "account": opportunity.account_id,
            "amount": "1",
            "currency": "KRW",
            "probability": "10",
            "status": "open",
            "owner": people["seller"].pk,
            "version": opportunity.version,
        },
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert f"#{request.pk}" in page
    assert Opportunity.objects.get(pk=opportunity.pk).name == opportunity.name


def test_the_api_refuses_the_edit_with_409(people, locked):
    opportunity, request = locked
    api = token_client(people["seller"])
    response = api.patch(
        f"opportunities/{opportunity.pk}", {"amount": "5", "version": opportunity.version}
    )
    body = assert_problem(response, 409)
    assert f"#{request.pk}" in body["detail"]
    assert Opportunity.objects.get(pk=opportunity.pk).amount == Decimal(80_000_000)


def test_the_lock_ends_with_the_request(people, locked):
    opportunity, request = locked
    services.approve(people["boss"], request.pk)
    saved = crm.update(
        people["seller"], "opportunity", opportunity.pk, {"name": "Renamed"}, opportunity.version
    )
    assert saved.name == "Renamed"


def test_a_material_change_of_an_approved_record_reopens_approval(people, locked):
    opportunity, request = locked
    services.approve(people["boss"], request.pk)
    record = Opportunity.objects.get(pk=opportunity.pk)
    crm.update(people["seller"], "opportunity", record.pk, {"amount": 90_000_000}, record.version)
    reopened = ApprovalRequest.objects.get(status="pending")
    assert (reopened.origin, reopened.previous_id) == ("reopened", request.pk)
    assert "amount" in reopened.comment


def test_a_batch_update_is_held_to_the_lock_and_the_material_fields_too(people, locked):
    # The channel the time-rule sweep writes through: many records in one go.
    opportunity, request = locked
    free = deal(people["seller"])
    with pytest.raises(ValidationFailed, match=f"#{request.pk}"):
        crm.update_many(
            people["seller"],
            "opportunity",
            [(free.pk, {"name": "Free"}, free.version), (opportunity.pk, {"amount": 1}, 1)],
        )
    # Refused as a whole: the unlocked deal is unchanged as well.
    assert Opportunity.objects.get(pk=free.pk).name == free.name
    services.approve(people["boss"], request.pk)
    record = Opportunity.objects.get(pk=opportunity.pk)
    crm.update_many(
        people["seller"],
        "opportunity",
        [(free.pk, {"name": "Free"}, free.version), (record.pk, {"amount": 90_000_000}, None)],
    )
    reopened = ApprovalRequest.objects.get(status="pending")
    assert (reopened.object_id, reopened.previous_id) == (record.pk, request.pk)


def test_a_change_below_the_threshold_needs_no_approval_again(people, locked):
    opportunity, request = locked
    services.approve(people["boss"], request.pk)
    record = Opportunity.objects.get(pk=opportunity.pk)
    crm.update(people["seller"], "opportunity", record.pk, {"amount": 1_000}, record.version)
    assert not ApprovalRequest.objects.filter(status="pending").exists()


def test_an_order_is_locked_against_new_lines_too(people):
    p = people
    services.save_process(
        p["admin"],
        {"object_type": "order", "code": "orders", "name": "Orders", "steps": [step()]},
    )
    order = factories.order(p["seller"])
    services.submit(p["seller"], "order", order.pk)
    with pytest.raises(ValidationFailed):
        crm.set_order_lines(p["seller"], order.pk, [], order.version)


def test_a_locked_deal_cannot_be_moved_to_another_stage_on_any_channel(people, locked):
    opportunity, request = locked
    needs = Stage.objects.get(pipeline__code="b2b-sales", code="needs-analysis")
    with pytest.raises(ValidationFailed, match=f"#{request.pk}"):
        pipelines.move(
            people["seller"], "opportunity", opportunity.pk, needs.pk, version=opportunity.version
        )
    # Setting the status moves the deal to a won stage: refused the same way.
    with pytest.raises(ValidationFailed, match=f"#{request.pk}"):
        crm.update(
            people["seller"], "opportunity", opportunity.pk, {"status": "won"}, opportunity.version
        )
    stored = Opportunity.objects.get(pk=opportunity.pk)
    assert (stored.stage.code, stored.status, stored.version) == (
        "prospecting",
        "open",
        opportunity.version,
    )
    assert not StageChange.objects.filter(object_id=opportunity.pk, from_stage__isnull=False)
