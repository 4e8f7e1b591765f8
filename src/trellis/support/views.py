"""The agent's pages of the support desk: the case list, a case, a logged call, feature requests.

Views translate HTTP into calls and back. Reads go through ``support.queries`` and writes
through ``support.services``; domain errors become answers here: a hidden case is a 404 (never
a 403 that would confirm it exists), a missing right a 403, a stale version or a case someone
else just took a 409 showing the case as it is now, invalid input a 422 with the form and its
errors. Every action posts a plain form and redirects on success, so the pages work without
JavaScript; htmx only refreshes the list's results and fills the reply box from a template.
"""

import re
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.formats import date_format
from django.utils.http import content_disposition_header
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from trellis.core import errors
from trellis.core.forms import ServiceForm
from trellis.core.models import User
from trellis.core.views import page_number, service_view
from trellis.core.visibility import can
from trellis.mail.parsing import safe_filename

from . import billing, billing_forms, forms, queries, services
from .models import Case, CaseEvent

# The element the list's search and filter refresh, and the reply box a template fills.
RESULTS_TARGET = "case-results"
REPLY_BODY_TARGET = "reply-body"

# The list's tabs: the views ``queries.cases`` knows, in the order agents work through them.
TABS = (
    ("mine", gettext_lazy("My cases")),
    ("queue", gettext_lazy("Team queue")),
    ("all", gettext_lazy("All")),
    ("unclassified", gettext_lazy("Not classified")),
    ("defects", gettext_lazy("Defects")),
    ("features", gettext_lazy("Feature requests")),
)
TAB_KEYS = frozenset(key for key, _label in TABS)

# The timeline entries an agent can move into a new case, and those quoted under a reply.
MOVABLE_KINDS = frozenset({CaseEvent.Kind.CUSTOMER_MESSAGE})
QUOTED_KINDS = frozenset({CaseEvent.Kind.CUSTOMER_MESSAGE, CaseEvent.Kind.REPLY})
# How many past messages the quoted thread under the reply box shows.
QUOTED_MESSAGES = 5

STALE_NOTICE = gettext_lazy(
    "Someone else changed this case after you opened it. Here is the case as it is now; "
    "nothing was saved. Your entry is kept in the form: send it again if it still applies."
)


def _require(user: User, action: str) -> None:
    if not can(user, action, "case"):
        raise PermissionDenied(_("You may not do this with cases."))


def _detail_url(pk: int, anchor: str = "") -> str:
    url = reverse("support:case-detail", args=[pk])
    return f"{url}#{anchor}" if anchor else url


# The list.


@service_view
@require_GET
def case_list(request: HttpRequest) -> HttpResponse:
    """Cases by tab (mine, queue, all, not classified, defects, feature requests), searched."""
    user = request.user
    _require(user, "view")
    view = request.GET.get("view", "")
    if view not in TAB_KEYS:
        view = "mine"
    filters = forms.CaseListFilters(request.GET)
    values = filters.values()
    page = queries.cases(
        user,
        view=view,
        q=values["q"],
        status=values["status"] or None,
        page=page_number(request),
    )
    context = {
        "page": page,
        "view": view,
        "filters": filters,
        "q": values["q"],
        "status": values["status"],
        "results_target": RESULTS_TARGET,
        "can_edit": can(user, "edit", "case"),
        "can_create": can(user, "create", "case"),
    }
    # htmx refreshes only the results as people type or filter; everything else gets the page.
    partial = request.htmx.target == RESULTS_TARGET and not request.htmx.history_restore_request
    if partial:
        template = "support/agent/_case_results.html"
    else:
        template = "support/agent/case_list.html"
        counts = queries.queue_counts(user)
        context["tabs"] = [
            {
                "key": key,
                "label": label,
                "count": counts.get(key),
                "more": counts.get(key, 0) >= queries.COUNT_CAP,
                "current": key == view,
            }
            for key, label in TABS
        ]
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


# One case.


