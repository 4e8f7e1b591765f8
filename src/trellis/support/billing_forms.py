"""Forms of the support contract and billing pages, and of a case's fees.

Forms never write: ``contracts`` and ``billing`` check everything again and own the writes;
their errors come back onto the fields through ``add_service_errors``.
"""

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from trellis.core.forms import ServiceForm
from trellis.core.models import User
from trellis.core.money import Currency
from trellis.core.visibility import visible
from trellis.crm.models import Account, Product

from . import billing
from .models import Charge, SupportContract

_DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


class ContractForm(ServiceForm):
    id_prefix = "contract"
    error_fields = {"account_id": "account", "product_ids": "products"}

    account = forms.ModelChoiceField(label=_("Account"), queryset=Account.objects.none())
    name = forms.CharField(label=_("Name"), max_length=200)
    start_date = forms.DateField(label=_("Start date"), widget=_DATE)
    end_date = forms.DateField(label=_("End date"), widget=_DATE)
    all_products = forms.BooleanField(label=_("Covers all products"), required=False)
    products = forms.ModelMultipleChoiceField(
        label=_("Covered products"),
        queryset=Product.objects.none(),
        required=False,
        help_text=_("Only when it does not cover all products."),
    )
    response_hours = forms.IntegerField(
        label=_("Response target (hours)"), required=False, min_value=1, max_value=8760
    )
    fee_basis = forms.ChoiceField(
        label=_("Fee for work outside the contract"),
        choices=SupportContract.FeeBasis.choices,
        required=False,
    )
    fee_amount = forms.DecimalField(
        label=_("Rate or fee"), required=False, max_digits=18, decimal_places=2
    )
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices, initial="KRW")
    notes = forms.CharField(
        label=_("Notes"), required=False, widget=forms.Textarea, max_length=5000
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = visible(user, Account).order_by("name")
        self.fields["products"].queryset = (
            visible(user, Product).filter(is_active=True).order_by("name")
        )

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("version", None)
        data["account_id"] = data.pop("account").pk
        data["products"] = [product.pk for product in data["products"]]
        data["fee_basis"] = data["fee_basis"] or ""
        return data

    @staticmethod
    def initial_from(contract: SupportContract) -> dict[str, Any]:
        return {
            "account": contract.account_id,
            "name": contract.name,
            "start_date": contract.start_date,
            "end_date": contract.end_date,
            "all_products": contract.all_products,
            "products": [p.pk for p in contract.products.all()],
            "response_hours": contract.response_hours,
            "fee_basis": contract.fee_basis,
            "fee_amount": contract.fee_amount,
            "currency": contract.currency,
            "notes": contract.notes,
            "version": contract.version,
        }


class ContractFilters(forms.Form):
    q = forms.CharField(label=_("Search"), required=False, max_length=200)
    active = forms.ChoiceField(
        label=_("Running"),
        required=False,
        choices=[("", _("All")), ("yes", _("Running today")), ("no", _("Not running"))],
    )

    def values(self) -> dict[str, Any]:
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        active = {"yes": True, "no": False}.get(cleaned.get("active") or "")
        return {"q": (cleaned.get("q") or "").strip(), "active": active}


class FeeForm(ServiceForm):
    """An agent proposes a support fee on a case."""

    id_prefix = "fee"

    amount = forms.DecimalField(label=_("Amount"), max_digits=18, decimal_places=2)
    currency = forms.ChoiceField(label=_("Currency"), choices=Currency.choices, initial="KRW")
    description = forms.CharField(
        label=_("What it is for"),
        max_length=billing.MAX_DESCRIPTION,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class WaiveForm(ServiceForm):
    id_prefix = "waive"

    reason = forms.CharField(
        label=_("Reason"),
        required=False,
        max_length=billing.MAX_DESCRIPTION,
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class BillingFilters(forms.Form):
    """The billing list's filters; a bad value filters nothing and is shown as an error."""

    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("All")), *Charge.Status.choices],
    )
    account = forms.ModelChoiceField(
        label=_("Account"), queryset=Account.objects.none(), required=False, empty_label=_("All")
    )
    month = forms.CharField(
        label=_("Month"),
        required=False,
        max_length=7,
        widget=forms.TextInput(attrs={"type": "month", "placeholder": "2026-03"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        having = billing.visible_charges(user).values("account_id")
        self.fields["account"].queryset = (
            visible(user, Account).filter(pk__in=having).order_by("name")
        )

    def clean_month(self) -> str:
        value = self.cleaned_data.get("month") or ""
        try:
            billing.parse_month(value)
        except Exception as exc:
            raise forms.ValidationError(_("Give a month as YYYY-MM.")) from exc
        return value

    def values(self) -> dict[str, Any]:
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        account = cleaned.get("account")
        return {
            "status": cleaned.get("status") or None,
            "account_id": account.pk if account else None,
            "month": cleaned.get("month") or None,
        }


class BillForm(ServiceForm):
    """Mark the ticked charges billed with one invoice reference."""

    id_prefix = "bill"
    error_fields = {"charge_ids": "charges"}

    charges = forms.TypedMultipleChoiceField(
        label=_("Charges"), coerce=int, choices=(), widget=forms.MultipleHiddenInput
    )
    invoice_reference = forms.CharField(
        label=_("Invoice reference"), max_length=billing.MAX_INVOICE_REFERENCE
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Which ids exist and may be billed is the service's to say.
        ids = self.data.getlist("charges") if hasattr(self.data, "getlist") else []
        self.fields["charges"].choices = [(value, value) for value in ids]
