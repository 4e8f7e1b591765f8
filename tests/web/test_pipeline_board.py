"""The board and the stage panel in the browser's terms: pages, and moves that work without
JavaScript (the "Move to" form of a card or of a record's page), through gates and conflicts."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from trellis.core.models import Role
from trellis.crm.models import Account, Opportunity
from trellis.process.pipelines.models import Pipeline, Stage, StageChange

from .. import factories

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 3, 9, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def board_url(code: str = "b2b-sales") -> str:
    return reverse("pipelines:board", args=[Pipeline.objects.get(code=code).pk])


def move_url(record, object_type: str = "opportunity") -> str:
    return reverse("pipelines:move", args=[object_type, record.pk])


def changes_of(record) -> list[StageChange]:
    content_type = ContentType.objects.get_for_model(type(record))
    return list(
        StageChange.objects.filter(content_type=content_type, object_id=record.pk).order_by("pk")
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def gate(code: str, kind: str, condition: str, message: str) -> None:
    Stage.objects.filter(pipeline__code="b2b-sales", code=code).update(
        gate=kind, gate_condition=condition, gate_message=message
    )


# The board page.


def test_the_board_shows_columns_and_the_cards_i_may_see(login, sales, outsider, clock):
    factories.opportunity(sales, name="Hanbit ERP", amount=Decimal(30_000_000))
    factories.opportunity(outsider, name="Busan secret deal")
    clock.shift(dt.timedelta(days=31))

    page = login(sales).get(board_url())

    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1>B2B sales</h1>" in html
    for name in ("Prospecting", "Needs analysis", "Proposal", "Negotiation", "Closed won"):
        assert name in html
    assert "Hanbit ERP" in html
    assert "30,000,000 KRW" in html
    assert "31 days in stage" in html
    assert "Over the limit" in html
    assert "Busan secret deal" not in html
    assert 'data-count="1"' in html
    # Drag and drop, and the form for when there is no script.
    assert "vendor/Sortable.min.js" in html and "js/pipeline-board.js" in html
    assert "Move to…" in html


def test_the_board_speaks_korean(login, sales):
    factories.opportunity(sales, name="한빛 ERP")
    sales.language = "ko"
    sales.save(update_fields=["language"])
    html = login(sales).get(board_url(), headers={"Accept-Language": "ko"}).content.decode()
    assert "B2B 영업" in html and "발굴" in html


def test_a_board_of_a_kind_i_may_not_see_is_not_found(login, db):
    agent = factories.user(Role.SUPPORT, username="agent")
    assert login(agent).get(board_url()).status_code == 404
    assert login(agent).get(reverse("pipelines:board", args=[999_999])).status_code == 404


def test_a_reader_sees_the_board_without_move_forms_or_dragging(login, sales):
    factories.opportunity(sales, name="Hanbit ERP")
    reader = factories.user(Role.READ_ONLY, username="reader")
    html = login(reader).get(board_url()).content.decode()
    assert "Hanbit ERP" in html
    assert "Move to…" not in html
    assert "pipeline-board.js" not in html


def test_the_filters_narrow_the_board_and_a_bad_one_is_named(login, manager, sales):
    factories.opportunity(sales, name="Sales deal")
    factories.opportunity(manager, name="Manager deal")
    client = login(manager)
    mine = client.get(board_url(), {"owner": "mine"}).content.decode()
    assert "Manager deal" in mine and "Sales deal" not in mine
    theirs = client.get(board_url(), {"owner": sales.pk}).content.decode()
    assert "Sales deal" in theirs and "Manager deal" not in theirs
    bad = client.get(board_url(), {"owner": "nobody"})
    assert bad.status_code == 200
    assert "Give &quot;mine&quot;, &quot;all&quot; or the id of a user." in bad.content.decode()
    assert "Sales deal" in bad.content.decode()


def test_the_board_page_costs_the_same_queries_for_few_cards_and_many(login, manager, sales):
    client = login(manager)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(board_url()).status_code == 200
        return len(captured)

    factories.opportunity(sales)
    few = queries()
    for n in range(40):
        factories.opportunity(sales if n % 2 else manager)
    assert queries() == few


def test_a_long_column_shows_more_on_asking_with_and_without_script(login, sales, clock):
    for n in range(53):
        factories.opportunity(sales, name=f"Deal {n:02}")
        clock.shift(dt.timedelta(minutes=1))
    client = login(sales)
    html = client.get(board_url()).content.decode()
    assert "Deal 52" in html and "Deal 03" in html and "Deal 02" not in html
    assert "Show more (50 of 53 shown)" in html
    column = reverse(
        "pipelines:board-column",
        args=[Pipeline.objects.get(code="b2b-sales").pk, stage("b2b-sales", "prospecting").pk],
    )
    fragment = client.get(column, {"offset": 50}, headers={"HX-Request": "true"})
    text = fragment.content.decode()
    assert "<html" not in text
    assert [n for n in ("Deal 02", "Deal 01", "Deal 00") if n in text] == [
        "Deal 02",
        "Deal 01",
        "Deal 00",
    ]
    assert "Show more" not in text
    page = client.get(column, {"offset": 50})
    assert "<html" in page.content.decode() and "Deal 00" in page.content.decode()


# Moving without JavaScript.


def test_the_move_form_of_a_card_moves_and_comes_back_to_the_board(login, sales):
    deal = factories.opportunity(sales, name="Hanbit ERP")
    back = board_url() + "?owner=mine"
    target = stage("b2b-sales", "proposal")

    response = login(sales).post(
        move_url(deal), {"stage_id": target.pk, "version": 1, "next": back}, follow=True
    )

    assert response.redirect_chain == [(back, 302)]
    assert messages_of(response) == ["Hanbit ERP moved to Proposal."]
    deal.refresh_from_db()
    assert (deal.stage_id, deal.version) == (target.pk, 2)
    assert changes_of(deal)[-1].direction == "forward"


def test_a_move_from_the_record_page_shows_on_its_panel_and_timeline(login, sales, clock):
    deal = factories.opportunity(sales, name="Hanbit ERP")
    page = reverse("crm:opportunity-detail", args=[deal.pk])
    client = login(sales)
    html = client.get(page).content.decode()
    assert 'id="pipeline"' in html and "Pipeline: B2B sales" in html
    clock.shift(dt.timedelta(days=2))

    response = client.post(
        move_url(deal),
        {"stage_id": stage("b2b-sales", "needs-analysis").pk, "version": 1, "next": page},
        follow=True,
    )

    assert response.redirect_chain == [(page, 302)]
    html = response.content.decode()
    assert "Hanbit ERP moved to Needs analysis." in html
    assert 'aria-current="step">Needs analysis</li>' in html
    assert "Needs-analysis meeting held" in html
    # History: entered Prospecting, stayed two days, then forward.
    assert "entered the pipeline" in html and ">forward<" in html
    assert "2 days" in html
    # The timeline tells the stage change.
    timeline = html[html.index('id="timeline"') :]
    assert "<del>Prospecting</del>" in timeline and "<ins>Needs analysis</ins>" in timeline


def test_an_unsafe_next_address_is_ignored(login, sales):
    deal = factories.opportunity(sales)
    response = login(sales).post(
        move_url(deal),
        {
            "stage_id": stage("b2b-sales", "proposal").pk,
            "version": 1,
            "next": "https://evil.example/",
        },
    )
    assert response.url == reverse("crm:opportunity-detail", args=[deal.pk])


def test_a_warn_gate_asks_first_and_moves_on_move_anyway(login, sales):
    gate("negotiation", "warn", "expected_close_date != null", "No close date yet.")
    deal = factories.opportunity(sales, name="Hanbit ERP")
    target = stage("b2b-sales", "negotiation").pk
    client = login(sales)

    asked = client.post(move_url(deal), {"stage_id": target, "version": 1, "next": board_url()})

    assert asked.status_code == 200
    html = asked.content.decode()
    assert "Move to Negotiation?" in html
    assert "No close date yet." in html
    assert "Move anyway" in html and 'name="confirm" value="1"' in html
    assert len(changes_of(deal)) == 1
    assert Opportunity.objects.get(pk=deal.pk).version == 1

    done = client.post(
        move_url(deal),
        {"stage_id": target, "version": 1, "confirm": "1", "next": board_url()},
        follow=True,
    )
    assert messages_of(done) == ["Hanbit ERP moved to Negotiation.", "No close date yet."]
    assert Opportunity.objects.get(pk=deal.pk).stage_id == target


def test_a_require_gate_refuses_with_its_message_and_changes_nothing(login, sales):
    gate("proposal", "require", "amount >= 10000000.0", "Proposals need an amount of 10M+.")
    deal = factories.opportunity(sales, amount=Decimal(5_000_000))

    response = login(sales).post(
        move_url(deal),
        {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1, "confirm": "1"},
        follow=True,
    )

    assert messages_of(response) == ["Not moved: Proposals need an amount of 10M+."]
    deal.refresh_from_db()
    assert (deal.stage.code, deal.version, len(changes_of(deal))) == ("prospecting", 1, 1)


def test_a_stale_version_is_refused_and_the_page_shows_the_record_as_it_is(
    login, sales, other_sales
):
    deal = factories.opportunity(sales, name="Hanbit ERP")
    client = login(sales)
    client.post(
        move_url(deal), {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1}, follow=True
    )
    page = reverse("crm:opportunity-detail", args=[deal.pk])

    response = client.post(
        move_url(deal),
        {"stage_id": stage("b2b-sales", "won").pk, "version": 1, "next": page},
        follow=True,
    )

    [message] = messages_of(response)
    assert message.startswith("Someone else changed this record")
    assert 'aria-current="step">Proposal</li>' in response.content.decode()
    deal.refresh_from_db()
    assert (deal.stage.code, deal.version, len(changes_of(deal))) == ("proposal", 2, 2)


def test_a_stage_of_another_pipeline_is_refused(login, sales):
    deal = factories.opportunity(sales)
    response = login(sales).post(
        move_url(deal), {"stage_id": stage("renewal", "offer").pk, "version": 1}, follow=True
    )
    [message] = messages_of(response)
    assert "belongs to the pipeline Renewal" in message
    assert len(changes_of(deal)) == 1


def test_moving_a_record_i_may_not_see_is_not_found_and_one_i_may_only_read_forbidden(
    login, sales, outsider
):
    deal = factories.opportunity(sales)
    data = {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1}
    assert login(outsider).post(move_url(deal), data).status_code == 404
    reader = factories.user(Role.READ_ONLY, username="reader")
    assert login(reader).post(move_url(deal), data).status_code == 403
    assert login(sales).get(move_url(deal)).status_code == 405
    assert len(changes_of(deal)) == 1


def test_an_account_starts_onboarding_from_its_page(login, sales):
    account = factories.account(sales, name="Hanbit Soft")
    page = reverse("crm:account-detail", args=[account.pk])
    client = login(sales)
    html = client.get(page).content.decode()
    assert "This record is in no pipeline." in html
    assert "Start Customer onboarding" in html

    response = client.post(
        move_url(account, "account"),
        {"stage_id": stage("onboarding", "kickoff").pk, "version": 1, "next": page},
        follow=True,
    )

    html = response.content.decode()
    assert "Hanbit Soft moved to Kick-off." in html
    assert "Pipeline: Customer onboarding" in html
    assert "Kick-off meeting held" in html
    timeline = html[html.index('id="timeline"') :]
    assert "<ins>Kick-off</ins>" in timeline
    assert Account.objects.get(pk=account.pk).stage.code == "kickoff"


def test_the_card_fragment_is_the_card_as_the_board_draws_it(login, sales, outsider):
    deal = factories.opportunity(sales, name="Hanbit ERP")
    url = reverse("pipelines:card", args=["opportunity", deal.pk])
    html = login(sales).get(url, {"next": board_url()}).content.decode()
    assert html.lstrip().startswith('<li class="board-card"')
    assert f'data-version="{deal.version}"' in html and "Hanbit ERP" in html
    assert login(outsider).get(url).status_code == 404


def test_the_navigation_leads_to_the_pipelines(login, sales):
    html = login(sales).get(reverse("home")).content.decode()
    assert f'href="{reverse("pipelines:list")}" class="nav-pipelines"' in html
    board = login(sales).get(board_url()).content.decode()
    assert 'class="nav-pipelines current" aria-current="page"' in board
