"""Reminders and escalations are durable timers counted in business hours and fired by the
sweep; a second sweep fires nothing twice."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from trellis.core import sweep
from trellis.process.approvals import services
from trellis.process.approvals.models import ApprovalAssignment, ApprovalStepRun
from trellis.process.models import Notification

from .conftest import deal, define, fresh, kinds, step

SEOUL = ZoneInfo("Asia/Seoul")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SEOUL)


def waiting(request) -> set[str]:
    return set(
        ApprovalAssignment.objects.filter(request=request, status="pending").values_list(
            "user__username", flat=True
        )
    )


def test_friday_evening_before_a_holiday_monday_times_out_on_tuesday(people, clock):
    define(
        people["admin"],
        steps=[step(timeout_hours=8, remind_before_hours=2, escalation="manager")],
    )
    clock.move_to(at(2026, 5, 22, 17, 0), tick=False)
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    run = ApprovalStepRun.objects.get(request=request)
    assert run.due_at == at(2026, 5, 26, 16, 0)
    assert run.remind_at == at(2026, 5, 26, 14, 0)

    clock.move_to(at(2026, 5, 25, 23, 0), tick=False)
    assert services.fire_due_timers() == 0
    clock.move_to(at(2026, 5, 26, 14, 0), tick=False)
    assert services.fire_due_timers() == 1
    assert services.fire_due_timers() == 0
    assert (
        Notification.objects.filter(user=people["boss"], text__startswith="Reminder").count() == 1
    )

    clock.move_to(at(2026, 5, 26, 16, 0), tick=False)
    assert sweep.sweep_once()["approval-timers"] == 1
    assert sweep.sweep_once()["approval-timers"] == 0
    assert waiting(request) == {"boss", "director"}
    assert kinds(request).count("escalated") == 1
    services.approve(people["director"], request.pk)
    assert fresh(request).status == "approved"


@pytest.mark.parametrize(("how", "status"), [("approve", "approved"), ("reject", "rejected")])
def test_a_timeout_can_approve_or_reject_automatically(people, clock, how, status):
    define(people["admin"], steps=[step(timeout_hours=2, escalation=how)])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    clock.move_to(at(2026, 3, 3, 12, 0), tick=False)
    assert services.fire_due_timers() == 1
    assert fresh(request).status == status
    assert services.fire_due_timers() == 0


def test_escalation_to_a_named_user_and_no_timer_after_a_decision(people, clock):
    finance = people["finance"]
    define(
        people["admin"],
        steps=[step(timeout_hours=1, escalation="user", escalate_to=finance.pk)],
    )
    first = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    second = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    services.approve(people["boss"], first.pk)
    clock.move_to(at(2026, 3, 3, 11, 0), tick=False)
    assert services.fire_due_timers() == 1
    assert waiting(second) == {"boss", "finance"}
    assert "escalated" not in kinds(first)


def test_the_inbox_marks_overdue_steps(people, clock):
    from trellis.process.approvals import queries

    define(people["admin"], steps=[step(timeout_hours=1)])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    assert queries.inbox_counts(people["boss"]) == {"waiting": 1, "overdue": 0}
    clock.move_to(at(2026, 3, 3, 11, 30), tick=False)
    [row] = queries.inbox(people["boss"])
    assert (row.request_id, row.overdue) == (request.pk, True)
    assert queries.inbox_counts(people["boss"]) == {"waiting": 1, "overdue": 1}


def test_a_reminder_without_escalation_is_sent_once_even_when_the_sweep_is_late(people, clock):
    define(people["admin"], steps=[step(timeout_hours=4, remind_before_hours=1)])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    clock.move_to(at(2026, 3, 4, 12, 0), tick=False)
    assert services.fire_due_timers() == 1
    assert services.fire_due_timers() == 0
    assert kinds(request).count("reminded") == 1
    assert "escalated" not in kinds(request)
    assert fresh(request).status == "pending"
