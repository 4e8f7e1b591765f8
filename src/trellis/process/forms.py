"""Forms of the task pages and of the external participant's page: they render fields and
parse what people type.

Forms never write. A view hands the cleaned values to ``process.services`` (or, for the
participant, to ``process.external``), which checks everything again and owns the write;
errors a service reports come back onto the form through ``add_service_errors``.

Three forms say who gets a task (a new task, a reassignment, the next step of a completion):
they share the fields of ``add_holder_fields``, a choice of a user, a team's queue or an
external participant's e-mail address, which pages show all at once so that they work without
JavaScript.
"""

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from trellis.core.forms import ServiceForm
from trellis.core.models import Team
from trellis.core.visibility import users_who_may

from .models import Task, TaskType
from .services import MAX_TEXT, MAX_TITLE

Assignee = Task.Assignee

# What completing a task says comes next.
NEXT_TASK = "next"
THREAD_FINISHED = "finished"
NOTHING_MORE = "none"


def due_field(label: Any, **kwargs: Any) -> forms.DateTimeField:
    """A due time typed in the browser's date-and-time picker, in Trellis' time zone."""
    return forms.DateTimeField(
        label=label,
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("Time in %(zone)s.") % {"zone": settings.TIME_ZONE},
        **kwargs,
    )


class VersionForm(ServiceForm):
    """An action that needs only the version the page showed: start."""

    id_prefix = "start"

    version = forms.IntegerField(widget=forms.HiddenInput)


# Who gets a task.


def add_holder_fields(form: forms.Form, prefix: str = "") -> None:
    """The fields that name a task's assignee: one of a user, a team's queue, an e-mail."""
    form.fields[prefix + "assignee_kind"] = forms.ChoiceField(
        label=_("Give it to"),
        choices=Assignee.choices,
        initial=Assignee.USER,
        widget=forms.RadioSelect,
    )
    form.fields[prefix + "user"] = forms.ModelChoiceField(
        label=_("User"),
        # Those who may work on tasks; the service checks they may see the thread's record.
        queryset=users_who_may("edit", "task").order_by("first_name", "last_name", "username"),
        required=False,
        empty_label=_("—"),
    )
    form.fields[prefix + "team"] = forms.ModelChoiceField(
        label=_("Team's queue"),
        queryset=Team.objects.order_by("name"),
        required=False,
        empty_label=_("—"),
        help_text=_("The task waits in the queue until a member of the team claims it."),
    )
    form.fields[prefix + "external_email"] = forms.EmailField(
        label=_("Participant's e-mail address"),
        required=False,
        max_length=254,
        help_text=_(
            "Someone without a login: they get the task by e-mail, with a link to read, "
            "comment and complete it, and can simply reply to the e-mail."
        ),
    )
    form.fields[prefix + "external_name"] = forms.CharField(
        label=_("Participant's name"), required=False, max_length=200
    )
    form.fields[prefix + "language"] = forms.ChoiceField(
        label=_("Language of their e-mail"),
        choices=[("", _("— the same as mine —")), *settings.LANGUAGES],
        required=False,
    )


def clean_holder(form: forms.Form, cleaned: dict[str, Any], prefix: str = "") -> None:
    """The field of the chosen kind of assignee must be filled in."""
    kind = cleaned.get(prefix + "assignee_kind")
    needed = {
        Assignee.USER: (prefix + "user", _("Choose a user.")),
        Assignee.TEAM: (prefix + "team", _("Choose a team.")),
        Assignee.EXTERNAL: (prefix + "external_email", _("Enter the participant's address.")),
    }.get(kind)
    if needed and not cleaned.get(needed[0]) and needed[0] not in form.errors:
        form.add_error(needed[0], needed[1])


def holder_values(cleaned: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The chosen assignee as the services take it; the other kinds' fields are ignored."""
    kind = cleaned.get(prefix + "assignee_kind")
    if kind == Assignee.USER:
        user = cleaned.get(prefix + "user")
        return {"user_id": user.pk if user else None}
    if kind == Assignee.TEAM:
        team = cleaned.get(prefix + "team")
        return {"team_id": team.pk if team else None}
    return {
        "external_email": cleaned.get(prefix + "external_email") or "",
        "external_name": (cleaned.get(prefix + "external_name") or "").strip(),
        "language": cleaned.get(prefix + "language") or "",
    }


# The error keys of a task's assignee, as the services name them, and their fields here.
_HOLDER_ERRORS = {"assignee": "assignee_kind", "user_id": "user", "team_id": "team"}


def _task_type_field(label: Any) -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        label=label,
        queryset=TaskType.objects.filter(is_active=True).order_by("name", "id"),
        required=False,
        empty_label=_("—"),
    )


