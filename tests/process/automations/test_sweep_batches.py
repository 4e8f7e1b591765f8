"""The time-rule sweep fires its due timers a batch at a time: each action runs for the whole
batch at once, and a record on which it fails fails alone."""

import datetime as dt
import threading

import pytest
from django.contrib.contenttypes.models import ContentType

from trellis.core import sweep
from trellis.core.models import AuditEvent, Role
from trellis.crm.models import Opportunity
from trellis.mail.models import OutboundMessage
from trellis.process.automations import holds, services
from trellis.process.automations.engine import fire_due_timers
from trellis.process.automations.models import RuleRun
from trellis.process.models import Notification, Task
from trellis.process.pipelines.models import AlertTimer

from ... import factories
from ...concurrency import OwnConnections
from .conftest import rule

# The day after the deals' close date, 2026-03-13 (a Friday), at 09:00 in Seoul.
DUE = dt.datetime(2026, 3, 14, 0, 0, tzinfo=dt.UTC)


def past_close_rule(admin, actions):
    return rule(
        admin,
        name="Past the close date",
        trigger="time",
        trigger_params={
            "field": "expected_close_date",
            "offset": 1,
            "unit": "days",
            "direction": "after",
        },
        condition="status == 'open'",
        actions=actions,
    )


def deals(owners, account, events):
    with events():
        return [
            factories.opportunity(
                owner, account=account.pk, name=f"Deal {n}", expected_close_date="2026-03-13"
            )
            for n, owner in enumerate(owners)
        ]


def outcomes(records) -> dict[int, tuple[str, str]]:
    runs = RuleRun.objects.filter(object_id__in=[r.pk for r in records])
    return {run.object_id: (run.outcome, run.detail.get("error", "")) for run in runs}


def test_a_batch_acts_on_every_record_and_one_that_fails_fails_alone(
    people, account, events, clock
):
    silent = factories.user(Role.SALES, username="silent", email="", team=people["sales"].team)
    past_close_rule(
        people["admin"],
        [
            {"kind": "send_email", "to": "owner", "subject": "{{ name }} is past its close date"},
            {"kind": "create_task", "title": "Follow up on {{ name }}", "due_in_hours": 8},
            {"kind": "set_fields", "values": {"description": "'Past its close date'"}},
        ],
    )
    told, also_told, unreachable = deals(
        [people["sales"], people["manager"], silent], account, events
    )
    clock.move_to(DUE, tick=False)
    with events():
        assert sweep.sweep_once()["automation_timers"] == 3

    got = outcomes([told, also_told, unreachable])
    assert got[told.pk] == ("fired", "")
    assert got[also_told.pk] == ("fired", "")
    assert got[unreachable.pk] == ("failed", "1. send_email: to: Nobody to write to.")
    reminders = OutboundMessage.objects.filter(subject__endswith="past its close date")
    assert sorted((m.to, m.subject) for m in reminders) == [
        (["manager@example.com"], "Deal 1 is past its close date"),
        (["sales@example.com"], "Deal 0 is past its close date"),
    ]
    follow_ups = Task.objects.order_by("title")
    assert [(t.title, t.owner_id, t.thread.object_id) for t in follow_ups] == [
        ("Follow up on Deal 0", people["sales"].pk, told.pk),
        ("Follow up on Deal 1", people["manager"].pk, also_told.pk),
    ]
    # Each owner hears of their task, as from any other rule.
    assert Notification.objects.filter(task__in=follow_ups).count() == 2
    descriptions = dict(Opportunity.objects.values_list("pk", "description"))
    assert descriptions[told.pk] == descriptions[also_told.pk] == "Past its close date"
    assert descriptions[unreachable.pk] == ""
    # Every run, the failed one too, is on its record's timeline.
    content_type = ContentType.objects.get_for_model(Opportunity)
    for deal in (told, also_told, unreachable):
        entries = AuditEvent.objects.filter(
            content_type=content_type, object_id=deal.pk, changes__has_key="automation"
        )
        assert entries.count() == 1


