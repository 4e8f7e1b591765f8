"""Forms of the automation pages. Forms never write: they turn what people typed into the values
``services`` take, and the errors the services report come back onto their fields. A rule's
actions and a hold's blocks are written as JSON, like an approval process's steps."""

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from trellis.core.forms import ServiceForm, field_values

from ..approvals.models import ApprovalProcess
from ..models import Stage, TaskType
from . import definitions, subjects
from .models import Hold, Rule

# Which of the form's trigger fields each trigger takes, by the service's names.
TRIGGER_PARAMS = {
    "field_changed": ("field", "from", "to"),
    "stage_entered": ("stage",),
    "stage_left": ("stage",),
    "approval_approved": ("process",),
    "approval_rejected": ("process",),
    "task_completed": ("task_type",),
    "hold_released": ("hold",),
    "time": ("field", "offset", "unit", "direction"),
}

ACTIONS_EXAMPLE = """[
  {"kind": "set_fields", "values": {"probability": "90"}},
  {"kind": "create_task", "title": "Call {{ name }}", "assignee": "owner", "due_in_hours": 8}
]"""

# What each kind of action takes, shown under the actions box.
ACTION_HELP = (
    ("set_fields", '{"values": {"field": "CEL expression"}}'),
    (
        "create_task",
        '{"title", "task_type", "assignee": "owner" | "user:<id>" | "team:<id>", "due_in_hours"}',
    ),
    ("send_email", '{"to": "owner" | CEL, "subject", "body"} — {{ name }} and {{ record_url }}'),
    ("start_approval", '{"process": code}'),
    ("hold", '{"hold": code}'),
    ("release", '{"hold": code}'),
    (
        "assign",
        '{"method": "round_robin" | "least_open", "team": id} | '
        '{"method": "expression", "expression": CEL}',
    ),
    ("create_related", '{"object_type", "values": {"field": "CEL expression"}}'),
    ("webhook", '{"url": "https://..."}'),
)


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _parsed_json(text: str, kind: type) -> Any:
    try:
        value = json.loads(text or ("[]" if kind is list else "{}"))
    except ValueError as exc:
        raise forms.ValidationError(
            _("This is not valid JSON: %(error)s") % {"error": exc}
        ) from None
    if not isinstance(value, kind):
        raise forms.ValidationError(_("Write a JSON list: [ ... ]."))
    return value


class _PathErrorsForm(ServiceForm):
    """Errors about the parts of a JSON field (``actions.1.values.amount``) go next to that
    field, with the part they are about."""

    json_field = ""

    def add_service_errors(self, errors: Mapping[str, Iterable[str]]) -> None:
        prefix = self.json_field + "."
        rest = {}
        for key, messages in errors.items():
            if not key.startswith(prefix):
                rest[key] = messages
                continue
            index, _dot, part = key.removeprefix(prefix).partition(".")
            where = _("Item %(n)s") % {"n": int(index) + 1} if index.isdigit() else index
            if part:
                where = f"{where}, {part}"
            for message in messages:
                self.add_error(self.json_field, f"{where}: {message}")
        super().add_service_errors(rest)


