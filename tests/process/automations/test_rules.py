"""Rules fire on events, once the change has committed, and only when the record newly meets
their condition unless told otherwise."""

from decimal import Decimal

import pytest

from trellis.crm import services as crm
from trellis.process.automations.models import RuleRun
from trellis.process.models import Task

from ... import factories
from .conftest import rule


def deal(people, account, **data):
    values = {"account": account.pk, "name": "Press line", "amount": Decimal(1000), **data}
    return factories.opportunity(people["sales"], **values)


def test_a_rule_fires_on_an_update_when_the_record_newly_meets_its_condition(
    people, account, events
):
    big = rule(
        people["admin"],
        name="Big deals get a description",
        condition="amount > 5000.0",
        actions=[{"kind": "set_fields", "values": {"description": "'Big: ' + name"}}],
    )
    with events():
        opp = deal(people, account)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 9000}, 1)
    opp.refresh_from_db()
    assert opp.description == "Big: Press line"
    assert RuleRun.objects.filter(rule=big, outcome="fired").count() == 1

    # Still big after another change: it met the condition before, so it does not fire again.
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 9500}, opp.version)
    assert RuleRun.objects.filter(rule=big, outcome="fired").count() == 1
    assert RuleRun.objects.filter(rule=big, outcome="skipped").count() >= 1


def test_a_rule_that_runs_every_time_fires_on_each_matching_change(people, account, events):
    every = rule(
        people["admin"],
        name="Count changes",
        condition="amount > 5000.0",
        mode="every",
        actions=[{"kind": "create_task", "title": "Look at {{ name }}"}],
    )
    with events():
        opp = deal(people, account, amount=Decimal(6000))
    for amount, version in ((7000, 1), (8000, 2)):
        with events():
            crm.update(people["sales"], "opportunity", opp.pk, {"amount": amount}, version)
    assert RuleRun.objects.filter(rule=every, outcome="fired").count() == 2
    assert list(Task.objects.values_list("title", flat=True)) == ["Look at Press line"] * 2


def test_created_fires_once_the_whole_creation_has_committed(people, account, events):
    from trellis.process.automations import services

    services.save_rule(
        people["admin"],
        {
            "object_type": "order",
            "name": "Orders with lines get a note",
            "trigger": "created",
            "condition": "total > 0.0",
            "actions": [{"kind": "set_fields", "values": {"notes": "'checked ' + string(total)"}}],
        },
    )
    product = factories.product(people["admin"], name="Valve", sku="V-1", unit_price=Decimal(250))
    with events():
        # The lines are written after the order row, in the same transaction.
        order = factories.order(
            people["sales"],
            account=account.pk,
            lines=[{"product_id": product.pk, "quantity": 2, "unit_price": "250"}],
        )
    order.refresh_from_db()
    assert order.notes == "checked 500"


def test_field_changed_with_from_and_to(people, account, events):
    won = rule(
        people["admin"],
        name="Lost deals get a reason asked",
        trigger="field_changed",
        trigger_params={"field": "currency", "from": "KRW", "to": "USD"},
        actions=[{"kind": "create_task", "title": "Confirm the exchange rate"}],
    )
    with events():
        opp = deal(people, account)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"currency": "EUR"}, 1)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"currency": "KRW"}, 2)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"currency": "USD"}, 3)
    assert RuleRun.objects.filter(rule=won, outcome="fired").count() == 1
    assert Task.objects.get().title == "Confirm the exchange rate"


def test_a_failing_action_is_logged_with_its_error_and_stops_the_rest(people, account, events):
    broken = rule(
        people["admin"],
        name="Divide",
        trigger="created",
        actions=[
            {"kind": "set_fields", "values": {"description": "'first'"}},
            {"kind": "set_fields", "values": {"probability": "int(amount) / 0"}},
            {"kind": "create_task", "title": "Never made"},
        ],
    )
    with events():
        opp = deal(people, account)
    run = RuleRun.objects.get(rule=broken)
    assert run.outcome == "failed"
    assert "set_fields" in run.detail["error"]
    assert len(run.detail["done"]) == 1
    opp.refresh_from_db()
    assert opp.description == "first"  # the data as of the last completed action
    assert not Task.objects.exists()
    timeline = [e.changes.get("automation", [None, ""])[1] for e in opp_history(opp)]
    assert any("Divide" in text and "failed" in text for text in timeline)


def opp_history(opp):
    from trellis.core import audit

    return list(audit.history(opp))


def test_the_throttle_stops_a_rule_gone_wild_and_tells_the_admins(people, account, events):
    from trellis.process.models import Notification

    noisy = rule(
        people["admin"],
        name="Noisy",
        mode="every",
        throttle_per_hour=2,
        actions=[{"kind": "create_task", "title": "Again"}],
    )
    with events():
        opp = deal(people, account)
    for version in range(1, 5):
        with events():
            crm.update(people["sales"], "opportunity", opp.pk, {"amount": 1000 + version}, version)
    outcomes = list(
        RuleRun.objects.filter(rule=noisy).order_by("pk").values_list("outcome", flat=True)
    )
    assert outcomes == ["fired", "fired", "throttled", "throttled"]
    assert Task.objects.count() == 2
    assert Notification.objects.filter(user=people["admin"], text__contains="Noisy").count() == 1


def test_disabled_rules_do_not_fire(people, account, events):
    off = rule(people["admin"], name="Off", trigger="created", is_enabled=False)
    with events():
        deal(people, account)
    assert not RuleRun.objects.filter(rule=off).exists()


@pytest.mark.parametrize("mode", ["newly", "every"])
def test_stage_entered(people, account, events, mode):
    from trellis.process.pipelines import services as pipelines
    from trellis.process.pipelines.models import Stage

    with events():
        opp = deal(people, account)
    stage = Stage.objects.filter(pipeline=opp.stage.pipeline).order_by("order")[1]
    entered = rule(
        people["admin"],
        name="Entered",
        trigger="stage_entered",
        trigger_params={"stage": stage.pk},
        mode=mode,
        actions=[{"kind": "create_task", "title": "Prepare {{ name }}"}],
    )
    with events():
        pipelines.move(people["sales"], "opportunity", opp.pk, stage.pk, version=opp.version)
    assert RuleRun.objects.filter(rule=entered, outcome="fired").count() == 1
    assert Task.objects.get().title == "Prepare Press line"


def test_skipped_runs_are_forgotten_after_thirty_days_and_the_others_kept(
    people, account, events, clock
):
    import datetime as dt

    from trellis.core import sweep

    big = rule(people["admin"], name="Big", condition="amount > 5000.0")
    with events():
        opp = deal(people, account)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 9000}, 1)
    with events():
        crm.update(people["sales"], "opportunity", opp.pk, {"amount": 10}, 3)
    # Skipped: its own write (already ran for that change), and the amount falling back.
    assert sorted(RuleRun.objects.filter(rule=big).values_list("outcome", flat=True)) == [
        "fired",
        "skipped",
        "skipped",
    ]
    clock.shift(dt.timedelta(days=29))
    assert sweep.sweep_once()["automation_skipped_runs"] == 0
    clock.shift(dt.timedelta(days=2))
    assert sweep.sweep_once()["automation_skipped_runs"] == 2
    assert list(RuleRun.objects.values_list("outcome", flat=True)) == ["fired"]
