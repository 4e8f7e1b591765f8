"""Forms of the approvals pages. Forms never write: they parse what people typed into the values
``services`` take, and the errors the services report come back onto their fields."""

import json
from typing import Any, ClassVar

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core.forms import ServiceForm, field_values
from trellis.core.models import SYSTEM_USERNAME, Role, User

from . import cel_fields, subjects
from .models import ApprovalProcess, ApprovalRequest, ExceptionRequest
from .services import ACTION_MOMENTS, MAX_STEPS, current_version


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


class ProcessForm(ServiceForm):
    """A process's fields but its steps (``StepForms``) and actions (``ActionForms``)."""

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


class _Blocks(forms.BaseFormSet):
    """Blocks of one long form, in order: the saved ones and one more, blank, to add. A block
    is removed by ticking its Delete box and moved by its Order number. The service's errors
    come back onto the block they are about, by the path it reports them under."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["form_kwargs"] = {
            "people": [(u.pk, u.get_full_name() or u.username) for u in _people()],
            **kwargs.get("form_kwargs", {}),
        }
        super().__init__(*args, **kwargs)

    def paths(self) -> dict[str, forms.Form]:
        """Each kept block by the path the service names it with (``steps.0``)."""
        raise NotImplementedError

    def add_service_errors(self, errors: dict[str, list[str]]) -> dict[str, list[str]]:
        """Put the errors about blocks on them (on the field named next in the path, or on the
        block as a whole); return the others."""
        paths = self.paths()
        rest = {}
        for key, messages in errors.items():
            path = next((p for p in paths if key == p or key.startswith(p + ".")), None)
            if path is None:
                rest[key] = messages
                continue
            form = paths[path]
            name = key.removeprefix(path).lstrip(".").partition(".")[0]
            for message in messages:
                form.add_error(name if name in form.fields else None, str(message))
        return rest


def _blocks(form: type[forms.Form], base: type[_Blocks], most: int) -> Any:
    return forms.formset_factory(
        form,
        formset=base,
        extra=1,
        can_order=True,
        can_delete=True,
        max_num=most,
        absolute_max=most + 1,
    )


class _StepBlocks(_Blocks):
    def __init__(self, *args: Any, steps: list[dict[str, Any]] | None = None, **kwargs: Any):
        if steps is not None and not args and "data" not in kwargs:
            kwargs["initial"] = [StepForm.initial_of(step) for step in steps]
        kwargs.setdefault("prefix", "steps")
        roles = list(Role.objects.order_by("code").values_list("code", "name"))
        kwargs["form_kwargs"] = {"roles": roles}
        super().__init__(*args, **kwargs)

    def steps(self) -> list[dict[str, Any]]:
        """The kept steps, in their order, as the service takes them."""
        return [form.step() for form in self.ordered_forms]

    def paths(self) -> dict[str, forms.Form]:
        return {f"steps.{index}": form for index, form in enumerate(self.ordered_forms)}


StepForms = _blocks(StepForm, _StepBlocks, MAX_STEPS)


class ActionForm(forms.Form):
    """One action of a process, in the shape ``services.save_process`` takes. Only the boxes
    of its kind are used; each choice starts on its first option, as for steps."""

    moment = forms.ChoiceField(
        initial="approve",
        label=pgettext_lazy("the moment an approval action runs", "When"),
        choices=[
            ("approve", _("on approval")),
            ("reject", _("on rejection")),
            ("recall", _("on recall")),
        ],
    )
    kind = forms.ChoiceField(
        initial="set_fields",
        label=_("Action"),
        choices=[
            ("set_fields", _("set fields")),
            ("email", _("send an e-mail")),
            ("task", _("create a task")),
            ("stage", _("move to a stage")),
        ],
    )
    values = forms.CharField(
        label=_("Fields and their values"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "probability = 90"}),
        help_text=_("One per line: field = value."),
    )
    to = forms.CharField(
        label=_("To"),
        required=False,
        max_length=320,
        help_text=_("submitter, owner, or an e-mail address."),
    )
    subject = forms.CharField(label=_("Subject"), required=False, max_length=200)
    body = forms.CharField(
        label=pgettext_lazy("the text of an e-mail", "Message"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    title = forms.CharField(label=_("Task title"), required=False, max_length=200)
    assignee = forms.ChoiceField(label=_("Assignee"), required=False, initial="submitter")
    due_in_hours = forms.IntegerField(label=_("Due in business hours"), required=False, min_value=1)
    stage = forms.TypedChoiceField(
        label=_("Stage"), required=False, coerce=int, empty_value=None, choices=()
    )

    # The boxes each kind uses, besides "when" and "kind".
    USES: ClassVar[dict[str, tuple[str, ...]]] = {
        "set_fields": ("values",),
        "email": ("to", "subject", "body"),
        "task": ("title", "assignee", "due_in_hours"),
        "stage": ("stage",),
    }

    def __init__(self, *args: Any, people: list[tuple[int, str]], stages: list, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [
            ("submitter", _("the submitter")),
            ("owner", _("the record's owner")),
            *((str(pk), name) for pk, name in people),
        ]
        self.fields["stage"].choices = [("", "—"), *stages]

    @staticmethod
    def initial_of(moment: str, action: dict[str, Any]) -> dict[str, Any]:
        """A saved action as the form's initial values (a value of none as an empty one)."""
        initial = {"moment": moment, **action}
        if action["kind"] == "set_fields":
            initial["values"] = "\n".join(
                f"{k} = {'' if v is None else v}" for k, v in action["values"].items()
            )
        if action["kind"] == "task":
            initial["assignee"] = str(action.get("assignee") or "submitter")
        return initial

    def clean_values(self) -> dict[str, str]:
        return field_values(self.cleaned_data["values"])

    def action(self) -> dict[str, Any]:
        """The action as the service takes it."""
        data = self.cleaned_data
        action = {"kind": data["kind"], **{k: data[k] for k in self.USES[data["kind"]]}}
        if data["kind"] == "task" and data["assignee"] not in ("submitter", "owner"):
            action["assignee"] = int(data["assignee"])
        return action


