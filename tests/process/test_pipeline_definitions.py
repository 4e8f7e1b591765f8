"""Blackout windows of pipelines: defining them, and which of them cover a day or a period."""

import datetime as dt

import pytest

from tests import factories
from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Role
from trellis.process.pipelines import services
from trellis.process.pipelines.models import BlackoutWindow, Pipeline, Stage

D = dt.date


@pytest.fixture
def sales_pipeline(db) -> Pipeline:
    return Pipeline.objects.get(code="b2b-sales")


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def window(admin, pipeline: Pipeline, **data) -> BlackoutWindow:
    return services.save_blackout(admin, pipeline.pk, {"name": "Blackout", **data})


def rows() -> list[dict]:
    return list(BlackoutWindow.objects.order_by("pk").values())


# Defining windows.


def test_an_admin_adds_fixed_dates_and_weeks_of_every_quarter(admin, sales_pipeline):
    holidays = services.save_blackout(
        admin,
        sales_pipeline.pk,
        {
            "name": "Year-end holidays",
            "name_ko": "연말 휴가",
            "starts_on": "2026-12-24",
            "ends_on": D(2027, 1, 2),
        },
    )
    travel = services.save_blackout(
        admin,
        sales_pipeline.pk,
        {
            "name": "No travel approvals",
            "stage_id": stage("b2b-sales", "negotiation").pk,
            "quarter_week_from": 12,
            "quarter_week_to": 14,
        },
    )
    holidays.refresh_from_db()
    travel.refresh_from_db()
    assert (holidays.starts_on, holidays.ends_on, holidays.stage) == (
        D(2026, 12, 24),
        D(2027, 1, 2),
        None,
    )
    assert holidays.quarter_week_from is None
    assert (travel.quarter_week_from, travel.quarter_week_to) == (12, 14)
    assert travel.stage == stage("b2b-sales", "negotiation")
    assert travel.starts_on is None
    created = AuditEvent.objects.get(object_id=travel.pk, action="created")
    assert created.actor == admin
    assert created.changes["quarter_week_from"] == [None, 12]


def test_changing_a_window_keeps_what_is_left_out_and_may_switch_to_weeks(admin, sales_pipeline):
    made = window(admin, sales_pipeline, starts_on="2026-03-01", ends_on="2026-03-10")
    services.save_blackout(admin, sales_pipeline.pk, {"name": "Renamed"}, pk=made.pk)
    made.refresh_from_db()
    assert (made.name, made.starts_on) == ("Renamed", D(2026, 3, 1))
    services.save_blackout(
        admin,
        sales_pipeline.pk,
        {"starts_on": None, "ends_on": None, "quarter_week_from": 1, "quarter_week_to": 2},
        pk=made.pk,
    )
    made.refresh_from_db()
    assert (made.starts_on, made.quarter_week_from, made.quarter_week_to) == (None, 1, 2)
    updated = AuditEvent.objects.filter(object_id=made.pk, action="updated").latest("id")
    assert updated.changes["starts_on"] == ["2026-03-01", None]


def test_an_admin_deletes_a_window_and_the_audit_log_keeps_it(admin, sales_pipeline):
    made = window(admin, sales_pipeline, quarter_week_from=13, quarter_week_to=13)
    services.delete_blackout(admin, sales_pipeline.pk, made.pk)
    assert not BlackoutWindow.objects.exists()
    deleted = AuditEvent.objects.get(object_id=made.pk, action="deleted")
    assert deleted.changes["quarter_week_from"] == [13, None]


