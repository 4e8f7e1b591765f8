"""Forms of the approvals pages. Forms never write: they parse what people typed into the values
``services`` take, and the errors the services report come back onto their fields."""

import json
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core.forms import ServiceForm
from trellis.core.models import SYSTEM_USERNAME, Role, User

from . import subjects
from .models import ApprovalProcess, ApprovalRequest, ExceptionRequest
from .services import MAX_STEPS, current_version


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
    """A process's fields but its steps (``StepForms``); its actions are written as JSON (see
    the approvals guide)."""

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
    actions = forms.CharField(
        label=_("Actions (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        initial="{}",
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, process: ApprovalProcess | None = None, **kwargs: Any) -> None:
        if process is not None and not args and "data" not in kwargs:
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
                "actions": _json(definition.actions),
                "version": process.version,
            }
        super().__init__(*args, **kwargs)
        self.fields["object_type"].choices = sorted(
            (s.object_type, str(s.label).capitalize()) for s in subjects.all_subjects()
        )
        self.fields["owner_id"].queryset = _people()
        if process is not None:
            # Fixed once created: shown, never taken from the request.
            self.fields["object_type"].disabled = True
            self.fields["object_type"].initial = process.object_type

    def _parsed(self, name: str, kind: type) -> Any:
        text = self.cleaned_data.get(name) or "{}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(
                _("This is not valid JSON: %(error)s") % {"error": exc}
            ) from None
        return value

    def clean_actions(self) -> Any:
        return self._parsed("actions", dict)

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("version", None)
        data["owner_id"] = data["owner_id"].pk
        for key in ("material_fields", "editable_fields"):
            data[key] = [n.strip() for n in data[key].split(",") if n.strip()]
        return data


# A step's values that its form takes as they are.
_STEP_VALUES = (
    "name",
    "condition",
    "when_false",
    "rule",
    "timeout_hours",
    "remind_before_hours",
    "escalation",
    "on_reject",
)


