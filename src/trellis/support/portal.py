"""The customer portal: no login; the tracking number and the access key (or e-mail) open a case.

What a customer sees of a case is decided here and in ``access``: its public events only, agents
by first name only, the customer's own messages, and the allowed attachments of public events.
Never internal notes, never agents' surnames or addresses, never another case. An unknown number
and a wrong key give the same 404 page, and a failed look-up by e-mail gives one message for a
wrong number and a wrong address.

Responses carry ``Referrer-Policy: same-origin``: the key is in the address and must not reach
another site, while the browser still sends the Origin our CSRF check needs (with
``no-referrer`` Chromium sends ``Origin: null`` and every form post fails). Nothing is cached.
The status page speaks the customer's language (of their first message) unless the visitor
picked one with the language switch.
"""

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from trellis.core import ratelimit
from trellis.core.errors import Conflict, RateLimited, ValidationFailed
from trellis.core.money import Currency, format_money
from trellis.core.network import client_address

from . import access, billing, forms_portal, intake
from .models import Case, CaseAttachment, CaseEvent, SupportFee

# New cases one address may open through the web form in an hour.
NEW_CASES_PER_CLIENT = (10, 3600)
# How form fields are called in the intake's errors.
_FORM_FIELD = {
    "requester_email": "email",
    "requester_name": "name",
    "subject": "subject",
    "body": "message",
    "product": "product",
}
_SENT_SESSION_KEY = "portal_sent_case"


def portal_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Turn rate limits into the 429 page and mark every answer private and referrer-free."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except RateLimited:
            response = render(request, "support/portal/rate_limited.html", status=429)
            response["Retry-After"] = "600"
        response["Referrer-Policy"] = "same-origin"
        response["Cache-Control"] = "private, no-store"
        return response

    return wrapper


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "support/portal/not_found.html", status=404)


