"""Support contracts (유지보수 계약): their reads and writes, and which contract covers a case.

A contract belongs to an account and is seen by whoever may see that account (and whose role
lets them see support contracts at all, by default every role that sees accounts). Writing one
takes the ``support_contract`` right; the generic record service checks the version, audits and
emits ``support_contract.created`` / ``.updated``.

Coverage: a case is covered by an active contract of its account (today within its dates) that
covers all products or lists the case's product. A contract listing the product wins over one
that covers everything; then the one that runs longest. The link is stored on the case when it
arrives (``link_case`` from the intake) and recomputed when its product, contact or account
changes and when a contract of its account is written; a case keeps the contract it was
worked under after it is resolved.
"""

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils.translation import gettext as _

from trellis.core import audit, clock, numbering, records
from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.money import validate_amount
from trellis.core.paging import Page, paginate
from trellis.core.visibility import can, visible
from trellis.crm.models import Account

from .models import Case, CaseEvent, SupportContract

OBJECT_TYPE = "support_contract"
NUMBER_PREFIX = "SC"
# Cases that are still worked on follow a change of their account's contracts.
_OPEN_STATUSES = (
    Case.Status.NEW,
    Case.Status.OPEN,
    Case.Status.WAITING_ON_CUSTOMER,
    Case.Status.IN_PROGRESS,
)


# Reads.


def visible_contracts(user: User) -> QuerySet[SupportContract]:
    """The contracts ``user`` may see: by their right on contracts, and their account's."""
    accounts = visible(user, Account).filter(pk=OuterRef("account_id"))
    return visible(user, SupportContract).filter(Exists(accounts))


