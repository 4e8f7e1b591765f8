"""What the approval tests share: people with a chain of managers, a clock on a business
morning, a discount process on deals, and helpers to define processes through the service."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from trellis.core.models import Role
from trellis.process.approvals import services
from trellis.process.approvals.models import ApprovalEvent, ApprovalRequest

from ... import factories

# Tuesday 3 March 2026, 10:00 in Seoul (Monday the 2nd is a public holiday).
START = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def tasks_at_once(settings):
    """Queued tasks (the approvers' notices and e-mails) run when they are enqueued, in the
    caller's transaction; tests of the queue itself switch back to the database backend."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def people(db, team, clock, admin):
    """A seller, their manager, the manager's director, another manager, a finance approver."""
    director = factories.user(Role.MANAGER, username="director", first_name="Dana", team=team)
    boss = factories.user(
        Role.MANAGER, username="boss", first_name="Bora", team=team, manager=director
    )
    seller = factories.user(
        Role.SALES, username="seller", first_name="Seo", team=team, manager=boss
    )
    finance = factories.user(Role.MANAGER, username="finance", first_name="Fin", team=team)
    return {
        "admin": admin,
        "director": director,
        "boss": boss,
        "seller": seller,
        "finance": finance,
    }


def step(name: str = "Manager", **fields: Any) -> dict[str, Any]:
    return {"name": name, "approvers": [{"kind": "manager"}], **fields}


def define(admin, **fields: Any):
    data = {
        "object_type": "opportunity",
        "code": "big-deal",
        "name": "Big deal approval",
        "entry_condition": "amount > 50000000.0",
        "steps": [step()],
        "material_fields": ["amount"],
        **fields,
    }
    return services.save_process(admin, data)


def deal(seller, amount: int = 80_000_000, **data: Any):
    return factories.opportunity(seller, amount=Decimal(amount), **data)


def kinds(request: ApprovalRequest) -> list[str]:
    return list(
        ApprovalEvent.objects.filter(request=request)
        .order_by("at", "pk")
        .values_list("kind", flat=True)
    )


def fresh(request: ApprovalRequest) -> ApprovalRequest:
    return ApprovalRequest.objects.get(pk=request.pk)
