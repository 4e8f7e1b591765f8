"""Forms of the agent's support pages: they render fields and parse what agents type.

Forms never write. A view hands the cleaned values to ``support.services``, which checks
everything again and owns the write; errors a service reports come back onto the form through
``add_service_errors``.
"""

from collections.abc import Iterable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.template.defaultfilters import truncatechars
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _

from trellis.core.forms import ServiceForm
from trellis.core.models import Team, User
from trellis.core.visibility import users_who_may, visible
from trellis.crm.forms import RecordPicker
from trellis.crm.models import Contact, Product

from . import queries
from .models import Case, CaseEvent, Feature, ReplyTemplate
from .services import TRANSITIONS

# The kinds an agent picks when classifying; "not classified" is where cases start.
CLASSES = [(value, label) for value, label in Case.Kind.choices if value != Case.Kind.UNCLASSIFIED]


class CaseListFilters(forms.Form):
    """The search box and status filter of the case list; a bad value filters nothing."""

    q = forms.CharField(label=_("Search"), required=False, max_length=200)
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("All")), *Case.Status.choices]
    )

    def values(self) -> dict[str, str]:
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        return {
            "q": (cleaned.get("q") or "").strip(),
            "status": cleaned.get("status") or "",
        }


class DetailsForm(ServiceForm):
    """Subject, priority and product of a case: internal details the customer is not told of."""

    id_prefix = "details"

    error_fields = {"product_id": "product"}

    subject = forms.CharField(
        label=_("Subject"), max_length=Case._meta.get_field("subject").max_length
    )
    priority = forms.ChoiceField(label=_("Priority"), choices=Case.Priority.choices)
    product = forms.ModelChoiceField(
        label=_("Product"), queryset=Product.objects.none(), required=False, empty_label=_("—")
    )
    version = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = (
            visible(user, Product).filter(is_active=True).order_by("name")
        )


class AssignForm(ServiceForm):
    """Hand a case to an expert, or to a specialist team's queue, with a note for them."""

    id_prefix = "assign"

    error_fields = {"user_id": "user", "team_id": "team"}

    user = forms.ModelChoiceField(
        label=_("Agent"), queryset=User.objects.none(), required=False, empty_label=_("—")
    )
    team = forms.ModelChoiceField(
        label=_("Team"), queryset=Team.objects.none(), required=False, empty_label=_("—")
    )
    note = forms.CharField(
        label=_("Hand-off note"),
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Internal: what the next owner needs to know. The customer never sees it."),
    )
    version = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Those a case can be handed to.
        self.fields["user"].queryset = users_who_may("edit", "case").order_by(
            "first_name", "last_name", "username"
        )
        self.fields["team"].queryset = Team.objects.order_by("name")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not cleaned.get("user") and not cleaned.get("team") and not self.errors:
            raise ValidationError(_("Choose an agent, a team, or both."))
        return cleaned


def _offer_next_statuses(field: forms.ChoiceField, case: Case, first: tuple[str, Any]) -> None:
    """Offer only the statuses the case can go to now, but accept any status.

    A page may be older than the case: what was a valid move when it was drawn is checked by
    the service, which answers a stale page with a conflict rather than a form error.
    """
    field.choices = [first, *Case.Status.choices]
    field.widget.choices = [first] + [
        (value, label)
        for value, label in Case.Status.choices
        if value in TRANSITIONS.get(case.status, ())
    ]


class StatusForm(ServiceForm):
    id_prefix = "status"

    status = forms.ChoiceField(label=_("New status"))
    version = forms.IntegerField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, case: Case, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = (case.status, _("%s (now)") % case.get_status_display())
        _offer_next_statuses(self.fields["status"], case, current)


