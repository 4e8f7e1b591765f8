"""Pages where administrators define approval processes; anyone else gets 404 for them.

A save publishes a new version of the definition; requests already running keep theirs. A
refused save shows the form again with each error next to its field (422), a stale version the
form with a notice (409).
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from trellis.core import errors
from trellis.core.views import service_view
from trellis.core.visibility import is_admin

from . import cel_fields, forms, services
from .models import ApprovalProcess


def _admin_only(request: HttpRequest) -> None:
    if not is_admin(request.user):
        raise Http404


@service_view
@require_http_methods(["GET", "HEAD"])
def process_list(request: HttpRequest) -> HttpResponse:
    _admin_only(request)
    processes = ApprovalProcess.objects.select_related("owner").order_by(
        "object_type", "name", "pk"
    )
    return render(request, "approvals/process_list.html", {"processes": processes})


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def process_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    _admin_only(request)
    process = None
    if pk is not None:
        process = ApprovalProcess.objects.filter(pk=pk).first()
        if process is None:
            raise Http404
    if request.method != "POST":
        form = forms.ProcessForm(process=process)
        definition = services.current_version(process) if process else None
        steps = forms.StepForms(steps=definition.steps if definition else [])
        actions = forms.ActionForms(actions=definition.actions if definition else {})
        return _page(request, form, steps, actions, process)
    form = forms.ProcessForm(request.POST, process=process)
    steps = forms.StepForms(request.POST)
    actions = forms.ActionForms(request.POST)
    conflict = False
    # All checked, so that every mistake shows at once.
    if all([form.is_valid(), steps.is_valid(), actions.is_valid()]):
        try:
            saved = services.save_process(
                request.user,
                {**form.service_data(), "steps": steps.steps(), "actions": actions.actions()},
                pk=pk,
                version=form.cleaned_data.get("version"),
            )
        except errors.StaleVersion:
            conflict = True
            messages.error(
                request,
                _("Someone else published a new version meanwhile. Review it and save again."),
            )
        except errors.ValidationFailed as exc:
            form.add_service_errors(
                actions.add_service_errors(steps.add_service_errors(exc.errors))
            )
        else:
            messages.success(
                request,
                _("Version %(n)d of “%(name)s” is published.")
                % {"n": saved.version, "name": saved},
            )
            return redirect("approvals:process-list")
    return _page(request, form, steps, actions, process, status=409 if conflict else 422)


def _page(
    request: HttpRequest,
    form: forms.ProcessForm,
    steps: forms.StepForms,
    actions: forms.ActionForms,
    process: ApprovalProcess | None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "approvals/process_form.html",
        {
            "form": form,
            "steps": steps,
            "actions": actions,
            "process": process,
            "fields": cel_fields.by_type(),
            "stages": actions.stages,
        },
        status=status,
    )


urlpatterns = [
    path("processes/", process_list, name="process-list"),
    path("processes/new/", process_edit, name="process-create"),
    path("processes/<int:pk>/", process_edit, name="process-edit"),
]
