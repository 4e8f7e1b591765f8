"""Watching the process: alert rules fire once per occurrence, clear when their cause goes away,
and tell the owner (and their manager) in the app and in a daily digest.

The clock moves through a whole sales cycle; the sweep runs at many points, twice each time.
"""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import F
from django.utils import translation
from django.utils.translation import gettext

from tests import factories
from trellis.core import calendar
from trellis.core import sweep as sweeper
from trellis.core.errors import PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import Role, User
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.mail.models import OutboundMessage
from trellis.process import services as tasks
from trellis.process.models import Notification
from trellis.process.pipelines import alerts, services
from trellis.process.pipelines.models import (
    Alert,
    AlertNotice,
    AlertRule,
    AlertTimer,
    Pipeline,
    Stage,
)

from ..concurrency import OwnConnections

# 09:00 in Seoul, Monday 2 March 2026.
START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)


def day(n: float, minutes: int = 0) -> dt.datetime:
    return START + dt.timedelta(days=n, minutes=minutes)


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def heard(django_capture_on_commit_callbacks):
    """``with heard(): ...``: the events of the block are dispatched when it ends, as they
    would be after the commit."""

    def block():
        return django_capture_on_commit_callbacks(execute=True)

    return block


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def alerts_of(record) -> list[Alert]:
    content_type = ContentType.objects.get_for_model(type(record))
    return list(Alert.objects.filter(content_type=content_type, object_id=record.pk).order_by("id"))


def open_kinds(record) -> list[str]:
    return sorted(a.kind for a in alerts_of(record) if a.cleared_at is None)


def notes(user) -> list[str]:
    return list(
        Notification.objects.filter(user=user).order_by("id").values_list("text", flat=True)
    )


def run_sweeps() -> int:
    """Plan, then sweep twice: the second sweep must find nothing left to fire."""
    alerts.plan_all()
    fired = alerts.sweep()
    assert alerts.sweep() == 0
    return fired


def move(actor, deal, code: str):
    deal.refresh_from_db()
    target = stage(deal.stage.pipeline.code, code)
    return services.move(actor, "opportunity", deal.pk, target.pk, version=deal.version)


def update(actor, deal, **data):
    deal.refresh_from_db()
    return crm.update(actor, "opportunity", deal.pk, data, version=deal.version)


