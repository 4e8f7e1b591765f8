"""Forms of the customer portal: look-up, the new-case form with its spam guard, the reply form.

The spam guard needs no third-party service: a honeypot field people do not see (bots fill
every field), and a signed timestamp of when the form was shown. A person takes more than
``MIN_SECONDS`` to write a request; a form older than ``MAX_AGE_SECONDS`` was kept or replayed.
"""

from django import forms
from django.conf import settings
from django.core import signing
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from trellis.core import clock
from trellis.core.services import system_user
from trellis.core.visibility import visible
from trellis.crm.models import Product
from trellis.mail.parsing import Attachment

from . import intake

MIN_SECONDS = 3
MAX_AGE_SECONDS = 24 * 3600
MAX_FILES = 5
_STAMP_SALT = "trellis.support.portal.form-shown"


def stamp() -> str:
    """A signed note of when a form was shown."""
    return signing.dumps(int(clock.now().timestamp()), salt=_STAMP_SALT)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Any number of files; cleans to a list (empty when none was sent)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class AttachmentsMixin:
    """Checks uploads before anything is saved: size, type, how many."""

    def clean_attachments(self) -> list[Attachment]:
        files = self.cleaned_data.get("attachments") or []
        if len(files) > MAX_FILES:
            raise forms.ValidationError(
                _("Attach at most %(n)d files.") % {"n": MAX_FILES}, code="too_many"
            )
        limit = settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"]
        errors = []
        for upload in files:
            name = intake.safe_filename(upload.name)
            if upload.size > limit:
                errors.append(
                    forms.ValidationError(
                        _("“%(name)s” is too large: files may be at most %(limit)s."),
                        code="too_large",
                        params={"name": name, "limit": filesizeformat(limit)},
                    )
                )
            elif intake.is_forbidden(name):
                errors.append(
                    forms.ValidationError(
                        _("“%(name)s”: files of this type are not accepted for safety reasons."),
                        code="forbidden_type",
                        params={"name": name},
                    )
                )
        if errors:
            raise forms.ValidationError(errors)
        return [
            intake.make_attachment(upload.name, upload.content_type or "", upload.read())
            for upload in files
        ]


def _attachments_help() -> str:
    limit = filesizeformat(settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"])
    return _("Up to %(n)d files, each at most %(limit)s.") % {"n": MAX_FILES, "limit": limit}


class LookupForm(forms.Form):
    tracking_number = forms.CharField(
        label=_("Tracking number"),
        max_length=30,
        widget=forms.TextInput(attrs={"placeholder": "CS-2026-000123", "autocomplete": "off"}),
    )
    email = forms.EmailField(
        label=_("E-mail address"),
        max_length=254,
        help_text=_("The address you wrote to us from."),
    )


class CaseForm(AttachmentsMixin, forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=intake.MAX_NAME, required=False)
    email = forms.EmailField(
        label=_("Your e-mail address"),
        max_length=intake.MAX_EMAIL,
        help_text=_("We send the tracking number and our answers to this address."),
    )
    subject = forms.CharField(label=_("Subject"), max_length=intake.MAX_SUBJECT)
    message = forms.CharField(
        label=_("Message"),
        max_length=intake.MAX_BODY,
        widget=forms.Textarea(attrs={"rows": 8}),
    )
    product = forms.ModelChoiceField(
        label=_("Product"), queryset=Product.objects.none(), required=False
    )
    attachments = MultipleFileField(label=_("Attachments"))
    # The honeypot: hidden from people by the page's style, filled by bots.
    website = forms.CharField(
        label=_("Leave this field empty"),
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "off", "tabindex": "-1"}),
    )
    started = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = visible(system_user(), Product).filter(is_active=True)
        self.fields["attachments"].help_text = _attachments_help()
        if not self.is_bound:
            self.fields["started"].initial = stamp()

    def clean_started(self) -> int:
        try:
            shown = int(signing.loads(self.cleaned_data["started"], salt=_STAMP_SALT, max_age=None))
        except (signing.BadSignature, TypeError, ValueError):
            raise forms.ValidationError(
                _("This form could not be accepted. Please send it again."), code="bad_stamp"
            ) from None
        elapsed = clock.now().timestamp() - shown
        if elapsed < MIN_SECONDS:
            raise forms.ValidationError(
                _("That was very fast. Please check your message and send it again."),
                code="too_fast",
            )
        if elapsed > MAX_AGE_SECONDS:
            raise forms.ValidationError(
                _("This form was open for too long. Please send it again."), code="expired"
            )
        return shown

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("website"):
            raise forms.ValidationError(
                _("Your message could not be sent. Please try again."), code="honeypot"
            )
        return cleaned


class ReplyForm(AttachmentsMixin, forms.Form):
    message = forms.CharField(
        label=_("Your reply"),
        max_length=intake.MAX_BODY,
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
    )
    attachments = MultipleFileField(label=_("Attach files"))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["attachments"].help_text = _attachments_help()

    def clean(self):
        cleaned = super().clean()
        empty = not (cleaned.get("message") or "").strip() and not cleaned.get("attachments")
        if empty and not self.errors:
            raise forms.ValidationError(_("Write a message or attach a file."), code="empty")
        return cleaned
