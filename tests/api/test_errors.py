"""Bad input gets a clear answer in one shape, names the field, and changes nothing."""

import logging
import re
from decimal import Decimal

import pytest
from django.test import Client

from trellis.core import services as core_services
from trellis.crm import services

from .. import factories
from .conftest import Api, assert_problem, database_state, token_client


@pytest.fixture
def records(admin):
    account = factories.account(admin, name="Hanbit")
    return {
        "account": account,
        "deal": factories.opportunity(admin, account_id=account.pk),
        "order": factories.order(admin, account_id=account.pk),
        "product": factories.product(admin, unit_price=Decimal(1000)),
    }


def bad(method: str, path: str, body, *fields: str | None, status: int = 422) -> tuple:
    """A request that must be refused with ``status``, naming exactly ``fields``."""
    return method, path, body, status, fields


# "{account}" and the like stand for the ids of ``records``.
DEAL = {"name": "Deal", "account_id": "{account}"}
ABOUT = {"related_type": "account", "related_id": "{account}", "subject": "Call"}
ORDER = {"account_id": "{account}"}
LINE = {"product_id": "{product}"}
PRODUCT = {"name": "P", "sku": "P", "unit_price": 1}
A_DAY_AGO = "2026-01-01T09:00:00"

BAD_INPUT = {
    "overlong name": bad("post", "accounts/", {"name": "가" * 201}, "name"),
    "overlong text field": bad(
        "post", "accounts/", {"name": "A", "description": "x" * 5001}, "description"
    ),
    "invalid e-mail": bad("post", "accounts/", {"name": "A", "email": "no-at-sign"}, "email"),
    "invalid phone": bad("post", "accounts/", {"name": "A", "phone": "12"}, "phone"),
    "several at once": bad(
        "post", "contacts/", {"name": "K", "phone": "1", "mobile": "2"}, "phone", "mobile"
    ),
    "bad registration number": bad(
        "post",
        "accounts/",
        {"name": "A", "business_registration_number": "1234567890"},
        "business_registration_number",
    ),
    "negative amount": bad("post", "opportunities/", {**DEAL, "amount": -1}, "amount"),
    "decimals in KRW": bad("post", "opportunities/", {**DEAL, "amount": "10.5"}, "amount"),
    "too many decimals": bad(
        "post", "opportunities/", {**DEAL, "amount": "1.234", "currency": "USD"}, "amount"
    ),
    "amount too large": bad("post", "opportunities/", {**DEAL, "amount": 1e20}, "amount"),
    "amount not a number": bad(
        "post", "opportunities/", '{"name": "D", "account_id": 1, "amount": NaN}', "amount"
    ),
    "unknown currency": bad("post", "opportunities/", {**DEAL, "currency": "XYZ"}, "currency"),
    "probability over 100": bad(
        "post", "opportunities/", {**DEAL, "probability": 101}, "probability"
    ),
    "dangling account": bad("post", "opportunities/", {**DEAL, "account_id": 9876}, "account_id"),
    "dangling owner": bad("post", "accounts/", {"name": "A", "owner_id": 9876}, "owner_id"),
    "dangling m2m": bad("post", "contacts/", {"name": "K", "account_ids": [9876]}, "account_ids"),
    "missing required": bad("post", "opportunities/", {"name": "D"}, "account_id"),
    "name is a number": bad("post", "accounts/", {"name": 123}, "name"),
    "name is null": bad("post", "accounts/", {"name": None}, "name"),
    "id is text": bad("post", "opportunities/", {**DEAL, "account_id": "first"}, "account_id"),
    "id too large": bad("post", "opportunities/", {**DEAL, "account_id": 2**70}, "account_id"),
    "ids not a list": bad("post", "contacts/", {"name": "K", "account_ids": "1,2"}, "account_ids"),
    "bool is text": bad("post", "products/", {**PRODUCT, "is_active": "maybe"}, "is_active"),
    "unknown field": bad("post", "accounts/", {"name": "A", "colour": "red"}, "colour"),
    "NUL character": bad("post", "accounts/", {"name": "A\x00B"}, "name"),
    "lone surrogate": bad("post", "accounts/", '{"name": "A\\ud800"}', "name"),
    "naive time": bad("post", "activities/", {**ABOUT, "occurred_at": A_DAY_AGO}, "occurred_at"),
    "time out of range": bad(
        "post", "activities/", {**ABOUT, "occurred_at": "0001-01-01T00:00+09:00"}, "occurred_at"
    ),
    "voc on a call": bad(
        "post", "activities/", {**ABOUT, "kind": "call", "is_voc": True}, "is_voc"
    ),
    "unknown related type": bad(
        "post", "activities/", {**ABOUT, "related_type": "planet"}, "related_type"
    ),
    "bad line": bad(
        "post", "orders/", {**ORDER, "lines": [{**LINE, "quantity": 0}]}, "lines.0.quantity"
    ),
    "unknown product": bad(
        "post", "orders/", {**ORDER, "lines": [LINE, {"product_id": 9876}]}, "lines.1.product_id"
    ),
    "unknown line field": bad(
        "post", "orders/", {**ORDER, "lines": [{**LINE, "colour": 1}]}, "lines.0.colour"
    ),
    "total too large": bad(
        "post",
        "orders/",
        {**ORDER, "lines": [{**LINE, "quantity": 2 * 10**9, "unit_price": "9999999999999"}]},
        "lines",
    ),
    "body not an object": bad("post", "accounts/", "[1, 2]", None),
    "empty body": bad("post", "accounts/", "", None),
    "malformed JSON": bad("post", "accounts/", '{"name": "A",', status=400),
    "not UTF-8": bad("post", "accounts/", b'{"name": "\xff"}', status=400),
    "deeply nested": bad("post", "accounts/", "[" * 100_000, status=400),
    "update without version": bad("patch", "opportunities/{deal}", {"name": "N"}, "version"),
    "version not a number": bad("patch", "opportunities/{deal}", {"version": "one"}, "version"),
    "update unknown field": bad(
        "patch", "opportunities/{deal}", {"version": 1, "colour": "red"}, "colour"
    ),
    "update to a negative amount": bad(
        "patch", "opportunities/{deal}", {"version": 1, "amount": -5}, "amount"
    ),
    "update to null where not allowed": bad(
        "patch", "opportunities/{deal}", {"version": 1, "account_id": None}, "account_id"
    ),
    "stale version": bad("patch", "opportunities/{deal}", {"version": 7}, status=409),
    "stale delete": bad("delete", "opportunities/{deal}?version=7", None, status=409),
    "record in use": bad("delete", "accounts/{account}", None, status=409),
    "lines without version": bad("put", "orders/{order}/lines", {"lines": []}, "version"),
    "stale lines": bad("put", "orders/{order}/lines", {"version": 9, "lines": []}, status=409),
    "id not a number": bad("get", "opportunities/first", None, "id"),
    "id too large for the database": bad("get", "opportunities/99999999999999999999", None, "id"),
    "unknown endpoint": bad("get", "planets/", None, status=404),
    "method not allowed": bad("put", "accounts/", {}, status=405),
}


