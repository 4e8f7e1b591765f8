"""The scenario holds exist for: a replacement-part order waits in a credit-check hold while
picking and packing go on, ships the moment the check passes, and is cancelled with a word to
the customer when it fails."""

from decimal import Decimal

import pytest

from trellis.core.errors import Conflict, ServiceError
from trellis.core.models import Role
from trellis.crm import services as crm
from trellis.mail.models import OutboundMessage
from trellis.process import services as tasks
from trellis.process.approvals import services as approvals
from trellis.process.approvals.models import ApprovalRequest
from trellis.process.automations import services
from trellis.process.automations.models import Hold, HoldPlacement
from trellis.process.models import Task, TaskType

from ... import factories


@pytest.fixture
def finance(db, team):
    return factories.user(Role.MANAGER, username="fin", first_name="Fin", team=team)


@pytest.fixture
def credit_check(people, finance):
    admin = people["admin"]
    for code, name in (("picking", "Picking"), ("packing", "Packing"), ("shipping", "Shipping")):
        TaskType.objects.create(code=code, name=name)
    approvals.save_process(
        admin,
        {
            "object_type": "order",
            "code": "credit-check",
            "name": "Credit check",
            "steps": [{"name": "Finance", "approvers": [{"kind": "user", "user_id": finance.pk}]}],
        },
    )
    hold = services.save_hold(
        admin,
        {
            "object_type": "order",
            "code": "credit-check",
            "name": "Credit-check hold",
            "name_ko": "신용 확인 보류",
            "blocks": [{"task_type": "shipping"}, {"field": "status", "value": "fulfilled"}],
        },
    )
    rules = [
        {
            "name": "Orders wait for the credit check",
            "trigger": "created",
            "actions": [
                {"kind": "hold", "hold": "credit-check"},
                {"kind": "start_approval", "process": "credit-check"},
                {"kind": "create_task", "title": "Pick {{ record }}", "task_type": "picking"},
                {"kind": "create_task", "title": "Pack {{ record }}", "task_type": "packing"},
            ],
        },
        {
            "name": "Credit passed: release",
            "trigger": "approval_approved",
            "trigger_params": {"process": "credit-check"},
            "actions": [{"kind": "release", "hold": "credit-check"}],
        },
        {
            "name": "Released: ship",
            "trigger": "hold_released",
            "trigger_params": {"hold": "credit-check"},
            "condition": "status != 'cancelled'",
            "actions": [
                {"kind": "create_task", "title": "Ship {{ record }}", "task_type": "shipping"}
            ],
        },
        {
            "name": "Credit failed: cancel and tell the customer",
            "trigger": "approval_rejected",
            "trigger_params": {"process": "credit-check"},
            "actions": [
                {"kind": "set_fields", "values": {"status": "'cancelled'"}},
                {
                    "kind": "send_email",
                    "to": "customer_email",
                    "subject": "Your order {{ id }} is cancelled",
                    "body": "Dear {{ customer_name }}, we could not complete the credit check.",
                },
                {"kind": "release", "hold": "credit-check"},
            ],
        },
    ]
    for position, rule in enumerate(rules):
        services.save_rule(admin, {"object_type": "order", "position": position, **rule})
    return hold


def place_order(people, account, events):
    product = factories.product(people["admin"], name="Spare pump", unit_price=Decimal(90_000))
    with events():
        return factories.order(
            people["sales"],
            account_id=account.pk,
            lines=[{"product_id": product.pk, "quantity": 1, "unit_price": "90000"}],
        )


def titles(order):
    return sorted(
        Task.objects.filter(thread__object_id=order.pk).values_list("task_type__code", flat=True)
    )


def test_the_order_ships_the_moment_the_credit_check_passes(
    people, account, events, finance, credit_check
):
    order = place_order(people, account, events)
    waiting = HoldPlacement.objects.get(hold=credit_check, object_id=order.pk)
    assert waiting.released_at is None
    assert titles(order) == ["packing", "picking"]

    # Shipping is blocked while the order waits; picking and packing go on.
    with pytest.raises(Conflict, match="Credit-check hold"):
        tasks.create_task(
            people["sales"],
            {
                "title": "Ship early",
                "record_type": "order",
                "record_id": order.pk,
                "task_type_id": TaskType.objects.get(code="shipping").pk,
                "user_id": people["sales"].pk,
            },
        )
    pick = Task.objects.get(task_type__code="picking")
    with events():
        tasks.complete(people["sales"], pick.pk, version=pick.version, thread_finished=False)

    request = ApprovalRequest.objects.get(object_id=order.pk)
    with events():
        approvals.approve(finance, request.pk)
    waiting.refresh_from_db()
    assert waiting.released_at is not None
    assert titles(order) == ["packing", "picking", "shipping"]
    ship = Task.objects.get(task_type__code="shipping")
    assert ship.title == f"Ship {order}"


def test_the_order_is_cancelled_and_the_customer_told_when_the_check_fails(
    people, account, events, finance, credit_check
):
    order = place_order(people, account, events)
    request = ApprovalRequest.objects.get(object_id=order.pk)
    with events():
        approvals.reject(finance, request.pk, comment="Overdue invoices")
    order.refresh_from_db()
    assert order.status == "cancelled"
    (told,) = [m for m in OutboundMessage.objects.all() if m.to == ["buyer@hanbit.co.kr"]]
    assert told.subject == f"Your order {order.pk} is cancelled"
    assert "Dear Hanbit Motors" in told.text
    assert not HoldPlacement.objects.filter(released_at__isnull=True).exists()
    assert "shipping" not in titles(order)


def test_a_hold_blocks_the_field_value_it_names_from_every_channel(
    people, account, events, credit_check
):
    order = factories.order(people["sales"], account_id=account.pk)
    services.place_on_hold(people["sales"], credit_check.pk, order.pk, reason="Check first")
    with pytest.raises(ServiceError, match="Credit-check hold"):
        crm.update(people["sales"], "order", order.pk, {"status": "fulfilled"}, order.version)
    crm.update(people["sales"], "order", order.pk, {"notes": "Rush"}, order.version)
    placement = HoldPlacement.objects.get()
    services.release_hold(people["sales"], placement.pk, note="Paid up front")
    order.refresh_from_db()
    crm.update(people["sales"], "order", order.pk, {"status": "fulfilled"}, order.version)


def test_a_hold_with_a_release_condition_releases_itself(people, account, events):
    hold = services.save_hold(
        people["admin"],
        {
            "object_type": "order",
            "code": "notes-needed",
            "name": "Waiting for notes",
            "release_condition": "notes != ''",
        },
    )
    order = factories.order(people["sales"], account_id=account.pk)
    services.place_on_hold(people["sales"], hold.pk, order.pk)
    with events():
        crm.update(people["sales"], "order", order.pk, {"notes": "Delivery at the back"}, 1)
    assert HoldPlacement.objects.get().released_at is not None
    assert Hold.objects.count() == 1
