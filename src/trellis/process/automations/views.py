"""The automation pages, mounted at /automations/: rules per kind of record with their run
history and a dry run, and holds with the records waiting in them.

Rules are the business of the people who may define them for their kind of record
(``definitions.may_define``); to anyone else their pages do not exist (404). Holds are defined
by administrators; a hold's queue is seen by whoever may edit records of its kind, and lists
only the records they may see. Every write is one call to ``services``: a refused save shows
the form again with each error next to its field (422), a stale version the form with a
notice (409).
"""

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from trellis.core import clock, errors, registry
from trellis.core.views import page_number, service_view
from trellis.core.visibility import can, is_admin

from . import definitions, forms, queries, services, subjects
from .models import Hold, Rule, RuleRun


def _type_tabs(types: list[str]) -> list[tuple[str, str]]:
    labels = {s.object_type: str(s.label).capitalize() for s in subjects.all_subjects()}
    return [(t, labels.get(t, t)) for t in types]


def _refused(request: HttpRequest, exc: errors.ServiceError) -> None:
    texts = [str(m) for ms in getattr(exc, "errors", {}).values() for m in ms] or [exc.detail]
    for text in texts:
        messages.error(request, text)


def _version(request: HttpRequest) -> int | None:
    value = request.POST.get("version", "")
    return int(value) if value.isdigit() else None


# Rules.


@service_view
@require_http_methods(["GET", "HEAD"])
def rule_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    types = queries.definable_types(user)
    if not types:
        raise Http404
    object_type = request.GET.get("type") or types[0]
    if object_type not in types:
        raise Http404
    return render(
        request,
        "automations/rule_list.html",
        {
            "rules": queries.rule_list(user, object_type),
            "object_type": object_type,
            "types": _type_tabs(types),
            "recent_days": queries.RECENT_DAYS,
            "may_define_holds": is_admin(user),
        },
    )


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def rule_create(request: HttpRequest) -> HttpResponse:
    return _rule_form(request, None)


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _rule_form(request, queries.get_rule(request.user, pk))


def _rule_form(request: HttpRequest, rule: Rule | None) -> HttpResponse:
    user = request.user
    types = queries.definable_types(user)
    if not types:
        raise Http404
    if request.method != "POST":
        initial = None
        if rule is None and request.GET.get("type") in types:
            initial = {"object_type": request.GET["type"]}
        form = forms.RuleForm(rule=rule, object_types=types, initial=initial)
        return _rule_page(request, form, rule)
    form = forms.RuleForm(request.POST, rule=rule, object_types=types)
    conflict = False
    if form.is_valid():
        data = form.service_data()
        if rule is not None:
            data.pop("object_type")
        try:
            saved = services.save_rule(
                user,
                data,
                pk=rule.pk if rule else None,
                version=form.cleaned_data.get("version"),
            )
        except errors.StaleVersion:
            conflict = True
            messages.error(
                request, _("Someone else changed this rule meanwhile. Review it and save again.")
            )
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("“%(name)s” is saved.") % {"name": saved.name})
            return redirect("automations:rule-detail", saved.pk)
    return _rule_page(request, form, rule, status=409 if conflict else 422)


def _rule_page(
    request: HttpRequest, form: forms.RuleForm, rule: Rule | None, status: int = 200
) -> HttpResponse:
    types = queries.definable_types(request.user)
    fields = [
        (
            label,
            sorted(subjects.get(t).readable()),
            sorted(definitions.date_fields(subjects.get(t))),
        )
        for t, label in _type_tabs(types)
    ]
    return render(
        request,
        "automations/rule_form.html",
        {
            "form": form,
            "rule": rule,
            "fields": fields,
            "action_kinds": forms.ACTION_HELP,
            "example": forms.ACTIONS_EXAMPLE,
        },
        status=status,
    )


@service_view
@require_http_methods(["GET", "HEAD"])
def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule = queries.get_rule(request.user, pk)
    return _detail_page(request, rule, forms.TryForm())


def _detail_page(
    request: HttpRequest,
    rule: Rule,
    try_form: forms.TryForm,
    results: list[dict[str, Any]] | None = None,
    status: int = 200,
) -> HttpResponse:
    outcome = request.GET.get("outcome", "")
    if outcome not in RuleRun.Outcome.values:
        outcome = ""
    page = queries.runs(rule, outcome=outcome, page=page_number(request))
    for run in page.items:
        run.record_url = queries.record_url(run.record)
    return render(
        request,
        "automations/rule_detail.html",
        {
            "rule": rule,
            "trigger_params": sorted(rule.trigger_params.items()),
            "actions": forms.as_json(rule.actions),
            "page": page,
            "outcome": outcome,
            "outcomes": RuleRun.Outcome.choices,
            "try_form": try_form,
            "results": results,
        },
        status=status,
    )


