"""JSON endpoints for support contracts, a case's support fees, and the charges finance bills.

Thin, like ``api``: reads through ``contracts`` and ``billing`` (visibility applied there),
writes through their services. Amounts are decimal strings in their currency's minor units.
"""

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core import clock
from trellis.core.api import Id, Input, Version, json_response, refuse_unknown_params, text
from trellis.core.errors import NotFound, StaleVersion
from trellis.core.models import User
from trellis.core.money import MAX_AMOUNT, MINOR_UNITS, Currency
from trellis.core.paging import Page

from . import billing, contracts, queries
from .models import Charge, SupportContract, SupportFee

router = Router(tags=["Support contracts and fees"])

_LIMITS = settings.TRELLIS
PageNumber = Field(1, ge=1, le=10**9)
PageSize = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])
CurrencyCode = Literal[tuple(Currency.values)]
FeeBasis = Literal[tuple(SupportContract.FeeBasis.values)]
Amount = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=2, allow_inf_nan=False, ge=-MAX_AMOUNT, le=MAX_AMOUNT),
]
AmountOut = Annotated[
    str, Field(description="A decimal number as a string, in the currency's minor units.")
]
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_CONFLICT = {
    "responses": {
        409: {
            "description": "The record's state does not allow this, or the `version` you sent "
            "is stale (see `current`).",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
    }
}


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


def _money(amount: Decimal | None, currency: str) -> str | None:
    if amount is None:
        return None
    return format(amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))), "f")


def _page(items: list[Any], page: Page) -> dict[str, Any]:
    return {"items": items, "page": page.number, "page_size": page.size, "has_next": page.has_next}


# Contracts.


class ContractOut(Output):
    id: int
    number: str = Field(description="e.g. SC-2026-000012.")
    account_id: int
    account_name: str
    name: str
    start_date: dt.date
    end_date: dt.date
    active: bool = Field(description="Whether today is within its dates.")
    all_products: bool
    product_ids: list[int] = Field(description="The covered products, if not all products.")
    response_hours: int | None = Field(description="The response target in hours, if any.")
    fee_basis: FeeBasis = Field(
        description="Fee terms for work outside the contract: `hourly`, `per_case`, or empty."
    )
    fee_amount: AmountOut | None
    currency: CurrencyCode
    notes: str
    owner_id: int
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ContractPage(Output):
    items: list[ContractOut]
    page: int
    page_size: int
    has_next: bool


class ContractListParams(Input):
    account_id: Id | None = None
    active: bool | None = Field(None, description="true: running today; false: not running.")
    q: text(max_length=200) | None = Field(None, description="Part of number, name or account.")
    page: int = PageNumber
    page_size: int = PageSize


class ContractIn(Input):
    account_id: Id
    name: text(max_length=200, min_length=1)
    start_date: dt.date
    end_date: dt.date
    all_products: bool = True
    product_ids: list[Id] = Field([], max_length=1000)
    response_hours: int | None = Field(None, ge=1, le=8760)
    fee_basis: FeeBasis = ""
    fee_amount: Amount | None = None
    currency: CurrencyCode = "KRW"
    notes: text(max_length=5000) = ""


class ContractChange(Input):
    # Absent: unchanged.
    account_id: Id = None
    name: text(max_length=200, min_length=1) = None
    start_date: dt.date = None
    end_date: dt.date = None
    all_products: bool = None
    product_ids: list[Id] = Field(None, max_length=1000)
    response_hours: int | None = Field(None, ge=1, le=8760)
    fee_basis: FeeBasis = None
    fee_amount: Amount | None = None
    currency: CurrencyCode = None
    notes: text(max_length=5000) = None
    version: Version


_CONTRACT_COLUMNS = (
    "id",
    "number",
    "account_id",
    "account__name",
    "name",
    "start_date",
    "end_date",
    "all_products",
    "response_hours",
    "fee_basis",
    "fee_amount",
    "currency",
    "notes",
    "owner_id",
    "version",
    "created_at",
    "updated_at",
)


def _contract_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    products: dict[int, list[int]] = {row["id"]: [] for row in rows}
    through = SupportContract.products.through
    for link in through.objects.filter(supportcontract_id__in=list(products)).order_by(
        "product_id"
    ):
        products[link.supportcontract_id].append(link.product_id)
    today = clock.today()
    for row in rows:
        row["account_name"] = row.pop("account__name")
        row["active"] = row["start_date"] <= today <= row["end_date"]
        row["product_ids"] = products[row["id"]]
        row["fee_amount"] = _money(row["fee_amount"], row["currency"])
    return rows


def _read_contract(user: User, pk: int) -> dict[str, Any]:
    rows = list(contracts.visible_contracts(user).filter(pk=pk).values(*_CONTRACT_COLUMNS)[:1])
    if not rows:
        raise NotFound(_("No such contract."))
    return _contract_rows(rows)[0]