def test_a_hold_refuses_a_batch_write_on_the_record_it_holds_only(people, account, events, clock):
    frozen = services.save_hold(
        people["admin"],
        {
            "object_type": "opportunity",
            "code": "frozen",
            "name": "Frozen",
            "blocks": [{"field": "description"}],
        },
    )
    past_close_rule(
        people["admin"],
        [{"kind": "set_fields", "values": {"description": "'Past its close date'"}}],
    )
    free, held, also_free = deals([people["sales"]] * 3, account, events)
    holds.place(people["admin"], frozen, held)
    clock.move_to(DUE, tick=False)
    with events():
        sweep.sweep_once()

    got = outcomes([free, held, also_free])
    assert got[free.pk] == got[also_free.pk] == ("fired", "")
    assert got[held.pk][0] == "failed"
    assert "Frozen" in got[held.pk][1] and "description" in got[held.pk][1]
    descriptions = dict(Opportunity.objects.values_list("pk", "description"))
    assert [descriptions[d.pk] for d in (free, held, also_free)] == [
        "Past its close date",
        "",
        "Past its close date",
    ]
    # The version moved on the records written, so an editor holding the old one is told.
    assert Opportunity.objects.get(pk=free.pk).version == free.version + 1
    assert Opportunity.objects.get(pk=held.pk).version == held.version


@pytest.mark.django_db(transaction=True)
def test_the_tasks_of_a_batch_bring_each_deals_alerts_in_line(time_machine):
    # Real commits: the batch's events are heard together after it commits, as in production.
    time_machine.move_to(dt.datetime(2026, 3, 3, 1, 0, tzinfo=dt.UTC), tick=False)
    admin = factories.user(Role.ADMIN, username="batch-admin")
    owner = factories.user(Role.SALES, username="batch-owner", team=admin.team)
    factories.deal_pipeline(admin, "batch", ["task_overdue"])
    account = factories.account(owner)
    records = [
        factories.opportunity(
            owner, account=account.pk, name=f"Deal {n}", expected_close_date="2026-03-13"
        )
        for n in range(4)
    ]
    # With a due time, "task overdue" has a moment to wait for on each deal.
    past_close_rule(
        admin, [{"kind": "create_task", "title": "Call about {{ name }}", "due_in_hours": 8}]
    )
    time_machine.move_to(DUE, tick=False)
    assert fire_due_timers() == 4

    made = Task.objects.filter(title__startswith="Call about")
    assert made.count() == 4
    content_type = ContentType.objects.get_for_model(Opportunity)
    # Each deal's alert timers were re-synced once its task committed: the pipeline's rule now
    # watches the new task on every deal of the batch.
    watched = set(
        AlertTimer.objects.filter(content_type=content_type, rule__kind="task_overdue").values_list(
            "object_id", flat=True
        )
    )
    assert watched == {d.pk for d in records}


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_fire_each_timer_once(time_machine):
    # Two workers' sweep loops start their passes at the same moment and share the due
    # timers, a batch at a time: each timer fires once, by one of them.
    time_machine.move_to(dt.datetime(2026, 3, 3, 1, 0, tzinfo=dt.UTC), tick=False)
    admin = factories.user(Role.ADMIN, username="race-admin")
    owner = factories.user(Role.SALES, username="race-owner", team=admin.team)
    account = factories.account(owner)
    past_close_rule(
        admin,
        [
            {"kind": "create_task", "title": "Call about {{ name }}", "due_in_hours": 8},
            {"kind": "set_fields", "values": {"description": "'Past its close date'"}},
        ],
    )
    records = [
        factories.opportunity(
            owner, account=account.pk, name=f"Deal {n}", expected_close_date="2026-03-13"
        )
        for n in range(12)
    ]
    time_machine.move_to(DUE, tick=False)
    start = threading.Barrier(2, timeout=30)

    def sweep_now():
        start.wait()
        return fire_due_timers(limit=2)

    fired = OwnConnections().run(sweep_now, sweep_now)
    assert all(isinstance(n, int) for n in fired), fired
    assert sum(fired) == 12, fired
    assert OwnConnections().run(sweep_now, sweep_now) == [0, 0]
    assert sorted(outcomes(records).values()) == [("fired", "")] * 12
    calls = Task.objects.filter(title__startswith="Call about")
    assert sorted(calls.values_list("thread__object_id", flat=True)) == [d.pk for d in records]
    assert set(Opportunity.objects.values_list("description", flat=True)) == {"Past its close date"}


def test_a_time_rule_may_write_to_the_customer(people, account, events, clock):
    past_close_rule(
        people["admin"],
        [
            {
                "kind": "send_email",
                "to": "customer_email",
                "subject": "{{ customer_name }}: shall we talk about {{ name }}?",
            }
        ],
    )
    deals([people["sales"]] * 2, account, events)
    clock.move_to(DUE, tick=False)
    with events():
        assert sweep.sweep_once()["automation_timers"] == 2
    sent = OutboundMessage.objects.filter(to=["buyer@hanbit.co.kr"]).order_by("subject")
    assert [m.subject for m in sent] == [
        "Hanbit Motors: shall we talk about Deal 0?",
        "Hanbit Motors: shall we talk about Deal 1?",
    ]