def contract(user: User, pk: Any) -> SupportContract:
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(_("No such contract.")) from None
    found = (
        visible_contracts(user)
        .select_related("account", "owner")
        .prefetch_related("products")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise NotFound(_("No such contract."))
    return found


def contract_list(
    user: User,
    *,
    account_id: int | None = None,
    active: bool | None = None,
    q: str = "",
    page: int = 1,
    page_size: int | None = None,
) -> Page:
    """A page of contracts, newest first; ``active`` keeps those running today (or not)."""
    if not can(user, "view", OBJECT_TYPE):
        raise PermissionDenied(_("You may not see support contracts."))
    queryset = visible_contracts(user).select_related("account")
    if account_id is not None:
        queryset = queryset.filter(account_id=account_id)
    today = clock.today()
    running = Q(start_date__lte=today, end_date__gte=today)
    if active is True:
        queryset = queryset.filter(running)
    elif active is False:
        queryset = queryset.exclude(running)
    q = (q or "").strip()
    if q:
        queryset = queryset.filter(
            Q(number__icontains=q) | Q(name__icontains=q) | Q(account__name__icontains=q)
        )
    return paginate(queryset.order_by("-id"), page, page_size)


def account_contracts(user: User, account: Account, limit: int = 10) -> list[SupportContract]:
    """An account's contracts for the case sidebar: running ones first, then by end date."""
    rows = list(
        visible_contracts(user)
        .filter(account=account)
        .prefetch_related("products")
        .order_by("-end_date", "-id")[:limit]
    )
    today = clock.today()
    return sorted(rows, key=lambda c: not c.is_active_on(today))


# Writes.


def _describe(record: SupportContract) -> str:
    return str(record)


def _prepare(record: SupportContract) -> None:
    errors: dict[str, str] = {}
    if record.start_date and record.end_date and record.end_date < record.start_date:
        errors["end_date"] = _("The end date cannot be before the start date.")
    if record.fee_amount is not None:
        try:
            validate_amount(record.fee_amount, record.currency, "fee_amount")
        except ValidationError as exc:
            errors.update({k: v[0] for k, v in exc.message_dict.items()})
    elif record.fee_basis:
        errors["fee_amount"] = _("Give the rate or fee for this kind of fee terms.")
    if record.fee_amount is not None and not record.fee_basis:
        errors["fee_basis"] = _("Say whether the amount is an hourly rate or a fee per case.")
    if errors:
        raise ValidationError(errors)


CONTRACT = records.RecordSpec(
    model=SupportContract,
    fields=(
        "account",
        "name",
        "start_date",
        "end_date",
        "all_products",
        "response_hours",
        "fee_basis",
        "fee_amount",
        "currency",
        "notes",
        "owner",
    ),
    m2m=("products",),
    prepare=_prepare,
    describe=_describe,
)


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    """Names as the API and forms give them -> the spec's; amounts as decimals."""
    data = dict(data)
    errors: dict[str, list[str]] = {}
    for name in ("start_date", "end_date"):
        value = data.get(name)
        if isinstance(value, str):
            try:
                data[name] = dt.date.fromisoformat(value.strip())
            except ValueError:
                errors[name] = [_("Enter a valid date.")]
    if errors:
        raise ValidationFailed(errors)
    if "product_ids" in data:
        data["products"] = data.pop("product_ids")
    if "fee_amount" in data and data["fee_amount"] not in (None, ""):
        try:
            data["fee_amount"] = Decimal(str(data["fee_amount"]))
        except InvalidOperation:
            raise ValidationFailed({"fee_amount": [_("Enter a number.")]}) from None
    return data


def _check_products(data: dict[str, Any], current: SupportContract | None) -> None:
    all_products = data.get("all_products", current.all_products if current else True)
    if all_products:
        return
    products = data.get("products")
    if products is None and current is not None:
        products = list(current.products.values_list("pk", flat=True))
    if not products:
        raise ValidationFailed(
            {"products": [_("Name the covered products, or let it cover all products.")]}
        )


def create_contract(actor: User, data: dict[str, Any]) -> SupportContract:
    """A new contract, numbered ``SC-<year>-<n>``; open cases of its account are relinked."""
    data = _clean(data)
    with transaction.atomic():
        _check_products(data, None)
        preset = {"number": numbering.next_number(NUMBER_PREFIX)}
        record = records.create(actor, CONTRACT, data, preset=preset)
        relink_account(actor, record.account_id)
    return record


def update_contract(
    actor: User, pk: Any, data: dict[str, Any], *, version: int | None
) -> SupportContract:
    """Change a contract if it is still at ``version`` (``StaleVersion`` otherwise)."""
    data = _clean(data)
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(_("No such contract.")) from None
    with transaction.atomic():
        current = visible_contracts(actor).filter(pk=pk).first()
        if current is None:
            raise NotFound(_("No such contract."))
        _check_products(data, current)
        record = records.update(actor, CONTRACT, pk, data, version)
        relink_account(actor, record.account_id)
        if current.account_id != record.account_id:
            relink_account(actor, current.account_id)
    return record


# Coverage.


def covering_contract(case: Case, day: dt.date | None = None) -> SupportContract | None:
    """The active contract of the case's account that covers its product, if any."""
    account_id = case.account_id
    if account_id is None:
        return None
    day = day or clock.today()
    covers = Q(all_products=True)
    if case.product_id is not None:
        covers |= Q(products=case.product_id)
    candidates = (
        SupportContract.objects.filter(
            account_id=account_id, start_date__lte=day, end_date__gte=day
        )
        .filter(covers)
        .distinct()
    )
    return min(
        candidates,
        key=lambda c: (c.all_products, -c.end_date.toordinal(), c.pk),
        default=None,
    )


def link_case(case: Case, actor: User | None = None) -> SupportContract | None:
    """Store which contract covers ``case`` now; an internal timeline entry if it changed.

    The case's account decides (the intake takes it from the contact, or the e-mail domain).
    Costs no query for a case without an account and without a contract. Does not bump the
    case's version: coverage follows from other records and must not make an agent's open form
    stale.
    """
    if case.account_id is None and case.contract_id is None:
        return None
    found = covering_contract(case)
    new_id = found.pk if found is not None else None
    if new_id == case.contract_id:
        return found
    old = case.contract
    Case.objects.filter(pk=case.pk).update(contract=found)
    case.contract = found
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.COVERAGE,
        public=False,
        at=clock.now(),
        actor=actor,
        data={
            "from": old.number if old is not None else "",
            "to": found.number if found is not None else "",
            "to_id": new_id,
        },
    )
    audit.record(
        actor,
        case,
        AuditEvent.Action.UPDATED,
        {"contract": [old.pk if old else None, new_id]},
        f"{case.tracking_number} {case.subject}",
    )
    return found


def relink_account(actor: User | None, account_id: int | None) -> int:
    """Recompute coverage of the account's cases still being worked on; how many changed."""
    if account_id is None:
        return 0
    changed = 0
    cases = (
        Case.objects.filter(
            account_id=account_id,
            status__in=_OPEN_STATUSES,
            merged_into__isnull=True,
        )
        .select_related("contract")
        .order_by("id")
    )
    for case in cases.iterator(200):
        before = case.contract_id
        link_case(case, actor)
        changed += case.contract_id != before
    return changed