@router.get(
    "/support-contracts/",
    response=ContractPage,
    operation_id="list_support_contracts",
    summary="List support contracts",
    description="The contracts of accounts you may see, newest first.",
)
def list_support_contracts(request: HttpRequest, params: Query[ContractListParams]) -> Any:
    refuse_unknown_params(request.GET, ContractListParams.model_fields)
    page = contracts.contract_list(
        request.auth,
        account_id=params.account_id,
        active=params.active,
        q=params.q or "",
        page=params.page,
        page_size=params.page_size,
    )
    ids = [record.pk for record in page.items]
    rows = {
        row["id"]: row
        for row in _contract_rows(
            list(SupportContract.objects.filter(pk__in=ids).values(*_CONTRACT_COLUMNS))
        )
    }
    return json_response(_page([rows[pk] for pk in ids], page))


@router.post(
    "/support-contracts/",
    response={201: ContractOut},
    operation_id="create_support_contract",
    summary="Create a support contract",
    description="Numbered SC-<year>-<n>. The account's open cases are linked to it if it "
    "covers them. `product_ids` is needed when it does not cover all products.",
)
def create_support_contract(request: HttpRequest, payload: ContractIn) -> HttpResponse:
    record = contracts.create_contract(request.auth, payload.model_dump())
    return json_response(_read_contract(request.auth, record.pk), status=201)


@router.get(
    "/support-contracts/{id}",
    response=ContractOut,
    operation_id="get_support_contract",
    summary="Read a support contract",
)
def get_support_contract(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_read_contract(request.auth, id))


@router.patch(
    "/support-contracts/{id}",
    response=ContractOut,
    operation_id="edit_support_contract",
    summary="Change a support contract",
    description="Only the fields you send change; `version` is required.",
    openapi_extra=_CONFLICT,
)
def edit_support_contract(request: HttpRequest, id: Id, payload: ContractChange) -> HttpResponse:
    user = request.auth
    data = payload.model_dump(exclude_unset=True)
    version = data.pop("version")
    try:
        contracts.update_contract(user, id, data, version=version)
    except StaleVersion as conflict:
        conflict.current = _read_contract(user, id)
        raise
    return json_response(_read_contract(user, id))


# Fees.


class FeeOut(Output):
    id: int
    case_id: int
    amount: AmountOut
    currency: CurrencyCode
    description: str
    status: Literal[tuple(SupportFee.Status.values)]
    contract_id: int | None = Field(
        description="The contract that covered the case when the fee was proposed: the fee is "
        "for work outside its coverage."
    )
    proposed_by_id: int
    proposed_at: dt.datetime
    answered_at: dt.datetime | None = Field(description="When the customer agreed or declined.")
    waived_by_id: int | None
    waived_at: dt.datetime | None
    waive_reason: str
    charge_id: int | None
    charge_status: Literal[tuple(Charge.Status.values)] | None


class FeeList(Output):
    items: list[FeeOut]


class FeeIn(Input):
    amount: Amount
    currency: CurrencyCode
    description: text(max_length=billing.MAX_DESCRIPTION)


class WaiveIn(Input):
    reason: text(max_length=billing.MAX_DESCRIPTION) = ""


def _fee_row(fee: SupportFee) -> dict[str, Any]:
    # A missing reverse one-to-one raises an AttributeError subclass.
    charge = getattr(fee, "charge", None)
    return {
        "id": fee.pk,
        "case_id": fee.case_id,
        "amount": _money(fee.amount, fee.currency),
        "currency": fee.currency,
        "description": fee.description,
        "status": fee.status,
        "contract_id": fee.contract_id,
        "proposed_by_id": fee.proposed_by_id,
        "proposed_at": fee.proposed_at,
        "answered_at": fee.answered_at,
        "waived_by_id": fee.waived_by_id,
        "waived_at": fee.waived_at,
        "waive_reason": fee.waive_reason,
        "charge_id": charge.pk if charge else None,
        "charge_status": billing.charge_status(charge) if charge else None,
    }


def _fee(user: User, case_id: int, fee_id: int) -> dict[str, Any]:
    case = queries.case(user, case_id)
    for fee in billing.case_fees(case):
        if fee.pk == fee_id:
            return _fee_row(fee)
    raise NotFound(_("No such fee."))


@router.get(
    "/cases/{id}/fees",
    response=FeeList,
    operation_id="list_case_fees",
    summary="A case's support fees",
    description="Oldest first, with the customer's answers and, once charged, the charge.",
)
def list_case_fees(request: HttpRequest, id: Id) -> HttpResponse:
    case = queries.case(request.auth, id)
    return json_response({"items": [_fee_row(fee) for fee in billing.case_fees(case)]})


