"""Forms of the approvals pages. Forms never write: they parse what people typed into the values
``services`` take, and the errors the services report come back onto their fields."""

import json
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core.forms import ServiceForm
from trellis.core.models import SYSTEM_USERNAME, User

from . import subjects
from .models import ApprovalProcess, ApprovalRequest, ExceptionRequest


class ExceptionForm(forms.Form):
    kind = forms.ChoiceField(label=_("What you ask for"), choices=ExceptionRequest.Kind.choices)
    reason = forms.CharField(label=_("Why"), widget=forms.Textarea(attrs={"rows": 3}))
    from_step = forms.IntegerField(
        label=_("Resume from step"),
        required=False,
        min_value=1,
        help_text=_("For a clone: the number of the step to start from."),
    )
    changes = forms.CharField(
        label=_("New terms"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_(
            'For a change of terms: the fields and their new values, e.g. {"amount": 1000}.'
        ),
    )

    def __init__(self, *args: Any, request_obj: ApprovalRequest | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if request_obj is not None:
            pending = request_obj.status == ApprovalRequest.Status.PENDING
            allowed = (
                ["override", "unlock", "cancel", "clone"]
                if pending
                else ["clone", "change_terms"]
                if request_obj.status == ApprovalRequest.Status.APPROVED
                else ["clone"]
            )
            self.fields["kind"].choices = [
                c for c in ExceptionRequest.Kind.choices if c[0] in allowed
            ]

    def clean_changes(self) -> dict[str, Any] | None:
        text = self.cleaned_data.get("changes", "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError(_("Write the new terms as JSON.")) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(_("Write the new terms as a JSON object."))
        return value


def _people() -> Any:
    return (
        User.objects.filter(is_active=True).exclude(username=SYSTEM_USERNAME).order_by("username")
    )


class DelegationForm(ServiceForm):
    id_prefix = "delegation"
    error_fields = {"delegate_id": "delegate"}

    delegate = forms.ModelChoiceField(label=_("Delegate"), queryset=User.objects.none())
    starts_at = forms.DateTimeField(
        label=pgettext_lazy("first day of a period", "From"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    ends_at = forms.DateTimeField(
        label=pgettext_lazy("last day of a period", "Until"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["delegate"].queryset = _people().exclude(pk=user.pk)

    def clean_delegate(self) -> int:
        return self.cleaned_data["delegate"].pk


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


class ProcessForm(ServiceForm):
    """A process's fields; its steps and actions are written as JSON (see the admin guide)."""

    id_prefix = "process"

    object_type = forms.ChoiceField(label=_("Runs on"), choices=())
    code = forms.CharField(label=_("Code"), max_length=40)
    name = forms.CharField(label=_("Name (English)"), max_length=100)
    name_ko = forms.CharField(label=_("Name (Korean)"), max_length=100, required=False)
    owner_id = forms.ModelChoiceField(label=_("Process owner"), queryset=User.objects.none())
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)
    entry_condition = forms.CharField(
        label=_("Entry condition"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("CEL over the record's fields, e.g. amount > 50000000.0"),
    )
    material_fields = forms.CharField(
        label=_("Material fields"),
        required=False,
        help_text=_("Comma-separated; changing one on an approved record reopens approval."),
    )
    editable_fields = forms.CharField(
        label=_("Fields editable while locked"), required=False, help_text=_("Comma-separated.")
    )
    steps = forms.CharField(
        label=_("Steps (JSON)"), widget=forms.Textarea(attrs={"rows": 14}), initial="[]"
    )
    actions = forms.CharField(
        label=_("Actions (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        initial="{}",
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, process: ApprovalProcess | None = None, **kwargs: Any) -> None:
        if process is not None and not args and "data" not in kwargs:
            from .services import current_version

            definition = current_version(process)
            kwargs["initial"] = {
                "object_type": process.object_type,
                "code": process.code,
                "name": process.name,
                "name_ko": process.name_ko,
                "owner_id": process.owner_id,
                "is_active": process.is_active,
                "entry_condition": definition.entry_condition,
                "material_fields": ", ".join(definition.material_fields),
                "editable_fields": ", ".join(definition.editable_fields),
                "steps": _json(definition.steps),
                "actions": _json(definition.actions),
                "version": process.version,
            }
        super().__init__(*args, **kwargs)
        self.fields["object_type"].choices = sorted(
            (s.object_type, str(s.label).capitalize()) for s in subjects.all_subjects()
        )
        self.fields["owner_id"].queryset = _people()
        if process is not None:
            self.fields["object_type"].disabled = True

    def _parsed(self, name: str, kind: type) -> Any:
        text = self.cleaned_data.get(name) or ("[]" if kind is list else "{}")
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(
                _("This is not valid JSON: %(error)s") % {"error": exc}
            ) from None
        return value

    def clean_steps(self) -> Any:
        return self._parsed("steps", list)

    def clean_actions(self) -> Any:
        return self._parsed("actions", dict)

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("version", None)
        data["owner_id"] = data["owner_id"].pk
        for key in ("material_fields", "editable_fields"):
            data[key] = [n.strip() for n in data[key].split(",") if n.strip()]
        return data
