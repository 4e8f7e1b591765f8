"""Forms of the CRM web pages: they render fields and parse what people type.

Forms never write. A view hands ``service_data()`` to ``crm.services``, which checks everything
again and owns the write; the checks made here only let a page point at a mistake as soon as a
field loses focus. Errors a service reports come back onto the form through
``add_service_errors``.
"""

from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from trellis.core import registry
from trellis.core.errors import NotFound
from trellis.core.models import Team, User
from trellis.core.money import MINOR_UNITS, validate_amount
from trellis.core.validators import (
    format_phone,
    normalize_business_registration_number,
    normalize_phone,
)
from trellis.core.visibility import visible
from trellis.process.pipelines.models import Pipeline, Stage

from . import queries
from .models import Account, Activity, Contact, Lead, Opportunity, Order, OrderLine, Product

_OWNERSHIP = ("owner", "team")
PHONE_FIELDS = frozenset({"phone", "mobile"})
# Fields whose amount is in the currency held by the record's ``currency`` field.
MONEY_FIELDS = frozenset({"amount", "unit_price", "total"})


def money_input(amount: Decimal | None, currency: str) -> Decimal | None:
    """An amount as people type it: 1500000 for KRW, not 1500000.00."""
    if amount is None or currency not in MINOR_UNITS:
        return amount
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS[currency]))


def _plain_decimal(value: Decimal) -> Decimal:
    """12.50 as 12.5 and 100.00 as 100 (``normalize`` alone would give 1E+2)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


# Pickers: selects of records that stay small however many records there are.


class RecordPicker(forms.Select):
    """A select listing the chosen record and the latest few; its search box fetches matches.

    Without JavaScript the select still works on the records it lists; with htmx, typing asks
    ``crm:pick`` for the matching records and replaces the options.
    """

    template_name = "crm/widgets/picker.html"
    option_limit = 50

    def __init__(self, object_type: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.object_type = object_type

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"]["search_url"] = reverse("crm:pick", args=[self.object_type])
        return context

    def optgroups(self, name: str, value: list[str], attrs: dict[str, Any] | None = None):
        all_choices = self.choices
        self.choices = self._bounded_choices(all_choices, value)
        try:
            return super().optgroups(name, value, attrs)
        finally:
            self.choices = all_choices

    def _bounded_choices(self, all_choices: Any, value: list[str]) -> list[tuple[Any, str]]:
        field = all_choices.field
        queryset = field.queryset if field.queryset.ordered else field.queryset.order_by("-id")
        chosen = [int(v) for v in value if str(v).isdigit()]
        rows = list(queryset.filter(pk__in=chosen)) if chosen else []
        rows += list(queryset.exclude(pk__in=chosen)[: self.option_limit])
        empty = [("", field.empty_label)] if getattr(field, "empty_label", None) else []
        return empty + [all_choices.choice(row) for row in rows]


class RecordPickerMultiple(RecordPicker, forms.SelectMultiple):
    allow_multiple_selected = True


REGARDING_TYPES = ("account", "contact", "lead", "opportunity", "order")


class RegardingPicker(forms.Select):
    """Picks the record an activity is about, of any type, as ``"account:12"``."""

    template_name = "crm/widgets/picker.html"
    option_limit = 50

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.user: User | None = None

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        self.choices = self._options_for(value)
        context = super().get_context(name, value, attrs)
        context["widget"]["search_url"] = reverse("crm:pick-regarding")
        return context

    def _options_for(self, value: list[str]) -> list[tuple[Any, Any]]:
        choices: list[tuple[Any, Any]] = [("", "---------")]
        current = parse_regarding(value[0] if value else "")
        if current and self.user is not None:
            try:
                record = queries.get(self.user, *current)
            except NotFound:
                pass  # deleted or hidden since: not offered again
            else:
                choices.append((regarding_value(record), _labelled(record)))
        if self.user is not None:
            recent = queries.records(self.user, "account")[: self.option_limit]
            label = registry.get("account").label_plural
            choices.append((label, [(regarding_value(a), str(a)) for a in recent]))
        return choices


def regarding_value(record: models.Model) -> str:
    return f"{registry.for_model(type(record)).key}:{record.pk}"


def parse_regarding(value: str) -> tuple[str, int] | None:
    object_type, _sep, pk = (value or "").partition(":")
    if object_type not in REGARDING_TYPES or not pk.isdigit():
        return None
    return object_type, int(pk)


def _labelled(record: models.Model) -> str:
    return f"{registry.for_model(type(record)).label}: {record}"


# Record forms.


class RecordForm(forms.ModelForm):
    """A record's fields as people edit them; subclasses name the model and fields."""

    object_type: ClassVar[str]
    # Field -> a check from core.validators that the service also applies.
    checks: ClassVar[Mapping[str, Callable[[str], str]]] = {}
    # A service's error key -> the form field it is about, where the names differ.
    error_fields: ClassVar[Mapping[str, str]] = {}

    # The version the user is editing; a stale one makes the service refuse the write.
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        if self.instance.pk is None:
            del self.fields["version"]
            if "owner" in self.fields:
                self.initial.setdefault("owner", user.pk)
            if "team" in self.fields:
                self.initial.setdefault("team", user.team_id)
        else:
            self.initial["version"] = self.instance.version
        for field in self.fields.values():
            _limit_choices_to_visible(field, user)
            _use_html5_inputs(field)
            # An edit posts the values the user saw beside those they typed, so
            # ``changed_data`` names the fields they changed: only those are written, and a
            # conflict lists only those, whatever else changed on the record meanwhile.
            field.show_hidden_initial = self.editing and not field.widget.is_hidden
        self._show_stored_values_as_typed()

    @property
    def editing(self) -> bool:
        return self.instance.pk is not None

    def _show_stored_values_as_typed(self) -> None:
        for name in PHONE_FIELDS & set(self.fields):
            if str(self.initial.get(name) or "").startswith("+"):
                self.initial[name] = format_phone(self.initial[name])
        currency = self.initial.get("currency")
        for name in MONEY_FIELDS & set(self.fields):
            if isinstance(self.initial.get(name), Decimal):
                self.initial[name] = money_input(self.initial[name], currency)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name, check in self.checks.items():
            if cleaned.get(name):
                try:
                    check(cleaned[name])
                except ValidationError as exc:
                    self.add_error(name, exc)
        currency = cleaned.get("currency")
        for name in MONEY_FIELDS & set(self.fields):
            if currency and cleaned.get(name) is not None:
                try:
                    validate_amount(cleaned[name], currency, name)
                except ValidationError as exc:
                    self.add_error(None, exc)
        return cleaned

    def service_data(self) -> dict[str, Any]:
        """The record's own fields as ``crm.services`` takes them; for an edit, only those the
        user changed."""
        return {name: self.cleaned_data[name] for name in self._meta.fields if name in self.changes}

    @property
    def changes(self) -> list[str]:
        """The fields the user filled in (create) or changed from what they saw (edit)."""
        return self.changed_data if self.editing else list(self.fields)

    def add_service_errors(self, errors: Mapping[str, list[str]]) -> None:
        """Put a service's ``ValidationFailed.errors`` on the fields they are about."""
        for key, messages in errors.items():
            name = self._field_for_error(key)
            for message in messages:
                self.add_error(name, message)

    def _field_for_error(self, key: str) -> str | None:
        for name in (self.error_fields.get(key), key, key.removesuffix("_id")):
            if name in self.fields and not self.fields[name].widget.is_hidden:
                return name
        return None