@pytest.mark.parametrize(
    "data, field, message",
    [
        (
            {"starts_on": "2026-03-10", "ends_on": "2026-03-01"},
            "ends_on",
            "The window ends before it starts.",
        ),
        ({"starts_on": "2026-03-10"}, "ends_on", "Give the last day too."),
        ({"ends_on": "2026-03-10"}, "starts_on", "Give the first day too."),
        ({"starts_on": "2026-02-30", "ends_on": "2026-03-01"}, "starts_on", "YYYY-MM-DD"),
        ({"starts_on": "10.3.2026", "ends_on": "2026-03-11"}, "starts_on", "YYYY-MM-DD"),
        ({"starts_on": 20260301, "ends_on": "2026-03-11"}, "starts_on", "YYYY-MM-DD"),
        (
            {"quarter_week_from": 12, "quarter_week_to": 11},
            "quarter_week_to",
            "The last week comes before the first.",
        ),
        ({"quarter_week_from": 0, "quarter_week_to": 3}, "quarter_week_from", "from 1 to 14"),
        ({"quarter_week_from": 12, "quarter_week_to": 15}, "quarter_week_to", "from 1 to 14"),
        ({"quarter_week_from": True, "quarter_week_to": 3}, "quarter_week_from", "from 1 to 14"),
        ({"quarter_week_to": 3}, "quarter_week_from", "Give the first week too."),
        (
            {
                "starts_on": "2026-03-01",
                "ends_on": "2026-03-02",
                "quarter_week_from": 1,
                "quarter_week_to": 2,
            },
            "__all__",
            "not both",
        ),
        ({}, "__all__", "Give fixed dates, or weeks of every quarter."),
        ({"name": "  ", "quarter_week_from": 1, "quarter_week_to": 2}, "name", "Give a name."),
        ({"name": "x" * 201, "quarter_week_from": 1, "quarter_week_to": 2}, "name", "At most"),
        ({"colour": "red", "quarter_week_from": 1, "quarter_week_to": 2}, "colour", "Unknown"),
        (
            {"stage_id": "renewal:offer", "quarter_week_from": 1, "quarter_week_to": 2},
            "stage_id",
            "Choose a stage of this pipeline",
        ),
        (
            {"stage_id": 2**64, "quarter_week_from": 1, "quarter_week_to": 2},
            "stage_id",
            "Choose a stage of this pipeline",
        ),
        (
            {"stage_id": "9999999", "quarter_week_from": 1, "quarter_week_to": 2},
            "stage_id",
            "Choose a stage of this pipeline",
        ),
    ],
)
def test_a_bad_window_is_refused_with_the_field_and_nothing_is_saved(
    admin, sales_pipeline, data, field, message
):
    if data.get("stage_id") == "renewal:offer":
        data["stage_id"] = stage("renewal", "offer").pk
    with pytest.raises(ValidationFailed) as raised:
        services.save_blackout(admin, sales_pipeline.pk, {"name": "Blackout", **data})
    assert message in " ".join(raised.value.errors[field])
    assert rows() == []


def test_a_refused_change_leaves_the_window_as_it_was(admin, sales_pipeline):
    made = window(admin, sales_pipeline, quarter_week_from=2, quarter_week_to=3)
    before = rows()
    with pytest.raises(ValidationFailed):
        services.save_blackout(
            admin, sales_pipeline.pk, {"name": "New", "quarter_week_to": 1}, pk=made.pk
        )
    assert rows() == before


def test_only_admins_define_windows(admin, manager, sales, sales_pipeline):
    made = window(admin, sales_pipeline, quarter_week_from=2, quarter_week_to=3)
    before = rows()
    for user in (manager, sales):
        with pytest.raises(PermissionDenied):
            window(user, sales_pipeline, quarter_week_from=1, quarter_week_to=1)
        with pytest.raises(PermissionDenied):
            services.save_blackout(user, sales_pipeline.pk, {"name": "Mine"}, pk=made.pk)
        with pytest.raises(PermissionDenied):
            services.delete_blackout(user, sales_pipeline.pk, made.pk)
    assert rows() == before


def test_a_window_is_reached_only_through_its_own_pipeline(admin, sales_pipeline):
    made = window(admin, sales_pipeline, quarter_week_from=2, quarter_week_to=3)
    renewal = Pipeline.objects.get(code="renewal")
    with pytest.raises(NotFound):
        services.save_blackout(admin, renewal.pk, {"name": "Moved"}, pk=made.pk)
    with pytest.raises(NotFound):
        services.delete_blackout(admin, renewal.pk, made.pk)
    with pytest.raises(NotFound):
        window(admin, Pipeline(pk=999_999), quarter_week_from=1, quarter_week_to=1)
    assert BlackoutWindow.objects.get().name == "Blackout"


def test_a_retired_stage_is_not_offered_for_a_new_window(admin, sales):
    pipeline = services.save_pipeline(
        admin,
        {
            "object_type": "opportunity",
            "code": "partner-sales",
            "name": "Partner sales",
            "stages": [
                {"code": "intro", "name": "Introduced"},
                {"code": "deal", "name": "Deal", "kind": "won"},
            ],
        },
    )
    intro, deal = pipeline.stages.order_by("order")
    record = factories.opportunity(sales)
    record.__class__.objects.filter(pk=record.pk).update(stage=None)
    services.move(admin, "opportunity", record.pk, intro.pk, version=1)
    record.refresh_from_db()
    services.move(admin, "opportunity", record.pk, deal.pk, version=record.version)
    services.save_pipeline(
        admin,
        {"stages": [{"code": "new", "name": "New"}, {"id": deal.pk}]},
        pk=pipeline.pk,
        version=1,
    )
    with pytest.raises(ValidationFailed) as raised:
        window(admin, pipeline, stage_id=intro.pk, quarter_week_from=1, quarter_week_to=1)
    assert raised.value.errors["stage_id"] == ["This stage is retired."]


# Which windows cover a day.


