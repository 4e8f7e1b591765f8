"""The board of a pipeline and a record's stage panel, as reads: what each user sees, counted
and summed, newest-entered first, at a cost that does not grow with the cards."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories
from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.models import Role
from trellis.process.pipelines import board, services
from trellis.process.pipelines.models import Pipeline, Stage

# A Monday, 09:00 in Seoul.
START = dt.datetime(2026, 3, 9, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def sales_pipeline() -> Pipeline:
    return Pipeline.objects.get(code="b2b-sales")


def move(actor, record, code: str, object_type: str = "opportunity", **kwargs):
    record.refresh_from_db()
    target = stage(record.stage.pipeline.code, code)
    return services.move(actor, object_type, record.pk, target.pk, version=record.version, **kwargs)


def columns_by_code(found: board.Board) -> dict[str, board.Column]:
    return {column.stage.code: column for column in found.columns}


def names(column: board.Column) -> list[str]:
    return [card.name for card in column.cards]


# The board.


def test_the_board_has_the_active_stages_in_order_with_counts_sums_and_newest_cards_first(
    sales, clock
):
    first = factories.opportunity(sales, name="Hanbit ERP", amount=Decimal(30_000_000))
    clock.shift(dt.timedelta(hours=1))
    factories.opportunity(sales, name="Mirae cloud", amount=Decimal(12_000_000))
    clock.shift(dt.timedelta(hours=1))
    factories.opportunity(sales, name="Acme USD", amount=Decimal("1500.50"), currency="USD")
    clock.shift(dt.timedelta(hours=1))
    move(sales, first, "proposal")

    found = board.board(sales, sales_pipeline().pk)

    codes = [column.stage.code for column in found.columns]
    assert codes == ["prospecting", "needs-analysis", "proposal", "negotiation", "won", "lost"]
    columns = columns_by_code(found)
    prospecting = columns["prospecting"]
    assert prospecting.count == 2
    assert names(prospecting) == ["Acme USD", "Mirae cloud"]
    assert [(t.currency, t.amount) for t in prospecting.sums] == [
        ("KRW", Decimal(12_000_000)),
        ("USD", Decimal("1500.50")),
    ]
    assert [t.display for t in prospecting.sums] == ["12,000,000 KRW", "1,500.50 USD"]
    assert (columns["proposal"].count, names(columns["proposal"])) == (1, ["Hanbit ERP"])
    assert columns["negotiation"].count == 0 and columns["negotiation"].sums == []
    assert not prospecting.has_more


def test_a_card_shows_name_owner_amount_close_date_and_time_in_stage(team, clock):
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", last_name="Lee", team=team)
    factories.opportunity(
        ana, name="Hanbit ERP", amount=Decimal(30_000_000), expected_close_date=dt.date(2026, 6, 30)
    )
    clock.shift(dt.timedelta(days=3, hours=5))

    [card] = columns_by_code(board.board(ana, sales_pipeline().pk))["prospecting"].cards

    assert card.name == "Hanbit ERP"
    assert card.owner_name == "Ana"
    assert card.amount_display == "30,000,000 KRW"
    assert card.close_date == dt.date(2026, 6, 30)
    assert card.in_stage == dt.timedelta(days=3, hours=5)
    assert card.days_in_stage == 3
    assert card.over_limit is False


def test_a_card_is_marked_once_over_the_stages_dwell_limit(sales, clock):
    factories.opportunity(sales, name="Slow deal")  # prospecting: at most 30 days
    clock.shift(dt.timedelta(days=30))
    [card] = columns_by_code(board.board(sales, sales_pipeline().pk))["prospecting"].cards
    assert card.over_limit is False
    clock.shift(dt.timedelta(minutes=1))
    [card] = columns_by_code(board.board(sales, sales_pipeline().pk))["prospecting"].cards
    assert card.over_limit is True


def test_a_dwell_limit_in_business_days_skips_weekends_and_korean_holidays(sales):
    Stage.objects.filter(pk=stage("b2b-sales", "prospecting").pk).update(
        max_dwell_days=3, dwell_in_business_days=True
    )

    def marked() -> bool:
        [card] = columns_by_code(board.board(sales, sales_pipeline().pk))["prospecting"].cards
        return card.over_limit

    # Friday before Seollal (16 to 18 February 2026), 10:00 in Seoul.
    with time_machine.travel(dt.datetime(2026, 2, 13, 1, 0, tzinfo=dt.UTC), tick=False) as clock:
        factories.opportunity(sales, name="Over the holidays")
        clock.shift(dt.timedelta(days=6))  # Thursday 19th: the first working day after
        assert not marked()
        clock.shift(dt.timedelta(days=4))  # Monday 23rd: the third
        assert not marked()
        clock.shift(dt.timedelta(days=1))  # Tuesday 24th: the fourth
        assert marked()


def test_a_record_i_may_not_see_is_never_a_card_nor_counted_nor_summed(
    sales, other_sales, outsider, manager, clock
):
    factories.opportunity(sales, name="Mine", amount=Decimal(1_000_000))
    factories.opportunity(other_sales, name="Colleague's", amount=Decimal(2_000_000))
    factories.opportunity(outsider, name="Busan deal", amount=Decimal(4_000_000))
    pipeline = sales_pipeline().pk

    # Sales people see their own deals only.
    mine = columns_by_code(board.board(sales, pipeline))["prospecting"]
    assert (names(mine), mine.count, [t.amount for t in mine.sums]) == (
        ["Mine"],
        1,
        [Decimal(1_000_000)],
    )
    # Their manager sees everyone reporting to them, not the other team.
    managed = columns_by_code(board.board(manager, pipeline))["prospecting"]
    assert sorted(names(managed)) == ["Colleague's", "Mine"]
    assert (managed.count, managed.sums[0].amount) == (2, Decimal(3_000_000))


def test_the_owner_and_team_filters(manager, sales, other_sales, clock):
    factories.opportunity(sales, name="Sales deal")
    factories.opportunity(other_sales, name="Colleague deal")
    factories.opportunity(manager, name="Manager deal")
    pipeline = sales_pipeline().pk

    def shown(**filters) -> list[str]:
        found = board.board(manager, pipeline, filters=board.filters_from(**filters))
        return sorted(names(columns_by_code(found)["prospecting"]))

    assert shown() == ["Colleague deal", "Manager deal", "Sales deal"]
    assert shown(owner="mine") == ["Manager deal"]
    assert shown(owner=str(sales.pk)) == ["Sales deal"]
    assert shown(team=str(sales.team_id)) == ["Colleague deal", "Manager deal", "Sales deal"]
    other_team = factories.TeamFactory(name="Daegu")
    assert shown(team=str(other_team.pk)) == []


@pytest.mark.parametrize(
    "owner, team, field",
    [
        ("nobody", None, "owner"),
        ("-3", None, "owner"),
        (None, "sales", "team"),
        (None, "0", "team"),
    ],
)
def test_a_filter_that_means_nothing_is_named_not_ignored(owner, team, field):
    with pytest.raises(ValidationFailed) as raised:
        board.filters_from(owner, team)
    assert set(raised.value.errors) == {field}


def test_a_long_column_shows_a_bounded_first_page_and_the_rest_on_asking(sales, clock):
    for n in range(7):
        factories.opportunity(sales, name=f"Deal {n:02}")
        clock.shift(dt.timedelta(minutes=1))
    pipeline = sales_pipeline().pk

    first = columns_by_code(board.board(sales, pipeline, per_stage=3))["prospecting"]
    assert (names(first), first.count, first.has_more) == (
        ["Deal 06", "Deal 05", "Deal 04"],
        7,
        True,
    )

    _pipeline, rest = board.column(
        sales, pipeline, first.stage.pk, offset=first.next_offset, limit=3
    )
    assert (names(rest), rest.has_more) == (["Deal 03", "Deal 02", "Deal 01"], True)
    _pipeline, last = board.column(sales, pipeline, first.stage.pk, offset=6, limit=3)
    assert (names(last), last.has_more, last.count) == (["Deal 00"], False, 7)


def test_the_board_costs_the_same_queries_for_few_cards_and_many(manager, sales, clock):
    pipeline = sales_pipeline().pk

    def queries() -> int:
        # A fresh user object each time, as each request has.
        viewer = type(manager).objects.get(pk=manager.pk)
        with CaptureQueriesContext(connection) as captured:
            found = board.board(viewer, pipeline)
            [card.owner_name for column in found.columns for card in column.cards]
        return len(captured)

    factories.opportunity(sales)
    few = queries()
    for n in range(40):
        deal = factories.opportunity(sales if n % 2 else manager)
        if n % 3 == 0:
            move(sales if n % 2 else manager, deal, "proposal")
    many = queries()
    assert many == few


def test_the_board_stays_within_a_fixed_number_of_queries(
    manager, sales, clock, django_assert_max_num_queries
):
    for n in range(30):
        factories.opportunity(sales if n % 2 else manager)
    viewer = type(manager).objects.get(pk=manager.pk)
    # The pipeline, the viewer's rights and reports, its stages, the counts and sums: seven;
    # then one query per column, however many cards.
    columns = sales_pipeline().stages.filter(is_active=True).count()
    with django_assert_max_num_queries(7 + columns):
        found = board.board(viewer, sales_pipeline().pk)
        assert sum(len(c.cards) for c in found.columns) == 30


def test_a_retired_stage_is_no_column(sales):
    Stage.objects.filter(pk=stage("b2b-sales", "negotiation").pk).update(is_active=False)
    codes = [c.stage.code for c in board.board(sales, sales_pipeline().pk).columns]
    assert "negotiation" not in codes


def test_a_lead_board_has_no_amounts(sales, clock):
    factories.lead(sales, name="박서연")
    found = board.board(sales, Pipeline.objects.get(code="lead-qualification").pk)
    new = columns_by_code(found)["new"]
    assert not found.has_amounts
    assert (names(new), new.sums, new.cards[0].amount) == (["박서연"], [], None)


def test_the_board_of_a_kind_of_record_i_may_not_see_is_not_found(db):
    support = factories.user(Role.SUPPORT, username="agent")
    with pytest.raises(NotFound):
        board.board(support, sales_pipeline().pk)
    with pytest.raises(NotFound):
        board.board(support, 999_999)


# A record's stage panel.


def test_the_panel_shows_the_stages_the_current_one_its_time_and_what_is_expected(sales, clock):
    deal = factories.opportunity(sales)
    clock.shift(dt.timedelta(days=2))
    move(sales, deal, "needs-analysis")
    clock.shift(dt.timedelta(days=5, hours=3))
    deal.refresh_from_db()

    panel = board.panel(sales, deal)

    assert panel.pipeline.code == "b2b-sales"
    assert [s.code for s in panel.stages] == [
        "prospecting",
        "needs-analysis",
        "proposal",
        "negotiation",
        "won",
        "lost",
    ]
    assert panel.current.code == "needs-analysis"
    assert panel.in_stage == dt.timedelta(days=5, hours=3)
    assert panel.activities == ["Needs-analysis meeting held"]
    assert panel.can_move and panel.startable == []


def test_the_panel_history_has_every_stay_with_when_how_long_who_and_which_way(
    sales, manager, clock
):
    deal = factories.opportunity(sales)
    clock.shift(dt.timedelta(days=3))
    move(sales, deal, "negotiation")
    clock.shift(dt.timedelta(days=2))
    move(manager, deal, "needs-analysis")
    clock.shift(dt.timedelta(hours=6))
    deal.refresh_from_db()

    stays = board.panel(sales, deal).history

    rows = [(s.stage.code, s.entered_at, s.left_at, s.spent, s.actor, s.direction) for s in stays]
    day = dt.timedelta(days=1)
    assert rows == [
        ("prospecting", START, START + 3 * day, 3 * day, sales, "entered"),
        ("negotiation", START + 3 * day, START + 5 * day, 2 * day, sales, "forward"),
        ("needs-analysis", START + 5 * day, None, dt.timedelta(hours=6), manager, "backward"),
    ]
    assert [s.direction_label for s in stays] == ["entered the pipeline", "forward", "backward"]


def test_a_retired_stage_the_record_is_in_still_shows_in_its_panel(sales, clock):
    deal = factories.opportunity(sales)
    move(sales, deal, "negotiation")
    Stage.objects.filter(pk=stage("b2b-sales", "negotiation").pk).update(is_active=False)
    deal.refresh_from_db()
    panel = board.panel(sales, deal)
    assert panel.current.code == "negotiation"
    assert "negotiation" in [s.code for s in panel.stages]


def test_an_account_in_no_pipeline_is_offered_the_onboarding_pipeline(sales):
    account = factories.account(sales)
    panel = board.panel(sales, account)
    assert (panel.current, panel.history) == (None, [])
    [start] = panel.startable
    assert (start.pipeline.code, start.stage.code) == ("onboarding", "kickoff")


def test_a_kind_of_record_with_no_pipelines_has_no_panel(sales):
    assert board.panel(sales, factories.contact(sales)) is None
