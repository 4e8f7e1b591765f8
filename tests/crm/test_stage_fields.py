"""Deals and leads show and filter by their pipeline stage, in the API and on list pages."""

from django.urls import reverse

from tests import factories
from tests.api.conftest import token_client
from trellis.process.pipelines import services as pipelines
from trellis.process.pipelines.models import Pipeline, Stage


def test_the_api_shows_the_stage_and_filters_by_stage_and_pipeline(sales):
    proposal = Stage.objects.get(pipeline__code="b2b-sales", code="proposal")
    moved = factories.opportunity(sales)
    pipelines.move(sales, "opportunity", moved.pk, proposal.pk, version=1)
    stayed = factories.opportunity(sales)
    api = token_client(sales)

    record = api.get(f"opportunities/{moved.pk}").json()
    assert record["stage_id"] == proposal.pk
    assert record["stage_entered_at"] is not None
    assert record["probability"] == 50
    found = api.get("opportunities/", stage=proposal.pk).json()["items"]
    assert [item["id"] for item in found] == [moved.pk]
    in_sales = api.get("opportunities/", pipeline=proposal.pipeline_id).json()["items"]
    assert {item["id"] for item in in_sales} == {moved.pk, stayed.pk}
    renewal = Pipeline.objects.get(code="renewal")
    assert api.get("opportunities/", pipeline=renewal.pk).json()["items"] == []


def test_the_stage_cannot_be_written_as_a_field(sales):
    deal = factories.opportunity(sales)
    proposal = Stage.objects.get(pipeline__code="b2b-sales", code="proposal")
    api = token_client(sales)
    answer = api.patch(f"opportunities/{deal.pk}", {"version": 1, "stage_id": proposal.pk})
    assert answer.status_code == 422
    deal.refresh_from_db()
    assert deal.stage.code == "prospecting"


def test_the_list_page_shows_the_stage_and_offers_it_as_a_filter(client, sales):
    deal = factories.opportunity(sales, name="ERP 도입")
    client.force_login(sales)
    page = client.get(reverse("crm:opportunity-list"))
    assert "Prospecting" in page.text
    assert "B2B sales · Proposal" in page.text
    proposal = Stage.objects.get(pipeline__code="b2b-sales", code="proposal")
    filtered = client.get(reverse("crm:opportunity-list"), {"stage": proposal.pk})
    assert "ERP 도입" not in filtered.text
    pipelines.move(sales, "opportunity", deal.pk, proposal.pk, version=1)
    filtered = client.get(reverse("crm:opportunity-list"), {"stage": proposal.pk})
    assert "ERP 도입" in filtered.text
