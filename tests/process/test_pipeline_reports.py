"""Pipeline reports over a known sales history (see ``report_history``): every figure of the
funnel, time in stage, the bottleneck, backward moves and value drops, pipeline value and its
trend, for a user who sees everything and for people who see only some deals; and the daily
snapshot the trend is drawn from."""

import datetime as dt
from decimal import Decimal

import pytest

from tests import factories
from tests.process import report_history as history
from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.models import Role
from trellis.core.sweep import sweep_once
from trellis.crm import services as crm
from trellis.process.pipelines import reports, services, snapshots, subjects
from trellis.process.pipelines.models import BlackoutWindow, Pipeline, PipelineSnapshot, Stage

MARCH_APRIL = reports.Period(history.FIRST_DAY, history.LAST_DAY, "month")


@pytest.fixture
def deals(time_machine, sales, other_sales, outsider):
    return history.build(time_machine, sales, other_sales, outsider)


@pytest.fixture
def pipeline(deals) -> Pipeline:
    return history.sales_pipeline()


def funnel_of(user, pipeline, period=MARCH_APRIL):
    return reports.funnel(user, pipeline, period.start, period.end, period.granularity)


def figures(rows) -> dict[str, tuple]:
    return {row.stage.code: (row.entered, row.converted) for row in rows}


def dwell(d: reports.Dwell) -> tuple:
    return (d.count, d.average_days, d.median_days, d.longest_days, d.over_limit)


# The funnel.


def test_the_funnel_counts_entries_into_each_stage_and_those_that_left_forward(admin, pipeline):
    report = funnel_of(admin, pipeline)
    # F entered prospecting before the period. E entered prospecting twice: each entry counts,
    # and only the first went on. C went on from negotiation to won after the period, which
    # still counts as going on.
    assert figures(report.stages) == {
        "prospecting": (6, 4),  # A B C D E E; D was lost, E's second entry stayed
        "needs-analysis": (5, 2),  # B F A E A; B and A's first entry went on, E went back
        "proposal": (3, 1),  # A B C; only C went on
        "negotiation": (1, 1),
        "won": (0, None),
        "lost": (1, None),
    }
    assert [row.conversion for row in report.stages] == [66.7, 40.0, 33.3, 100.0, None, None]


def test_the_funnel_per_month_counts_each_entry_in_its_month(admin, pipeline):
    march, april = funnel_of(admin, pipeline).buckets
    assert (march.bucket.start, march.bucket.label) == (dt.date(2026, 3, 1), "2026-03")
    assert (april.bucket.start, april.bucket.label) == (dt.date(2026, 4, 1), "2026-04")
    assert figures(march.stages) == {
        "prospecting": (4, 3),
        "needs-analysis": (3, 2),
        "proposal": (2, 1),
        "negotiation": (0, 0),
        "won": (0, None),
        "lost": (1, None),
    }
    # A entered needs analysis in March and again in April: once in each month.
    assert figures(april.stages) == {
        "prospecting": (2, 1),
        "needs-analysis": (2, 0),
        "proposal": (1, 0),
        "negotiation": (1, 1),
        "won": (0, None),
        "lost": (0, None),
    }


def test_the_funnel_by_week_and_by_quarter(admin, pipeline):
    weeks = reports.funnel(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end, "week")
    # 23 February (the week of 1 March) to the week of 27 April.
    assert len(weeks.buckets) == 10
    assert weeks.buckets[0].bucket.label == "2026-W09"
    first_full = weeks.buckets[1]  # Monday 2 March: A and B were created
    assert first_full.bucket.start == dt.date(2026, 3, 2)
    assert figures(first_full.stages)["prospecting"] == (2, 2)
    # B on day 4, who went on; F on day 5, who stayed.
    assert figures(first_full.stages)["needs-analysis"] == (2, 1)
    quarters = reports.funnel(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end, "quarter")
    assert [b.bucket.label for b in quarters.buckets] == ["2026 Q1", "2026 Q2"]
    assert figures(quarters.buckets[0].stages)["needs-analysis"] == (3, 2)


