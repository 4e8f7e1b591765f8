"""Pages of pipelines: definitions.

The list of pipelines is for everyone who may see records of a pipeline's kind; defining a
pipeline and its stages is for admins, and anyone else gets 404 for those pages, as for the
other admin pages. Blackout windows are shown to everyone who sees the pipeline and changed by
admins only.

Every write is a call to ``services``: a refused save shows the form again with each error next
to its field (422), a stale version the form with the admin's input kept at the current version
and a notice (409). The stage editor's up, down and "add a stage" buttons post the form and show
it again rearranged, unsaved, so the page works without JavaScript.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from trellis.core import clock, errors, registry
from trellis.core.models import User
from trellis.core.views import service_view
from trellis.core.visibility import can, is_admin

from .. import cel
from . import forms, services, subjects
from .models import BlackoutWindow, Pipeline, Stage

# The stage editor's buttons that rearrange the rows instead of saving.
SAVE = "save"


def admin_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For admins only; anyone else gets 404, as for a page that does not exist."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_admin(request.user):
            raise Http404
        return view(request, *args, **kwargs)

    return service_view(wrapper)


def _viewable_types(user: User) -> list[str]:
    return [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]


def _pipeline(user: User, pk: int) -> Pipeline:
    """A pipeline of a kind of record the user may see; any other is a 404."""
    pipeline = Pipeline.objects.filter(pk=pk, object_type__in=_viewable_types(user)).first()
    if pipeline is None:
        raise Http404(_("No such pipeline."))
    return pipeline


def _link(name: str, pk: int) -> str:
    """The URL of another area's page of a pipeline, or "" while that page does not exist."""
    try:
        return reverse(f"pipelines:{name}", args=[pk])
    except NoReverseMatch:
        return ""


def _type_label(object_type: str) -> str:
    return str(registry.get(object_type).label_plural).capitalize()


# The list of pipelines.


@service_view
@require_http_methods(["GET", "HEAD"])
def pipeline_list(request: HttpRequest) -> HttpResponse:
    """Every active pipeline by the kind of record it runs on (admins also see inactive ones),
    with links to its board, reports, alert rules and blackout windows."""
    user = request.user
    admin = is_admin(user)
    types = _viewable_types(user)
    if not types:
        raise PermissionDenied(_("You may not see records that run in pipelines."))
    pipelines = (
        Pipeline.objects.filter(object_type__in=types)
        .annotate(blackout_count=Count("blackouts"))
        .prefetch_related(
            Prefetch(
                "stages",
                queryset=Stage.objects.filter(is_active=True).order_by("order"),
                to_attr="active_stages",
            )
        )
        .order_by("-is_active", "name", "pk")
    )
    if not admin:
        pipelines = pipelines.filter(is_active=True)
    groups: dict[str, list[dict[str, Any]]] = {object_type: [] for object_type in types}
    for pipeline in pipelines:
        groups[pipeline.object_type].append(
            {
                "pipeline": pipeline,
                "stages": pipeline.active_stages,
                "board_url": _link("board", pipeline.pk),
                "reports_url": _link("reports", pipeline.pk),
                "alert_rules_url": _link("alert-rules", pipeline.pk),
                "blackouts_url": reverse("pipelines:blackouts", args=[pipeline.pk]),
                "edit_url": reverse("pipelines:edit", args=[pipeline.pk]) if admin else "",
            }
        )
    sections = sorted(
        (
            {"object_type": object_type, "label": _type_label(object_type), "items": items}
            for object_type, items in groups.items()
        ),
        key=lambda section: section["label"],
    )
    return render(
        request, "pipelines/pipeline_list.html", {"sections": sections, "is_admin": admin}
    )


# Defining a pipeline and its stages.


def _condition_fields(object_type: str) -> list[str]:
    return sorted(cel.fields_of(subjects.get(object_type).model))


