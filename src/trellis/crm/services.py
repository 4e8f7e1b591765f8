"""Every write to CRM records. Views, the API, the CLI and importers all come through here."""

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from trellis.core import audit, events, records, registry
from trellis.core.errors import PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.money import MAX_AMOUNT, MINOR_UNITS, validate_amount
from trellis.core.validators import (
    normalize_business_registration_number,
    normalize_email,
    normalize_phone,
    search_key,
)
from trellis.core.visibility import can, visible
from trellis.process.pipelines import services as pipelines

from .models import Account, Activity, Contact, Lead, Opportunity, Order, OrderLine, Product

_OWNERSHIP = ("owner", "team")


def _normalize(instance: Any, **normalizers) -> None:
    """Apply each field's normaliser, collecting every error before raising."""
    errors: dict[str, list[str]] = {}
    for name, normalize in normalizers.items():
        try:
            setattr(instance, name, normalize(getattr(instance, name)))
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)


def _prepare_account(account: Account) -> None:
    _normalize(
        account,
        email=normalize_email,
        phone=normalize_phone,
        business_registration_number=normalize_business_registration_number,
    )
    account.search_text = search_key(account.name, account.email, account.phone)


def _prepare_contact(contact: Contact) -> None:
    _normalize(contact, email=normalize_email, phone=normalize_phone, mobile=normalize_phone)
    contact.search_text = search_key(contact.name, contact.email, contact.phone, contact.mobile)


def _prepare_lead(lead: Lead) -> None:
    _normalize(lead, email=normalize_email, phone=normalize_phone)
    lead.search_text = search_key(lead.name, lead.company, lead.email, lead.phone)


def _prepare_opportunity(opportunity: Opportunity) -> None:
    _check_money(opportunity.amount, opportunity.currency)
    opportunity.search_text = search_key(opportunity.name)


def _prepare_product(product: Product) -> None:
    _check_money(product.unit_price, product.currency, "unit_price")


def _prepare_order(order: Order) -> None:
    if order.currency not in MINOR_UNITS:
        raise ValidationError({"currency": _("Unknown currency %(c)s.") % {"c": order.currency}})


def _check_money(amount: Any, currency: str, field: str = "amount") -> None:
    try:
        amount = Decimal(str(amount))
    except ArithmeticError:
        raise ValidationError({field: _("Enter a number.")}) from None
    validate_amount(amount, currency, field)


ACCOUNT = records.RecordSpec(
    model=Account,
    fields=(
        "name",
        "business_registration_number",
        "industry",
        "website",
        "email",
        "phone",
        "address",
        "country",
        "description",
        *_OWNERSHIP,
    ),
    prepare=_prepare_account,
)
CONTACT = records.RecordSpec(
    model=Contact,
    fields=("name", "title", "email", "phone", "mobile", "notes", *_OWNERSHIP),
    m2m=("accounts",),
    prepare=_prepare_contact,
)
LEAD = records.RecordSpec(
    model=Lead,
    fields=("name", "company", "email", "phone", "source", "status", "notes", *_OWNERSHIP),
    prepare=_prepare_lead,
)
OPPORTUNITY = records.RecordSpec(
    model=Opportunity,
    fields=(
        "name",
        "account",
        "contact",
        "amount",
        "currency",
        "expected_close_date",
        "probability",
        "status",
        "description",
        *_OWNERSHIP,
    ),
    prepare=_prepare_opportunity,
)
PRODUCT = records.RecordSpec(
    model=Product,
    fields=("name", "sku", "description", "unit_price", "currency", "is_active", *_OWNERSHIP),
    prepare=_prepare_product,
)
ORDER = records.RecordSpec(
    model=Order,
    fields=("account", "opportunity", "status", "currency", "order_date", "notes", *_OWNERSHIP),
    prepare=_prepare_order,
)


def _prepare_activity(activity: Activity) -> None:
    if activity.is_voc and activity.kind != Activity.Kind.NOTE:
        raise ValidationError({"is_voc": _("Only a note can be marked as voice of the customer.")})


ACTIVITY = records.RecordSpec(
    model=Activity,
    fields=("kind", "subject", "body", "occurred_at", "is_voc", *_OWNERSHIP),
    prepare=_prepare_activity,
)

SPECS = {
    "account": ACCOUNT,
    "contact": CONTACT,
    "lead": LEAD,
    "opportunity": OPPORTUNITY,
    "product": PRODUCT,
    "order": ORDER,
    "activity": ACTIVITY,
}


def create(
    actor: User,
    object_type: str,
    data: Mapping[str, Any],
    preset: Mapping[str, Any] | None = None,
) -> Any:
    """A new record from user ``data``; ``preset`` holds values the calling code decided
    (e.g. the owner of a contact made from an e-mail), which are not checked as input."""
    if object_type in ("order", "activity"):
        raise ValueError(f"use create_{object_type}()")
    if object_type == "opportunity" and "probability" in data:
        # A probability given by hand is kept when the deal moves between stages.
        preset = {**(preset or {}), "probability_manual": True}
    with transaction.atomic():
        record = records.create(actor, SPECS[object_type], data, preset)
        pipelines.enter_pipeline(actor, record)
    return record