@service_view
@require_GET
def case_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The case: its header, timeline, actions, and the customer beside it.

    ``?template=<id>`` fills the reply box with a reply template; asked by htmx, only the box
    comes back, with what the agent had typed kept above the template's text.
    """
    case = queries.case(request.user, pk)
    if "template" not in request.GET or not can(request.user, "edit", "case"):
        return _case_page(request, case)
    picker = forms.TemplatePickerForm(
        request.GET, templates=queries.reply_templates(request.user, case.language)
    )
    template = picker.chosen()
    typed = request.GET.get("body", "").strip() if request.htmx else ""
    body = "\n\n".join(part for part in (typed, template.body if template else "") if part)
    reply_form = forms.ReplyForm(case=case, initial={"body": body})
    if request.htmx.target == REPLY_BODY_TARGET:
        response = render(request, "support/agent/_reply_body.html", {"reply_form": reply_form})
    else:
        response = _case_page(request, case, reply_form=reply_form, picker=picker)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _case_page(
    request: HttpRequest, case: Case, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The case page; ``extra`` holds forms to show as posted, or notices."""
    user = request.user
    timeline = list(queries.timeline(case))
    context: dict[str, Any] = {
        "case": case,
        "timeline": timeline,
        "names": queries.assignment_names(timeline),
        "sidebar": queries.sidebar(user, case),
        "can_edit": can(user, "edit", "case"),
        # A merged case lives on in the case it went into; only notes are still taken here.
        "active": case.merged_into_id is None,
        "claimable": case.owner_id is None and case.status != Case.Status.CLOSED,
        "loose_attachments": queries.loose_attachments(case),
        "fees": billing.case_fees(case),
    }
    if context["can_edit"]:
        movable = [event for event in timeline if event.kind in MOVABLE_KINDS]
        context.update(
            assign_form=forms.AssignForm(
                initial={"user": case.owner_id, "team": case.team_id, "version": case.version}
            ),
            status_form=forms.StatusForm(
                case=case, initial={"status": case.status, "version": case.version}
            ),
            details_form=forms.DetailsForm(
                user=user,
                initial={
                    "subject": case.subject,
                    "priority": case.priority,
                    "product": case.product_id,
                    "version": case.version,
                },
            ),
            classify_form=forms.ClassifyForm(
                initial={
                    "kind": case.suggested_kind
                    if case.kind == Case.Kind.UNCLASSIFIED
                    else case.kind,
                    "feature": case.feature_id,
                }
            ),
            picker=forms.TemplatePickerForm(templates=queries.reply_templates(user, case.language)),
            reply_form=forms.ReplyForm(case=case),
            note_form=forms.NoteForm(),
            merge_form=forms.MergeForm(case=case, user=user),
            split_form=forms.SplitForm(messages=movable),
            thread=_quoted_thread(timeline),
            reply_body_target=REPLY_BODY_TARGET,
            fee_form=billing_forms.FeeForm(initial=billing.fee_initial(case)),
            waive_form=billing_forms.WaiveForm(),
        )
    context.update(extra)
    return render(request, "support/agent/case_detail.html", context, status=status)


def _quoted_thread(timeline: list[CaseEvent]) -> str:
    """The latest public messages, newest first, quoted as an e-mail client quotes them."""
    messages_ = [e for e in timeline if e.kind in QUOTED_KINDS and e.public][-QUOTED_MESSAGES:]
    parts = []
    for event in reversed(messages_):
        when = date_format(localtime(event.at), "SHORT_DATETIME_FORMAT")
        if event.kind == CaseEvent.Kind.REPLY:
            author = event.author or str(event.actor or "")
        else:
            author = event.author or _("the customer")
        head = _("On %(date)s, %(author)s wrote:") % {"date": when, "author": author}
        quoted = "\n".join(f"> {line}" if line else ">" for line in event.body.splitlines())
        parts.append(f"{head}\n{quoted}")
    return "\n\n".join(parts)


# Actions on a case. Each posts one form to one service.


def _act(
    request: HttpRequest,
    pk: int,
    name: str,
    make_form: Callable[[Case, QueryDict | None], ServiceForm],
    perform: Callable[[User, Case, dict[str, Any]], tuple[str, str]],
) -> HttpResponse:
    """Run one action: 422 with the form for bad input, 409 for a stale version or a conflict.

    ``perform`` calls the service and returns where to go and what to say when it worked.
    """
    user = request.user
    case = queries.case(user, pk)
    _require(user, "edit")
    form = make_form(case, request.POST)
    if form.is_valid():
        try:
            url, message = perform(user, case, form.cleaned_data)
        except errors.StaleVersion:
            return _conflict_page(request, pk, name, make_form, str(STALE_NOTICE))
        except errors.Conflict as exc:
            return _conflict_page(request, pk, name, make_form, exc.detail)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, message)
            return redirect(url)
    return _case_page(request, case, status=422, **{name: form})


def _conflict_page(
    request: HttpRequest,
    pk: int,
    name: str,
    make_form: Callable[[Case, QueryDict | None], ServiceForm],
    notice: str,
) -> HttpResponse:
    """The case as it is now, with the agent's entry kept, at the current version."""
    case = queries.case(request.user, pk)
    data = request.POST.copy()
    if "version" in data:
        data["version"] = str(case.version)
    form = make_form(case, data)
    form.is_valid()
    return _case_page(request, case, status=409, conflict=notice, **{name: form})


@service_view
@require_POST
def case_claim(request: HttpRequest, pk: int) -> HttpResponse:
    """Take a case from the team queue; when someone was quicker, say who has it."""
    user = request.user
    case = queries.case(user, pk)
    _require(user, "edit")
    try:
        claimed = services.claim(user, pk)
    except errors.Conflict as exc:
        return _case_page(request, queries.case(user, pk), status=409, conflict=exc.detail)
    messages.success(request, _("You took case %(number)s.") % {"number": claimed.tracking_number})
    return redirect(_detail_url(case.pk))


