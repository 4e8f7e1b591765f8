"""Forms of the pipeline definition pages: a pipeline with its stages, and blackout windows.

Forms never write. They parse what an admin typed into the values ``services.save_pipeline``
and ``services.save_blackout`` take; the services check everything again, and the errors they
report (keyed like ``stages.2.gate_condition``) come back onto the fields here.

The stages are a formset, one row per stage, in order. Rows are reordered by their order
numbers (or the up and down buttons, which post the form and show it again rearranged), added
by filling a blank row, and removed by ticking "Remove": all of it works without JavaScript.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.http import QueryDict
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import registry
from trellis.core.forms import ServiceForm

from ..approvals.models import ApprovalProcess
from . import subjects
from .models import BlackoutWindow, Pipeline, Stage
from .services import QUARTER_WEEKS

STAGES_PREFIX = "stages"
# The separator of the English and the Korean text of an expected activity.
ACTIVITY_SEPARATOR = "|"


def object_type_choices() -> list[tuple[str, str]]:
    """The kinds of record that run in pipelines, by their names."""
    return sorted(
        (
            (s.object_type, str(registry.get(s.object_type).label_plural).capitalize())
            for s in subjects.all_subjects()
        ),
        key=lambda choice: choice[1],
    )


class PipelineForm(ServiceForm):
    """A pipeline's own fields; its kind of record is chosen once, when it is created."""

    id_prefix = "pipeline"

    object_type = forms.ChoiceField(label=_("Runs on"), choices=())
    code = forms.CharField(
        label=_("Code"),
        max_length=40,
        help_text=_("Lower-case letters, digits and hyphens, e.g. new-business."),
    )
    name = forms.CharField(label=_("Name (English)"), max_length=100)
    name_ko = forms.CharField(label=_("Name (Korean)"), max_length=100, required=False)
    is_default = forms.BooleanField(
        label=_("Default for its kind of record"),
        required=False,
        help_text=_("New records enter the default pipeline of their kind."),
    )
    is_active = forms.BooleanField(
        label=_("Active"),
        required=False,
        initial=True,
        help_text=_("No record enters an inactive pipeline; records already in it stay."),
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, pipeline: Pipeline | None = None, **kwargs: Any) -> None:
        if pipeline is not None and not args and "data" not in kwargs:
            kwargs.setdefault(
                "initial",
                {
                    "code": pipeline.code,
                    "name": pipeline.name,
                    "name_ko": pipeline.name_ko,
                    "is_default": pipeline.is_default,
                    "is_active": pipeline.is_active,
                    "version": pipeline.version,
                },
            )
        super().__init__(*args, **kwargs)
        self.pipeline = pipeline
        if pipeline is None:
            self.fields["object_type"].choices = object_type_choices()
            del self.fields["version"]
        else:
            del self.fields["object_type"]

    @classmethod
    def posted(cls, data: QueryDict) -> dict[str, Any]:
        """What was posted, as the initial values of a form shown again unsaved."""
        values: dict[str, Any] = {name: data.get(name, "") for name in cls.base_fields}
        for flag in ("is_default", "is_active"):
            values[flag] = flag in data
        return values

    def service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        values = {
            "code": data["code"].strip(),
            "name": data["name"].strip(),
            "name_ko": (data.get("name_ko") or "").strip(),
            "is_default": bool(data.get("is_default")),
            "is_active": bool(data.get("is_active")),
        }
        if self.pipeline is None:
            values["object_type"] = data["object_type"]
        return values


def activities_text(activities: Iterable[Mapping[str, str]]) -> str:
    """Expected activities as the form shows them: one a line, "English | 한국어"."""
    lines = []
    for item in activities:
        korean = item.get("ko") or ""
        lines.append(f"{item['en']} {ACTIVITY_SEPARATOR} {korean}" if korean else item["en"])
    return "\n".join(lines)


