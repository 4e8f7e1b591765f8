"""The agent's pages for support contracts and billing, and a case's fee actions.

Like ``views``: reads through ``contracts`` and ``billing`` (visibility applied there), writes
through their services; a hidden record is a 404, a missing right a 403, a stale version or a
state that no longer fits a 409 with the page as it is now, bad input a 422 with the form.
"""

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from trellis.core import clock, errors
from trellis.core.views import page_number, service_view
from trellis.core.visibility import can

from . import billing, contracts, queries
from .billing_forms import (
    BillForm,
    BillingFilters,
    ContractFilters,
    ContractForm,
    FeeForm,
    WaiveForm,
)
from .views import STALE_NOTICE, _case_page, _detail_url

CONTRACT = contracts.OBJECT_TYPE


def _require(user, action: str, object_type: str) -> None:
    if not can(user, action, object_type):
        raise PermissionDenied(_("You may not do this."))


# Contracts.


@service_view
@require_GET
def contract_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    filters = ContractFilters(request.GET)
    values = filters.values()
    page = contracts.contract_list(user, page=page_number(request), **values)
    context = {
        "page": page,
        "filters": filters,
        "today": clock.today(),
        "can_create": can(user, "create", CONTRACT),
    }
    return render(request, "support/agent/contract_list.html", context)


@service_view
@require_http_methods(["GET", "POST"])
def contract_new(request: HttpRequest) -> HttpResponse:
    user = request.user
    _require(user, "create", CONTRACT)
    initial = {"all_products": True, "currency": "KRW"}
    if request.GET.get("account", "").isdigit():
        initial["account"] = int(request.GET["account"])
    form = ContractForm(request.POST or None, user=user, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            record = contracts.create_contract(user, form.service_data())
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            saved = _("Contract %(number)s was saved.") % {"number": record.number}
            messages.success(request, saved)
            return redirect("support:contract-detail", pk=record.pk)
    status = 422 if form.errors else 200
    return render(
        request, "support/agent/contract_form.html", {"form": form, "contract": None}, status=status
    )


@service_view
@require_http_methods(["GET", "POST"])
def contract_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The contract, the cases it covers, and (for those who may) its edit form."""
    user = request.user
    record = contracts.contract(user, pk)
    can_edit = can(user, "edit", CONTRACT)
    form = None
    status = 200
    conflict = ""
    if can_edit:
        form = ContractForm(
            request.POST or None, user=user, initial=ContractForm.initial_from(record)
        )
    if request.method == "POST":
        _require(user, "edit", CONTRACT)
        if form.is_valid():
            try:
                contracts.update_contract(
                    user, record.pk, form.service_data(), version=form.cleaned_data["version"]
                )
            except errors.StaleVersion:
                record = contracts.contract(user, pk)
                data = request.POST.copy()
                data["version"] = str(record.version)
                form = ContractForm(data, user=user)
                form.is_valid()
                conflict, status = str(STALE_NOTICE), 409
            except errors.ValidationFailed as exc:
                form.add_service_errors(exc.errors)
                status = 422
            else:
                messages.success(request, _("The contract was saved."))
                return redirect("support:contract-detail", pk=record.pk)
        else:
            status = 422
    covered = list(
        queries.case_queryset(user, view="all").filter(contract=record).order_by("-id")[:20]
    )
    context = {
        "contract": record,
        "form": form,
        "conflict": conflict,
        "covered": covered,
        "active": record.is_active_on(clock.today()),
    }
    return render(request, "support/agent/contract_detail.html", context, status=status)


# A case's fees.


@service_view
@require_POST
def case_fee(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    case = queries.case(user, pk)
    _require(user, "edit", "case")
    form = FeeForm(request.POST)
    status = 422
    extra: dict[str, Any] = {}
    if form.is_valid():
        try:
            billing.propose_fee(user, case.pk, **form.cleaned_data)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        except errors.Conflict as exc:
            extra["conflict"], status = exc.detail, 409
        else:
            messages.success(request, _("The fee was proposed; the customer was e-mailed."))
            return redirect(_detail_url(case.pk, "fees"))
    return _case_page(request, queries.case(user, pk), status=status, fee_form=form, **extra)


@service_view
@require_POST
def case_fee_waive(request: HttpRequest, pk: int, fee_id: int) -> HttpResponse:
    user = request.user
    case = queries.case(user, pk)
    _require(user, "edit", "case")
    form = WaiveForm(request.POST)
    if form.is_valid():
        try:
            billing.waive_fee(user, case.pk, fee_id, reason=form.cleaned_data["reason"])
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        except errors.Conflict as exc:
            return _case_page(request, queries.case(user, pk), status=409, conflict=exc.detail)
        else:
            messages.success(request, _("The fee was waived."))
            return redirect(_detail_url(case.pk, "fees"))
    return _case_page(request, queries.case(user, pk), status=422, waive_form=form)


# Billing.


@service_view
@require_GET
def billing_list(request: HttpRequest) -> HttpResponse:
    """Charges for finance, filtered by status, account and month; ``?format=csv`` exports."""
    user = request.user
    _require(user, "view", billing.CHARGE_TYPE)
    if request.GET.get("format") == "csv":
        values = _filters(user, request.GET).values()
        response = StreamingHttpResponse(
            billing.csv_rows(user, **values), content_type="text/csv; charset=utf-8"
        )
        stamp = clock.today().isoformat()
        response["Content-Disposition"] = f'attachment; filename="support-charges-{stamp}.csv"'
        return response
    return _billing_page(request, request.GET)


def _filters(user, given: QueryDict) -> BillingFilters:
    data = given.copy()
    if "status" not in data:
        data["status"] = billing.ChargeStatus.TO_BILL
    return BillingFilters(data, user=user)


def _billing_page(
    request: HttpRequest,
    given: QueryDict,
    *,
    status: int = 200,
    bill_form: BillForm | None = None,
    notice: str = "",
) -> HttpResponse:
    user = request.user
    filters = _filters(user, given)
    page = billing.charges(user, page=page_number(request), **filters.values())
    query = filters.data.copy()
    query.pop("page", None)
    query.pop("format", None)
    context = {
        "page": page,
        "filters": filters,
        "query": query.urlencode(),
        "csv_url": reverse("support:billing") + "?" + _with(query, format="csv"),
        "can_bill": can(user, "edit", billing.CHARGE_TYPE),
        "bill_form": bill_form or BillForm(),
        "conflict": notice,
    }
    return render(request, "support/agent/billing.html", context, status=status)


def _with(query: QueryDict, **values: str) -> str:
    query = query.copy()
    for key, value in values.items():
        query[key] = value
    return query.urlencode()


@service_view
@require_POST
def billing_mark(request: HttpRequest) -> HttpResponse:
    """Mark the ticked charges billed; the list comes back as it was filtered."""
    user = request.user
    _require(user, "edit", billing.CHARGE_TYPE)
    form = BillForm(request.POST)
    back = QueryDict(request.POST.get("back", ""))
    if form.is_valid():
        try:
            billed = billing.mark_billed(
                user,
                form.cleaned_data["charges"],
                invoice_reference=form.cleaned_data["invoice_reference"],
            )
        except errors.Conflict as exc:
            return _billing_page(request, back, status=409, bill_form=form, notice=exc.detail)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("%(n)d charges were marked billed.") % {"n": len(billed)})
            return redirect(reverse("support:billing") + "?" + back.urlencode())
    return _billing_page(request, back, status=422, bill_form=form)
