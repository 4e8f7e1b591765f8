"""At run time a cascade stops at its depth limit; time rules fire when the clock reaches them
and plan again when their date changes."""

import datetime as dt

from trellis.core import sweep
from trellis.crm import services as crm
from trellis.process.automations import services
from trellis.process.automations.models import RuleRun, RuleTimer
from trellis.process.models import Notification, Task

from ... import factories
from .conftest import rule

FIELDS = ["amount", "probability", "description", "expected_close_date", "currency", "name"]


def test_a_runaway_cascade_is_stopped_at_the_depth_limit_and_reported(
    people, account, events, settings
):
    settings.TRELLIS = {**settings.TRELLIS, "AUTOMATION_MAX_DEPTH": 3}
    admin = people["admin"]
    # A chain, not a loop: each rule writes the field the next one watches.
    chain = [
        ("amount", "probability", "probability + 1"),
        ("probability", "description", "'step 2'"),
        ("description", "name", "name + '!'"),
        ("name", "currency", "'USD'"),
    ]
    made = [
        rule(
            admin,
            name=f"Step {i + 1}",
            trigger="field_changed",
            trigger_params={"field": watched},
            actions=[{"kind": "set_fields", "values": {written: value}}],
        )
        for i, (watched, written, value) in enumerate(chain)
    ]
    with events():
        opp = factories.opportunity(people["sales"], account=account.pk, name="Deal", amount=1)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 2}, opp.version)
    outcomes = {
        r.name: list(RuleRun.objects.filter(rule=r).values_list("outcome", flat=True)) for r in made
    }
    assert outcomes == {
        "Step 1": ["fired"],
        "Step 2": ["fired"],
        "Step 3": ["fired"],
        "Step 4": ["stopped"],
    }
    opp.refresh_from_db()
    # The data as of the last completed action: step 3 renamed it, step 4 did not run.
    assert (opp.name, opp.currency) == ("Deal!", "KRW")
    assert Notification.objects.filter(user=admin, text__contains="Step 4").count() == 1


def test_a_rule_runs_once_per_record_per_originating_event(people, account, events):
    # Two rules on "updated" that each write what the other's condition reads are refused as
    # a loop when saved; made here directly, as rules of an older version would be, the
    # engine still runs each at most once for the one change.
    from trellis.process.automations.models import Rule

    for name, field in (("Ping", "description"), ("Pong", "name")):
        Rule.objects.create(
            object_type="opportunity",
            name=name,
            trigger="updated",
            mode="every",
            actions=[{"kind": "set_fields", "values": {field: f"{field} + '.'"}}],
            created_by=people["admin"],
        )
    with events():
        opp = factories.opportunity(people["sales"], account=account.pk, name="Deal")
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 5}, opp.version)
    opp.refresh_from_db()
    assert (opp.name, opp.description) == ("Deal.", ".")
    fired = RuleRun.objects.filter(outcome="fired").values_list("rule__name", flat=True)
    assert sorted(fired) == ["Ping", "Pong"]


def follow_up_rule(admin):
    return rule(
        admin,
        name="Call three business days before the close",
        trigger="time",
        trigger_params={
            "field": "expected_close_date",
            "offset": 3,
            "unit": "business_days",
            "direction": "before",
        },
        actions=[{"kind": "create_task", "title": "Call about {{ name }}"}],
    )


def test_a_time_rule_fires_when_the_clock_reaches_it(people, account, events, clock):
    follow_up_rule(people["admin"])
    with events():
        # Friday 13 March 2026; three business days before is Tuesday the 10th, 09:00 Seoul.
        factories.opportunity(
            people["sales"], account=account.pk, name="Deal", expected_close_date="2026-03-13"
        )
    timer = RuleTimer.objects.get()
    assert timer.due_at == dt.datetime(2026, 3, 10, 0, 0, tzinfo=dt.UTC)
    assert sweep.sweep_once()["automation_timers"] == 0
    clock.move_to(dt.datetime(2026, 3, 10, 0, 0, tzinfo=dt.UTC), tick=False)
    with events():
        assert sweep.sweep_once()["automation_timers"] == 1
    assert Task.objects.get().title == "Call about Deal"
    with events():
        assert sweep.sweep_once()["automation_timers"] == 0  # fired once


def test_a_time_rule_plans_again_when_the_date_changes(people, account, events, clock):
    follow_up_rule(people["admin"])
    with events():
        opp = factories.opportunity(
            people["sales"], account=account.pk, name="Deal", expected_close_date="2026-03-13"
        )
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"expected_close_date": "2026-03-27"}, 1)
    assert RuleTimer.objects.get().due_at == dt.datetime(2026, 3, 24, 0, 0, tzinfo=dt.UTC)
    clock.move_to(dt.datetime(2026, 3, 10, 1, 0, tzinfo=dt.UTC), tick=False)
    with events():
        sweep.sweep_once()
    assert not Task.objects.exists()
    clock.move_to(dt.datetime(2026, 3, 24, 1, 0, tzinfo=dt.UTC), tick=False)
    with events():
        sweep.sweep_once()
    assert Task.objects.count() == 1


def test_a_new_time_rule_plans_existing_records_but_fires_only_ahead(people, account, events):
    with events():
        past = factories.opportunity(
            people["sales"], account=account.pk, name="Old", expected_close_date="2026-03-04"
        )
        ahead = factories.opportunity(
            people["sales"], account=account.pk, name="New", expected_close_date="2026-04-30"
        )
    follow_up_rule(people["admin"])
    due = dict(RuleTimer.objects.values_list("object_id", "due_at"))
    assert due[past.pk] is None
    assert due[ahead.pk] is not None


def test_disabling_a_time_rule_drops_its_timers(people, account, events):
    made = follow_up_rule(people["admin"])
    with events():
        factories.opportunity(
            people["sales"], account=account.pk, name="Deal", expected_close_date="2026-04-30"
        )
    assert RuleTimer.objects.count() == 1
    services.set_rule_enabled(people["admin"], made.pk, False, made.version)
    assert RuleTimer.objects.count() == 0