def test_weeks_of_the_quarter_restart_on_the_first_day_of_each_quarter(admin, sales_pipeline):
    late = window(
        admin, sales_pipeline, name="Weeks 12-14", quarter_week_from=12, quarter_week_to=14
    )
    first = window(admin, sales_pipeline, name="Week 1", quarter_week_from=1, quarter_week_to=1)

    def names(day: dt.date) -> list[str]:
        return [w.name for w in services.blackouts_on(sales_pipeline, day)]

    # Q1 2026 runs Jan 1 to Mar 31; its week 12 starts on day 78, Mar 19.
    assert names(D(2026, 3, 18)) == []
    assert names(D(2026, 3, 19)) == ["Weeks 12-14"]
    assert names(D(2026, 3, 31)) == ["Weeks 12-14"]
    # The next day is in week 1 of Q2.
    assert names(D(2026, 4, 1)) == ["Week 1"]
    assert names(D(2026, 4, 7)) == ["Week 1"]
    assert names(D(2026, 4, 8)) == []
    # Across the turn of the year too.
    assert names(D(2026, 12, 31)) == ["Weeks 12-14"]
    assert names(D(2027, 1, 1)) == ["Week 1"]
    assert services.blackouts_on(sales_pipeline.pk, D(2026, 3, 31)) == [late]
    assert services.blackouts_on(sales_pipeline, D(2026, 4, 1)) == [first]


def test_week_14_holds_only_the_last_day_of_a_long_quarter(admin, sales_pipeline):
    window(admin, sales_pipeline, quarter_week_from=14, quarter_week_to=14)
    # Q1 2026 has 90 days: Mar 31 is day 90, still week 13.
    assert services.week_of_quarter(D(2026, 3, 31)) == 13
    assert services.blackouts_on(sales_pipeline, D(2026, 3, 31)) == []
    # Q3 has 92 days: Sep 29 is day 91, week 13, and Sep 30 day 92, week 14.
    assert services.week_of_quarter(D(2026, 9, 29)) == 13
    assert services.week_of_quarter(D(2026, 9, 30)) == 14
    assert services.blackouts_on(sales_pipeline, D(2026, 9, 29)) == []
    assert len(services.blackouts_on(sales_pipeline, D(2026, 9, 30))) == 1
    assert services.blackouts_on(sales_pipeline, D(2026, 10, 1)) == []


def test_fixed_dates_cover_their_days_across_a_quarter_boundary(admin, sales_pipeline):
    made = window(admin, sales_pipeline, starts_on="2026-06-25", ends_on="2026-07-03")
    assert services.blackouts_on(sales_pipeline, D(2026, 6, 24)) == []
    assert services.blackouts_on(sales_pipeline, D(2026, 6, 25)) == [made]
    assert services.blackouts_on(sales_pipeline, D(2026, 6, 30)) == [made]
    assert services.blackouts_on(sales_pipeline, D(2026, 7, 1)) == [made]
    assert services.blackouts_on(sales_pipeline, D(2026, 7, 3)) == [made]
    assert services.blackouts_on(sales_pipeline, D(2026, 7, 4)) == []


def test_a_stage_window_counts_for_its_pipeline_and_other_pipelines_windows_do_not(
    admin, sales_pipeline
):
    mine = window(
        admin,
        sales_pipeline,
        stage_id=stage("b2b-sales", "proposal").pk,
        quarter_week_from=1,
        quarter_week_to=14,
    )
    window(admin, Pipeline.objects.get(code="renewal"), quarter_week_from=1, quarter_week_to=14)
    assert services.blackouts_on(sales_pipeline, D(2026, 5, 5)) == [mine]


def test_the_days_a_window_covers_in_a_period(admin, sales_pipeline):
    weeks = window(admin, sales_pipeline, name="Q end", quarter_week_from=12, quarter_week_to=14)
    fixed = window(admin, sales_pipeline, name="Fair", starts_on="2026-04-20", ends_on="2026-05-10")
    window(admin, sales_pipeline, name="Later", starts_on="2026-09-01", ends_on="2026-09-02")
    # The period is [Mar 1, May 1): Q1's last weeks, and the start of the fair.
    found = services.blackouts_during(sales_pipeline, D(2026, 3, 1), D(2026, 5, 1))
    assert found == [
        (weeks, [(D(2026, 3, 19), D(2026, 3, 31))]),
        (fixed, [(D(2026, 4, 20), D(2026, 4, 30))]),
    ]
    # A whole year: the weeks in every quarter, clipped to each quarter's end.
    assert services.blackout_spans(weeks, D(2026, 1, 1), D(2027, 1, 1)) == [
        (D(2026, 3, 19), D(2026, 3, 31)),
        (D(2026, 6, 17), D(2026, 6, 30)),
        (D(2026, 9, 16), D(2026, 9, 30)),
        (D(2026, 12, 17), D(2026, 12, 31)),
    ]
    assert services.blackout_spans(weeks, D(2026, 4, 1), D(2026, 4, 1)) == []


def test_the_support_role_cannot_define_windows_either(db, sales_pipeline):
    agent = factories.user(Role.SUPPORT)
    with pytest.raises(PermissionDenied):
        window(agent, sales_pipeline, quarter_week_from=1, quarter_week_to=1)
