"""Support fees (기술지원료): agreed with the customer, billed after resolution.

The life of a fee:

- an agent proposes it on a case (``propose_fee``): amount, currency, what it is for. The
  customer is e-mailed and answers on the status page (``answer_fee``): agreed or declined, with
  the time. Work goes on either way. A fee on a case that a contract covers is allowed: it is
  for work outside the contract's coverage, and says so.
- when the case is resolved (or closed) with an agreed fee, the fee becomes a ``Charge`` for
  finance (``charge_resolved``), never before. A fee agreed after resolution is charged at once.
- a charge is *to bill* while its case stays resolved and *waiting* while the case is reopened;
  that is read from the case (``charge_status``), so a reopening by any path (an agent, the
  customer's reply) needs no second write. Finance marks charges billed with an invoice
  reference (``mark_billed``), all of a batch or none; a billed charge stays billed.
- an agent may waive a fee that is not billed (``waive_fee``); its charge, if any, is waived too.

Every change is audited, and the customer's timeline shows proposal, answer and waiver.
"""

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case as SqlCase
from django.db.models import CharField, Exists, OuterRef, QuerySet, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events
from trellis.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.money import format_money, validate_amount
from trellis.core.paging import Page, paginate
from trellis.core.services import system_user
from trellis.core.visibility import can, visible

from . import notify
from .models import Case, CaseEvent, Charge, SupportContract, SupportFee

FeeStatus = SupportFee.Status
ChargeStatus = Charge.Status
CHARGE_TYPE = "support_charge"
MAX_DESCRIPTION = 2000
MAX_INVOICE_REFERENCE = 100
# How many charges one "mark billed" takes.
MAX_BATCH = 500
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _describe(fee: SupportFee) -> str:
    return f"{fee.case.tracking_number}: {format_money(fee.amount, fee.currency)}"


def _fee_event(
    case: Case, kind: str, actor: User | None, fee: SupportFee, *, body: str = "", **data: Any
) -> CaseEvent:
    return CaseEvent.objects.create(
        case=case,
        kind=kind,
        public=True,
        at=clock.now(),
        actor=actor,
        author=actor.first_name.strip() if actor is not None else "",
        body=body,
        data={
            "fee": fee.pk,
            "amount": format(fee.amount, "f"),
            "currency": fee.currency,
            **data,
        },
    )


def _charge_event(case: Case, actor: User | None, charge: Charge, **data: Any) -> CaseEvent:
    """Internal: the customer is not shown finance's bookkeeping."""
    return CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.CHARGE,
        public=False,
        at=clock.now(),
        actor=actor,
        data={
            "charge": charge.pk,
            "fee": charge.fee_id,
            "amount": format(charge.amount, "f"),
            "currency": charge.currency,
            **data,
        },
    )


# Reads.


def case_fees(case: Case) -> list[SupportFee]:
    """The fees of a case, oldest first, with their charges. Take ``case`` from a visible read
    (``queries.case`` or the portal's key check): the fees share its rights."""
    return list(
        SupportFee.objects.filter(case=case)
        .select_related("contract", "proposed_by", "waived_by", "charge")
        .order_by("proposed_at", "id")
    )


def charge_status_expression() -> SqlCase:
    """A charge's status in SQL, from its own columns and its case's resolution."""
    return SqlCase(
        When(waived_at__isnull=False, then=Value(ChargeStatus.WAIVED)),
        When(billed_at__isnull=False, then=Value(ChargeStatus.BILLED)),
        When(case__resolved_at__isnull=False, then=Value(ChargeStatus.TO_BILL)),
        default=Value(ChargeStatus.WAITING),
        output_field=CharField(),
    )


def charge_status(charge: Charge) -> str:
    if charge.waived_at is not None:
        return ChargeStatus.WAIVED
    if charge.billed_at is not None:
        return ChargeStatus.BILLED
    if charge.case.resolved_at is not None:
        return ChargeStatus.TO_BILL
    return ChargeStatus.WAITING


def visible_charges(user: User) -> QuerySet[Charge]:
    """Charges by the user's right on charges, of cases they may see."""
    cases = visible(user, Case).filter(pk=OuterRef("case_id"))
    return visible(user, Charge).filter(Exists(cases))