def _blank(choices: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    return [("", "—"), *choices]


class RuleForm(_PathErrorsForm):
    id_prefix = "rule"
    json_field = "actions"
    error_prefixes = {"trigger_params.": "trigger_"}

    object_type = forms.ChoiceField(label=_("Runs on"), choices=())
    name = forms.CharField(label=_("Name"), max_length=100)
    trigger = forms.ChoiceField(label=_("Trigger"), choices=Rule.Trigger.choices)
    trigger_field = forms.CharField(
        label=_("Field"),
        required=False,
        max_length=100,
        help_text=_("For “a field changed”, and for time: the date field to count from."),
    )
    trigger_from = forms.CharField(
        label=_("From value"), required=False, help_text=_("Optional: the value before.")
    )
    trigger_to = forms.CharField(
        label=_("To value"), required=False, help_text=_("Optional: the value after.")
    )
    trigger_stage = forms.TypedChoiceField(
        label=_("Stage"), required=False, coerce=int, empty_value=None, choices=()
    )
    trigger_process = forms.ChoiceField(label=_("Approval process"), required=False, choices=())
    trigger_task_type = forms.ChoiceField(label=_("Task type"), required=False, choices=())
    trigger_hold = forms.ChoiceField(label=_("Hold"), required=False, choices=())
    trigger_offset = forms.IntegerField(
        label=_("How many"), required=False, min_value=0, max_value=definitions.MAX_OFFSET
    )
    trigger_unit = forms.ChoiceField(
        label=_("Unit"),
        required=False,
        choices=[
            ("days", _("days")),
            ("business_days", _("business days")),
            ("hours", _("hours")),
        ],
    )
    trigger_direction = forms.ChoiceField(
        label=_("Before or after"),
        required=False,
        choices=[("after", _("after the date")), ("before", _("before the date"))],
    )
    condition = forms.CharField(
        label=_("Condition"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("CEL over the record's fields, e.g. amount > 50000000.0; empty: always."),
    )
    mode = forms.ChoiceField(label=_("Runs"), choices=Rule.Mode.choices)
    position = forms.IntegerField(
        label=_("Order"),
        required=False,
        min_value=0,
        help_text=_("Rules with a number run first, lowest first; the others after."),
    )
    throttle_per_hour = forms.IntegerField(
        label=_("Runs per record per hour"), min_value=1, initial=10
    )
    actions = forms.CharField(
        label=_("Actions (JSON)"),
        widget=forms.Textarea(attrs={"rows": 12}),
        initial=ACTIONS_EXAMPLE,
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(
        self,
        *args: Any,
        rule: Rule | None = None,
        object_types: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        if rule is not None:
            # A bound form takes the kind of record, which cannot change, from here too.
            kwargs["initial"] = self.initial_of(rule)
        super().__init__(*args, **kwargs)
        labels = {s.object_type: str(s.label).capitalize() for s in subjects.all_subjects()}
        self.fields["object_type"].choices = [(t, labels.get(t, t)) for t in object_types]
        self.fields["trigger_stage"].choices = _blank(
            (s.pk, f"{s.pipeline} · {s}")
            for s in Stage.objects.select_related("pipeline").order_by("pipeline_id", "order")
        )
        self.fields["trigger_process"].choices = _blank(
            (p.code, f"{p} ({p.object_type})") for p in ApprovalProcess.objects.order_by("name")
        )
        self.fields["trigger_task_type"].choices = _blank(
            (t.code, str(t)) for t in TaskType.objects.order_by("name")
        )
        self.fields["trigger_hold"].choices = _blank(
            (h.code, f"{h} ({h.object_type})") for h in Hold.objects.all()
        )
        if rule is not None:
            self.fields["object_type"].disabled = True

    @staticmethod
    def initial_of(rule: Rule) -> dict[str, Any]:
        initial = {
            "object_type": rule.object_type,
            "name": rule.name,
            "trigger": rule.trigger,
            "condition": rule.condition,
            "mode": rule.mode,
            "position": rule.position,
            "throttle_per_hour": rule.throttle_per_hour,
            "actions": as_json(rule.actions),
            "version": rule.version,
        }
        for key, value in rule.trigger_params.items():
            initial[f"trigger_{key}"] = value
        return initial

    def clean_actions(self) -> Any:
        return _parsed_json(self.cleaned_data.get("actions", ""), list)

    def service_data(self) -> dict[str, Any]:
        data = {
            name: self.cleaned_data.get(name)
            for name in (
                "object_type",
                "name",
                "trigger",
                "condition",
                "mode",
                "position",
                "throttle_per_hour",
                "actions",
            )
        }
        params = {}
        for key in TRIGGER_PARAMS.get(data["trigger"], ()):
            value = self.cleaned_data.get(f"trigger_{key}")
            if value not in (None, ""):
                params[key] = value
        data["trigger_params"] = params
        return data


class HoldForm(_PathErrorsForm):
    id_prefix = "hold"
    json_field = "blocks"

    object_type = forms.ChoiceField(label=_("Kind of record"), choices=())
    code = forms.CharField(label=_("Code"), max_length=40)
    name = forms.CharField(label=_("Name (English)"), max_length=100)
    name_ko = forms.CharField(label=_("Name (Korean)"), max_length=100, required=False)
    release_condition = forms.CharField(
        label=_("Release condition"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_(
            "CEL over the record; the record is released when it holds after a change. "
            "Empty: released by hand or by a rule."
        ),
    )
    blocks = forms.CharField(
        label=_("Blocks (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        initial='[{"task_type": "shipping"}, {"field": "status", "value": "fulfilled"}]',
        help_text=_(
            'What waits while a record is on hold: {"task_type": code} for tasks of a type, '
            '{"field": name, "value": v} for a field taking a value, {"field": name} for any '
            "change of the field."
        ),
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, hold: Hold | None = None, **kwargs: Any) -> None:
        if hold is not None:
            kwargs["initial"] = {
                "object_type": hold.object_type,
                "code": hold.code,
                "name": hold.name,
                "name_ko": hold.name_ko,
                "release_condition": hold.release_condition,
                "blocks": as_json(hold.blocks),
                "version": hold.version,
            }
        super().__init__(*args, **kwargs)
        self.fields["object_type"].choices = sorted(
            (s.object_type, str(s.label).capitalize()) for s in subjects.all_subjects()
        )
        if hold is not None:
            self.fields["object_type"].disabled = True

    def clean_blocks(self) -> Any:
        return _parsed_json(self.cleaned_data.get("blocks", ""), list)

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("version", None)
        return data


class TryForm(forms.Form):
    """A dry run from the rule's page: one record, or a sample of the newest; as they are, or
    on their update by the changes given."""

    record_id = forms.IntegerField(
        label=_("Record number"),
        required=False,
        min_value=1,
        help_text=_("Leave empty to try the 10 newest records you may see."),
    )
    changes = forms.CharField(
        label=_("On an update that changes"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "amount = 60000000"}),
        help_text=_(
            "Optional. One field per line, as conditions name it: field = new value. The rule "
            "is then tried on the update these changes would make."
        ),
    )

    def clean_changes(self) -> dict[str, str] | None:
        return field_values(self.cleaned_data["changes"]) or None


class ReleaseForm(forms.Form):
    note = forms.CharField(label=_("Note"), required=False, max_length=300)
