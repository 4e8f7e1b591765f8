"""Admins' pages for mail: the quarantine of incoming mail and outgoing mail that failed.

Every read and write goes through ``inbound`` and ``outbound``, which check that the user is a
mail admin; anyone else gets 404, as for a page that does not exist.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from trellis.core.errors import Conflict, NotFound, ValidationFailed
from trellis.core.paging import Page
from trellis.core.visibility import is_admin

from . import inbound, outbound
from .models import InboundMessage, OutboundMessage

# The first tab is shown by default.
INBOUND_TABS = (
    (InboundMessage.Status.QUARANTINED, gettext_lazy("Quarantine")),
    (InboundMessage.Status.IGNORED, gettext_lazy("Ignored")),
    (InboundMessage.Status.DUPLICATE, gettext_lazy("Duplicates")),
    (InboundMessage.Status.RECEIVED, gettext_lazy("Waiting")),
    ("all", gettext_lazy("All")),
)
OUTBOUND_TABS = (
    (OutboundMessage.Status.FAILED, gettext_lazy("Failed")),
    (OutboundMessage.Status.QUEUED, gettext_lazy("Queued")),
    ("all", gettext_lazy("All")),
)


def mail_admin(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Logged in, and a mail admin; others get 404."""

    @login_required
    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_admin(request.user):
            raise Http404
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404 from exc

    return checked


def _page_number(request: HttpRequest) -> int:
    try:
        return max(int(request.GET.get("page", 1)), 1)
    except ValueError:
        return 1


def _list(
    request: HttpRequest, template: str, tabs: tuple, page_of: Callable[..., Page]
) -> HttpResponse:
    """A page of the messages of the tab ``?status=`` names (the first tab by default)."""
    default = tabs[0][0]
    status = request.GET.get("status", default)
    if status not in {key for key, _label in tabs}:
        status = default
    page = page_of(request.user, None if status == "all" else status, _page_number(request), None)
    shown = [{"key": key, "label": label, "current": key == status} for key, label in tabs]
    return render(request, template, {"page": page, "status": status, "tabs": shown})


@require_GET
@mail_admin
def quarantine(request: HttpRequest) -> HttpResponse:
    return _list(request, "mail/quarantine.html", INBOUND_TABS, inbound.page_of)


def _inbound_page(
    request: HttpRequest, pk: int, errors: dict[str, list[str]] | None = None, status: int = 200
) -> HttpResponse:
    message = inbound.get(request.user, pk)
    return render(
        request,
        "mail/inbound_detail.html",
        {
            "message": message,
            "headers": inbound.headers_of(bytes(message.raw)),
            "record": message.record if message.content_type_id else None,
            "can_rerun": message.status in inbound.RERUNNABLE,
            "can_file": message.status in inbound.FILEABLE,
            "can_dismiss": message.status in inbound.DISMISSABLE,
            "errors": errors or {},
            "general_errors": (errors or {}).get("__all__", []),
            "values": request.POST if request.method == "POST" else {},
        },
        status=status,
    )


@require_GET
@mail_admin
def inbound_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _inbound_page(request, pk)


@require_GET
@mail_admin
def inbound_raw(request: HttpRequest, pk: int) -> HttpResponse:
    message = inbound.get(request.user, pk)
    # A download, never shown in the browser: it is whatever the sender wrote.
    response = HttpResponse(bytes(message.raw), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="message-{message.pk}.eml"'
    return response


def _inbound_action(
    request: HttpRequest, pk: int, act: Callable[[], InboundMessage], done: str
) -> HttpResponse:
    try:
        act()
    except ValidationFailed as exc:
        return _inbound_page(request, pk, exc.errors, status=422)
    except Conflict as exc:
        return _inbound_page(request, pk, {"__all__": [str(exc.detail)]}, status=409)
    messages.success(request, done)
    return redirect("mail:inbound-detail", pk=pk)


@require_POST
@mail_admin
def inbound_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    def act() -> InboundMessage:
        message = inbound.rerun(request.user, pk)
        if message.status == InboundMessage.Status.QUARANTINED:
            messages.warning(request, _("The message is still in the quarantine."))
        return message

    return _inbound_action(request, pk, act, _("The message was processed again."))


@require_POST
@mail_admin
def inbound_dismiss(request: HttpRequest, pk: int) -> HttpResponse:
    reason = request.POST.get("reason", "")
    return _inbound_action(
        request,
        pk,
        lambda: inbound.dismiss(request.user, pk, reason),
        _("The message was dismissed."),
    )


@require_POST
@mail_admin
def inbound_file(request: HttpRequest, pk: int) -> HttpResponse:
    reference = request.POST.get("reference", "")
    return _inbound_action(
        request,
        pk,
        lambda: inbound.file_into(request.user, pk, reference),
        _("The message was filed."),
    )


@require_GET
@mail_admin
def outgoing(request: HttpRequest) -> HttpResponse:
    return _list(request, "mail/outgoing.html", OUTBOUND_TABS, outbound.page_of)


@require_POST
@mail_admin
def outbound_retry(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        outbound.retry(request.user, pk)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, _("The message will be sent again now."))
    return redirect("mail:outgoing")
