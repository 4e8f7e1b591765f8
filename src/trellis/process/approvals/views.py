"""Pages of approvals for the people in them: the inbox, a request with its steps and history,
the decisions, recall and reassign, exception requests, and the out-of-office delegate.

Every write is one call to ``services``; a refused one comes back as a message on the page it
was made from (nothing was changed), a hidden request as 404.
"""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from trellis.core import errors
from trellis.core.models import SYSTEM_USERNAME, User
from trellis.core.views import service_view
from trellis.core.visibility import is_admin

from . import forms, queries, services
from .models import ApprovalAssignment, ApprovalRequest, ExceptionRequest


def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect(fallback)


def _refused(request: HttpRequest, exc: errors.ServiceError) -> None:
    texts = [str(m) for ms in getattr(exc, "errors", {}).values() for m in ms] or [exc.detail]
    for text in texts:
        messages.error(request, text)


def _act(request: HttpRequest, fallback: str, action: Callable[[], Any], done: str) -> HttpResponse:
    """Run one service call for a posted form and go back where the form was."""
    try:
        action()
    except errors.NotFound:
        raise
    except errors.ServiceError as exc:
        _refused(request, exc)
    else:
        messages.success(request, done)
    return _back(request, fallback)


# The inbox.


@service_view
@require_http_methods(["GET", "HEAD"])
def inbox(request: HttpRequest) -> HttpResponse:
    user = request.user
    return render(
        request,
        "approvals/inbox.html",
        {
            "rows": queries.inbox(user),
            "counts": queries.inbox_counts(user),
            "cap": queries.COUNT_CAP,
            "exceptions": list(queries.exceptions_to_decide(user)[:100]),
            "mine": list(
                queries.visible_requests(user)
                .filter(submitter=user, status=ApprovalRequest.Status.PENDING)
                .order_by("-submitted_at")[:50]
            ),
        },
    )


# One request.


@service_view
@require_http_methods(["GET", "HEAD"])
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    found = queries.get(user, pk)
    steps = queries.steps_of(found)
    waiting_for_me = any(
        a.user_id == user.pk and a.status == ApprovalAssignment.Status.PENDING
        for run in steps
        if run.status == "pending"
        for a in run.assignments.all()
    )
    exceptions = queries.exceptions_of(found)
    return render(
        request,
        "approvals/request_detail.html",
        {
            "item": found,
            "record": services.record_of(found),
            "steps": steps,
            "definition": found.process_version.steps,
            "history": queries.history_of(found),
            "exceptions": [
                (e, e.status == "pending" and services.may_decide_exception(user, e))
                for e in exceptions
            ],
            "may_decide": waiting_for_me and found.status == "pending",
            "may_recall": found.submitter_id == user.pk and found.status == "pending",
            "may_reassign": is_admin(user) and found.status == "pending",
            "exception_form": forms.ExceptionForm(request_obj=found),
            "users": _people() if is_admin(user) and found.status == "pending" else [],
        },
    )


def _people() -> list[User]:
    return list(
        User.objects.filter(is_active=True).exclude(username=SYSTEM_USERNAME).order_by("username")
    )


def _detail(pk: int) -> str:
    return reverse("approvals:request-detail", args=[pk])


@service_view
@require_POST
def request_approve(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")
    return _act(
        request,
        _detail(pk),
        lambda: services.approve(request.user, pk, comment=comment),
        _("You approved it."),
    )


@service_view
@require_POST
def request_reject(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")
    return _act(
        request,
        _detail(pk),
        lambda: services.reject(request.user, pk, comment=comment),
        _("You rejected it."),
    )


@service_view
@require_POST
def request_recall(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")
    return _act(
        request,
        _detail(pk),
        lambda: services.recall(request.user, pk, comment=comment),
        _("You recalled the request."),
    )


@service_view
@require_POST
def request_reassign(request: HttpRequest, pk: int) -> HttpResponse:
    post = request.POST
    return _act(
        request,
        _detail(pk),
        lambda: services.reassign(
            request.user, pk, post.get("from_user_id"), post.get("to_user_id")
        ),
        _("The approval was reassigned."),
    )


@service_view
@require_POST
def submit(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")
    process_id = request.POST.get("process_id") or None
    return _act(
        request,
        reverse("approvals:inbox"),
        lambda: services.submit(
            request.user, object_type, pk, process_id=process_id, comment=comment
        ),
        _("Submitted for approval."),
    )


# Exception requests.


@service_view
@require_POST
def exception_create(request: HttpRequest, pk: int) -> HttpResponse:
    form = forms.ExceptionForm(request.POST)
    if not form.is_valid():
        for field_errors in form.errors.values():
            for text in field_errors:
                messages.error(request, text)
        return _back(request, _detail(pk))
    data = form.cleaned_data
    return _act(
        request,
        _detail(pk),
        lambda: services.request_exception(
            request.user,
            pk,
            data["kind"],
            data["reason"],
            from_step=data.get("from_step"),
            changes=data.get("changes"),
        ),
        _("Your exception request was sent to the process owner."),
    )


@service_view
@require_POST
def exception_decide(request: HttpRequest, pk: int) -> HttpResponse:
    found = ExceptionRequest.objects.filter(pk=pk).values_list("request_id", flat=True).first()
    fallback = _detail(found) if found else reverse("approvals:inbox")
    grant = request.POST.get("decision") == "grant"
    note = request.POST.get("note", "")
    return _act(
        request,
        fallback,
        lambda: services.decide_exception(request.user, pk, grant=grant, note=note),
        _("The exception was granted.") if grant else _("The exception was refused."),
    )


# Delegation.


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def delegation(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = forms.DelegationForm(request.POST or None, user=user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.set_delegation(user, data["delegate"], data["starts_at"], data["ends_at"])
            except errors.ValidationFailed as exc:
                form.add_service_errors(exc.errors)
            else:
                messages.success(request, _("Your delegate is set."))
                return redirect("approvals:delegation")
        status = 422
    return render(
        request,
        "approvals/delegation.html",
        {"form": form, "delegations": queries.delegations(user)},
        status=status,
    )


@service_view
@require_POST
def delegation_end(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        reverse("approvals:delegation"),
        lambda: services.end_delegation(request.user, pk),
        _("The delegation was ended."),
    )


urlpatterns = [
    path("", inbox, name="inbox"),
    path("requests/<int:pk>/", request_detail, name="request-detail"),
    path("requests/<int:pk>/approve/", request_approve, name="request-approve"),
    path("requests/<int:pk>/reject/", request_reject, name="request-reject"),
    path("requests/<int:pk>/recall/", request_recall, name="request-recall"),
    path("requests/<int:pk>/reassign/", request_reassign, name="request-reassign"),
    path("requests/<int:pk>/exceptions/", exception_create, name="exception-create"),
    path("exceptions/<int:pk>/decide/", exception_decide, name="exception-decide"),
    path("submit/<slug:object_type>/<int:pk>/", submit, name="submit"),
    path("delegation/", delegation, name="delegation"),
    path("delegation/<int:pk>/end/", delegation_end, name="delegation-end"),
]