def update(
    actor: User, object_type: str, pk: int, data: Mapping[str, Any], version: int | None
) -> Any:
    if object_type == "order" and "lines" in data:
        raise ValueError("use set_order_lines()")
    if object_type != "opportunity":
        return records.update(actor, SPECS[object_type], pk, data, version)
    data = dict(data)
    # A deal in a pipeline is won or lost by entering a won or lost stage.
    status = data.pop("status", None)
    with transaction.atomic():
        deal = records.update(actor, OPPORTUNITY, pk, data, version)
        if "probability" in data and not deal.probability_manual:
            Opportunity.objects.filter(pk=pk).update(probability_manual=True)
            deal.probability_manual = True
        if status is not None and status != deal.status:
            if deal.stage_id is None:
                deal = records.update(actor, OPPORTUNITY, pk, {"status": status}, deal.version)
            else:
                deal = pipelines.move_to_kind(
                    actor, "opportunity", pk, status, version=deal.version
                ).record
    return deal


def update_many(
    actor: User, object_type: str, items: Sequence[tuple[int, Mapping[str, Any], int | None]]
) -> list[Any]:
    """``update`` for many records of one type at once (``records.update_many``). A deal's
    status and an order's lines change through ``update`` only: they move a pipeline or a
    total."""
    if object_type == "order" and any("lines" in data for _pk, data, _version in items):
        raise ValueError("use set_order_lines()")
    if object_type == "opportunity" and any("status" in data for _pk, data, _v in items):
        raise ValueError("a deal's status changes one deal at a time: use update()")
    with transaction.atomic():
        updated = records.update_many(actor, SPECS[object_type], items)
        if object_type == "opportunity":
            # A probability given by someone is theirs from now on, as in ``update``.
            given = {pk for pk, data, _version in items if "probability" in data}
            for deal in updated:
                if deal.pk in given and not deal.probability_manual:
                    deal.probability_manual = True
            Opportunity.objects.filter(pk__in=given, probability_manual=False).update(
                probability_manual=True
            )
    return updated


def delete(actor: User, object_type: str, pk: int, version: int | None = None) -> None:
    records.delete(actor, SPECS[object_type], pk, version)


# Orders: the lines and the total move together.


def create_order(
    actor: User, data: Mapping[str, Any], lines: Sequence[Mapping[str, Any]] = ()
) -> Order:
    with transaction.atomic():
        order = records.create(actor, ORDER, data)
        if lines:
            _replace_lines(actor, order, lines)
    return order


def set_order_lines(
    actor: User, pk: int, lines: Sequence[Mapping[str, Any]], version: int | None
) -> Order:
    """Replace an order's lines and recompute its total, as one versioned change."""
    with transaction.atomic():
        order = records.lock_for_edit(actor, ORDER, pk, version)
        old_total = order.total
        _replace_lines(actor, order, lines)
        records.mark_changed(order)
        order.save(update_fields=["total", "version", "updated_at"])
        records.check_write(actor, order, ("lines", "total"))
        audit.record(
            actor,
            order,
            AuditEvent.Action.UPDATED,
            {"total": [old_total, order.total], "lines": [None, len(lines)]},
            str(order),
        )
        events.emit("order.updated", id=order.pk, actor_id=actor.pk, changed=["lines", "total"])
    return order


def _replace_lines(actor: User, order: Order, lines: Sequence[Mapping[str, Any]]) -> None:
    errors: dict[str, list[str]] = {}
    new_lines = []
    product_ids = {line.get("product_id") for line in lines}
    products = visible(actor, Product).in_bulk([p for p in product_ids if isinstance(p, int)])
    for index, line in enumerate(lines):
        prefix = f"lines.{index}"
        unknown = set(line) - {"product_id", "quantity", "unit_price", "discount_pct"}
        for key in sorted(unknown):
            errors[f"{prefix}.{key}"] = [_("Unknown field.")]
        product = products.get(line.get("product_id"))
        if product is None:
            errors[f"{prefix}.product_id"] = [_("No such product.")]
            continue
        if product.currency != order.currency and "unit_price" not in line:
            errors[f"{prefix}.unit_price"] = [
                _("The product is priced in %(c)s; give a price in the order's currency.")
                % {"c": product.currency}
            ]
            continue
        order_line = OrderLine(
            order=order,
            product=product,
            quantity=line.get("quantity", 1),
            unit_price=line.get("unit_price", product.unit_price),
            discount_pct=line.get("discount_pct", Decimal(0)),
        )
        try:
            order_line.full_clean(exclude=["order", "product"])
            validate_amount(Decimal(order_line.unit_price), order.currency, "unit_price")
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors[f"{prefix}.{name}"] = messages
            continue
        new_lines.append(order_line)
    if errors:
        raise ValidationFailed(errors)
    total = sum((line.line_total for line in new_lines), Decimal(0))
    if total > MAX_AMOUNT:
        # Each line may be valid and the sum still more than the total column holds.
        raise ValidationFailed({"lines": [_("The order's total would be too large.")]})
    order.lines.all().delete()
    OrderLine.objects.bulk_create(new_lines)
    digits = MINOR_UNITS[order.currency]
    order.total = total.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    order.save(update_fields=["total"])


# Activities hang off any registered record the actor can see.


def create_activity(actor: User, related_type: str, related_id: int, data: Mapping[str, Any]):
    if not can(actor, "create", "activity"):
        raise PermissionDenied(_("You may not create this kind of record."))
    try:
        related_model = registry.get(related_type).model
    except KeyError:
        raise ValidationFailed({"related_type": [_("Unknown record type.")]}) from None
    related = visible(actor, related_model).filter(pk=related_id).first()
    if related is None:
        raise ValidationFailed({"related_id": [_("No such record.")]})
    content_type = ContentType.objects.get_for_model(related_model)
    with transaction.atomic():
        activity = records.create(
            actor, ACTIVITY, data, preset={"content_type": content_type, "object_id": related.pk}
        )
        events.emit(
            "activity.logged", id=activity.pk, related_type=related_type, related_id=related.pk
        )
    return activity
