"""The customer's answer to a support fee on the status page: agree or decline.

The same doors as the status page (``portal``): the signed link's key, or the grant a look-up
by e-mail left in this browser. A wrong number, a wrong key, or a fee of another case is the
portal's 404 page, and nothing changes. The answer is recorded with its time; a second answer
is refused (409) and the first one stands.
"""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from trellis.core.errors import Conflict, NotFound
from trellis.core.money import format_money
from trellis.core.network import client_address

from . import access, billing, portal
from .models import Case, SupportFee

ANSWERS = {"agree": True, "decline": False}


@require_POST
@portal.portal_view
def answer(request: HttpRequest, tracking: str, key: str, fee_id: int) -> HttpResponse:
    case = access.case_by_key(tracking, key, client=client_address(request))
    if case is None:
        return _not_found(request)
    return _answer(request, case, key, fee_id)


@require_POST
@portal.portal_view
def case_answer(request: HttpRequest, tracking: str, fee_id: int) -> HttpResponse:
    access.count_view(client_address(request))
    case = access.granted_case(request, tracking)
    if case is None:
        return _not_found(request)
    return _answer(request, case, None, fee_id)


def _answer(request: HttpRequest, case: Case, key: str | None, fee_id: int) -> HttpResponse:
    if settings.LANGUAGE_COOKIE_NAME not in request.COOKIES and case.language:
        translation.activate(case.language)
        request.LANGUAGE_CODE = case.language
    choice = request.POST.get("answer", "")
    if choice not in ANSWERS:
        return portal.status_page(
            request, case, key, error=_("Choose to agree or to decline."), status=422
        )
    try:
        fee = billing.answer_fee(case, fee_id, agree=ANSWERS[choice])
    except NotFound:
        return _not_found(request)
    except Conflict as exc:
        return portal.status_page(request, case, key, error=exc.detail, status=409)
    amount = format_money(fee.amount, fee.currency)
    if fee.status == SupportFee.Status.AGREED:
        text = _("Thank you. You agreed to the support fee of %(amount)s.")
    else:
        text = _("You declined the support fee of %(amount)s. We go on working on your request.")
    messages.success(request, text % {"amount": amount})
    return redirect(status_path(case, key) + "#fees")


def status_path(case: Case, key: str | None) -> str:
    if key:
        return access.status_url(case, key)
    return reverse("portal:case", args=[case.tracking_number])


def _not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "support/portal/not_found.html", status=404)