def parse_month(value: Any) -> tuple[dt.date, dt.date] | None:
    """ "2026-03" -> (first day, first day of the next month); ``ValidationFailed`` if bad."""
    if value in (None, ""):
        return None
    match = _MONTH.match(str(value).strip())
    if match:
        year, month = int(match[1]), int(match[2])
        if 2000 <= year <= 9998 and 1 <= month <= 12:
            start = dt.date(year, month, 1)
            end = dt.date(year + month // 12, month % 12 + 1, 1)
            return start, end
    raise ValidationFailed({"month": [_("Give a month as YYYY-MM.")]})


def charge_queryset(
    user: User,
    *,
    status: str | None = None,
    account_id: int | None = None,
    month: str | None = None,
) -> QuerySet[Charge]:
    """Charges the user may see, filtered, newest first, with ``status_now`` annotated.

    ``month`` (YYYY-MM) is the month the charge arose, in the server's time zone.
    """
    if not can(user, "view", CHARGE_TYPE):
        raise PermissionDenied(_("You may not see support fee charges."))
    errors: dict[str, list[str]] = {}
    if status and status not in ChargeStatus.values:
        errors["status"] = [_("Unknown status.")]
    try:
        bounds = parse_month(month)
    except ValidationFailed as failure:
        errors.update(failure.errors)
        bounds = None
    if errors:
        raise ValidationFailed(errors)
    queryset = visible_charges(user).select_related("case", "account", "owner", "billed_by")
    if status == ChargeStatus.WAIVED:
        queryset = queryset.filter(waived_at__isnull=False)
    elif status == ChargeStatus.BILLED:
        queryset = queryset.filter(billed_at__isnull=False, waived_at__isnull=True)
    elif status in (ChargeStatus.TO_BILL, ChargeStatus.WAITING):
        queryset = queryset.filter(
            billed_at__isnull=True,
            waived_at__isnull=True,
            case__resolved_at__isnull=status == ChargeStatus.WAITING,
        )
    if account_id is not None:
        queryset = queryset.filter(account_id=account_id)
    if bounds is not None:
        start, end = (timezone.make_aware(dt.datetime.combine(day, dt.time())) for day in bounds)
        queryset = queryset.filter(charged_at__gte=start, charged_at__lt=end)
    return queryset.annotate(status_now=charge_status_expression()).order_by("-charged_at", "-id")


def charges(user: User, *, page: int = 1, page_size: int | None = None, **filters: Any) -> Page:
    return paginate(charge_queryset(user, **filters), page, page_size)


CSV_COLUMNS = (
    "charge",
    "status",
    "tracking_number",
    "account",
    "description",
    "amount",
    "currency",
    "charged_at",
    "billed_at",
    "invoice_reference",
)


def csv_rows(user: User, **filters: Any) -> Iterator[str]:
    """The filtered charges as CSV lines (a header first), read in chunks."""

    class Line:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Line())
    yield writer.writerow([_csv_safe(_(name)) for name in CSV_COLUMNS])
    for charge in charge_queryset(user, **filters).iterator(500):
        yield writer.writerow(
            [
                charge.pk,
                charge.status_now,
                charge.case.tracking_number,
                _csv_safe(charge.account.name if charge.account else ""),
                _csv_safe(charge.description),
                format(charge.amount, "f"),
                charge.currency,
                charge.charged_at.isoformat(),
                charge.billed_at.isoformat() if charge.billed_at else "",
                _csv_safe(charge.invoice_reference),
            ]
        )


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    value = str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def fee_initial(case: Case) -> dict[str, Any]:
    """What the fee form starts with: the per-case fee of the account's contract terms."""
    terms = case.contract if case.contract_id else None
    if terms is None and case.account_id is not None:
        today = clock.today()
        terms = (
            SupportContract.objects.filter(
                account_id=case.account_id, start_date__lte=today, end_date__gte=today
            )
            .exclude(fee_basis="")
            .order_by("-end_date", "id")
            .first()
        )
    if terms is None or not terms.fee_basis:
        return {}
    initial: dict[str, Any] = {"currency": terms.currency}
    if terms.fee_basis == SupportContract.FeeBasis.PER_CASE:
        initial["amount"] = terms.fee_amount
    return initial


# Writes.


def _checked_money(amount: Any, currency: Any, errors: dict[str, list[str]]) -> Decimal | None:
    try:
        value = Decimal(str(amount)) if amount not in (None, "") else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        errors["amount"] = [_("Enter an amount.")]
        return None
    try:
        validate_amount(value, str(currency or ""))
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors[name] = messages
        return None
    if value == 0:
        errors["amount"] = [_("A fee must be more than zero.")]
        return None
    return value