@router.post(
    "/cases/{id}/fees",
    response={201: FeeOut},
    operation_id="propose_case_fee",
    summary="Propose a support fee",
    description="The customer is e-mailed and agrees or declines on the status page. An agreed "
    "fee is charged when the case is resolved. A case a contract covers may get a fee for work "
    "outside the contract's coverage (`contract_id` names it). 409 for a closed case.",
    openapi_extra=_CONFLICT,
)
def propose_case_fee(request: HttpRequest, id: Id, payload: FeeIn) -> HttpResponse:
    fee = billing.propose_fee(request.auth, id, **payload.model_dump())
    return json_response(_fee(request.auth, id, fee.pk), status=201)


@router.post(
    "/cases/{id}/fees/{fee_id}/waive",
    response=FeeOut,
    operation_id="waive_case_fee",
    summary="Waive a support fee",
    description="Only a proposed or agreed fee that is not billed (409 otherwise); its charge, "
    "if any, is waived too. The customer sees it on the status page.",
    openapi_extra=_CONFLICT,
)
def waive_case_fee(request: HttpRequest, id: Id, fee_id: Id, payload: WaiveIn) -> HttpResponse:
    billing.waive_fee(request.auth, id, fee_id, reason=payload.reason)
    return json_response(_fee(request.auth, id, fee_id))


# Charges.


class ChargeOut(Output):
    id: int
    fee_id: int
    case_id: int
    tracking_number: str
    account_id: int | None
    account_name: str | None
    amount: AmountOut
    currency: CurrencyCode
    description: str
    status: Literal[tuple(Charge.Status.values)] = Field(
        description="`to_bill` while the case is resolved, `waiting` while it is reopened, "
        "`billed` with an invoice, `waived`."
    )
    charged_at: dt.datetime = Field(description="When the case was resolved with the fee agreed.")
    billed_at: dt.datetime | None
    billed_by_id: int | None
    invoice_reference: str


class ChargePage(Output):
    items: list[ChargeOut]
    page: int
    page_size: int
    has_next: bool


class ChargeList(Output):
    items: list[ChargeOut]


class ChargeListParams(Input):
    status: Literal[tuple(Charge.Status.values)] | None = None
    account_id: Id | None = None
    month: text(max_length=7) | None = Field(
        None, description="YYYY-MM: charges that arose in that month."
    )
    page: int = PageNumber
    page_size: int = PageSize


class BillIn(Input):
    charge_ids: list[Id] = Field(max_length=billing.MAX_BATCH)
    invoice_reference: text(max_length=billing.MAX_INVOICE_REFERENCE)


_CHARGE_COLUMNS = (
    "id",
    "fee_id",
    "case_id",
    "case__tracking_number",
    "account_id",
    "account__name",
    "amount",
    "currency",
    "description",
    "status_now",
    "charged_at",
    "billed_at",
    "billed_by_id",
    "invoice_reference",
)


def _charge_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["tracking_number"] = row.pop("case__tracking_number")
        row["account_name"] = row.pop("account__name")
        row["status"] = row.pop("status_now")
        row["amount"] = _money(row["amount"], row["currency"])
    return rows


@router.get(
    "/support-charges/",
    response=ChargePage,
    operation_id="list_support_charges",
    summary="List support fee charges",
    description="For finance: charges of cases you may see, newest first, by `status`, "
    "`account_id` and `month`.",
)
def list_support_charges(request: HttpRequest, params: Query[ChargeListParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, ChargeListParams.model_fields)
    page = billing.charges(
        request.auth,
        status=params.status,
        account_id=params.account_id,
        month=params.month,
        page=params.page,
        page_size=params.page_size,
    )
    ids = [charge.pk for charge in page.items]
    rows = billing.charge_queryset(request.auth).filter(pk__in=ids).values(*_CHARGE_COLUMNS)
    by_id = {row["id"]: row for row in _charge_rows(list(rows))}
    return json_response(_page([by_id[pk] for pk in ids], page))


@router.post(
    "/support-charges/bill",
    response=ChargeList,
    operation_id="bill_support_charges",
    summary="Mark charges billed",
    description="All of them or none: a charge that is not `to_bill` any more (billed by "
    "someone else, waived, its case reopened) makes the answer 409 and nothing changes.",
    openapi_extra=_CONFLICT,
)
def bill_support_charges(request: HttpRequest, payload: BillIn) -> HttpResponse:
    user = request.auth
    billed = billing.mark_billed(
        user, payload.charge_ids, invoice_reference=payload.invoice_reference
    )
    ids = [charge.pk for charge in billed]
    rows = billing.charge_queryset(user).filter(pk__in=ids).values(*_CHARGE_COLUMNS)
    by_id = {row["id"]: row for row in _charge_rows(list(rows))}
    return json_response({"items": [by_id[pk] for pk in ids if pk in by_id]})