def _limit_choices_to_visible(field: forms.Field, user: User) -> None:
    """Offer only records the user may see; CRM records through a picker, not a long select."""
    if not isinstance(field, forms.ModelChoiceField):
        return
    model = field.queryset.model
    if model is User:
        field.queryset = User.objects.filter(is_active=True).order_by("first_name", "username")
    elif model is Team:
        field.queryset = Team.objects.order_by("name")
    else:
        key = registry.for_model(model).key
        multiple = isinstance(field, forms.ModelMultipleChoiceField)
        field.widget = (RecordPickerMultiple if multiple else RecordPicker)(key)
        field.widget.is_required = field.required
        field.queryset = visible(user, model)


def _use_html5_inputs(field: forms.Field) -> None:
    if isinstance(field, forms.DateTimeField):
        # Seconds included (step=1) so an unchanged value posts back as it was shown.
        field.widget = forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"
        )
    elif isinstance(field, forms.DateField):
        field.widget = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    elif isinstance(field.widget, forms.Textarea):
        field.widget.attrs["rows"] = 4


class AccountForm(RecordForm):
    object_type = "account"
    checks = {
        "phone": normalize_phone,
        "business_registration_number": normalize_business_registration_number,
    }

    class Meta:
        model = Account
        fields = (
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
        )
        # A web site typed without a scheme is taken as https://, as browsers do.
        field_classes = {"website": partial(forms.URLField, assume_scheme="https")}