def test_a_whole_sales_cycle_fires_every_alert_once_and_clears_each(sales, manager, clock, heard):
    at = clock.move_to

    # Day 0: a deal, with a first task due on day 5.
    with heard():
        deal = factories.opportunity(
            sales,
            name="Hanbit ERP",
            amount=Decimal(50_000_000),
            expected_close_date=dt.date(2026, 4, 10),
        )
        first = tasks.create_task(
            sales,
            {
                "title": "Send the agenda",
                "user_id": sales.pk,
                "record_type": "opportunity",
                "record_id": deal.pk,
                "due_at": day(5).isoformat(),
            },
        )
    assert run_sweeps() == 0
    assert open_kinds(deal) == []

    at(day(1), tick=False)
    with heard():
        factories.activity(sales, deal, kind="call")

    at(day(5, minutes=-1), tick=False)
    assert run_sweeps() == 0
    at(day(5, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["task_overdue"]

    # Day 6: the task is done and no next step is planned; two days later that is an alert.
    at(day(6), tick=False)
    with heard():
        tasks.complete(sales, first.pk, thread_finished=True)
    assert open_kinds(deal) == []
    at(day(8, minutes=-1), tick=False)
    assert run_sweeps() == 0
    at(day(8, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["no_next_step"]

    at(day(9), tick=False)
    with heard():
        tasks.create_task(
            sales,
            {
                "title": "Prepare the proposal",
                "user_id": sales.pk,
                "record_type": "opportunity",
                "record_id": deal.pk,
            },
        )
    assert open_kinds(deal) == []

    # Forward, back, and forward again.
    at(day(10), tick=False)
    with heard():
        move(manager, deal, "proposal")
    at(day(12), tick=False)
    with heard():
        move(manager, deal, "needs-analysis")
    assert open_kinds(deal) == ["moved_backward"]
    assert run_sweeps() == 0
    at(day(13), tick=False)
    with heard():
        move(manager, deal, "proposal")
    assert open_kinds(deal) == []

    # Stalled: the last activity was on day 1.
    at(day(15, minutes=-1), tick=False)
    assert run_sweeps() == 0
    at(day(15, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["stalled"]
    at(day(16), tick=False)
    with heard():
        factories.activity(sales, deal, kind="note")
    assert open_kinds(deal) == []

    # The close date pushed out three times.
    for n, date in ((20, "2026-04-20"), (21, "2026-04-25"), (22, "2026-04-30")):
        at(day(n), tick=False)
        with heard():
            update(sales, deal, expected_close_date=date)
    assert open_kinds(deal) == ["close_pushed"]

    # The amount drops by 10% (quiet), then by a third (an alert), then partly recovers.
    at(day(23), tick=False)
    with heard():
        update(sales, deal, amount="45000000")
    assert open_kinds(deal) == ["close_pushed"]
    at(day(24), tick=False)
    with heard():
        update(sales, deal, amount="30000000")
    assert open_kinds(deal) == ["amount_dropped", "close_pushed"]
    at(day(25), tick=False)
    with heard():
        update(sales, deal, amount="40000000")
    assert open_kinds(deal) == ["close_pushed"]

    # Stalled again (the note of day 16), and cleared by a meeting.
    at(day(30, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["close_pushed", "stalled"]
    at(day(31), tick=False)
    with heard():
        factories.activity(sales, deal, kind="meeting")

    # Three weeks in the proposal stage (entered on day 13).
    at(day(34, minutes=-1), tick=False)
    assert run_sweeps() == 0
    at(day(34, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["close_pushed", "over_dwell"]
    at(day(35), tick=False)
    with heard():
        move(sales, deal, "negotiation")
    assert open_kinds(deal) == ["close_pushed"]

    # Activities keep the deal from stalling while it waits for its close date (30 April).
    for n in (40, 50, 59):
        at(day(n), tick=False)
        with heard():
            factories.activity(sales, deal, kind="email")
        assert run_sweeps() == 0
    at(dt.datetime(2026, 4, 30, 14, 59, tzinfo=dt.UTC), tick=False)  # 23:59 in Seoul
    assert run_sweeps() == 0
    at(dt.datetime(2026, 4, 30, 15, 1, tzinfo=dt.UTC), tick=False)  # 1 May, 00:01
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["close_pushed", "past_close"]

    # A fourth push: the date is no longer past; the push alert is already open.
    at(day(61), tick=False)
    with heard():
        update(sales, deal, expected_close_date="2026-05-20")
    assert open_kinds(deal) == ["close_pushed"]

    # Thirty days in negotiation (entered on day 35), then the deal is won.
    at(day(62), tick=False)
    with heard():
        factories.activity(sales, deal, kind="call")
    at(day(65, minutes=1), tick=False)
    assert run_sweeps() == 1
    assert open_kinds(deal) == ["close_pushed", "over_dwell"]
    at(day(66), tick=False)
    with heard():
        move(sales, deal, "won")
    assert open_kinds(deal) == []
    assert not AlertTimer.objects.filter(object_id=deal.pk, due_at__isnull=False).exists()

    at(day(120), tick=False)
    assert run_sweeps() == 0

    fired = alerts_of(deal)
    assert sorted(a.kind for a in fired) == sorted(
        [
            "task_overdue",
            "no_next_step",
            "moved_backward",
            "stalled",
            "stalled",
            "close_pushed",
            "amount_dropped",
            "over_dwell",
            "over_dwell",
            "past_close",
        ]
    )
    assert all(a.cleared_at is not None for a in fired)
    assert {a.owner for a in fired} == {sales}
    by_kind = {a.kind: a for a in fired}
    assert by_kind["task_overdue"].fired_at == day(5, minutes=1)
    assert by_kind["task_overdue"].cleared_at == day(6)
    assert by_kind["moved_backward"].cleared_at == day(13)
    assert by_kind["amount_dropped"].details["percent"] == 33
    assert by_kind["close_pushed"].details == {"times": 3, "close_date": "2026-04-30"}
    assert by_kind["close_pushed"].cleared_at == day(66)

    # The owner hears of everything but what they did themselves; the manager of pushes and
    # drops (the rules of the default sales pipeline say so).
    owner_notes = [n for n in notes(sales) if n.startswith("Hanbit ERP:")]
    assert owner_notes == [
        "Hanbit ERP: activity deadline missed: “Send the agenda” was due 2026-03-07 09:00",
        "Hanbit ERP: no next step planned: no open task",
        "Hanbit ERP: moved back from Proposal to Needs analysis",
        "Hanbit ERP: stalled: no activity for 14 days",
        "Hanbit ERP: stalled: no activity for 14 days",
        "Hanbit ERP: over the expected time in Proposal (21 days)",
        "Hanbit ERP: past its expected close date, 2026-04-30",
        "Hanbit ERP: over the expected time in Negotiation (30 days)",
    ]
    assert notes(manager) == [
        "Hanbit ERP: expected close date pushed out 3 times, now 2026-04-30",
        "Hanbit ERP: amount down 33% from 45,000,000 KRW to 30,000,000 KRW",
    ]
    link = Notification.objects.filter(user=sales).latest("id").link
    assert link == f"/crm/opportunities/{deal.pk}/"


def test_the_sweep_registered_with_the_timer_loop_fires_once(sales, clock, heard):
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    clock.move_to(day(3), tick=False)
    first = sweeper.sweep_once()
    assert first["pipeline-alert-planning"] >= 0
    assert first["pipeline-alerts"] >= 1
    assert sweeper.sweep_once()["pipeline-alerts"] == 0
    assert "past_close" in open_kinds(deal)


def test_a_sweep_that_dies_half_way_loses_nothing_and_fires_nothing_twice(
    sales, clock, heard, monkeypatch
):
    with heard():
        deals = [
            factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3)) for _ in range(3)
        ]
    alerts.plan_all()
    clock.move_to(day(1, minutes=16 * 60), tick=False)  # 01:00 on 4 March: past the close date
    monkeypatch.setattr(alerts, "BATCH", 1)
    real_tell = alerts._tell
    calls = []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the worker was killed")
        return real_tell(*args, **kwargs)

    monkeypatch.setattr(alerts, "_tell", dies_on_the_second_batch)
    assert sweeper.sweep_once()["pipeline-alerts"] == 0  # failed, logged, retried next time
    assert [len(alerts_of(deal)) for deal in deals] == [1, 0, 0]
    monkeypatch.setattr(alerts, "_tell", real_tell)
    assert alerts.sweep() == 2
    assert alerts.sweep() == 0
    assert [open_kinds(deal) for deal in deals] == [["past_close"]] * 3
    assert Notification.objects.filter(user=sales, text__contains="past its").count() == 3


def test_a_timer_whose_cause_went_away_unseen_does_not_fire(sales, clock, heard):
    """The sweep re-checks the record: a deal closed without its events being heard (e.g. a
    bulk import) has nothing to fire."""
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    Opportunity.objects.filter(pk=deal.pk).update(stage=stage("b2b-sales", "won"))
    clock.move_to(day(40), tick=False)
    assert alerts.sweep() == 0
    assert alerts_of(deal) == []
    assert not AlertTimer.objects.filter(object_id=deal.pk).exists()


def test_a_cause_that_comes_back_opens_its_alert_again(sales, manager, clock, heard):
    """A deal closed and reopened while still past its close date: the same occurrence opens
    again instead of firing a second alert."""
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    clock.move_to(day(3), tick=False)
    assert run_sweeps() >= 1
    [past] = [a for a in alerts_of(deal) if a.kind == "past_close"]
    with heard():
        move(manager, deal, "lost")
    past.refresh_from_db()
    assert past.cleared_at == day(3)
    clock.move_to(day(4), tick=False)
    with heard():
        move(manager, deal, "proposal")
    assert run_sweeps() >= 1
    past.refresh_from_db()
    assert (past.cleared_at, past.fired_at) == (None, day(4))
    assert [a.kind for a in alerts_of(deal)].count("past_close") == 1


def test_business_day_dwell_skips_weekends_and_korean_holidays(sales, time_machine, heard):
    # Wednesday 23 September 2026, 09:00 in Seoul; Chuseok is Thursday 24 to Saturday 26.
    time_machine.move_to(dt.datetime(2026, 9, 23, 0, 0, tzinfo=dt.UTC), tick=False)
    Stage.objects.filter(pipeline__code="lead-qualification", code="new").update(
        max_dwell_days=3, dwell_in_business_days=True
    )
    with heard():
        lead = factories.lead(sales)

    def dwell_alerts() -> list[Alert]:
        return [a for a in alerts_of(lead) if a.kind == "over_dwell"]

    # Three calendar days later, on the Saturday, nothing; nor on Tuesday 29th.
    for when in (
        dt.datetime(2026, 9, 26, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 9, 29, 0, 59, tzinfo=dt.UTC),
    ):
        time_machine.move_to(when, tick=False)
        run_sweeps()
        assert dwell_alerts() == []
    # Monday 28th, Tuesday 29th and Wednesday 30th are the three business days.
    time_machine.move_to(dt.datetime(2026, 9, 30, 0, 1, tzinfo=dt.UTC), tick=False)
    run_sweeps()
    [alert] = dwell_alerts()
    assert alert.fired_at == dt.datetime(2026, 9, 30, 0, 1, tzinfo=dt.UTC)
    assert alert.details["business"] is True


def test_adding_business_days():
    seoul = dt.timezone(dt.timedelta(hours=9))
    friday = dt.datetime(2026, 2, 13, 10, 0, tzinfo=seoul)  # Seollal is 16 to 18 February
    assert calendar.add_days(friday, 1, business=True) == dt.datetime(
        2026, 2, 19, 10, 0, tzinfo=seoul
    )
    assert calendar.add_days(friday, 1) == dt.datetime(2026, 2, 14, 10, 0, tzinfo=seoul)
    saturday = dt.datetime(2026, 3, 7, 15, 30, tzinfo=seoul)
    assert calendar.add_days(saturday, 1, business=True) == dt.datetime(
        2026, 3, 9, 15, 30, tzinfo=seoul
    )


def test_a_sweep_with_nothing_due_costs_a_few_queries_however_many_records(
    sales, clock, heard, django_assert_max_num_queries
):
    def make(count: int) -> None:
        with heard():
            for _ in range(count):
                factories.opportunity(sales, expected_close_date=dt.date(2026, 12, 31))
        alerts.plan_all()

    make(3)
    clock.move_to(day(0.5), tick=False)  # after the digest hour, before anything is due
    with django_assert_max_num_queries(3):
        assert alerts.sweep() == 0
        assert alerts.plan() == 0
        assert alerts.send_digests() == 0
    make(40)
    assert AlertTimer.objects.filter(due_at__isnull=False).count() >= 40 * 3
    with django_assert_max_num_queries(3):
        assert alerts.sweep() == 0
        assert alerts.plan() == 0
        assert alerts.send_digests() == 0


def test_a_new_rule_is_planned_over_existing_records_in_batches(sales, admin, clock):
    """Records made without events (an import) are watched once a rule is planned; the
    planning goes a batch at a time from a cursor kept on the rule."""
    deals = [
        factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 5)) for _ in range(5)
    ]
    pipeline = Pipeline.objects.get(code="b2b-sales")
    rule = AlertRule.objects.get(pipeline=pipeline, kind="past_close")
    assert rule.planned_version is None
    assert alerts.plan(limit=2) > 0
    rule.refresh_from_db()
    assert rule.plan_cursor > 0
    alerts.plan_all()
    rule.refresh_from_db()
    assert (rule.planned_version, rule.plan_cursor) == (pipeline.version, 0)
    clock.move_to(day(4), tick=False)
    assert alerts.sweep() >= 5
    assert all("past_close" in open_kinds(deal) for deal in deals)

    # Changing the threshold plans the rule again; what fired stays fired.
    rules = alerts.save_rules(
        admin, pipeline.pk, [{"kind": "past_close", "threshold": 10, "version": rule.version}]
    )
    rule.refresh_from_db()
    assert rule.planned_version is None
    assert [r.threshold for r in rules if r.kind == "past_close"] == [10]
    alerts.plan_all()
    assert alerts.sweep() == 0
    assert all(open_kinds(deal).count("past_close") == 1 for deal in deals)


def test_a_shorter_dwell_limit_on_the_pipeline_re_plans_the_dwell_timers(sales, clock, heard):
    with heard():
        deal = factories.opportunity(sales)
    alerts.plan_all()
    clock.move_to(day(6), tick=False)
    assert "over_dwell" not in open_kinds(deal)
    # An admin shortens the first stage's limit from 30 to 5 days (a new pipeline version).
    pipeline = Pipeline.objects.get(code="b2b-sales")
    Stage.objects.filter(pipeline=pipeline, code="prospecting").update(max_dwell_days=5)
    Pipeline.objects.filter(pk=pipeline.pk).update(version=F("version") + 1)
    assert alerts.plan_all() > 0
    assert alerts.sweep() >= 1
    [dwell] = [a for a in alerts_of(deal) if a.kind == "over_dwell"]
    assert dwell.details["limit"] == 5
    assert alerts.plan_all() == 0


def test_a_deactivated_rule_clears_its_alerts_and_fires_no_more(sales, admin, clock, heard):
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    clock.move_to(day(3), tick=False)
    run_sweeps()
    assert "past_close" in open_kinds(deal)
    pipeline = Pipeline.objects.get(code="b2b-sales")
    rule = AlertRule.objects.get(pipeline=pipeline, kind="past_close")
    alerts.save_rules(
        admin, pipeline.pk, [{"kind": "past_close", "is_active": False, "version": rule.version}]
    )
    assert "past_close" not in open_kinds(deal)
    clock.move_to(day(30), tick=False)
    run_sweeps()
    assert "past_close" not in open_kinds(deal)


def test_owner_changes_follow_open_alerts(sales, other_sales, manager, clock, heard):
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    clock.move_to(day(3), tick=False)
    run_sweeps()
    with heard():
        update(manager, deal, owner_id=other_sales.pk)
    assert {a.owner for a in alerts_of(deal) if a.cleared_at is None} == {other_sales}


def test_a_deleted_record_loses_its_timers_and_alerts(sales, manager, clock, heard):
    with heard():
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 3, 3))
    clock.move_to(day(3), tick=False)
    run_sweeps()
    with heard():
        crm.delete(manager, "opportunity", deal.pk)
    assert not AlertTimer.objects.filter(object_id=deal.pk).exists()
    assert not Alert.objects.filter(object_id=deal.pk, cleared_at__isnull=True).exists()


# The daily digest.


def test_the_digest_lists_new_open_alerts_once_a_day_in_the_users_language(
    sales, manager, clock, heard, smtp_sink, django_capture_on_commit_callbacks
):
    User.objects.filter(pk=manager.pk).update(language="ko")
    with heard():
        deal = factories.opportunity(sales, name="한빛 ERP", amount=Decimal(10_000_000))
        update(sales, deal, amount="5000000")
        other = factories.opportunity(sales, name="Quiet deal", amount=Decimal(10_000_000))
        update(sales, other, amount="1000000")
        update(sales, other, amount="9500000")  # back within 20%: cleared before the digest
    assert AlertNotice.objects.filter(user=manager, digest_pending=True).count() == 2

    clock.move_to(START - dt.timedelta(hours=2), tick=False)  # 07:00 in Seoul
    assert alerts.send_digests() == 0
    clock.move_to(START + dt.timedelta(hours=1), tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.send_digests() == 1
        assert alerts.send_digests() == 0
    [mail] = [m for m in smtp_sink.messages if m.recipients == [manager.email]]
    with translation.override("ko"):
        assert mail.message["Subject"] == gettext("Pipeline alerts for %(day)s") % {
            "day": "2026-03-02"
        }
    assert "Pipeline alerts" not in mail.message["Subject"]
    text = mail.message.get_content()
    assert "한빛 ERP" in text and "Quiet deal" not in text
    assert f"/crm/opportunities/{deal.pk}/" in text
    assert not AlertNotice.objects.filter(digest_pending=True).exists()

    # A new alert later that day waits for tomorrow's digest.
    clock.move_to(START + dt.timedelta(hours=3), tick=False)
    with heard():
        third = factories.opportunity(sales, name="Third", amount=Decimal(10_000_000))
        update(sales, third, amount="100000")
    assert alerts.send_digests() == 0
    clock.move_to(START + dt.timedelta(days=1, hours=-1), tick=False)  # 08:00 next day
    assert alerts.send_digests() == 1
    assert alerts.send_digests() == 0
    with translation.override("ko"):
        subjects = {
            gettext("Pipeline alerts for %(day)s") % {"day": day}
            for day in ("2026-03-02", "2026-03-03")
        }
    assert OutboundMessage.objects.filter(subject__in=subjects).count() == 2


def test_no_digest_for_rules_without_it_or_people_without_mail(sales, manager, admin, clock, heard):
    pipeline = Pipeline.objects.get(code="b2b-sales")
    rule = AlertRule.objects.get(pipeline=pipeline, kind="amount_dropped")
    alerts.save_rules(
        admin,
        pipeline.pk,
        [{"kind": "amount_dropped", "email_digest": False, "version": rule.version}],
    )
    with heard():
        deal = factories.opportunity(sales, amount=Decimal(10_000_000))
        update(sales, deal, amount="10")
    assert Notification.objects.filter(user=manager).count() == 1
    assert not AlertNotice.objects.filter(digest_pending=True).exists()
    clock.move_to(day(0.5), tick=False)
    assert alerts.send_digests() == 0


# Rules.


def test_rules_are_validated_and_nothing_changes_on_bad_input(admin, sales):
    pipeline = Pipeline.objects.get(code="b2b-sales")
    before = list(AlertRule.objects.filter(pipeline=pipeline).values())
    stalled = AlertRule.objects.get(pipeline=pipeline, kind="stalled")
    with pytest.raises(ValidationFailed) as raised:
        alerts.save_rules(
            admin,
            pipeline.pk,
            [
                {"kind": "stalled", "threshold": -1, "version": stalled.version},
                {"kind": "sometimes", "threshold": 3},
                {"kind": "stalled", "threshold": 3},
                {"kind": "moved_backward", "notify_manager": "yes", "color": "red"},
            ],
        )
    assert raised.value.errors == {
        "rules.0.threshold": ["Give a whole number from 1 to 365."],
        "rules.1.kind": [
            "Unknown kind of alert. Choose one of: over_dwell, past_close, close_pushed, "
            "stalled, no_next_step, moved_backward, amount_dropped, task_overdue."
        ],
        "rules.2.kind": ["Give each kind of alert once."],
        "rules.3.color": ["Unknown field."],
        "rules.3.version": ["Send the version you edited."],
        "rules.3.notify_manager": ["Give true or false."],
    }
    lead_pipeline = Pipeline.objects.get(code="lead-qualification")
    with pytest.raises(ValidationFailed) as raised:
        alerts.save_rules(admin, lead_pipeline.pk, [{"kind": "amount_dropped"}])
    assert list(raised.value.errors) == ["rules.0.kind"]
    with pytest.raises(StaleVersion):
        alerts.save_rules(admin, pipeline.pk, [{"kind": "stalled", "threshold": 3, "version": 99}])
    with pytest.raises(PermissionDenied):
        alerts.save_rules(sales, pipeline.pk, [{"kind": "stalled", "threshold": 3, "version": 1}])
    assert list(AlertRule.objects.filter(pipeline=pipeline).values()) == before


def test_every_default_pipeline_ships_with_rules(db):
    rules = {
        code: sorted(
            AlertRule.objects.filter(pipeline__code=code, is_active=True).values_list(
                "kind", flat=True
            )
        )
        for code in ("lead-qualification", "b2b-sales", "renewal", "onboarding")
    }
    assert rules["b2b-sales"] == sorted(AlertRule.Kind.values)
    assert "amount_dropped" not in rules["lead-qualification"]
    assert "stalled" in rules["onboarding"]
    for code, kinds in rules.items():
        subject_kinds = alerts.kinds_for(
            services.subjects.get(Pipeline.objects.get(code=code).object_type)
        )
        assert set(kinds) <= set(subject_kinds)


# Two sweeps at once.


def test_two_sweeps_at_once_fire_each_alert_once(transactional_db, time_machine):
    time_machine.move_to(START, tick=False)
    # A pipeline of its own: a transactional test cannot count on the migrations' data.
    admin = factories.user(Role.ADMIN, username="racer-admin")
    factories.deal_pipeline(admin, "race", ["past_close"])
    owner = factories.user(Role.SALES, username="owner", team=factories.TeamFactory(name="T"))
    deals = [
        factories.opportunity(owner, expected_close_date=dt.date(2026, 3, 3)) for _ in range(12)
    ]
    alerts.plan_all()
    time_machine.move_to(day(3), tick=False)
    start = threading.Barrier(2, timeout=30)

    def sweep_now():
        start.wait()
        return alerts.sweep()

    outcomes = OwnConnections().run(sweep_now, sweep_now)
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert sum(outcomes) == 12, outcomes
    assert OwnConnections().run(sweep_now, sweep_now) == [0, 0]
    content_type = ContentType.objects.get_for_model(Opportunity)
    for deal in deals:
        kinds = list(
            Alert.objects.filter(content_type=content_type, object_id=deal.pk).values_list(
                "kind", flat=True
            )
        )
        assert kinds == ["past_close"], (connection.vendor, kinds)
    assert Notification.objects.filter(user=owner, text__contains="past its expected").count() == 12