def _text_field(label: Any, rows: int = 3, **kwargs: Any) -> forms.CharField:
    kwargs.setdefault("required", False)
    return forms.CharField(
        label=label, max_length=MAX_TEXT, widget=forms.Textarea(attrs={"rows": rows}), **kwargs
    )


class TaskForm(ServiceForm):
    """A new task: what, for whom, by when."""

    id_prefix = "task"

    error_fields = {**_HOLDER_ERRORS, "task_type_id": "task_type"}

    title = forms.CharField(label=_("What is to be done"), max_length=MAX_TITLE)
    description = _text_field(_("Description"), rows=4)
    task_type = _task_type_field(_("Type"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_holder_fields(self)
        self.fields["due_at"] = due_field(_("Due"))
        self.fields["priority"] = forms.ChoiceField(
            label=_("Priority"), choices=Task.Priority.choices, initial=Task.Priority.NORMAL
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        clean_holder(self, cleaned)
        return cleaned

    def service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "title": data["title"],
            "description": data["description"],
            "task_type_id": data["task_type"].pk if data.get("task_type") else None,
            "due_at": data.get("due_at"),
            "priority": data["priority"],
            **holder_values(data),
        }


class EditForm(ServiceForm):
    """Title, description, type, due time and priority of an open task."""

    id_prefix = "edit"

    error_fields = {"task_type_id": "task_type"}

    title = forms.CharField(label=_("Title"), max_length=MAX_TITLE)
    description = _text_field(_("Description"), rows=4)
    task_type = _task_type_field(_("Type"))
    priority = forms.ChoiceField(label=_("Priority"), choices=Task.Priority.choices)
    version = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, task: Task, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self.fields["due_at"] = due_field(_("Due"))

    def changes(self) -> dict[str, Any]:
        """Only what differs from the task: an overdue task keeps its due time in the past
        while its title is corrected, which the service would refuse as a new due time."""
        data = self.cleaned_data
        task = self.task
        after = {
            "title": data["title"],
            "description": data["description"],
            "task_type_id": data["task_type"].pk if data.get("task_type") else None,
            "priority": data["priority"],
        }
        changed = {k: v for k, v in after.items() if v != getattr(task, k)}
        if _to_minute(data.get("due_at")) != _to_minute(task.due_at):
            changed["due_at"] = data.get("due_at")
        return changed


def _to_minute(value: dt.datetime | None) -> dt.datetime | None:
    """The page shows due times to the minute."""
    return value.replace(second=0, microsecond=0) if value is not None else None


class WaitForm(ServiceForm):
    id_prefix = "wait"

    note = _text_field(_("Waiting on whom or what?"), rows=2)
    version = forms.IntegerField(widget=forms.HiddenInput)


class CancelForm(ServiceForm):
    id_prefix = "cancel"

    note = _text_field(_("Why is it cancelled?"), rows=2)
    version = forms.IntegerField(widget=forms.HiddenInput)


class ReassignForm(ServiceForm):
    """Give the task to someone else; the history keeps who held it before."""

    id_prefix = "reassign"

    error_fields = _HOLDER_ERRORS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_holder_fields(self)
        self.fields["note"] = _text_field(
            _("Hand-off note"),
            help_text=_("What the next holder needs to know; it stays in the task's history."),
        )
        self.fields["version"] = forms.IntegerField(widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        clean_holder(self, cleaned)
        return cleaned


class CommentForm(ServiceForm):
    id_prefix = "comment"

    body = _text_field(_("Comment"), rows=4, required=True)
    public = forms.BooleanField(
        label=_("Share with the external participant"),
        required=False,
        help_text=_("They see it on their page, and get it by e-mail while the task is open."),
    )

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise forms.ValidationError(_("Write a comment."))
        return body


class UploadField(forms.FileField):
    """One file, read into memory unless it is over the attachment limit.

    The service judges the size and the type of every file; this only avoids reading a huge
    upload to refuse it, with the service's own words.
    """

    def clean(self, data: Any, initial: Any = None) -> tuple[str, str, bytes] | None:
        upload: UploadedFile | None = super().clean(data, initial)
        if upload is None:
            return None
        limit = settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"]
        if upload.size > limit:
            raise forms.ValidationError(
                _("The file is larger than %(limit)s."), params={"limit": filesizeformat(limit)}
            )
        return upload.name or "", upload.content_type or "", upload.read()


def _upload_help() -> str:
    limit = filesizeformat(settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"])
    return _("At most %(limit)s. Programs and scripts are not accepted.") % {"limit": limit}


class AttachForm(ServiceForm):
    id_prefix = "attach"

    public = forms.BooleanField(label=_("Share with the external participant"), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made here, not on the class: the limit it names is a setting.
        self.fields["file"] = UploadField(label=_("File"), help_text=_upload_help())


class _NextStepForm(ServiceForm):
    """Completing asks "what is the next step?": the next task, or the thread is finished.

    Where the task's type does not require an answer, "nothing more from me" is offered too.
    """

    error_fields = {"next_step": "outcome", "thread_finished": "outcome"}
    error_prefixes = {"next_step.": "next_"}

    def __init__(self, *args: Any, requires_next_step: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [
            (NEXT_TASK, _("The next task is …")),
            (THREAD_FINISHED, _("The thread is finished: nothing more is to be done.")),
        ]
        if not requires_next_step:
            choices.append((NOTHING_MORE, _("No next step from me.")))
        self.fields["outcome"] = forms.ChoiceField(
            label=_("What is the next step?"),
            choices=choices,
            initial=NEXT_TASK,
            widget=forms.RadioSelect,
        )
        self.fields["next_title"] = forms.CharField(
            label=_("What is to be done next"), max_length=MAX_TITLE, required=False
        )
        self.fields["next_description"] = _text_field(_("Details for the next step"), rows=3)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("outcome") == NEXT_TASK and not (cleaned.get("next_title") or "").strip():
            self.add_error("next_title", _("Say what is to be done next."))
        return cleaned

    def next_step(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if data["outcome"] != NEXT_TASK:
            return None
        return {
            "title": data["next_title"],
            "description": data["next_description"],
            "due_at": data.get("next_due_at"),
        }

    @property
    def thread_finished(self) -> bool:
        return self.cleaned_data["outcome"] == THREAD_FINISHED


class CompleteForm(_NextStepForm):
    """Complete a task, saying what comes next: for whom and by when."""

    id_prefix = "complete"

    error_fields = {
        **_NextStepForm.error_fields,
        **{f"next_{key}": f"next_{name}" for key, name in _HOLDER_ERRORS.items()},
        "next_task_type_id": "next_task_type",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_holder_fields(self, prefix="next_")
        self.fields["next_assignee_kind"].label = _("Who does it")
        self.fields["next_assignee_kind"].required = False
        self.fields["next_due_at"] = due_field(_("By when"))
        self.fields["next_priority"] = forms.ChoiceField(
            label=_("Priority"),
            choices=Task.Priority.choices,
            initial=Task.Priority.NORMAL,
            required=False,
        )
        self.fields["next_task_type"] = _task_type_field(_("Type"))
        self.fields["note"] = _text_field(_("Note on the completed task"), rows=2)
        self.fields["version"] = forms.IntegerField(widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("outcome") == NEXT_TASK:
            if not cleaned.get("next_assignee_kind"):
                self.add_error("next_assignee_kind", _("Say who does the next step."))
            clean_holder(self, cleaned, prefix="next_")
        return cleaned

    def next_step(self) -> dict[str, Any] | None:
        step = super().next_step()
        if step is None:
            return None
        data = self.cleaned_data
        return {
            **step,
            "priority": data.get("next_priority") or Task.Priority.NORMAL,
            "task_type_id": data["next_task_type"].pk if data.get("next_task_type") else None,
            **holder_values(data, prefix="next_"),
        }


class DigestForm(forms.Form):
    daily_digest = forms.BooleanField(
        label=_("One e-mail a day with all my tasks"),
        required=False,
        help_text=_(
            "Instead of an e-mail for each new task and reminder. Notifications in Trellis "
            "still come at once."
        ),
    )


# Lists.


class TaskListFilters(forms.Form):
    """The filters of the task list; a bad value filters nothing."""

    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("All")), *Task.Status.choices]
    )
    state = forms.ChoiceField(
        label=_("Open or overdue"),
        required=False,
        choices=[("", _("All")), ("open", _("Open")), ("overdue", _("Overdue"))],
    )
    assignee = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    queue = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def values(self) -> dict[str, Any]:
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        return {
            "status": cleaned.get("status") or None,
            "state": cleaned.get("state") or None,
            "assignee_id": cleaned.get("assignee"),
            "queue_id": cleaned.get("queue"),
        }


class TeamPicker(forms.Form):
    team = forms.ModelChoiceField(
        label=_("Team"), queryset=Team.objects.order_by("name"), empty_label=None
    )

    def chosen(self) -> Team | None:
        return self.cleaned_data["team"] if self.is_valid() else None


# The external participant's page.


class ParticipantCommentForm(ServiceForm):
    id_prefix = "comment"

    body = _text_field(_("Your comment"), rows=4, required=True)

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise forms.ValidationError(_("Write a comment."))
        return body


class ParticipantAttachForm(ServiceForm):
    id_prefix = "attach"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"] = UploadField(label=_("File"), help_text=_upload_help())


class ParticipantCompleteForm(_NextStepForm):
    """The participant marks their task done; a next step goes back to whoever gave it."""

    id_prefix = "complete"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["next_due_at"] = due_field(_("By when"))
        self.fields["note"] = _text_field(_("Anything to add?"), rows=2)
