"""The report endpoints of pipelines: the same figures as the pages, as JSON that follows the
documented schema, for the records the caller may see; bad filters are a 422 naming them."""

import datetime as dt

import pytest

from tests import factories
from tests.process import report_history as history
from trellis.core.models import Role
from trellis.process.pipelines import api_reports, snapshots

from .conftest import assert_problem, session_client

MARCH_APRIL = {"start": "2026-03-01", "end": "2026-04-30", "granularity": "month"}
SCHEMAS = {
    "funnel": api_reports.FunnelOut,
    "time-in-stage": api_reports.TimeInStageOut,
    "bottleneck": api_reports.BottleneckOut,
    "moves": api_reports.MovesOut,
    "value": api_reports.ValueOut,
    "trend": api_reports.TrendOut,
}


@pytest.fixture
def deals(time_machine, sales, other_sales, outsider):
    return history.build(time_machine, sales, other_sales, outsider)


def path(report: str, pk: int | None = None) -> str:
    return f"pipelines/{pk or history.sales_pipeline().pk}/reports/{report}"


def by_code(rows: list[dict]) -> dict[str, dict]:
    return {row["stage"]["code"]: row for row in rows}


@pytest.mark.parametrize("report", SCHEMAS)
def test_every_report_answers_in_its_documented_shape(api_as, admin, deals, report):
    response = api_as(admin).get(path(report), **MARCH_APRIL)
    assert response.status_code == 200, response.content
    body = response.json()
    SCHEMAS[report].model_validate(body)  # no key missing, none extra
    assert body["pipeline_id"] == history.sales_pipeline().pk


def test_the_funnel(api_as, admin, deals):
    body = api_as(admin).get(path("funnel"), **MARCH_APRIL).json()
    assert body["period"] == {"start": "2026-03-01", "end": "2026-04-30", "granularity": "month"}
    stages = by_code(body["stages"])
    assert {
        code: (r["entered"], r["converted"], r["conversion"]) for code, r in stages.items()
    } == {
        "prospecting": (6, 4, 66.7),
        "needs-analysis": (5, 2, 40.0),
        "proposal": (3, 1, 33.3),
        "negotiation": (1, 1, 100.0),
        "won": (0, None, None),
        "lost": (1, None, None),
    }
    assert stages["proposal"]["stage"]["name"] == "Proposal"
    assert [(b["start"], b["label"]) for b in body["buckets"]] == [
        ("2026-03-01", "2026-03"),
        ("2026-04-01", "2026-04"),
    ]
    april = by_code(body["buckets"][1]["stages"])
    assert (april["needs-analysis"]["entered"], april["needs-analysis"]["converted"]) == (2, 0)


def test_time_in_stage_and_the_bottleneck(api_as, admin, sales, deals):
    api = api_as(admin)
    body = api.get(path("time-in-stage"), **MARCH_APRIL).json()
    proposal = by_code(body["stages"])["proposal"]
    assert proposal["limit_days"] == 21.0
    assert proposal["ratio"] == 1.67
    assert proposal["left"] == {
        "count": 2,
        "average_days": 35.0,
        "median_days": 35.0,
        "longest_days": 40.0,
        "over_limit": 2,
    }
    assert proposal["current"]["count"] == 1
    assert by_code(body["stages"])["prospecting"]["left"]["median_days"] == 8.5
    owners = {o["owner_id"]: o["left"]["median_days"] for o in proposal["owners"]}
    assert owners[sales.pk] == 30.0
    bottleneck = api.get(path("bottleneck"), **MARCH_APRIL).json()
    assert bottleneck["stage"]["stage"]["code"] == "proposal"
    assert bottleneck["stuck_count"] == 1
    assert bottleneck["stuck"] == [
        {
            "id": deals["B"].pk,
            "name": deals["B"].name,
            "owner_id": sales.pk,
            "owner_name": str(sales),
            "entered_at": "2026-04-15T00:00:00+00:00",
            "days": 26.0,
            "url": f"/crm/opportunities/{deals['B'].pk}/",
        }
    ]
    assert bottleneck["blackouts"] == []


def test_moves_and_value_show_amounts_in_minor_units(api_as, admin, deals):
    api = api_as(admin)
    moves = by_code(api.get(path("moves"), **MARCH_APRIL).json()["stages"])
    assert (moves["proposal"]["backward"], moves["proposal"]["value_drops"]) == (1, 1)
    assert moves["proposal"]["dropped"] == [{"currency": "KRW", "amount": "2000000"}]
    value = api.get(path("value")).json()
    assert value["as_of"] == "2026-05-11T00:00:00+00:00"
    assert value["records"] == 5
    assert value["totals"] == [
        {"currency": "KRW", "records": 4, "amount": "84000000", "weighted": "16500000"},
        {"currency": "USD", "records": 1, "amount": "5000.50", "weighted": "500.05"},
    ]


def test_the_trend(api_as, admin, deals):
    snapshots.take_snapshot(dt.date(2026, 5, 10))
    body = api_as(admin).get(path("trend"), start="2026-05-01", end="2026-05-31").json()
    assert body["series"] == [
        {
            "currency": "KRW",
            "points": [
                {"day": "2026-05-10", "records": 4, "amount": "84000000", "weighted": "16500000"}
            ],
        },
        {
            "currency": "USD",
            "points": [
                {"day": "2026-05-10", "records": 1, "amount": "5000.50", "weighted": "500.05"}
            ],
        },
    ]


def test_a_salesperson_gets_the_figures_of_their_own_deals(api_as, sales, deals):
    api = api_as(sales)
    funnel = by_code(api.get(path("funnel"), **MARCH_APRIL).json()["stages"])
    assert (funnel["prospecting"]["entered"], funnel["needs-analysis"]["entered"]) == (2, 4)
    value = api.get(path("value")).json()
    assert value["totals"] == [
        {"currency": "KRW", "records": 3, "amount": "34000000", "weighted": "11500000"}
    ]
    assert [o["owner_id"] for o in value["owners"]] == [sales.pk]


def test_the_browser_session_may_read_the_reports(admin, deals):
    response = session_client(admin).get(path("funnel"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"start": "2026-04-30", "end": "2026-03-01"}, {"end"}),
        ({"granularity": "day"}, {"granularity"}),
        ({"start": "1 March"}, {"start"}),
        ({"start": "2021-01-01", "end": "2026-04-30", "granularity": "week"}, {"granularity"}),
        ({"stage": "1"}, {"stage"}),
    ],
)
@pytest.mark.parametrize("report", ["funnel", "value"])
def test_bad_filters_are_a_422_naming_them(api_as, admin, deals, params, fields, report):
    body = assert_problem(api_as(admin).get(path(report), **params), 422, *fields)
    assert body["errors"][0]["message"]


def test_a_pipeline_of_records_one_may_not_see_is_not_found(api_as, team, deals, anonymous):
    support = factories.user(Role.SUPPORT, username="support", team=team)
    for report in SCHEMAS:
        assert_problem(api_as(support).get(path(report)), 404)
    assert_problem(api_as(support).get(path("funnel", pk=10**6)), 404)
    assert_problem(anonymous.get(path("funnel")), 401)