def _editor(
    request: HttpRequest,
    form: forms.PipelineForm,
    formset: forms.BaseStageFormSet,
    pipeline: Pipeline | None,
    *,
    status: int = 200,
    conflict: str = "",
    current: Pipeline | None = None,
) -> HttpResponse:
    if pipeline is not None:
        fields = [(_type_label(pipeline.object_type), _condition_fields(pipeline.object_type))]
    else:
        fields = [
            (_type_label(s.object_type), _condition_fields(s.object_type))
            for s in sorted(subjects.all_subjects(), key=lambda s: _type_label(s.object_type))
        ]
    context = {
        "form": form,
        "formset": formset,
        "pipeline": pipeline,
        "condition_fields": fields,
        "conflict": conflict,
        "current_stages": (
            list(current.stages.filter(is_active=True).order_by("order")) if current else []
        ),
        "save_action": SAVE,
    }
    return render(request, "pipelines/pipeline_form.html", context, status=status)


def _save(request: HttpRequest, pipeline: Pipeline | None) -> HttpResponse:
    """Save the posted definition, or show the form again with what is wrong."""
    user = request.user
    action = request.POST.get("action", SAVE)
    form = forms.PipelineForm(request.POST, pipeline=pipeline)
    if action != SAVE:
        # Up, down or "add a stage": the same input again, rearranged, not saved yet.
        initial = forms.PipelineForm.posted(request.POST)
        unsaved = forms.PipelineForm(initial=initial, pipeline=pipeline)
        formset = forms.rearranged_formset(request.POST, action)
        return _editor(request, unsaved, formset, pipeline)
    formset = forms.stage_formset(data=request.POST)
    if form.is_valid() and formset.is_valid():
        data = {**form.service_data(), "stages": formset.service_stages()}
        try:
            if pipeline is None:
                saved = services.save_pipeline(user, data)
            else:
                saved = services.save_pipeline(
                    user, data, pk=pipeline.pk, version=form.cleaned_data.get("version")
                )
        except errors.StaleVersion as exc:
            return _conflict(request, exc.current)
        except errors.ValidationFailed as exc:
            form.add_service_errors(formset.add_service_errors(exc.errors))
        else:
            messages.success(request, _("The pipeline %(name)s was saved.") % {"name": saved})
            return redirect(reverse("pipelines:list") + f"#pipeline-{saved.pk}")
    return _editor(request, form, formset, pipeline, status=422)


def _conflict(request: HttpRequest, current: Pipeline) -> HttpResponse:
    """Someone saved the pipeline in between: the admin's input, at the current version."""
    data = request.POST.copy()
    data["version"] = str(current.version)
    form = forms.PipelineForm(data, pipeline=current)
    formset = forms.stage_formset(data=data)
    form.is_valid()
    formset.is_valid()
    notice = _(
        "This pipeline was changed by someone else after you opened it. Nothing was saved. "
        "Your input is kept below; compare it with the stages as they are now and save again "
        "if it still applies."
    )
    return _editor(request, form, formset, current, status=409, conflict=notice, current=current)