class ContactForm(RecordForm):
    object_type = "contact"
    checks = {"phone": normalize_phone, "mobile": normalize_phone}

    class Meta:
        model = Contact
        fields = ("name", "title", "accounts", "email", "phone", "mobile", "notes", *_OWNERSHIP)


class LeadForm(RecordForm):
    object_type = "lead"
    checks = {"phone": normalize_phone}

    class Meta:
        model = Lead
        fields = ("name", "company", "email", "phone", "source", "status", "notes", *_OWNERSHIP)


class OpportunityForm(RecordForm):
    object_type = "opportunity"

    class Meta:
        model = Opportunity
        fields = (
            "name",
            "account",
            "contact",
            "amount",
            "currency",
            "probability",
            "expected_close_date",
            "status",
            "description",
            *_OWNERSHIP,
        )


class ProductForm(RecordForm):
    object_type = "product"

    class Meta:
        model = Product
        fields = ("name", "sku", "unit_price", "currency", "is_active", "description", *_OWNERSHIP)


class OrderForm(RecordForm):
    """The order's header; its lines have their own editor on the order's page."""

    object_type = "order"

    class Meta:
        model = Order
        fields = (
            "account",
            "opportunity",
            "status",
            "currency",
            "order_date",
            "notes",
            *_OWNERSHIP,
        )


class LogActivityForm(RecordForm):
    """Logging an activity on the page of the record it is about."""

    object_type = "activity"

    class Meta:
        model = Activity
        fields = ("kind", "subject", "occurred_at", "body", "is_voc")
        widgets = {"kind": forms.RadioSelect}


class ActivityForm(LogActivityForm):
    """An activity on its own page: it also says which record it is about (when created)."""

    error_fields = {"related_type": "regarding", "related_id": "regarding"}

    regarding = forms.CharField(label=_("Regarding"), widget=RegardingPicker)

    class Meta(LogActivityForm.Meta):
        fields = (*LogActivityForm.Meta.fields, *_OWNERSHIP)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, user=user, **kwargs)
        if self.editing:
            # An activity stays with the record it was logged on.
            del self.fields["regarding"]
        else:
            self.fields["regarding"].widget.user = user
            self.order_fields(["regarding"])

    def clean_regarding(self) -> tuple[str, int]:
        target = parse_regarding(self.cleaned_data["regarding"])
        if target is None:
            raise ValidationError(_("Choose the record this activity is about."))
        return target


# Order lines.


class OrderLineForm(forms.ModelForm):
    # Empty means the product's own price, or no discount.
    unit_price = forms.DecimalField(
        label=_("unit price"),
        required=False,
        min_value=0,
        max_digits=18,
        decimal_places=2,
        help_text=_("Empty: the product's price."),
    )
    discount_pct = forms.DecimalField(
        label=_("discount %"), required=False, min_value=0, max_value=100, decimal_places=2
    )

    class Meta:
        model = OrderLine
        fields = ("product", "quantity", "unit_price", "discount_pct")

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _limit_choices_to_visible(self.fields["product"], user)

    def service_line(self) -> dict[str, Any]:
        line = {
            "product_id": self.cleaned_data["product"].pk,
            "quantity": self.cleaned_data["quantity"],
        }
        for name in ("unit_price", "discount_pct"):
            if self.cleaned_data.get(name) is not None:
                line[name] = self.cleaned_data[name]
        return line


class BaseOrderLineFormSet(forms.BaseFormSet):
    def service_lines(self) -> list[dict[str, Any]]:
        """The lines to keep, in order: blank extra rows and rows marked for removal left out."""
        return [form.service_line() for form in self._kept_forms()]

    def add_service_errors(self, errors: Mapping[str, list[str]]) -> None:
        """Map ``lines.<index>.<field>`` errors from ``set_order_lines`` onto the rows."""
        kept = self._kept_forms()
        for key, messages in errors.items():
            _lines, _dot, rest = key.partition(".")
            index, _dot, name = rest.partition(".")
            if index.isdigit() and int(index) < len(kept):
                form = kept[int(index)]
                field = name.removesuffix("_id")
                for message in messages:
                    form.add_error(field if field in form.fields else None, message)
            else:
                self._non_form_errors = self.error_class(
                    [*self.non_form_errors(), *messages], error_class="nonform"
                )

    def _kept_forms(self) -> list[OrderLineForm]:
        return [
            form
            for form in self.forms
            if getattr(form, "cleaned_data", None) and not self._should_delete_form(form)
        ]


