"""The report page of a pipeline: the bottleneck, funnel, time in stage, moves, value and trend
as charts with their numbers, for the records the user may see; bad filters shown on the form."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests import factories
from tests.process import report_history as history
from trellis.core.models import Role
from trellis.process.pipelines import snapshots

MARCH_APRIL = {"start": "2026-03-01", "end": "2026-04-30", "granularity": "month"}


@pytest.fixture
def deals(time_machine, sales, other_sales, outsider):
    return history.build(time_machine, sales, other_sales, outsider)


def url() -> str:
    return reverse("pipelines:reports", args=[history.sales_pipeline().pk])


def text(html: str) -> str:
    """The page's text with tags and runs of spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def section(html: str, name: str) -> str:
    match = re.search(rf'<section[^>]*id="{name}".*?</section>', html, re.S)
    assert match, name
    return match.group(0)


def test_the_page_names_the_bottleneck_and_links_the_records_stuck_there(login, admin, deals):
    response = login(admin).get(url(), MARCH_APRIL)
    assert response.status_code == 200
    html = response.content.decode()
    bottleneck = section(html, "bottleneck")
    assert "<strong>Proposal</strong>: records spend a median of 35 days here" in bottleneck
    assert "expected maximum of 21 days (1.67 times as long)" in bottleneck
    assert "1 record stuck there now" in text(bottleneck)
    stuck = reverse("crm:opportunity-detail", args=[deals["B"].pk])
    assert f'<a href="{stuck}">{deals["B"].name}</a>' in bottleneck


def test_every_chart_is_an_svg_with_its_numbers_in_a_table(login, admin, deals):
    html = login(admin).get(url(), MARCH_APRIL).content.decode()
    funnel = section(html, "funnel")
    assert funnel.count('role="img"') == 1
    assert "Prospecting: 6 entered, 4 went on (66.7%)" in funnel  # the chart's description
    assert re.search(r"<th scope=\"col\" class=\"num\">2026-03</th>", funnel)
    row = re.search(r"Needs analysis</th>(.*?)</tr>", funnel, re.S).group(1)
    assert text(row).split() == ["5", "2", "40%", "3", "→", "2", "2", "→", "0"]
    time = section(html, "time-in-stage")
    assert "Proposal: median 35 d, average 35 d, limit 21 d" in time
    assert 'class="report-limit"' in time
    row = re.search(r"Prospecting</th>(.*?)</tr>", time, re.S).group(1)
    assert text(row).split() == ["6", "10.17", "8.50", "0", "2", "20", "0", "30"]
    moves = section(html, "moves")
    row = re.search(r"Proposal</th>(.*?)</tr>", moves, re.S).group(1)
    assert text(row).split() == ["1", "1", "2,000,000", "KRW", "0", "/", "0", "1", "/", "1"]
    value = text(section(html, "value"))
    assert "Value (KRW) 84,000,000 KRW weighted 16,500,000 KRW" in value
    assert "Value (USD) 5,000.50 USD weighted 500.05 USD" in value


def test_the_trend_is_drawn_from_the_daily_snapshots(login, admin, deals):
    assert "No snapshots in this period yet" in login(admin).get(url()).content.decode()
    snapshots.take_snapshot(dt.date(2026, 5, 10))
    snapshots.take_snapshot(dt.date(2026, 5, 11))
    html = login(admin).get(url(), {"start": "2026-05-01", "end": "2026-05-31"}).content.decode()
    trend = section(html, "trend")
    assert trend.count("<polyline") == 4  # value and weighted value, in KRW and in USD
    assert "84,000,000 KRW" in trend


def test_a_salesperson_sees_the_figures_of_their_own_deals(login, sales, deals):
    html = login(sales).get(url(), MARCH_APRIL).content.decode()
    assert "Value (KRW) 34,000,000 KRW weighted 11,500,000 KRW" in text(section(html, "value"))
    assert "USD" not in section(html, "value")
    assert "Prospecting: 2 entered, 2 went on (100%)" in section(html, "funnel")
    assert "(1.43 times as long)" in section(html, "bottleneck")


def test_the_page_speaks_korean(login, admin, deals):
    html = login(admin).get(url(), MARCH_APRIL, headers={"Accept-Language": "ko"}).content.decode()
    assert "<strong>제안</strong>" in section(html, "bottleneck")
    assert "B2B 영업" in html


def test_the_period_defaults_to_this_month_and_the_two_before(login, admin, deals):
    html = login(admin).get(url()).content.decode()
    assert 'name="start" value="2026-03-01"' in html
    assert 'name="end" value="2026-05-11"' in html
    assert '<option value="month" selected>' in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"start": "2026-04-30", "end": "2026-03-01"},
            "The end of the period comes before its start.",
        ),
        ({"granularity": "day"}, "Choose week, month or quarter."),
        ({"start": "1 March"}, "Give a date as YYYY-MM-DD."),
    ],
)
def test_a_period_that_is_not_valid_shows_the_form_with_its_error(
    login, admin, deals, params, message
):
    response = login(admin).get(url(), params)
    assert response.status_code == 422
    html = response.content.decode()
    assert message in html
    assert 'aria-invalid="true"' in html
    assert 'id="funnel"' not in html


def test_someone_who_may_not_see_deals_gets_not_found(login, team, deals):
    support = factories.user(Role.SUPPORT, username="support", team=team)
    assert login(support).get(url()).status_code == 404
    missing = reverse("pipelines:reports", args=[10**6])
    assert login(support).get(missing).status_code == 404


def test_the_page_needs_a_login(client, deals):
    response = client.get(url())
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_page_costs_the_same_queries_however_many_deals(
    login, admin, sales, deals, time_machine
):
    client = login(admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url(), MARCH_APRIL).status_code == 200
        return len(captured)

    before = queries()
    time_machine.move_to(history.day(45), tick=False)
    for _n in range(5):
        deal = factories.opportunity(sales)
        history._move(sales, deal, "proposal")
    time_machine.move_to(history.NOW, tick=False)
    assert queries() == before