@admin_page
@require_http_methods(["GET", "HEAD", "POST"])
def pipeline_create(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _save(request, None)
    form = forms.PipelineForm()
    formset = forms.rearranged_formset(_starter_data(), "")
    return _editor(request, form, formset, None)


def _starter_data() -> QueryDict:
    """A new pipeline starts with the stages every pipeline needs: one open, won and lost."""
    data = QueryDict(mutable=True)
    starters = [
        # English names: they go into the stages' English name fields.
        ("new", "New", Stage.Kind.OPEN, 10),
        ("won", "Won", Stage.Kind.WON, 100),
        ("lost", "Lost", Stage.Kind.LOST, 0),
    ]
    prefix = forms.STAGES_PREFIX
    data[f"{prefix}-TOTAL_FORMS"] = str(len(starters) + 1)
    data[f"{prefix}-INITIAL_FORMS"] = "0"
    for n, (code, name, kind, probability) in enumerate(starters):
        data[f"{prefix}-{n}-code"] = code
        data[f"{prefix}-{n}-name"] = name
        data[f"{prefix}-{n}-kind"] = kind
        data[f"{prefix}-{n}-probability"] = str(probability)
        data[f"{prefix}-{n}-gate"] = Stage.Gate.FREE
    return data


@admin_page
@require_http_methods(["GET", "HEAD", "POST"])
def pipeline_edit(request: HttpRequest, pk: int) -> HttpResponse:
    pipeline = Pipeline.objects.filter(pk=pk).first()
    if pipeline is None:
        raise Http404
    if request.method == "POST":
        return _save(request, pipeline)
    form = forms.PipelineForm(pipeline=pipeline)
    formset = forms.stage_formset(pipeline.stages.filter(is_active=True).order_by("order"))
    return _editor(request, form, formset, pipeline)


# Blackout windows.


def _blackouts_page(
    request: HttpRequest,
    pipeline: Pipeline,
    form: forms.BlackoutForm | None = None,
    status: int = 200,
) -> HttpResponse:
    admin = is_admin(request.user)
    windows = list(
        BlackoutWindow.objects.filter(pipeline=pipeline)
        .select_related("stage")
        .order_by("starts_on", "quarter_week_from", "pk")
    )
    today = timezone.localdate(clock.now())
    covering = {w.pk for w in services.blackouts_on(pipeline, today)}
    if admin and form is None:
        form = forms.BlackoutForm(pipeline=pipeline)
    context = {
        "pipeline": pipeline,
        "windows": [{"window": w, "today": w.pk in covering} for w in windows],
        "form": form if admin else None,
        "is_admin": admin,
        "type_label": _type_label(pipeline.object_type),
    }
    return render(request, "pipelines/pipeline_blackouts.html", context, status=status)


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def blackouts(request: HttpRequest, pk: int) -> HttpResponse:
    """A pipeline's blackout windows; admins add one with the form below the list."""
    pipeline = _pipeline(request.user, pk)
    if request.method != "POST":
        return _blackouts_page(request, pipeline)
    if not is_admin(request.user):
        raise PermissionDenied(_("Only administrators define pipelines."))
    form = forms.BlackoutForm(request.POST, pipeline=pipeline)
    if form.is_valid():
        try:
            window = services.save_blackout(request.user, pipeline.pk, form.service_data())
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(
                request, _("The blackout window %(name)s was added.") % {"name": window}
            )
            return redirect("pipelines:blackouts", pk=pipeline.pk)
    return _blackouts_page(request, pipeline, form, status=422)


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def blackout_edit(request: HttpRequest, pk: int, bid: int) -> HttpResponse:
    pipeline = _pipeline(request.user, pk)
    if not is_admin(request.user):
        raise PermissionDenied(_("Only administrators define pipelines."))
    window = BlackoutWindow.objects.filter(pk=bid, pipeline=pipeline).first()
    if window is None:
        raise Http404
    status = 200
    if request.method == "POST":
        form = forms.BlackoutForm(request.POST, pipeline=pipeline, window=window)
        if form.is_valid():
            try:
                services.save_blackout(request.user, pipeline.pk, form.service_data(), pk=bid)
            except errors.ValidationFailed as exc:
                form.add_service_errors(exc.errors)
            else:
                messages.success(request, _("The blackout window was saved."))
                return redirect("pipelines:blackouts", pk=pipeline.pk)
        status = 422
    else:
        form = forms.BlackoutForm(pipeline=pipeline, window=window)
    context = {"pipeline": pipeline, "window": window, "form": form}
    return render(request, "pipelines/pipeline_blackout_form.html", context, status=status)


@service_view
@require_POST
def blackout_delete(request: HttpRequest, pk: int, bid: int) -> HttpResponse:
    pipeline = _pipeline(request.user, pk)
    services.delete_blackout(request.user, pipeline.pk, bid)
    messages.success(request, _("The blackout window was deleted."))
    return redirect("pipelines:blackouts", pk=pipeline.pk)


urlpatterns: list = [
    path("", pipeline_list, name="list"),
    path("new/", pipeline_create, name="create"),
    path("<int:pk>/edit/", pipeline_edit, name="edit"),
    path("<int:pk>/blackouts/", blackouts, name="blackouts"),
    path("<int:pk>/blackouts/<int:bid>/", blackout_edit, name="blackout-edit"),
    path("<int:pk>/blackouts/<int:bid>/delete/", blackout_delete, name="blackout-delete"),
]
