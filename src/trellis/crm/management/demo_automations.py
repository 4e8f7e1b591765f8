"""Automations for the demo: the replacement-part scenario on orders, and a time rule on deals.

Orders whose notes mention a replacement part ("replacement", "교체") wait in the
*credit-check hold* while picking and packing go on; the credit check is an approval by finance.
When it passes the hold is released and the shipping task appears; when it fails the order is
cancelled and the customer gets an e-mail. Three such orders are placed through the services, as
people would: one shipped, one cancelled, one still waiting in the hold queue. The rules run as
they do in use, when each change commits; a database that already holds rules is left alone.
"""

from decimal import Decimal

from trellis.core.models import User
from trellis.crm import services as crm
from trellis.crm.models import Opportunity, Product
from trellis.process.approvals import services as approvals
from trellis.process.approvals.models import ApprovalRequest
from trellis.process.automations import services
from trellis.process.automations.models import Rule
from trellis.process.models import TaskType

REPLACEMENT = "notes.matches('(?i)replacement|교체')"

RULES = [
    {
        "name": "Replacement orders wait for the credit check",
        "trigger": "created",
        "condition": REPLACEMENT,
        "actions": [
            {"kind": "hold", "hold": "credit-check"},
            {"kind": "start_approval", "process": "credit-check"},
            {
                "kind": "create_task",
                "title": "Pick the parts of {{ record }}",
                "task_type": "picking",
            },
            {"kind": "create_task", "title": "Pack {{ record }}", "task_type": "packing"},
        ],
    },
    {
        "name": "Credit check passed: release the hold",
        "trigger": "approval_approved",
        "trigger_params": {"process": "credit-check"},
        "actions": [{"kind": "release", "hold": "credit-check"}],
    },
    {
        "name": "Released from the credit check: ship",
        "trigger": "hold_released",
        "trigger_params": {"hold": "credit-check"},
        "condition": "status != 'cancelled'",
        "actions": [
            {
                "kind": "create_task",
                "title": "Ship {{ record }} to {{ customer_name }}",
                "task_type": "shipping",
                "due_in_hours": 8,
            }
        ],
    },
    {
        "name": "Credit check failed: cancel and tell the customer",
        "trigger": "approval_rejected",
        "trigger_params": {"process": "credit-check"},
        "actions": [
            {"kind": "set_fields", "values": {"status": "'cancelled'"}},
            {
                "kind": "send_email",
                "to": "customer_email",
                "subject": "Your order {{ id }} / 주문 {{ id }}",
                "body": (
                    "Dear {{ customer_name }},\n\nwe could not complete the credit check for "
                    "your order {{ id }}, so it is cancelled. Your account manager will call "
                    "you.\n\n{{ customer_name }} 고객님, 주문 {{ id }}의 신용 확인을 마치지 "
                    "못해 주문을 취소했습니다. 담당자가 곧 연락드리겠습니다."
                ),
            },
            {"kind": "release", "hold": "credit-check"},
        ],
    },
]


def create(users: dict[str, User]) -> int:
    """The demo rules, hold and orders; how many rules were made."""
    if Rule.objects.exists() or not {"admin", "hyunwoo"} <= users.keys():
        return 0
    admin, finance = users["admin"], users["hyunwoo"]
    for code, name, name_ko in (
        ("picking", "Picking", "피킹"),
        ("packing", "Packing", "포장"),
        ("shipping", "Shipping", "출고"),
    ):
        TaskType.objects.get_or_create(code=code, defaults={"name": name, "name_ko": name_ko})
    approvals.save_process(
        admin,
        {
            "object_type": "order",
            "code": "credit-check",
            "name": "Credit check",
            "name_ko": "신용 확인",
            "steps": [
                {
                    "name": "Finance",
                    "approvers": [{"kind": "user", "user_id": finance.pk}],
                    "timeout_hours": 8,
                }
            ],
        },
    )
    services.save_hold(
        admin,
        {
            "object_type": "order",
            "code": "credit-check",
            "name": "Credit-check hold",
            "name_ko": "신용 확인 보류",
            "blocks": [{"task_type": "shipping"}, {"field": "status", "value": "fulfilled"}],
        },
    )
    for position, rule in enumerate(RULES, start=1):
        services.save_rule(admin, {"object_type": "order", "position": position, **rule})
    services.save_rule(
        admin,
        {
            "object_type": "opportunity",
            "name": "Call three business days before the expected close",
            "trigger": "time",
            "trigger_params": {
                "field": "expected_close_date",
                "offset": 3,
                "unit": "business_days",
                "direction": "before",
            },
            "condition": "status == 'open'",
            "actions": [{"kind": "create_task", "title": "Call the customer about {{ name }}"}],
        },
    )
    _orders(users)
    return Rule.objects.count()


def _orders(users: dict[str, User]) -> None:
    """Three replacement orders: shipped, cancelled, and one still waiting."""
    finance = users["hyunwoo"]
    part = Product.objects.filter(is_active=True, currency="KRW").order_by("pk").first()
    placed = []
    notes = ("Replacement pump seal", "교체 부품: 밸브", "Replacement bearing, urgent")
    sellers = [u for u in users.values() if u.role and u.role.code == "sales"]
    for seller in sellers:
        # Like every demo order, it comes from a deal the seller won.
        deal = (
            Opportunity.objects.filter(owner=seller, status="won", account__email__gt="")
            .order_by("pk")
            .first()
        )
        if part is None or deal is None:
            continue
        data = {
            "account_id": deal.account_id,
            "opportunity_id": deal.pk,
            "notes": notes[len(placed)],
            "status": "placed",
        }
        line = {"product_id": part.pk, "quantity": 1, "unit_price": Decimal(part.unit_price)}
        placed.append(crm.create_order(seller, data, [line]))
        if len(placed) == len(notes):
            break
    requests = ApprovalRequest.objects.filter(
        process__code="credit-check", object_id__in=[o.pk for o in placed]
    ).order_by("object_id")
    for request, decide in zip(requests, (approvals.approve, approvals.reject), strict=False):
        decide(finance, request.pk, comment="" if decide is approvals.approve else "미수금 확인")