def test_a_retired_stage_still_shows_where_history_passed_through_it(admin, pipeline):
    Stage.objects.filter(pipeline=pipeline, code="negotiation").update(is_active=False)
    report = funnel_of(admin, pipeline)
    assert figures(report.stages)["negotiation"] == (1, 1)
    later = reports.Period(dt.date(2026, 5, 2), dt.date(2026, 5, 10), "month")
    assert "negotiation" not in figures(funnel_of(admin, pipeline, later).stages)


# Time in stage and the bottleneck.


def test_time_in_stage_per_stage_from_the_moves_out_of_it_in_the_period(admin, pipeline):
    report = reports.time_in_stage(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    rows = {row.stage.code: row for row in report.stages}
    # Left prospecting after 10 (A), 4 (B), 10 (C), 7 (D), 5 (E) and 25 (F) days.
    assert dwell(rows["prospecting"].left) == (6, 10.17, 8.5, 25.0, 0)
    # Left needs analysis after 10 (A), 40 (B) and 5 (E) days; B over the 30-day limit.
    assert dwell(rows["needs-analysis"].left) == (3, 18.33, 10.0, 40.0, 1)
    # Left proposal after 30 (A) and 40 (C) days, both over the 21-day limit.
    assert dwell(rows["proposal"].left) == (2, 35.0, 35.0, 40.0, 2)
    assert dwell(rows["negotiation"].left) == (0, None, None, None, 0)  # C left it on day 60
    assert [r.limit_days for r in report.stages] == [30.0, 30.0, 21.0, 30.0, None, None]
    assert [r.ratio for r in report.stages] == [0.28, 0.33, 1.67, None, None, None]


def test_records_still_in_a_stage_are_counted_apart(admin, pipeline):
    report = reports.time_in_stage(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    current = {row.stage.code: dwell(row.current) for row in report.stages}
    assert current == {
        "prospecting": (2, 20.0, 20.0, 30.0, 0),  # E for 30 days, G for 10
        "needs-analysis": (2, 42.5, 42.5, 65.0, 1),  # A for 20 days, F for 65
        "proposal": (1, 26.0, 26.0, 26.0, 1),  # B for 26 days
        "negotiation": (0, None, None, None, 0),
        "won": (0, None, None, None, 0),  # closed stages have no time running
        "lost": (0, None, None, None, 0),
    }


def test_time_in_stage_per_owner_at_the_time_of_the_move(
    admin, sales, other_sales, outsider, pipeline
):
    report = reports.time_in_stage(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    owners = {
        (row.stage.code, owner.owner_id): (owner.owner_name, dwell(owner.dwell))
        for row in report.stages
        for owner in row.owners
    }
    assert owners == {
        ("prospecting", sales.pk): (str(sales), (3, 13.0, 10.0, 25.0, 0)),
        ("prospecting", other_sales.pk): (str(other_sales), (2, 8.5, 8.5, 10.0, 0)),
        ("prospecting", outsider.pk): (str(outsider), (1, 5.0, 5.0, 5.0, 0)),
        ("needs-analysis", sales.pk): (str(sales), (2, 25.0, 25.0, 40.0, 1)),
        ("needs-analysis", outsider.pk): (str(outsider), (1, 5.0, 5.0, 5.0, 0)),
        ("proposal", sales.pk): (str(sales), (1, 30.0, 30.0, 30.0, 1)),
        ("proposal", other_sales.pk): (str(other_sales), (1, 40.0, 40.0, 40.0, 1)),
    }


def test_a_limit_in_business_days_is_compared_as_five_working_days_a_week(admin, pipeline):
    Stage.objects.filter(pipeline=pipeline, code="proposal").update(
        max_dwell_days=25, dwell_in_business_days=True
    )
    report = reports.time_in_stage(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    proposal = next(row for row in report.stages if row.stage.code == "proposal")
    assert proposal.limit_days == 35.0
    assert proposal.ratio == 1.0
    # Judged by the limit as it is now: C's 40 days; A's 30 are within 35.
    assert proposal.left.over_limit == 1


def test_the_bottleneck_is_the_stage_most_over_its_limit_with_the_records_stuck_there(
    admin, sales, deals, pipeline
):
    report = reports.bottleneck(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    assert report.stage.stage.code == "proposal"
    assert report.stage.ratio == 1.67
    assert report.stuck_count == 1
    [stuck] = report.stuck
    assert (stuck.id, stuck.name, stuck.owner_name) == (deals["B"].pk, deals["B"].name, str(sales))
    assert stuck.days == 26.0
    assert stuck.entered_at == history.day(44)
    assert stuck.url == f"/crm/opportunities/{deals['B'].pk}/"


def test_stuck_records_are_listed_oldest_first_and_counted_beyond_the_list(
    admin, sales, deals, time_machine, pipeline, monkeypatch
):
    monkeypatch.setattr(reports, "STUCK_ROWS", 2)
    made = []
    for offset in (1, 3, 2):  # into proposal 1, 3 and 2 days after B did
        time_machine.move_to(history.day(44 + offset), tick=False)
        deal = factories.opportunity(sales)
        services.move(sales, "opportunity", deal.pk, history.stage("proposal").pk, version=1)
        made.append(deal)
    time_machine.move_to(history.NOW, tick=False)
    report = reports.bottleneck(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    assert report.stuck_count == 4  # B and the three new deals, all over 21 days
    assert [(r.id, r.days) for r in report.stuck] == [(deals["B"].pk, 26.0), (made[0].pk, 25.0)]


def test_the_bottleneck_names_the_blackout_windows_that_overlap_the_period(admin, pipeline):
    proposal = history.stage("proposal")
    weeks = BlackoutWindow.objects.create(
        pipeline=pipeline,
        stage=proposal,
        name="No travel approvals",
        name_ko="출장 승인 중단",
        quarter_week_from=11,
        quarter_week_to=13,
    )
    whole = BlackoutWindow.objects.create(
        pipeline=pipeline,
        name="Holidays",
        starts_on=dt.date(2026, 4, 28),
        ends_on=dt.date(2026, 5, 5),
    )
    BlackoutWindow.objects.create(  # another stage's
        pipeline=pipeline,
        stage=history.stage("negotiation"),
        name="Legal review freeze",
        starts_on=dt.date(2026, 3, 1),
        ends_on=dt.date(2026, 3, 31),
    )
    BlackoutWindow.objects.create(  # before the period
        pipeline=pipeline,
        name="New year",
        starts_on=dt.date(2026, 1, 1),
        ends_on=dt.date(2026, 1, 2),
    )
    report = reports.bottleneck(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    assert [(b.window, b.first_day, b.last_day) for b in report.blackouts] == [
        # Weeks 11 to 13 of the first quarter: 12 March to its end (week 13 ends on 1 April,
        # which is the next quarter's); the second quarter's fall after the period.
        (weeks, dt.date(2026, 3, 12), dt.date(2026, 3, 31)),
        (whole, dt.date(2026, 4, 28), dt.date(2026, 4, 30)),
    ]
    assert report.blackouts[1].whole_pipeline


def test_no_bottleneck_when_no_stage_is_over_its_limit(admin, pipeline):
    march = reports.Period(dt.date(2026, 3, 1), dt.date(2026, 3, 31), "month")
    report = reports.bottleneck(admin, pipeline, march.start, march.end)
    # In March records left prospecting and needs analysis well within 30 days.
    assert report.stage is None
    assert report.stuck == []


# Backward moves and value drops.


def test_backward_moves_and_value_drops_per_stage_and_month(admin, pipeline):
    report = reports.moves(admin, pipeline, MARCH_APRIL.start, MARCH_APRIL.end, "month")

    def table(rows):
        return {
            row.stage.code: (
                row.backward,
                row.value_drops,
                [(d.currency, d.amount) for d in row.dropped],
            )
            for row in rows
            if row.backward or row.value_drops
        }

    # F dropped from 7 to 6 million in prospecting (its previous move was before the period);
    # E went back from needs analysis; A went back from proposal at 8 million after 10.
    assert table(report.stages) == {
        "prospecting": (0, 1, [("KRW", Decimal("1000000.00"))]),
        "needs-analysis": (1, 0, []),
        "proposal": (1, 1, [("KRW", Decimal("2000000.00"))]),
    }
    march, april = report.buckets
    assert table(march.stages) == {"prospecting": (0, 1, [("KRW", Decimal("1000000.00"))])}
    assert table(april.stages) == {
        "needs-analysis": (1, 0, []),
        "proposal": (1, 1, [("KRW", Decimal("2000000.00"))]),
    }


# Pipeline value.


def test_value_and_weighted_value_by_stage_and_owner_per_currency(
    admin, sales, other_sales, outsider, pipeline
):
    report = reports.value(admin, pipeline)

    def amounts(values):
        return [(v.currency, v.records, v.amount, v.weighted) for v in values]

    assert report.records == 5
    # A 8M at 25%, F 6M at 25%, B 20M at 40% (set by hand), E 50M at 10%; G 5,000.50 USD at 10%.
    assert amounts(report.totals) == [
        ("KRW", 4, Decimal("84000000.00"), Decimal("16500000.00")),
        ("USD", 1, Decimal("5000.50"), Decimal("500.05")),
    ]
    assert {s.stage.code: (s.records, amounts(s.values)) for s in report.stages} == {
        "prospecting": (
            2,
            [
                ("KRW", 1, Decimal("50000000.00"), Decimal("5000000.00")),
                ("USD", 1, Decimal("5000.50"), Decimal("500.05")),
            ],
        ),
        "needs-analysis": (2, [("KRW", 2, Decimal("14000000.00"), Decimal("3500000.00"))]),
        "proposal": (1, [("KRW", 1, Decimal("20000000.00"), Decimal("8000000.00"))]),
        "negotiation": (0, []),
    }
    assert {o.owner_id: (o.owner_name, o.records, amounts(o.values)) for o in report.owners} == {
        sales.pk: (str(sales), 3, [("KRW", 3, Decimal("34000000.00"), Decimal("11500000.00"))]),
        other_sales.pk: (str(other_sales), 1, [("USD", 1, Decimal("5000.50"), Decimal("500.05"))]),
        outsider.pk: (
            str(outsider),
            1,
            [("KRW", 1, Decimal("50000000.00"), Decimal("5000000.00"))],
        ),
    }


def test_a_pipeline_of_records_without_amounts_counts_them(admin, sales, time_machine):
    time_machine.move_to(history.DAY0, tick=False)
    factories.lead(sales)
    factories.lead(sales)
    leads = Pipeline.objects.get(code="lead-qualification")
    report = reports.value(admin, leads)
    assert not report.has_amounts
    assert report.records == 2
    assert {s.stage.code: s.records for s in report.stages} == {
        "new": 2,
        "contacted": 0,
        "qualifying": 0,
    }


# Visibility.


def test_a_salesperson_counts_only_their_own_deals(sales, pipeline):
    # Their deals: A, B and F.
    assert figures(funnel_of(sales, pipeline).stages) == {
        "prospecting": (2, 2),
        "needs-analysis": (4, 2),  # A entered twice
        "proposal": (2, 0),
        "negotiation": (0, 0),
        "won": (0, None),
        "lost": (0, None),
    }
    time = reports.time_in_stage(sales, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    rows = {row.stage.code: row for row in time.stages}
    assert dwell(rows["prospecting"].left) == (3, 13.0, 10.0, 25.0, 0)
    assert dwell(rows["needs-analysis"].current) == (2, 42.5, 42.5, 65.0, 1)
    assert dwell(rows["prospecting"].current) == (0, None, None, None, 0)
    bottleneck = reports.bottleneck(sales, pipeline, MARCH_APRIL.start, MARCH_APRIL.end)
    assert (bottleneck.stage.stage.code, bottleneck.stage.ratio) == ("proposal", 1.43)
    moves = reports.moves(sales, pipeline, MARCH_APRIL.start, MARCH_APRIL.end, "month")
    assert {
        r.stage.code: (r.backward, r.value_drops)
        for r in moves.stages
        if r.backward or r.value_drops
    } == {
        "prospecting": (0, 1),
        "proposal": (1, 1),
    }
    value = reports.value(sales, pipeline)
    assert [(v.currency, v.records, v.amount, v.weighted) for v in value.totals] == [
        ("KRW", 3, Decimal("34000000.00"), Decimal("11500000.00"))
    ]
    assert [o.owner_id for o in value.owners] == [sales.pk]


def test_a_manager_counts_their_subordinates_deals_but_not_another_teams(
    manager, outsider, pipeline
):
    # Everything but E, the outsider's.
    assert figures(funnel_of(manager, pipeline).stages)["prospecting"] == (4, 3)
    value = reports.value(manager, pipeline)
    assert outsider.pk not in [o.owner_id for o in value.owners]
    assert value.records == 4


def test_someone_who_may_not_see_deals_gets_no_report_of_their_pipeline(pipeline, team):
    support = factories.user(Role.SUPPORT, username="support", team=team)
    with pytest.raises(NotFound):
        reports.report_pipeline(support, pipeline.pk)
    with pytest.raises(NotFound):
        reports.report_pipeline(support, 10**9)
    assert reports.report_pipeline(support, Pipeline.objects.get(code="onboarding").pk)


# The period.


def test_the_period_defaults_to_this_month_and_the_two_before(time_machine, db):
    time_machine.move_to(history.NOW, tick=False)
    assert reports.period() == reports.Period(dt.date(2026, 3, 1), dt.date(2026, 5, 11), "month")
    period = reports.period("2026-03-01", "2026-04-30", "week")
    assert period.start == dt.datetime(2026, 2, 28, 15, 0, tzinfo=dt.UTC)  # midnight in Seoul
    assert period.end == dt.datetime(2026, 4, 30, 15, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("start", "end", "granularity", "errors"),
    [
        ("2026-04-30", "2026-03-01", "month", {"end"}),
        ("2026-03-01", "2026-04-30", "day", {"granularity"}),
        ("2026-02-30", "2026-04-30", "month", {"start"}),
        ("yesterday", "2026-04-30", "fortnight", {"start", "granularity"}),
        ("2026-04-30", "2026-03-01", "fortnight", {"end", "granularity"}),
        ("2000-01-01", "2026-04-30", "month", {"end"}),
        ("2021-01-01", "2026-04-30", "week", {"granularity"}),
        ("0001-01-01", "2026-04-30", "week", {"start"}),
    ],
)
def test_a_period_that_is_not_valid_is_refused_naming_the_field(start, end, granularity, errors):
    with pytest.raises(ValidationFailed) as refused:
        reports.period(start, end, granularity)
    assert set(refused.value.errors) == errors


# The daily snapshot and the trend.


def snapshot_rows() -> list[tuple]:
    return sorted(
        PipelineSnapshot.objects.filter(pipeline__code="b2b-sales").values_list(
            "day",
            "stage__code",
            "owner__username",
            "currency",
            "records",
            "amount",
            "weighted_amount",
        )
    )


def test_a_snapshot_records_the_open_value_per_stage_owner_and_currency_once(pipeline):
    day = dt.date(2026, 5, 10)
    written = snapshots.take_snapshot(day)
    assert written == 4
    assert snapshot_rows() == [
        (day, "needs-analysis", "sales", "KRW", 2, Decimal("14000000.00"), Decimal("3500000.00")),
        (day, "proposal", "sales", "KRW", 1, Decimal("20000000.00"), Decimal("8000000.00")),
        (day, "prospecting", "colleague", "USD", 1, Decimal("5000.50"), Decimal("500.05")),
        (day, "prospecting", "outsider", "KRW", 1, Decimal("50000000.00"), Decimal("5000000.00")),
    ]
    assert snapshots.take_snapshot(day) == 0
    assert len(snapshot_rows()) == 4


def test_two_workers_writing_the_same_day_at_once_write_each_row_once(pipeline):
    # Both passed the "already taken?" check before either wrote: the unique key decides.
    subject = subjects.get("opportunity")
    day = dt.date(2026, 5, 10)
    assert snapshots._insert(pipeline, subject, day) == 4
    assert snapshots._insert(pipeline, subject, day) == 0
    assert len(snapshot_rows()) == 4


def test_the_sweep_takes_yesterdays_snapshot_once_after_midnight(
    pipeline, time_machine, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(snapshots, "_done_day", None)
    # 00:05 on 12 May in Seoul.
    time_machine.move_to(dt.datetime(2026, 5, 11, 15, 5, tzinfo=dt.UTC), tick=False)
    assert snapshots.sweep_snapshots() == 4
    assert {row[0] for row in snapshot_rows()} == {dt.date(2026, 5, 11)}
    with django_assert_num_queries(0):
        assert snapshots.sweep_snapshots() == 0
    # The sweep loop runs it with the others.
    time_machine.move_to(dt.datetime(2026, 5, 12, 15, 5, tzinfo=dt.UTC), tick=False)
    assert sweep_once()["pipeline-snapshots"] == 4
    assert {row[0] for row in snapshot_rows()} == {dt.date(2026, 5, 11), dt.date(2026, 5, 12)}


def test_a_new_worker_finds_the_day_done_without_writing_again(pipeline, monkeypatch):
    day = dt.date(2026, 5, 10)
    snapshots.take_snapshot(day)
    monkeypatch.setattr(snapshots, "_done_day", None)
    assert snapshots.take_snapshot(day) == 0
    assert len(snapshot_rows()) == 4


def test_the_trend_sums_the_snapshots_per_day_and_currency(
    admin, sales, deals, pipeline, time_machine
):
    snapshots.take_snapshot(dt.date(2026, 5, 10))
    # The next day B is won and A's amount goes back up to 10 million.
    time_machine.move_to(history.day(71), tick=False)
    b = deals["B"]
    b.refresh_from_db()
    crm.update(sales, "opportunity", b.pk, {"status": "won"}, version=b.version)
    a = deals["A"]
    a.refresh_from_db()
    crm.update(sales, "opportunity", a.pk, {"amount": Decimal(10_000_000)}, version=a.version)
    snapshots.take_snapshot(dt.date(2026, 5, 11))
    period = reports.Period(dt.date(2026, 5, 1), dt.date(2026, 5, 31), "month")
    trend = reports.trend(admin, pipeline, period.start, period.end)

    def points(report):
        return {
            s.currency: [(p.day, p.records, p.amount, p.weighted) for p in s.points]
            for s in report.series
        }

    assert points(trend) == {
        "KRW": [
            (dt.date(2026, 5, 10), 4, Decimal("84000000.00"), Decimal("16500000.00")),
            (dt.date(2026, 5, 11), 3, Decimal("66000000.00"), Decimal("9000000.00")),
        ],
        "USD": [
            (dt.date(2026, 5, 10), 1, Decimal("5000.50"), Decimal("500.05")),
            (dt.date(2026, 5, 11), 1, Decimal("5000.50"), Decimal("500.05")),
        ],
    }
    # A salesperson's trend counts the rows of their own deals only.
    assert points(reports.trend(sales, pipeline, period.start, period.end)) == {
        "KRW": [
            (dt.date(2026, 5, 10), 3, Decimal("34000000.00"), Decimal("11500000.00")),
            (dt.date(2026, 5, 11), 2, Decimal("16000000.00"), Decimal("4000000.00")),
        ],
    }
    # Days outside the period are left out.
    may_10 = reports.Period(dt.date(2026, 5, 10), dt.date(2026, 5, 10), "month")
    assert [
        len(s.points) for s in reports.trend(admin, pipeline, may_10.start, may_10.end).series
    ] == [1, 1]