def _fill(value, ids: dict[str, int]):
    if isinstance(value, str) and re.fullmatch(r"\{\w+\}", value):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_refused_clearly_and_changes_nothing(case, admin, records):
    method, path, body, status, fields = BAD_INPUT[case]
    ids = {name: record.pk for name, record in records.items()}
    path = path.format(**ids)
    api = token_client(admin)
    before = database_state()
    if method in ("get", "delete"):
        answer = getattr(api, method)(path)
    else:
        answer = getattr(api, method)(path, _fill(body, ids))
    problem = assert_problem(answer, status, *fields)
    assert database_state() == before
    assert all(error["message"] for error in problem["errors"])


def test_a_conflict_carries_the_current_record(admin, records):
    api = token_client(admin)
    deal = records["deal"]
    api.patch(f"opportunities/{deal.pk}", {"version": 1, "amount": 2000})
    problem = assert_problem(
        api.patch(f"opportunities/{deal.pk}", {"version": 1, "amount": 3000}), 409
    )
    assert problem["current"]["amount"] == "2000"
    assert problem["current"]["version"] == 2
    deal.refresh_from_db()
    assert deal.amount == Decimal(2000)


def test_a_method_not_allowed_names_the_allowed_ones(admin):
    answer = token_client(admin).delete("accounts/")
    assert_problem(answer, 405)
    assert set(answer["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_missing_trailing_slash_is_pointed_out(admin):
    api = token_client(admin)
    assert "/api/v1/accounts/" in assert_problem(api.get("accounts"), 404)["detail"]
    assert "Did you mean" not in assert_problem(api.get("planets"), 404)["detail"]


def test_an_unexpected_failure_is_a_logged_500_in_the_same_shape(admin, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "create", broken)
    with caplog.at_level(logging.ERROR, logger="trellis.api.errors"):
        problem = assert_problem(token_client(admin).post("accounts/", {"name": "A"}), 500)
    assert "disk on fire" not in problem["detail"]
    assert "disk on fire" in caplog.text


def test_a_body_too_large_is_400(admin, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert_problem(
        token_client(admin).post("accounts/", {"name": "A", "description": "x" * 2000}), 400
    )


def test_messages_follow_the_callers_language(sales, outsider):
    theirs = factories.account(outsider)
    _token, key = core_services.create_api_token(sales, "in Korean")
    api = Api(Client(headers={"Authorization": f"Bearer {key}", "Accept-Language": "ko"}))
    answer = api.post("opportunities/", {"name": "Deal", "account_id": theirs.pk})
    [error] = assert_problem(answer, 422, "account_id")["errors"]
    assert re.search("[가-힣]", error["message"]), error