def _checked_description(value: Any, errors: dict[str, list[str]], field: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if field == "description" and not text:
        errors[field] = [_("Say what the fee is for.")]
    elif len(text) > MAX_DESCRIPTION:
        errors[field] = [_("At most %(n)d characters.") % {"n": MAX_DESCRIPTION}]
    return text


def propose_fee(
    actor: User, case_id: Any, *, amount: Any, currency: Any, description: Any
) -> SupportFee:
    """Propose a fee on a case; the customer is e-mailed and sees it on the status page.

    A case a contract covers may get one too (for work outside the contract): the fee names the
    contract. A closed or merged case takes none (``Conflict``).
    """
    from . import services  # the case's lock and checks; services calls back into billing

    with transaction.atomic():
        case = services.lock_case(actor, case_id)
        errors: dict[str, list[str]] = {}
        value = _checked_money(amount, currency, errors)
        text = _checked_description(description, errors, "description")
        if errors:
            raise ValidationFailed(errors)
        services.not_merged(case)
        if case.status == Case.Status.CLOSED:
            raise Conflict(_("This case is closed. Reopen it to propose a fee."))
        fee = SupportFee.objects.create(
            case=case,
            amount=value,
            currency=currency,
            description=text,
            contract_id=case.contract_id,
            proposed_by=actor,
            proposed_at=clock.now(),
        )
        _fee_event(
            case,
            CaseEvent.Kind.FEE_PROPOSED,
            actor,
            fee,
            body=text,
            contract=case.contract.number if case.contract_id else "",
        )
        audit.record(
            actor,
            fee,
            AuditEvent.Action.CREATED,
            {
                "case": case.pk,
                "amount": value,
                "currency": currency,
                "description": text,
                "contract": case.contract_id,
            },
            _describe(fee),
        )
        notify.fee_proposed(case, fee)
        events.emit("support_fee.proposed", id=fee.pk, case_id=case.pk, actor_id=actor.pk)
    return fee


def answer_fee(case: Case, fee_id: Any, *, agree: bool) -> SupportFee:
    """The customer's answer on the status page; ``case`` is the one their key opened.

    A fee of another case is ``NotFound``; one already answered or waived is ``Conflict``.
    Agreeing on a case that is already resolved charges the fee at once.
    """
    try:
        fee_id = int(fee_id)
    except (TypeError, ValueError):
        raise NotFound(_("No such fee.")) from None
    actor = system_user()
    with transaction.atomic():
        locked = Case.objects.select_for_update().get(pk=case.pk)
        fee = SupportFee.objects.select_for_update().filter(pk=fee_id, case=locked).first()
        if fee is None:
            raise NotFound(_("No such fee."))
        if fee.status != FeeStatus.PROPOSED:
            raise Conflict(
                _("You already answered this fee.")
                if fee.status in (FeeStatus.AGREED, FeeStatus.DECLINED)
                else _("This fee was withdrawn.")
            )
        new = FeeStatus.AGREED if agree else FeeStatus.DECLINED
        fee.status = new
        fee.answered_at = clock.now()
        fee.save(update_fields=["status", "answered_at"])
        _fee_event(
            locked,
            CaseEvent.Kind.FEE_AGREED if agree else CaseEvent.Kind.FEE_DECLINED,
            actor,
            fee,
        )
        audit.record(
            actor,
            fee,
            AuditEvent.Action.UPDATED,
            {"status": [FeeStatus.PROPOSED, new], "answered_at": [None, fee.answered_at]},
            _describe(fee),
        )
        Case.objects.filter(pk=locked.pk).update(updated_at=fee.answered_at)
        if agree and locked.resolved_at is not None:
            _charge(actor, locked, fee)
        events.emit("support_fee.answered", id=fee.pk, case_id=locked.pk, status=new)
    return fee


def waive_fee(actor: User, case_id: Any, fee_id: Any, *, reason: Any = "") -> SupportFee:
    """Give up a fee that is not billed; the customer sees that it was waived."""
    from . import services

    with transaction.atomic():
        case = services.lock_case(actor, case_id)
        errors: dict[str, list[str]] = {}
        text = _checked_description(reason, errors, "reason")
        try:
            fee_id = int(fee_id)
        except (TypeError, ValueError):
            errors["fee_id"] = [_("No such fee.")]
        if errors:
            raise ValidationFailed(errors)
        fee = (
            SupportFee.objects.select_for_update()
            .select_related("case")
            .filter(pk=fee_id, case=case)
            .first()
        )
        if fee is None:
            raise NotFound(_("No such fee."))
        if fee.status not in (FeeStatus.PROPOSED, FeeStatus.AGREED):
            raise Conflict(_("Only a fee that is proposed or agreed can be waived."))
        charge = Charge.objects.select_for_update().filter(fee=fee).first()
        if charge is not None and charge.billed_at is not None:
            raise Conflict(_("This fee is billed already; it can no longer be waived."))
        now = clock.now()
        old = fee.status
        fee.status = FeeStatus.WAIVED
        fee.waived_by = actor
        fee.waived_at = now
        fee.waive_reason = text
        fee.save(update_fields=["status", "waived_by", "waived_at", "waive_reason"])
        if charge is not None:
            charge.waived_at = now
            charge.save(update_fields=["waived_at"])
            audit.record(
                actor, charge, AuditEvent.Action.UPDATED, {"waived_at": [None, now]}, str(charge)
            )
        _fee_event(case, CaseEvent.Kind.FEE_WAIVED, actor, fee, body=text)
        audit.record(
            actor,
            fee,
            AuditEvent.Action.UPDATED,
            {"status": [old, FeeStatus.WAIVED], "waive_reason": ["", text]},
            _describe(fee),
        )
        events.emit("support_fee.waived", id=fee.pk, case_id=case.pk, actor_id=actor.pk)
    return fee


def _charge(actor: User | None, case: Case, fee: SupportFee) -> Charge:
    charge = Charge.objects.create(
        fee=fee,
        case=case,
        account_id=case.account_id,
        owner_id=fee.proposed_by_id,
        team_id=case.team_id,
        amount=fee.amount,
        currency=fee.currency,
        description=fee.description,
        charged_at=clock.now(),
    )
    _charge_event(case, actor, charge, what="to_bill")
    audit.record(
        actor,
        charge,
        AuditEvent.Action.CREATED,
        {
            "case": case.pk,
            "fee": fee.pk,
            "account": case.account_id,
            "amount": fee.amount,
            "currency": fee.currency,
        },
        str(charge),
    )
    events.emit("support_charge.created", id=charge.pk, case_id=case.pk)
    return charge


def charge_resolved(actor: User | None, case: Case) -> list[Charge]:
    """After a status change of ``case`` (locked, saved): if it is now resolved or closed,
    its agreed fees that have no charge yet get one. Safe to call after any status change."""
    if case.resolved_at is None:
        return []
    fees = SupportFee.objects.filter(
        case=case, status=FeeStatus.AGREED, charge__isnull=True
    ).order_by("id")
    return [_charge(actor, case, fee) for fee in fees]


def mark_billed(actor: User, charge_ids: Iterable[Any], *, invoice_reference: Any) -> list[Charge]:
    """Mark charges billed with an invoice reference: every one of them, or none.

    A charge that is not to bill any more (billed by someone else a moment ago, waived, its
    case reopened) makes the whole batch a ``Conflict`` naming it. Of two people billing the
    same charge at once, one bills it; the other gets ``Conflict``.
    """
    if not can(actor, "edit", CHARGE_TYPE):
        raise PermissionDenied(_("You may not bill support fees."))
    errors: dict[str, list[str]] = {}
    reference = invoice_reference.strip() if isinstance(invoice_reference, str) else ""
    if not reference:
        errors["invoice_reference"] = [_("Give the invoice reference.")]
    elif len(reference) > MAX_INVOICE_REFERENCE:
        errors["invoice_reference"] = [
            _("At most %(n)d characters.") % {"n": MAX_INVOICE_REFERENCE}
        ]
    try:
        ids = sorted({int(value) for value in charge_ids})
    except (TypeError, ValueError):
        ids = []
        errors["charge_ids"] = [_("Give a list of ids.")]
    if not ids and "charge_ids" not in errors:
        errors["charge_ids"] = [_("Choose the charges to mark billed.")]
    elif len(ids) > MAX_BATCH:
        errors["charge_ids"] = [_("At most %(n)d at a time.") % {"n": MAX_BATCH}]
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        found = list(
            visible_charges(actor)
            .select_for_update(of=("self",))
            .select_related("case")
            .filter(pk__in=ids)
            .order_by("pk")
        )
        missing = set(ids) - {charge.pk for charge in found}
        if missing:
            raise ValidationFailed(
                {
                    "charge_ids": [
                        _("No such charge: %(ids)s.")
                        % {"ids": ", ".join(map(str, sorted(missing)))}
                    ]
                }
            )
        not_billable = [c for c in found if charge_status(c) != ChargeStatus.TO_BILL]
        if not_billable:
            raise Conflict(
                _("Not to bill (any more): %(list)s. Nothing was marked billed.")
                % {
                    "list": ", ".join(
                        f"{c.case.tracking_number} ({ChargeStatus(charge_status(c)).label})"
                        for c in not_billable
                    )
                }
            )
        now = clock.now()
        # The condition repeats what the lock made sure of, for databases without row locks.
        updated = Charge.objects.filter(
            pk__in=ids, billed_at__isnull=True, waived_at__isnull=True
        ).update(billed_at=now, billed_by=actor, invoice_reference=reference)
        if updated != len(ids):
            raise Conflict(_("Someone else billed some of these charges just now."))
        for charge in found:
            charge.billed_at, charge.billed_by, charge.invoice_reference = now, actor, reference
            audit.record(
                actor,
                charge,
                AuditEvent.Action.UPDATED,
                {"billed_at": [None, now], "invoice_reference": ["", reference]},
                str(charge),
            )
            _charge_event(charge.case, actor, charge, what="billed", invoice=reference)
        events.emit("support_charge.billed", ids=ids, actor_id=actor.pk)
    return found