@require_http_methods(["GET", "POST"])
@portal_view
def index(request: HttpRequest) -> HttpResponse:
    """Look up a case by tracking number and e-mail; links to the new-case form."""
    form = forms_portal.LookupForm(request.POST or None)
    not_found = False
    if request.method == "POST" and form.is_valid():
        case = access.case_by_email(
            form.cleaned_data["tracking_number"],
            form.cleaned_data["email"],
            client=client_address(request),
        )
        if case is not None:
            access.grant(request, case)
            return redirect("portal:case", tracking=case.tracking_number)
        not_found = True
    return render(
        request,
        "support/portal/index.html",
        {"form": form, "not_found": not_found},
        status=422 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@portal_view
def new_case(request: HttpRequest) -> HttpResponse:
    """The web form: every field checked, the spam guard passed, then the intake's one door."""
    if request.method != "POST":
        return render(request, "support/portal/new.html", {"form": forms_portal.CaseForm()})
    form = forms_portal.CaseForm(request.POST, request.FILES)
    if not ratelimit.hit(f"portal-new:{client_address(request)}", *NEW_CASES_PER_CLIENT):
        raise RateLimited(_("Too many requests from your network. Please try again later."))
    if form.is_valid():
        data = form.cleaned_data
        try:
            case, _key = intake.open_case(
                channel=Case.Channel.WEB,
                subject=data["subject"],
                body=data["message"],
                requester_email=data["email"],
                requester_name=data["name"],
                language=_chosen_language(request),
                attachments=data["attachments"],
                product=data["product"],
            )
        except ValidationFailed as exc:
            for name, errors in exc.errors.items():
                for error in errors:
                    form.add_error(_FORM_FIELD.get(name), error)
        else:
            request.session[_SENT_SESSION_KEY] = case.tracking_number
            return redirect("portal:sent")
    # Shown again with a new timestamp, so a person who was too fast can simply send it again.
    form.data = form.data.copy()
    form.data["started"] = forms_portal.stamp()
    return render(request, "support/portal/new.html", {"form": form}, status=422)


def _chosen_language(request: HttpRequest) -> str:
    """The language the visitor picked with the switch; "" lets the intake tell from the text.

    The browser's language alone is not a choice: people write from borrowed and office
    machines, and the text they wrote says more.
    """
    language = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
    return language if language in dict(settings.LANGUAGES) else ""


@require_GET
@portal_view
def case_sent(request: HttpRequest) -> HttpResponse:
    number = request.session.get(_SENT_SESSION_KEY)
    if not number:
        return redirect("portal:new")
    return render(request, "support/portal/sent.html", {"number": number})


@require_http_methods(["GET", "POST"])
@portal_view
def status(request: HttpRequest, tracking: str, key: str) -> HttpResponse:
    """The status page opened with the link from the acknowledgement."""
    case = access.case_by_key(tracking, key, client=client_address(request))
    if case is None:
        return _not_found(request)
    return status_page(request, case, key)


@require_http_methods(["GET", "POST"])
@portal_view
def case_page(request: HttpRequest, tracking: str) -> HttpResponse:
    """The status page after a look-up by e-mail in this browser."""
    access.count_view(client_address(request))
    case = access.granted_case(request, tracking)
    if case is None:
        return _not_found(request)
    return status_page(request, case, None)


@require_GET
@portal_view
def attachment(request: HttpRequest, tracking: str, key: str, attachment_id: int) -> HttpResponse:
    case = access.case_by_key(tracking, key, client=client_address(request))
    return _download(request, case, attachment_id)


@require_GET
@portal_view
def case_attachment(request: HttpRequest, tracking: str, attachment_id: int) -> HttpResponse:
    access.count_view(client_address(request))
    return _download(request, access.granted_case(request, tracking), attachment_id)


def _download(request: HttpRequest, case: Case | None, attachment_id: int) -> HttpResponse:
    """A file the customer may see, always as a download: never rendered in our origin."""
    found = (
        _public_attachments().filter(case=case, pk=attachment_id).first()
        if case is not None
        else None
    )
    if found is None:
        return _not_found(request)
    response = HttpResponse(bytes(found.data), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, found.filename)
    response["Content-Length"] = str(len(found.data))
    return response


def _public_attachments():
    return CaseAttachment.objects.filter(allowed=True, public=True).exclude(event__public=False)


def status_page(
    request: HttpRequest, case: Case, key: str | None, *, error: str = "", status: int = 200
) -> HttpResponse:
    """The status page; ``error`` (with its ``status``) is about an answer to a fee."""
    if settings.LANGUAGE_COOKIE_NAME not in request.COOKIES and case.language:
        translation.activate(case.language)
        request.LANGUAGE_CODE = case.language
    here = request.path
    final = intake.final_case(case)
    closed = final.status == Case.Status.CLOSED
    form = forms_portal.ReplyForm()
    response_status = status
    if request.method == "POST" and not error:
        form = forms_portal.ReplyForm(request.POST, request.FILES)
        if closed:
            form.add_error(None, _("This case is closed. Please open a new one."))
        elif form.is_valid():
            try:
                intake.customer_reply(
                    case,
                    body=form.cleaned_data["message"],
                    attachments=form.cleaned_data["attachments"],
                    via=Case.Channel.WEB,
                )
            except (ValidationFailed, Conflict) as exc:
                for error in getattr(exc, "errors", {}).get("body", []) or [exc.detail]:
                    form.add_error(None, error)
            else:
                messages.success(request, _("Your message was added to your case."))
                return redirect(here)
        response_status = 422
    context = {
        "case": case,
        "status_words": access.customer_status(case),
        "timeline": _timeline(case, key),
        "form": form,
        "closed": closed,
        "merged_into": _merged_into(case, final),
        "fees": customer_fees(case, key),
        "fee_error": error,
    }
    return render(request, "support/portal/status.html", context, status=response_status)


def customer_fees(case: Case, key: str | None) -> list[dict]:
    """The case's support fees as the customer reads them, with an answer link for those
    still waiting for their answer."""
    rows = []
    for fee in billing.case_fees(case):
        waiting = fee.status == SupportFee.Status.PROPOSED
        rows.append(
            {
                "id": fee.pk,
                "amount": format_money(fee.amount, fee.currency),
                "description": fee.description,
                "status": fee.status,
                "status_label": fee.get_status_display(),
                "proposed_at": fee.proposed_at,
                "answered_at": fee.answered_at,
                "waived_at": fee.waived_at,
                "contract": fee.contract.number if fee.contract_id else "",
                "answer_url": _fee_url(case, key, fee.pk) if waiting else "",
            }
        )
    return rows


def _fee_url(case: Case, key: str | None, fee_id: int) -> str:
    if key:
        return reverse("portal:fee", args=[case.tracking_number, key, fee_id])
    return reverse("portal:case-fee", args=[case.tracking_number, fee_id])


def _merged_into(case: Case, target: Case) -> Case | None:
    """The case this one continues in (``target``), shown only if it is the same customer's."""
    if target.pk == case.pk or target.requester_email != case.requester_email:
        return None
    return target


def _timeline(case: Case, key: str | None) -> list[dict]:
    """The public events, as the customer is to read them."""
    events = (
        CaseEvent.objects.filter(case=case, public=True)
        .select_related("actor")
        .prefetch_related(
            Prefetch(
                "attachments",
                queryset=CaseAttachment.objects.filter(allowed=True, public=True).defer("data"),
                to_attr="downloads",
            )
        )
        .order_by("at", "id")
    )
    entries = []
    for event in events:
        entry = _entry(case, event)
        if entry is None:
            continue
        entry["attachments"] = [
            {"name": a.filename, "size": a.size, "url": _file_url(case, key, a.pk)}
            for a in event.downloads
        ]
        entries.append(entry)
    return entries


def _file_url(case: Case, key: str | None, attachment_id: int) -> str:
    if key:
        return reverse("portal:attachment", args=[case.tracking_number, key, attachment_id])
    return reverse("portal:case-attachment", args=[case.tracking_number, attachment_id])


_FEE_TITLES = {
    CaseEvent.Kind.FEE_PROPOSED: lambda: _("A support fee of %(amount)s was proposed."),
    CaseEvent.Kind.FEE_AGREED: lambda: _("You agreed to the support fee of %(amount)s."),
    CaseEvent.Kind.FEE_DECLINED: lambda: _("You declined the support fee of %(amount)s."),
    CaseEvent.Kind.FEE_WAIVED: lambda: _("The support fee of %(amount)s was waived."),
}


def _fee_amount(data: dict) -> str | None:
    """The amount a fee event names, as the customer reads it; ``None`` if it names none."""
    try:
        amount = Decimal(str(data.get("amount")))
    except (InvalidOperation, ValueError):
        return None
    currency = data.get("currency")
    if not amount.is_finite() or currency not in Currency.values:
        return None
    return format_money(amount, currency)


def _entry(case: Case, event: CaseEvent) -> dict | None:
    """One timeline entry: a fixed title per kind, and a text only for messages.

    Each kind says what it says in its own words; nothing from ``data`` reaches the page except
    the status a case moved to and the number a follow-up came from.
    """
    kind = event.kind
    entry = {"at": event.at, "kind": kind, "title": "", "author": "", "body": "", "mine": False}
    if kind == CaseEvent.Kind.RECEIVED:
        entry["title"] = _("Your request was received.")
        follows = event.data.get("follows")
        if follows:
            entry["body"] = _("This follows your earlier case %(number)s.") % {"number": follows}
    elif kind == CaseEvent.Kind.CUSTOMER_MESSAGE:
        entry.update(title=_("You wrote"), body=event.body, mine=True)
    elif kind == CaseEvent.Kind.REPLY:
        name = access.agent_first_name(event)
        title = (
            _("%(name)s from the support team replied") % {"name": name}
            if name != access.support_team_name()
            else _("The support team replied")
        )
        entry.update(title=title, author=name, body=event.body)
    elif kind == CaseEvent.Kind.STATUS:
        to = event.data.get("to", "")
        if to not in Case.Status.values:
            return None
        entry["title"] = _("Status: %(status)s") % {"status": access.status_words(to)}
    elif kind == CaseEvent.Kind.ASSIGNED:
        entry["title"] = _("Assigned to the support team")
    elif kind == CaseEvent.Kind.CLASSIFIED:
        entry["title"] = _("Your request was reviewed and classified.")
    elif kind == CaseEvent.Kind.MERGED:
        entry["title"] = _("Combined with another of your requests about the same thing.")
    elif kind == CaseEvent.Kind.SPLIT:
        entry["title"] = _("Part of your request is handled separately.")
    elif kind == CaseEvent.Kind.PHONE_CALL:
        entry["title"] = _("We spoke on the phone.")
    elif kind in _FEE_TITLES:
        amount = _fee_amount(event.data)
        if amount is None:
            return None
        entry["title"] = _FEE_TITLES[kind]() % {"amount": amount}
        if kind == CaseEvent.Kind.FEE_PROPOSED:
            entry["body"] = event.body
    else:
        # Internal kinds (notes) are never public; one made public by mistake still stays out.
        return None
    return entry