OrderLineFormSet = forms.formset_factory(
    OrderLineForm, formset=BaseOrderLineFormSet, extra=2, can_delete=True
)


def order_line_formset(
    user: User, order: Order, lines: list[OrderLine], data: Any = None
) -> BaseOrderLineFormSet:
    """The editor for an order's ``lines``, one row per line and two empty rows to add more."""
    initial = [
        {
            "product": line.product_id,
            "quantity": line.quantity,
            "unit_price": money_input(line.unit_price, order.currency),
            "discount_pct": _plain_decimal(line.discount_pct) if line.discount_pct else None,
        }
        for line in lines
    ]
    return OrderLineFormSet(data, initial=initial, prefix="lines", form_kwargs={"user": user})


class VersionForm(forms.Form):
    """The version a user saw, for writes that have no other fields (delete, order lines)."""

    version = forms.IntegerField(widget=forms.HiddenInput)


# List filters, built from the filters ``crm.queries.LISTS`` allows for each type.


class ListFilters(forms.Form):
    # Shown beside the search box; the other filters fold away under "More filters".
    primary = ("owner", "status", "kind", "is_active")

    def primary_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name in self.primary]

    def more_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name not in self.primary]

    def more_in_use(self) -> bool:
        return any(self.data.get(field.name) for field in self.more_fields())

    def values(self) -> dict[str, Any]:
        """The valid, non-empty filter values, as ``crm.queries.page`` takes them."""
        self.is_valid()
        values = {}
        for name, value in self.cleaned_data.items():
            if value in (None, ""):
                continue
            values[name] = value.pk if isinstance(value, models.Model) else value
        return values


def filter_form(object_type: str, user: User, data: Any) -> ListFilters:
    model = registry.get(object_type).model
    fields = {
        name: _filter_field(user, model, lookup)
        for name, lookup in queries.LISTS[object_type].filters.items()
    }
    form_class = type(f"{model.__name__}Filters", (ListFilters,), fields)
    return form_class(data)


_BOUND_LABELS = {"gte": _("%(field)s from"), "lte": _("%(field)s to")}
_YES_NO_ANY = [("", _("All")), ("true", _("Yes")), ("false", _("No"))]


class _StageChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Stage) -> str:
        return f"{obj.pipeline.label} · {obj.label}"


def _pipeline_filter(model: type[models.Model], lookup: str) -> forms.Field | None:
    """The stage and pipeline filters: the active ones of the record's type, in order."""
    object_type = registry.for_model(model).key
    if lookup == "stage_id":
        return _StageChoice(
            queryset=Stage.objects.filter(pipeline__object_type=object_type, is_active=True)
            .select_related("pipeline")
            .order_by("pipeline__name", "order"),
            required=False,
            empty_label=_("All"),
            label=capfirst(_("stage")),
        )
    if lookup == "stage__pipeline_id":
        return forms.ModelChoiceField(
            queryset=Pipeline.objects.filter(object_type=object_type, is_active=True),
            required=False,
            empty_label=_("All"),
            label=capfirst(_("pipeline")),
        )
    return None


def _filter_field(user: User, model: type[models.Model], lookup: str) -> forms.Field:
    stage_filter = _pipeline_filter(model, lookup)
    if stage_filter is not None:
        return stage_filter
    name, _sep, bound = lookup.partition("__")
    model_field = model._meta.get_field(name.removesuffix("_id"))
    label = str(model_field.verbose_name)
    if bound in _BOUND_LABELS:
        label = _BOUND_LABELS[bound] % {"field": label}
    label = capfirst(label)
    if model_field.is_relation:
        field: forms.Field = forms.ModelChoiceField(
            queryset=model_field.related_model._default_manager.none(),
            required=False,
            empty_label=_("All"),
            label=label,
        )
        _limit_choices_to_visible(field, user)
    elif model_field.choices:
        field = forms.ChoiceField(
            choices=[("", _("All")), *model_field.flatchoices], required=False, label=label
        )
    elif isinstance(model_field, models.BooleanField):
        field = forms.TypedChoiceField(
            choices=_YES_NO_ANY,
            coerce=lambda value: value == "true",
            empty_value=None,
            required=False,
            label=label,
        )
    elif isinstance(model_field, models.DateField):
        field = forms.DateField(required=False, label=label)
        _use_html5_inputs(field)
    elif isinstance(model_field, models.DecimalField):
        field = forms.DecimalField(required=False, min_value=0, label=label)
    else:
        field = forms.CharField(required=False, max_length=100, label=label)
    return field