@service_view
@require_POST
def case_assign(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        services.assign(
            user,
            case.pk,
            user_id=data["user"].pk if data["user"] else None,
            team_id=data["team"].pk if data["team"] else None,
            note=data["note"].strip(),
            version=data["version"],
        )
        return _detail_url(case.pk, "timeline"), _("The case was handed over.")

    return _act(request, pk, "assign_form", lambda case, data: forms.AssignForm(data), perform)


@service_view
@require_POST
def case_status(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        updated = services.set_status(user, case.pk, data["status"], version=data["version"])
        message = _("The status is now “%(status)s”.") % {"status": updated.get_status_display()}
        return _detail_url(case.pk, "timeline"), message

    return _act(
        request, pk, "status_form", lambda case, data: forms.StatusForm(data, case=case), perform
    )


@service_view
@require_POST
def case_details(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        values = {
            "subject": data["subject"],
            "priority": data["priority"],
            "product_id": data["product"].pk if data["product"] else None,
        }
        services.edit(user, case.pk, values, version=data["version"])
        return _detail_url(case.pk, "timeline"), _("The case's details are saved.")

    return _act(
        request,
        pk,
        "details_form",
        lambda case, data: forms.DetailsForm(data, user=request.user),
        perform,
    )


@service_view
@require_POST
def case_classify(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        updated = services.classify(
            user,
            case.pk,
            data["kind"],
            feature_title="" if data["feature"] else data["feature_title"],
            feature_id=data["feature"].pk if data["feature"] else None,
        )
        message = _("The case is classified as “%(kind)s”.") % {"kind": updated.get_kind_display()}
        return _detail_url(case.pk, "timeline"), message

    return _act(request, pk, "classify_form", lambda case, data: forms.ClassifyForm(data), perform)


@service_view
@require_POST
def case_reply(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        services.reply(user, case.pk, data["body"], status=data["status"] or None)
        return _detail_url(case.pk, "timeline"), _("Your reply is on its way to the customer.")

    return _act(
        request, pk, "reply_form", lambda case, data: forms.ReplyForm(data, case=case), perform
    )


@service_view
@require_POST
def case_note(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        services.add_note(user, case.pk, data["body"])
        return _detail_url(case.pk, "timeline"), _("The note was added.")

    return _act(request, pk, "note_form", lambda case, data: forms.NoteForm(data), perform)


@service_view
@require_POST
def case_merge(request: HttpRequest, pk: int) -> HttpResponse:
    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        target = services.merge(user, case.pk, data["target"].pk)
        message = _("%(source)s was merged into this case.") % {"source": case.tracking_number}
        return _detail_url(target.pk, "timeline"), message

    return _act(
        request,
        pk,
        "merge_form",
        lambda case, data: forms.MergeForm(data, case=case, user=request.user),
        perform,
    )


@service_view
@require_POST
def case_split(request: HttpRequest, pk: int) -> HttpResponse:
    def make_form(case: Case, data: QueryDict | None) -> forms.SplitForm:
        movable = [e for e in queries.timeline(case) if e.kind in MOVABLE_KINDS]
        return forms.SplitForm(data, messages=movable)

    def perform(user: User, case: Case, data: dict[str, Any]) -> tuple[str, str]:
        new_case = services.split(user, case.pk, data["events"], subject=data["subject"])
        message = _("The messages were moved out of %(source)s into this new case.") % {
            "source": case.tracking_number
        }
        return _detail_url(new_case.pk, "timeline"), message

    return _act(request, pk, "split_form", make_form, perform)


# Files.

_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


@service_view
@require_GET
def case_attachment(request: HttpRequest, pk: int, attachment_id: int) -> HttpResponse:
    """A customer's file, always as a download; forbidden or oversized files are never served."""
    attachment = queries.attachment(queries.case(request.user, pk), attachment_id)
    content_type = attachment.content_type.lower()
    if not _CONTENT_TYPE.match(content_type):
        content_type = "application/octet-stream"
    response = HttpResponse(bytes(attachment.data), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(
        True, safe_filename(attachment.filename, content_type)
    )
    # Even opened in place, the file may run no script and load nothing.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# A phone call, and the product-feedback list.


@service_view
def log_call(request: HttpRequest) -> HttpResponse:
    """An agent writes down a call; it opens a case like an e-mail to the support address."""
    user = request.user
    _require(user, "create")
    form = forms.PhoneCallForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        try:
            case = services.log_phone_call(user, **form.service_data())
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(
                request,
                _("Case %(number)s was opened for the call.") % {"number": case.tracking_number},
            )
            return redirect(_detail_url(case.pk))
    status = 422 if form.errors else 200
    return render(request, "support/agent/log_call.html", {"form": form}, status=status)


@service_view
@require_GET
def feature_list(request: HttpRequest) -> HttpResponse:
    """Each requested feature, with how many cases asked and which customers."""
    user = request.user
    _require(user, "view")
    return render(request, "support/agent/features.html", {"features": queries.features(user)})
