from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from trellis.core.models import User

from .. import factories


@pytest.fixture
def login(client: Client) -> Callable[[User], Client]:
    """Log the test client in as a user and return it."""

    def log_in(user: User) -> Client:
        client.force_login(user)
        return client

    return log_in


def form_data(form: Any, **changes: Any) -> dict[str, Any]:
    """What a browser would post for a rendered form, with some fields changed."""
    data: dict[str, Any] = {}
    for field in form:
        if field.field.show_hidden_initial:  # what the user saw, posted beside their input
            data[field.html_initial_name] = _posted(field.initial, field)
        value = field.value()
        if field.widget_type == "checkbox":
            if value:
                data[field.html_name] = "on"
            continue
        if isinstance(value, list | tuple):
            data[field.html_name] = [str(v) for v in value]
        else:
            data[field.html_name] = "" if value is None else str(value)
    data.update(changes)
    return {k: v for k, v in data.items() if not (k in changes and v is None)}


def _posted(value: Any, field: Any) -> Any:
    """A value as a hidden input posts it."""
    value = field.field.prepare_value(value)
    if isinstance(value, list | tuple):
        return [str(v.pk if hasattr(v, "pk") else v) for v in value]
    return "" if value is None else str(value)


@dataclass(frozen=True)
class RecordKind:
    """One record type as the web tests drive it."""

    key: str
    make: Callable[[User], Any]
    new: Callable[[User], dict[str, Any]]  # what a user fills in to create one
    change: tuple[str, str]  # a field and a new value for an edit

    def url(self, action: str, *args: Any) -> str:
        return reverse(f"crm:{self.key}-{action}", args=args)


def _account_form(user: User) -> dict[str, Any]:
    return {"name": "주식회사 한빛", "phone": "02-2255-0114", "owner": user.pk}


def _contact_form(user: User) -> dict[str, Any]:
    account = factories.account(user)
    return {"name": "김민지", "accounts": [account.pk], "owner": user.pk}


def _lead_form(user: User) -> dict[str, Any]:
    return {"name": "박서연", "source": "event", "status": "new", "owner": user.pk}


def _opportunity_form(user: User) -> dict[str, Any]:
    account = factories.account(user)
    return {
        "name": "ERP 연동 구축",
        "account": account.pk,
        "amount": "48000000",
        "currency": "KRW",
        "probability": "40",
        "status": "open",
        "owner": user.pk,
    }


def _product_form(user: User) -> dict[str, Any]:
    return {
        "name": "클라우드 연간",
        "sku": "CLOUD-Y",
        "unit_price": "12000000",
        "currency": "KRW",
        "is_active": "on",
        "owner": user.pk,
    }


def _order_form(user: User) -> dict[str, Any]:
    account = factories.account(user)
    return {
        "account": account.pk,
        "status": "draft",
        "currency": "KRW",
        "order_date": "2025-03-02",
        "owner": user.pk,
    }


def _activity_form(user: User) -> dict[str, Any]:
    account = factories.account(user)
    return {
        "regarding": f"account:{account.pk}",
        "kind": "call",
        "subject": "도입 일정 확인",
        "occurred_at": "2025-03-02T10:30",
        "owner": user.pk,
    }


KINDS = [
    RecordKind("account", factories.account, _account_form, ("industry", "소프트웨어")),
    RecordKind("contact", factories.contact, _contact_form, ("title", "구매팀장")),
    RecordKind("lead", factories.lead, _lead_form, ("company", "미래에너지")),
    RecordKind("opportunity", factories.opportunity, _opportunity_form, ("probability", "70")),
    RecordKind("product", factories.product, _product_form, ("name", "도입 컨설팅")),
    RecordKind("order", factories.order, _order_form, ("notes", "분기 말 납품")),
    RecordKind(
        "activity",
        lambda user: factories.activity(user, factories.account(user)),
        _activity_form,
        ("subject", "계약 조건 협의"),
    ),
]
KINDS_BY_KEY = {kind.key: kind for kind in KINDS}


@pytest.fixture(params=KINDS, ids=lambda kind: kind.key)
def kind(request: pytest.FixtureRequest) -> RecordKind:
    return request.param