class StageForm(ServiceForm):
    """One stage. Most checks are the service's, so that the web and the API say the same."""

    id = forms.IntegerField(widget=forms.HiddenInput, required=False)
    position = forms.IntegerField(
        label=_("Order"),
        required=False,
        min_value=1,
        max_value=999,
        widget=forms.NumberInput(attrs={"class": "stage-order"}),
    )
    code = forms.CharField(label=_("Code"), max_length=40, required=False)
    name = forms.CharField(label=_("Name (English)"), max_length=100, required=False)
    name_ko = forms.CharField(label=_("Name (Korean)"), max_length=100, required=False)
    kind = forms.ChoiceField(label=_("Kind"), choices=Stage.Kind.choices, initial=Stage.Kind.OPEN)
    probability = forms.IntegerField(
        label=_("Default probability (%)"), required=False, min_value=0, max_value=100
    )
    max_dwell_days = forms.IntegerField(
        label=_("Expected maximum dwell time (days)"),
        required=False,
        min_value=1,
        max_value=3650,
        help_text=_("Empty for no limit."),
    )
    dwell_in_business_days = forms.BooleanField(label=_("Count business days"), required=False)
    expected_activities = forms.CharField(
        label=_("Expected activities"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_('One a line, in English and Korean: "Needs analysis held | 니즈 분석 미팅".'),
    )
    gate = forms.ChoiceField(
        label=_("Gate"),
        choices=Stage.Gate.choices,
        initial=Stage.Gate.FREE,
        help_text=_(
            "Free: any move may enter. Warn: the mover sees the message and may go on. "
            "Require: the condition must hold. Approve: a move is submitted to the approval "
            "process and made when it is approved."
        ),
    )
    approval_process = forms.TypedChoiceField(
        label=_("Approval process"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=lambda: _approval_process_choices(),
        help_text=_("For the approve gate: an active process for this kind of record."),
    )
    gate_condition = forms.CharField(
        label=_("Gate condition (CEL)"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text=_("e.g. amount >= 10000000.0 && expected_close_date != null"),
    )
    gate_message = forms.CharField(
        label=_("Gate message (English)"), required=False, max_length=300
    )
    gate_message_ko = forms.CharField(
        label=_("Gate message (Korean)"), required=False, max_length=300
    )

    def clean_expected_activities(self) -> list[dict[str, str]]:
        activities = []
        for number, line in enumerate(self.cleaned_data["expected_activities"].splitlines(), 1):
            if not line.strip():
                continue
            english, _bar, korean = line.partition(ACTIVITY_SEPARATOR)
            if not english.strip():
                raise forms.ValidationError(
                    _("Line %(n)d: give the English text before “|”."), params={"n": number}
                )
            activities.append({"en": english.strip(), "ko": korean.strip()})
        return activities

    def is_blank(self) -> bool:
        """A new row left empty: not a stage."""
        data = getattr(self, "cleaned_data", None) or {}
        return not data.get("id") and not any(
            data.get(name)
            for name in ("code", "name", "name_ko", "gate_condition", "expected_activities")
        )

    def service_stage(self) -> dict[str, Any]:
        data = self.cleaned_data
        stage: dict[str, Any] = {
            "code": data["code"].strip(),
            "name": data["name"].strip(),
            "name_ko": data["name_ko"].strip(),
            "kind": data["kind"],
            "probability": data["probability"] if data["probability"] is not None else 0,
            "max_dwell_days": data["max_dwell_days"],
            "dwell_in_business_days": bool(data["dwell_in_business_days"]),
            "expected_activities": data["expected_activities"],
            "gate": data["gate"],
            "gate_condition": data["gate_condition"].strip(),
            "gate_message": data["gate_message"].strip(),
            "gate_message_ko": data["gate_message_ko"].strip(),
        }
        # A process left chosen under another gate is not meant: only approve takes one.
        if data["gate"] == Stage.Gate.APPROVE:
            stage["approval_process_id"] = data.get("approval_process")
        if data.get("id"):
            stage["id"] = data["id"]
        return stage


def _approval_process_choices() -> list[tuple[str, str]]:
    processes = ApprovalProcess.objects.filter(is_active=True).order_by("object_type", "name")
    return [
        ("", "—"),
        *((str(p.pk), f"{p.label} ({registry.get(p.object_type).label})") for p in processes),
    ]


def stage_initial(stage: Stage, position: int) -> dict[str, Any]:
    return {
        "id": stage.pk,
        "position": position,
        "code": stage.code,
        "name": stage.name,
        "name_ko": stage.name_ko,
        "kind": stage.kind,
        "probability": stage.probability,
        "max_dwell_days": stage.max_dwell_days,
        "dwell_in_business_days": stage.dwell_in_business_days,
        "expected_activities": activities_text(stage.expected_activities),
        "gate": stage.gate,
        "gate_condition": stage.gate_condition,
        "gate_message": stage.gate_message,
        "gate_message_ko": stage.gate_message_ko,
        "approval_process": stage.approval_process_id,
    }


class BaseStageFormSet(forms.BaseFormSet):
    def kept_forms(self) -> list[StageForm]:
        """The rows that are stages, in their order: by order number where one is given
        (ties and rows without one keep their place), blank rows and removed ones left out."""
        rows = [
            form
            for form in self.forms
            if getattr(form, "cleaned_data", None) is not None
            and not self._should_delete_form(form)
            and not form.is_blank()
        ]
        return sorted(
            rows,
            key=lambda form: (
                form.cleaned_data.get("position") or 10_000,
                self.forms.index(form),
            ),
        )

    def service_stages(self) -> list[dict[str, Any]]:
        return [form.service_stage() for form in self.kept_forms()]

    def add_service_errors(self, errors: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
        """Put ``stages...`` errors of ``save_pipeline`` on their rows; return the others."""
        kept = self.kept_forms()
        rest: dict[str, list[str]] = {}
        general: list[str] = []
        for key, messages in errors.items():
            if key != STAGES_PREFIX and not key.startswith(STAGES_PREFIX + "."):
                rest[key] = list(messages)
                continue
            index, _dot, name = key.removeprefix(STAGES_PREFIX).lstrip(".").partition(".")
            if index.isdigit() and int(index) < len(kept):
                kept[int(index)].add_service_errors({name or "__all__": list(messages)})
            else:
                general.extend(str(message) for message in messages)
        if general:
            self._non_form_errors = self.error_class(
                [*self.non_form_errors(), *general], error_class="nonform"
            )
        return rest


StageFormSet = forms.formset_factory(
    StageForm, formset=BaseStageFormSet, extra=1, can_delete=True, max_num=100, absolute_max=200
)


def stage_formset(stages: Iterable[Stage] = (), data: QueryDict | None = None) -> BaseStageFormSet:
    """The stages of a pipeline as rows, and one blank row to add a stage."""
    initial = [stage_initial(stage, n) for n, stage in enumerate(stages, 1)]
    return StageFormSet(data, initial=initial, prefix=STAGES_PREFIX)


def rearranged_formset(data: QueryDict, action: str) -> BaseStageFormSet:
    """The rows as posted, rearranged by ``action`` and shown again, unsaved: ``up:N`` or
    ``down:N`` moves row N, ``add`` adds a blank row. Order numbers the admin typed count
    first, so that "up" moves a row up from where the numbers put it."""
    posted = StageFormSet(data, prefix=STAGES_PREFIX)
    total = min(posted.total_form_count(), StageFormSet.absolute_max)
    fields = [*StageForm.base_fields, "DELETE"]
    rows = []
    for index in range(total):
        prefix = f"{STAGES_PREFIX}-{index}-"
        row: dict[str, Any] = {name: data.get(prefix + name, "") for name in fields}
        for flag in ("dwell_in_business_days", "DELETE"):
            row[flag] = prefix + flag in data
        rows.append(row)

    def filled(row: dict[str, Any]) -> bool:
        return bool(row["id"]) or any(
            str(row[name]).strip()
            for name in ("code", "name", "name_ko", "gate_condition", "expected_activities")
        )

    def position(row: dict[str, Any]) -> int:
        value = str(row["position"]).strip()
        return int(value) if value.isdigit() else 10_000

    stages = [row for row in rows if filled(row)]
    stages = [row for _n, row in sorted(enumerate(stages), key=lambda p: (position(p[1]), p[0]))]
    blank = len(rows) - len(stages)
    verb, _colon, number = action.partition(":")
    if verb in ("up", "down") and number.isdigit() and int(number) < len(rows):
        moved = rows[int(number)]
        at = next((n for n, row in enumerate(stages) if row is moved), None)
        to = None if at is None else (at - 1 if verb == "up" else at + 1)
        if at is not None and to is not None and 0 <= to < len(stages):
            stages[at], stages[to] = stages[to], stages[at]
    if verb == "add":
        blank += 1
    for n, row in enumerate(stages, 1):
        row["position"] = n
    formset_class = forms.formset_factory(
        StageForm,
        formset=BaseStageFormSet,
        extra=max(1, min(blank, 20)),
        can_delete=True,
        max_num=100,
        absolute_max=200,
    )
    return formset_class(initial=stages, prefix=STAGES_PREFIX)


# Blackout windows.


class BlackoutForm(ServiceForm):
    """A blackout window: fixed dates, or the same weeks of every quarter."""

    id_prefix = "blackout"

    error_fields = {"stage_id": "stage"}

    name = forms.CharField(label=_("Name (English)"), max_length=200)
    name_ko = forms.CharField(label=_("Name (Korean)"), max_length=200, required=False)
    stage = forms.ModelChoiceField(
        label=_("Stage"),
        queryset=Stage.objects.none(),
        required=False,
        empty_label=_("The whole pipeline"),
    )
    starts_on = forms.DateField(
        label=pgettext_lazy("first day of a period", "From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    ends_on = forms.DateField(
        label=_("To (included)"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    quarter_week_from = forms.IntegerField(
        label=_("From week of the quarter"),
        required=False,
        min_value=1,
        max_value=QUARTER_WEEKS,
    )
    quarter_week_to = forms.IntegerField(
        label=_("To week of the quarter (included)"),
        required=False,
        min_value=1,
        max_value=QUARTER_WEEKS,
        help_text=_(
            "Week 1 starts on the first day of the quarter. Only the quarters of 92 days have a "
            "14th week: their last day."
        ),
    )

    def __init__(
        self,
        *args: Any,
        pipeline: Pipeline,
        window: BlackoutWindow | None = None,
        **kwargs: Any,
    ) -> None:
        if window is not None and not args and "data" not in kwargs:
            kwargs.setdefault(
                "initial",
                {
                    "name": window.name,
                    "name_ko": window.name_ko,
                    "stage": window.stage_id,
                    "starts_on": window.starts_on,
                    "ends_on": window.ends_on,
                    "quarter_week_from": window.quarter_week_from,
                    "quarter_week_to": window.quarter_week_to,
                },
            )
        super().__init__(*args, **kwargs)
        stages = pipeline.stages.filter(is_active=True)
        if window is not None and window.stage_id:
            stages = pipeline.stages.filter(is_active=True) | pipeline.stages.filter(
                pk=window.stage_id
            )
        self.fields["stage"].queryset = stages.order_by("order")
        self.fields["stage"].label_from_instance = lambda stage: stage.label

    def service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        stage = data.get("stage")
        return {
            "name": data["name"],
            "name_ko": data.get("name_ko") or "",
            "stage_id": stage.pk if stage else None,
            "starts_on": data.get("starts_on"),
            "ends_on": data.get("ends_on"),
            "quarter_week_from": data.get("quarter_week_from"),
            "quarter_week_to": data.get("quarter_week_to"),
        }
