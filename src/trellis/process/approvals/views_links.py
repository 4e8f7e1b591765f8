"""The page behind the signed Approve / Reject links of an approval e-mail: no login, the
signature is the credential (see ``emailed``).

Opening the link shows what is to be decided and asks for confirmation; only the posted form
decides. A link that is not ours or was altered gives a 404 page, an expired one a 410 page,
a second use a 409 page that says who decided and when. Floods are answered with 429.
Responses carry ``Referrer-Policy: same-origin`` (the signature is in the address) and are
never cached. The page speaks the approver's language unless the visitor picked one.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from trellis.core.errors import NotFound, RateLimited, ServiceError, ValidationFailed
from trellis.core.forms import ServiceForm
from trellis.core.network import client_address

from .. import notify
from ..external import LinkGone
from . import emailed, services


class DecisionForm(ServiceForm):
    id_prefix = "decision"

    comment = forms.CharField(
        label=gettext_lazy("Comment"),
        required=False,
        max_length=services.MAX_COMMENT,
        widget=forms.Textarea(attrs={"rows": 4}),
    )

    def __init__(self, *args: Any, approve: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.approve = approve
        if not approve:
            self.fields["comment"].label = gettext_lazy("Why do you reject it?")

    def clean_comment(self) -> str:
        comment = self.cleaned_data["comment"].strip()
        if not self.approve and not comment:
            raise forms.ValidationError(_("Say why you reject it."))
        return comment


def link_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn a bad, expired or flooded link into its page, and mark every answer private."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except NotFound as exc:
            response = _refused(request, exc.detail, 404)
        except LinkGone as exc:
            response = _refused(request, exc.detail, 410)
        except RateLimited as exc:
            response = _refused(request, exc.detail, 429)
            response["Retry-After"] = "600"
        response["Referrer-Policy"] = "same-origin"
        response["Cache-Control"] = "private, no-store"
        response["X-Robots-Tag"] = "noindex"
        return response

    return wrapper


def _refused(request: HttpRequest, reason: str, status: int) -> HttpResponse:
    return render(
        request,
        "approvals/link/refused.html",
        {"reason": reason, "status": status},
        status=status,
    )


def _speak(request: HttpRequest, language: str) -> None:
    """The approver's language, unless the visitor chose one with the switch."""
    chosen = settings.LANGUAGE_COOKIE_NAME in request.COOKIES
    if not chosen and language in dict(settings.LANGUAGES):
        translation.activate(language)
        request.LANGUAGE_CODE = language


def _page(
    request: HttpRequest,
    token: str,
    link: emailed.Link,
    form: DecisionForm | None = None,
    *,
    status: int = 200,
    settled: emailed.Settled | None = None,
) -> HttpResponse:
    about = emailed.summary(link.request)
    context = {
        "token": token,
        "link": link,
        "item": link.request,
        "record": about.record,
        "terms": about.terms,
        "approver": link.assignment.user,
        "settled": settled or link.settled,
        "form": form or DecisionForm(approve=link.approve),
        "request_path": services.request_path(link.request),
    }
    return render(request, "approvals/link/confirm.html", context, status=status)


@require_GET
@link_view
def link_page(request: HttpRequest, token: str) -> HttpResponse:
    link = emailed.open_link(token, ip=client_address(request))
    _speak(request, notify.language_of(link.assignment.user))
    return _page(request, token, link)


@require_POST
@link_view
def link_decide(request: HttpRequest, token: str) -> HttpResponse:
    link = emailed.open_link(token, ip=client_address(request))
    _speak(request, request.POST.get("language", ""))
    form = DecisionForm(request.POST, approve=link.approve)
    if form.is_valid():
        try:
            emailed.decide(link, form.cleaned_data["comment"])
        except emailed.AlreadyDecided as exc:
            return _page(request, token, link, form, status=409, settled=exc.settled)
        except ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        except ServiceError as exc:
            form.add_error(None, str(exc.detail))
        else:
            done = _("Thank you: you approved it.") if link.approve else _("You rejected it.")
            messages.success(request, done)
            return redirect("approvals:link", token=token)
    return _page(request, token, link, form, status=422)


urlpatterns = [
    path("link/<str:token>/", link_page, name="link"),
    path("link/<str:token>/decide/", link_decide, name="link-decide"),
]