class ClassifyForm(ServiceForm):
    """Triage: defect, feature request, question, billing or other."""

    id_prefix = "classify"

    error_fields = {"feature_id": "feature"}

    kind = forms.ChoiceField(label=_("Class"), choices=CLASSES, widget=forms.RadioSelect)
    feature = forms.ModelChoiceField(
        label=_("Existing feature request"),
        queryset=Feature.objects.none(),
        required=False,
        empty_label=_("—"),
    )
    feature_title = forms.CharField(
        label=_("or a new feature request"),
        required=False,
        max_length=200,
        help_text=_("For a feature request: the feature the customer asks for."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["feature"].queryset = Feature.objects.order_by("title")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["feature_title"] = (cleaned.get("feature_title") or "").strip()
        wants_feature = cleaned.get("kind") == Case.Kind.FEATURE_REQUEST
        if wants_feature and not cleaned.get("feature") and not cleaned["feature_title"]:
            self.add_error(
                "feature_title",
                _("Name the feature, or choose one already on the feedback list."),
            )
        return cleaned


class TemplatePickerForm(forms.Form):
    """Choosing a reply template fills the reply box."""

    template = forms.TypedChoiceField(label=_("Template"), required=False, coerce=int)

    def __init__(self, *args: Any, templates: Iterable[ReplyTemplate], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.templates = {template.pk: template for template in templates}
        self.fields["template"].choices = [("", _("— choose a template —"))] + [
            (template.pk, template.name) for template in self.templates.values()
        ]

    def chosen(self) -> ReplyTemplate | None:
        if not self.is_valid() or self.cleaned_data["template"] in ("", None):
            return None
        return self.templates.get(self.cleaned_data["template"])


class ReplyForm(ServiceForm):
    """A public reply; it can move the case to another status in the same step."""

    id_prefix = "reply"

    body = forms.CharField(
        label=_("Reply to the customer"),
        max_length=50_000,
        widget=forms.Textarea(attrs={"rows": 8}),
    )
    status = forms.ChoiceField(label=_("Then set the status to"), required=False)

    def __init__(self, *args: Any, case: Case, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep = ("", _("— keep “%s” —") % case.get_status_display())
        _offer_next_statuses(self.fields["status"], case, keep)

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise ValidationError(_("Write a reply."))
        return body


class NoteForm(ServiceForm):
    id_prefix = "note"
    body = forms.CharField(
        label=_("Internal note"),
        max_length=50_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Only agents see notes."),
    )

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise ValidationError(_("Write a note."))
        return body


class MergeForm(ServiceForm):
    """Merge this case into another one, named by its tracking number."""

    id_prefix = "merge"

    error_fields = {"target_id": "target", "target": "target", "source_id": "target"}

    target = forms.CharField(
        label=_("Tracking number of the case to keep"),
        max_length=20,
        help_text=_("This case is closed and its history moves into that case."),
    )

    def __init__(self, *args: Any, case: Case, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.case = case
        self.user = user

    def clean_target(self) -> Case:
        target = queries.case_numbered(self.user, self.cleaned_data["target"])
        if target is None:
            raise ValidationError(_("There is no case with this tracking number."))
        if target.pk == self.case.pk:
            raise ValidationError(_("A case cannot be merged into itself."))
        return target


def _event_label(event: CaseEvent) -> str:
    when = date_format(localtime(event.at), "SHORT_DATETIME_FORMAT")
    text = " ".join((event.body or "").split())
    return f"{when} · {event.author or '—'} · {truncatechars(text, 90)}"


class SplitForm(ServiceForm):
    """Move some of the customer's messages into a new case of their own."""

    id_prefix = "split"

    error_fields = {"event_ids": "events"}

    events = forms.MultipleChoiceField(
        label=_("Customer messages to move"), widget=forms.CheckboxSelectMultiple
    )
    subject = forms.CharField(label=_("Subject of the new case"), max_length=300)

    def __init__(self, *args: Any, messages: Iterable[CaseEvent], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["events"].choices = [(str(e.pk), _event_label(e)) for e in messages]

    def clean_events(self) -> list[int]:
        return [int(pk) for pk in self.cleaned_data["events"]]

    def clean_subject(self) -> str:
        subject = " ".join(self.cleaned_data["subject"].split())
        if not subject:
            raise ValidationError(_("Give the new case a subject."))
        return subject


class PhoneCallForm(ServiceForm):
    """An agent writing down a call: it opens a case like an e-mail would."""

    error_fields = {"contact_id": "contact", "product_id": "product"}

    contact = forms.ModelChoiceField(
        label=_("Contact"),
        queryset=Contact.objects.none(),
        required=False,
        help_text=_("Known customer: choose them, and the e-mail address is taken from them."),
    )
    requester_name = forms.CharField(label=_("Caller's name"), required=False, max_length=200)
    requester_email = forms.EmailField(
        label=_("Caller's e-mail address"),
        required=False,
        max_length=254,
        help_text=_("Updates and the tracking number go to this address."),
    )
    subject = forms.CharField(label=_("Subject"), max_length=300)
    body = forms.CharField(
        label=_("What the caller said"),
        max_length=50_000,
        widget=forms.Textarea(attrs={"rows": 8}),
    )
    product = forms.ModelChoiceField(
        label=_("Product"), queryset=Product.objects.none(), required=False
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, key, model in (("contact", "contact", Contact), ("product", "product", Product)):
            field = self.fields[name]
            field.widget = RecordPicker(key)
            field.widget.is_required = False
            field.queryset = visible(user, model)  # also hands the choices to the widget

    def clean_subject(self) -> str:
        subject = " ".join(self.cleaned_data["subject"].split())
        if not subject:
            raise ValidationError(_("Give the call a subject."))
        return subject

    def clean_body(self) -> str:
        body = self.cleaned_data["body"].strip()
        if not body:
            raise ValidationError(_("Write down what the caller said."))
        return body

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        contact = cleaned.get("contact")
        if not cleaned.get("requester_email") and "requester_email" not in self.errors:
            if contact is not None and contact.email:
                cleaned["requester_email"] = contact.email
            else:
                self.add_error(
                    "requester_email",
                    _("Enter the caller's e-mail address, or choose a contact who has one."),
                )
        if contact is not None and not cleaned.get("requester_name"):
            cleaned["requester_name"] = contact.name
        return cleaned

    def service_data(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "requester_email": data["requester_email"],
            "requester_name": data.get("requester_name") or "",
            "subject": data["subject"],
            "body": data["body"],
            "contact_id": data["contact"].pk if data.get("contact") else None,
            "product_id": data["product"].pk if data.get("product") else None,
        }