@service_view
@require_http_methods(["GET", "HEAD"])
def dry_run(request: HttpRequest) -> HttpResponse:
    """The "Try it" of a rule's page; reading only, so a GET."""
    rule_id = request.GET.get("rule", "")
    if not rule_id.isdigit():
        raise Http404
    rule = queries.get_rule(request.user, int(rule_id))
    form = forms.TryForm(request.GET)
    if not form.is_valid():
        return _detail_page(request, rule, form, status=422)
    record_id = form.cleaned_data.get("record_id")
    try:
        results = queries.dry_run(
            request.user,
            rule.object_type,
            record_ids=[record_id] if record_id else None,
            rule_id=rule.pk,
            changes=form.cleaned_data.get("changes"),
        )
    except errors.ValidationFailed as refused:
        for key, messages in refused.errors.items():
            if key.startswith("changes"):
                name = key.partition(".")[2]
                form.add_error("changes", [f"{name}: {m}" if name else m for m in messages])
            else:
                form.add_error("record_id", _("No such record."))
        return _detail_page(request, rule, form, status=422)
    for result in results:
        result["url"] = _record_url(rule.object_type, result["id"])
    return _detail_page(request, rule, form, results)


def _record_url(object_type: str, pk: int) -> str:
    name = registry.get(object_type).detail_url_name
    return reverse(name, args=[pk]) if name else ""


@service_view
@require_POST
def rule_enable(request: HttpRequest, pk: int) -> HttpResponse:
    rule = queries.get_rule(request.user, pk)
    enable = request.POST.get("enabled") == "1"
    try:
        services.set_rule_enabled(request.user, rule.pk, enable, _version(request))
    except errors.NotFound:
        raise
    except errors.StaleVersion:
        messages.error(request, _("Someone else changed this rule meanwhile. Try again."))
    except errors.ServiceError as exc:
        _refused(request, exc)
    else:
        messages.success(
            request, _("The rule is enabled.") if enable else _("The rule is disabled.")
        )
    return redirect("automations:rule-detail", rule.pk)


@service_view
@require_POST
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = queries.get_rule(request.user, pk)
    if request.POST.get("confirm") != "yes":
        messages.error(request, _("Tick the box to confirm that the rule is to be deleted."))
        return redirect("automations:rule-detail", rule.pk)
    try:
        services.delete_rule(request.user, rule.pk, _version(request))
    except errors.NotFound:
        raise
    except errors.StaleVersion:
        messages.error(request, _("Someone else changed this rule meanwhile. Try again."))
        return redirect("automations:rule-detail", rule.pk)
    except errors.ServiceError as exc:
        _refused(request, exc)
        return redirect("automations:rule-detail", rule.pk)
    messages.success(request, _("“%(name)s” is deleted.") % {"name": rule.name})
    return redirect(reverse("automations:rule-list") + f"?type={rule.object_type}")


# Holds.


@service_view
@require_http_methods(["GET", "HEAD"])
def hold_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not queries.viewable_types(user):
        raise Http404
    return render(
        request,
        "automations/hold_list.html",
        {
            "holds": queries.hold_list(user),
            "workable": {t for t in queries.viewable_types(user) if can(user, "edit", t)},
            "may_define_holds": is_admin(user),
            "may_define_rules": bool(queries.definable_types(user)),
        },
    )


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def hold_create(request: HttpRequest) -> HttpResponse:
    return _hold_form(request, None)


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def hold_edit(request: HttpRequest, pk: int) -> HttpResponse:
    hold = Hold.objects.filter(pk=pk).first() if is_admin(request.user) else None
    if hold is None:
        raise Http404
    return _hold_form(request, hold)


def _hold_form(request: HttpRequest, hold: Hold | None) -> HttpResponse:
    if not is_admin(request.user):
        raise Http404
    if request.method != "POST":
        return _hold_page(request, forms.HoldForm(hold=hold), hold)
    form = forms.HoldForm(request.POST, hold=hold)
    conflict = False
    if form.is_valid():
        data = form.service_data()
        if hold is not None:
            data.pop("object_type")
        try:
            saved = services.save_hold(
                request.user,
                data,
                pk=hold.pk if hold else None,
                version=form.cleaned_data.get("version"),
            )
        except errors.StaleVersion:
            conflict = True
            messages.error(
                request, _("Someone else changed this hold meanwhile. Review it and save again.")
            )
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("“%(name)s” is saved.") % {"name": saved.label})
            return redirect("automations:hold-list")
    return _hold_page(request, form, hold, status=409 if conflict else 422)


def _hold_page(
    request: HttpRequest, form: forms.HoldForm, hold: Hold | None, status: int = 200
) -> HttpResponse:
    return render(
        request, "automations/hold_form.html", {"form": form, "hold": hold}, status=status
    )


@service_view
@require_http_methods(["GET", "HEAD"])
def hold_queue(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    hold = queries.get_hold(user, pk)
    page, rows = queries.hold_queue(user, hold, page=page_number(request))
    for row in rows:
        row.url = queries.record_url(row.record)
    return render(
        request,
        "automations/hold_queue.html",
        {
            "hold": hold,
            "page": page,
            "rows": rows,
            "now": clock.now(),
            "may_release": can(user, "edit", hold.object_type),
            "may_define_holds": is_admin(user),
            "release_form": forms.ReleaseForm(),
        },
    )


@service_view
@require_POST
def hold_release(request: HttpRequest, pk: int) -> HttpResponse:
    placement = queries.placement(request.user, pk)
    form = forms.ReleaseForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    try:
        services.release_hold(request.user, placement.pk, note)
    except errors.NotFound:
        raise
    except errors.ServiceError as exc:
        _refused(request, exc)
    else:
        record = queries.placement_record(placement)
        messages.success(
            request,
            _("“%(record)s” is released from “%(hold)s”.")
            % {"record": record, "hold": placement.hold.label},
        )
    return redirect("automations:hold-queue", placement.hold_id)