class _ActionBlocks(_Blocks):
    def __init__(self, *args: Any, actions: dict[str, list] | None = None, **kwargs: Any):
        if actions is not None and not args and "data" not in kwargs:
            kwargs["initial"] = [
                ActionForm.initial_of(moment, action)
                for moment in ACTION_MOMENTS
                for action in actions.get(moment, [])
            ]
        kwargs.setdefault("prefix", "actions")
        # Also what the page lists beside the form, for the API's "stage" actions.
        self.stages = cel_fields.stages_by_pipeline()
        choices = [
            (stage.pk, f"{object_type} · {pipeline} · {stage.label}")
            for object_type, pipeline, in_use in self.stages
            for stage in in_use
        ]
        kwargs["form_kwargs"] = {"stages": choices}
        super().__init__(*args, **kwargs)

    def _by_moment(self) -> dict[str, list[ActionForm]]:
        kept: dict[str, list[ActionForm]] = {moment: [] for moment in ACTION_MOMENTS}
        for form in self.ordered_forms:
            kept[form.cleaned_data["moment"]].append(form)
        return kept

    def actions(self) -> dict[str, list[dict[str, Any]]]:
        """The kept actions by moment, each list in their order, as the service takes them."""
        return {moment: [f.action() for f in kept] for moment, kept in self._by_moment().items()}

    def paths(self) -> dict[str, forms.Form]:
        return {
            f"actions.{moment}.{index}": form
            for moment, kept in self._by_moment().items()
            for index, form in enumerate(kept)
        }


# Blocks the page takes; the API takes as many actions as it is given.
_MOST_ACTIONS = 30
ActionForms = _blocks(ActionForm, _ActionBlocks, _MOST_ACTIONS)
