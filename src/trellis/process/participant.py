"""The external participant's page: no login, the signed link from their e-mail.

What the participant sees and may do is decided by ``process.external``: their own tasks of
the thread with what is shared with them, a comment, a file, and marking the task done with the
next step or saying that the thread is finished. Every use of the link goes through it and is
logged there, refused ones included.

An address that is not a link and a tampered one give the same 404 page; an expired or revoked
link a 410 page that says which; acting on a task that is already done a 409 page. Floods are
answered with 429. Responses carry ``Referrer-Policy: same-origin`` (the token is in the
address and must not reach another site, while the browser still sends the Origin our CSRF
check needs) and are never cached. The page speaks the task's language unless the visitor
picked one with the language switch.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from trellis.core.errors import Conflict, NotFound, RateLimited, ValidationFailed
from trellis.core.network import client_address

from . import external, forms
from .external import LinkGone
from .views import download


def participant_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn a bad, gone or flooded link into its page, and mark every answer private."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except NotFound:
            response = render(request, "process/participant/not_found.html", status=404)
        except LinkGone as exc:
            response = render(
                request, "process/participant/gone.html", {"reason": exc.detail}, status=410
            )
        except RateLimited:
            response = render(request, "process/participant/rate_limited.html", status=429)
            response["Retry-After"] = "600"
        response["Referrer-Policy"] = "same-origin"
        response["Cache-Control"] = "private, no-store"
        response["X-Robots-Tag"] = "noindex"
        return response

    return wrapper


def _speak(request: HttpRequest, language: str) -> None:
    """The task's language, unless the visitor chose one with the switch."""
    chosen = settings.LANGUAGE_COOKIE_NAME in request.COOKIES
    if not chosen and language in dict(settings.LANGUAGES):
        translation.activate(language)
        request.LANGUAGE_CODE = language


@require_GET
@participant_view
def link_page(request: HttpRequest, token: str) -> HttpResponse:
    return _page(request, token)


def _page(request: HttpRequest, token: str, *, status: int = 200, **posted: Any) -> HttpResponse:
    """What of the thread is shared with the participant, and what they can do."""
    access = external.open_link(token, ip=client_address(request))
    _speak(request, access.task.language)
    shared = external.shared(access)
    required = access.task.task_type is not None and access.task.task_type.requires_next_step
    context: dict[str, Any] = {
        "token": token,
        "shared": shared,
        "task": access.task,
        "comment_form": forms.ParticipantCommentForm(),
        "attach_form": forms.ParticipantAttachForm(),
        "complete_form": forms.ParticipantCompleteForm(requires_next_step=required),
        **posted,
    }
    return render(request, "process/participant/task.html", context, status=status)


def _act(
    request: HttpRequest,
    token: str,
    name: str,
    make_form: Callable[[], Any],
    perform: Callable[[Any], str],
) -> HttpResponse:
    """Run one action: 422 with the form for bad input, 409 when the task is closed.

    The answer, errors included, is in the language of the page the form was on.
    """
    _speak(request, request.POST.get("language", ""))
    form = make_form()
    if form.is_valid():
        try:
            message = perform(form)
        except ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        except Conflict:
            return render(request, "process/participant/closed.html", {"token": token}, status=409)
        else:
            messages.success(request, message)
            return redirect("process:link", token=token)
    return _page(request, token, status=422, **{name: form})


@require_POST
@participant_view
def link_comment(request: HttpRequest, token: str) -> HttpResponse:
    def perform(form: forms.ParticipantCommentForm) -> str:
        external.comment(token, form.cleaned_data["body"], ip=client_address(request))
        return _("Your comment was added.")

    def make_form() -> forms.ParticipantCommentForm:
        return forms.ParticipantCommentForm(request.POST)

    return _act(request, token, "comment_form", make_form, perform)


@require_POST
@participant_view
def link_attach(request: HttpRequest, token: str) -> HttpResponse:
    def perform(form: forms.ParticipantAttachForm) -> str:
        filename, content_type, content = form.cleaned_data["file"]
        attachment = external.attach(
            token,
            filename=filename,
            content_type=content_type,
            data=content,
            ip=client_address(request),
        )
        return _("“%(name)s” was attached.") % {"name": attachment.filename}

    def make_form() -> forms.ParticipantAttachForm:
        return forms.ParticipantAttachForm(request.POST, request.FILES)

    return _act(request, token, "attach_form", make_form, perform)


@require_POST
@participant_view
def link_complete(request: HttpRequest, token: str) -> HttpResponse:
    def perform(form: forms.ParticipantCompleteForm) -> str:
        external.complete(
            token,
            next_step=form.next_step(),
            thread_finished=form.thread_finished,
            note=form.cleaned_data["note"].strip(),
            ip=client_address(request),
        )
        return _("Thank you: the task is done.")

    def make_form() -> forms.ParticipantCompleteForm:
        # Whether the task's type asks for the next step is the service's to check.
        return forms.ParticipantCompleteForm(request.POST, requires_next_step=False)

    return _act(request, token, "complete_form", make_form, perform)


@require_GET
@participant_view
def link_attachment(request: HttpRequest, token: str, attachment_id: int) -> HttpResponse:
    found = external.attachment(token, attachment_id, ip=client_address(request))
    return download(found.filename, bytes(found.data))