class StepForm(forms.Form):
    """One step of a process, in the shape ``services.save_process`` takes: its approvers
    are gathered from the boxes of each kind. The service checks the rest. Each choice starts
    on its first option, as a browser posts an untouched select, so that the blank step the
    page offers counts as unchanged."""

    name = forms.CharField(label=_("Step name"), max_length=100)
    condition = forms.CharField(
        label=_("Step condition"),
        required=False,
        max_length=2000,
        help_text=_("CEL over the record's fields; empty for always."),
    )
    when_false = forms.ChoiceField(
        initial="skip",
        label=_("When the condition is false"),
        choices=[
            ("skip", _("skip the step")),
            ("approve", _("count the step as approved")),
            ("reject", _("reject the request")),
        ],
    )
    users = forms.TypedMultipleChoiceField(
        label=_("Approvers by name"), required=False, coerce=int, choices=()
    )
    roles = forms.MultipleChoiceField(label=_("Approvers by role"), required=False, choices=())
    manager = forms.BooleanField(label=_("The submitter's manager"), required=False)
    managers_manager = forms.BooleanField(label=_("The manager's manager"), required=False)
    user_fields = forms.CharField(
        label=_("The users the record's fields name"),
        required=False,
        help_text=_("Comma-separated, e.g. owner."),
    )
    rule = forms.ChoiceField(
        initial="first",
        label=_("Decision rule"),
        choices=[
            ("first", _("the first response decides")),
            ("all", _("all must approve")),
            ("n_of_m", _("N of the approvers must approve")),
        ],
    )
    required = forms.IntegerField(label=_("N, for “N of”"), required=False, min_value=1)
    timeout_hours = forms.IntegerField(
        label=_("Timeout in business hours"), required=False, min_value=1
    )
    remind_before_hours = forms.IntegerField(
        label=_("Reminder, hours before the timeout"), required=False, min_value=1
    )
    escalation = forms.ChoiceField(
        initial="none",
        label=_("When the timeout passes"),
        choices=[
            ("none", _("nothing")),
            ("manager", _("escalate to the approver's manager")),
            ("user", _("escalate to a named user")),
            ("approve", _("approve automatically")),
            ("reject", _("reject automatically")),
        ],
    )
    escalate_to = forms.TypedChoiceField(
        label=_("Escalate to"), required=False, coerce=int, empty_value=None, choices=()
    )
    on_reject = forms.ChoiceField(
        initial="end",
        label=_("On rejection"),
        choices=[("end", _("end the request")), ("back", _("send it back to the previous step"))],
    )

    def __init__(self, *args: Any, people: list[tuple[int, str]], roles: list, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["users"].choices = people
        self.fields["escalate_to"].choices = [("", "—"), *people]
        self.fields["roles"].choices = roles

    @staticmethod
    def initial_of(step: dict[str, Any]) -> dict[str, Any]:
        """A saved step as the form's initial values."""
        approvers = step.get("approvers", [])
        kinds = {a["kind"] for a in approvers}
        return {
            **{key: step.get(key) for key in _STEP_VALUES},
            "escalate_to": step.get("escalate_to"),
            "required": step.get("required") if step.get("rule") == "n_of_m" else None,
            "users": [a["user_id"] for a in approvers if a["kind"] == "user"],
            "roles": [a["role"] for a in approvers if a["kind"] == "role"],
            "manager": "manager" in kinds,
            "managers_manager": "managers_manager" in kinds,
            "user_fields": ", ".join(a["field"] for a in approvers if a["kind"] == "field"),
        }

    def step(self) -> dict[str, Any]:
        """The step as the service takes it."""
        data = self.cleaned_data
        approvers = [
            *({"kind": "user", "user_id": pk} for pk in data["users"]),
            *({"kind": "role", "role": code} for code in data["roles"]),
            *({"kind": kind} for kind in ("manager", "managers_manager") if data[kind]),
            *(
                {"kind": "field", "field": name.strip()}
                for name in data["user_fields"].split(",")
                if name.strip()
            ),
        ]
        step = {key: data[key] for key in _STEP_VALUES}
        step["approvers"] = approvers
        if data["rule"] == "n_of_m":
            step["required"] = data["required"]
        if data["escalation"] == "user":
            step["escalate_to"] = data["escalate_to"]
        return step


_BaseSteps = forms.formset_factory(
    StepForm,
    extra=1,
    can_order=True,
    can_delete=True,
    max_num=MAX_STEPS,
    absolute_max=MAX_STEPS + 1,
)


class StepForms(_BaseSteps):
    """The steps of a process, in order: the saved ones and one more, blank, to add. A step
    is removed by ticking its Delete box and moved by its Order number."""

    def __init__(self, *args: Any, steps: list[dict[str, Any]] | None = None, **kwargs: Any):
        people = [(u.pk, u.get_full_name() or u.username) for u in _people()]
        roles = list(Role.objects.order_by("code").values_list("code", "name"))
        if steps is not None and not args and "data" not in kwargs:
            kwargs["initial"] = [StepForm.initial_of(step) for step in steps]
        kwargs.setdefault("prefix", "steps")
        kwargs["form_kwargs"] = {"people": people, "roles": roles}
        super().__init__(*args, **kwargs)

    def steps(self) -> list[dict[str, Any]]:
        """The kept steps, in their order, as the service takes them."""
        return [form.step() for form in self.ordered_forms]

    def add_service_errors(self, errors: dict[str, list[str]]) -> dict[str, list[str]]:
        """Put the service's ``steps.<n>.…`` errors on the step forms, in the order
        ``steps()`` gave them; return the other errors."""
        kept = list(self.ordered_forms)
        rest = {}
        for key, messages in errors.items():
            index, _dot, field = key.removeprefix("steps.").partition(".")
            if not key.startswith("steps.") or not index.isdigit() or int(index) >= len(kept):
                rest[key] = messages
                continue
            form = kept[int(index)]
            name = field.partition(".")[0]
            for message in messages:
                form.add_error(name if name in form.fields else None, str(message))
        return rest
