"""Pages of pipelines: the kanban board, one of its columns, and moving a record.

The board shows a pipeline's active stages as columns of cards (``board.board``), the records
the user may see, newest-entered first. With JavaScript a card is dragged to another column
(static/js/pipeline-board.js posts the move to the API and updates the columns); without it
every card has a "Move to" form that posts to ``move``, as the stage panel of a record's page
does. ``move`` redirects back with a message: a ``warn`` gate not met shows its message with a
"Move anyway" button first; a refused move (a ``require`` gate, a stale version, a stage that
does not fit) changes nothing and says why; a move into an ``approve`` stage says it was
submitted for approval, and the card shows it waiting.
"""

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from trellis.core import errors, registry
from trellis.core.views import service_view
from trellis.core.visibility import can

from . import board, services, subjects
from .models import Stage

PIPELINES_LIST = "pipelines:list"


def _filters(request: HttpRequest) -> tuple[board.Filters, dict[str, list[str]]]:
    """The board's filters from the query; a value that means nothing is dropped and named."""
    try:
        return board.filters_from(request.GET.get("owner"), request.GET.get("team")), {}
    except errors.ValidationFailed as failure:
        owner = None if "owner" in failure.errors else request.GET.get("owner")
        team = None if "team" in failure.errors else request.GET.get("team")
        return board.filters_from(owner, team), failure.errors


def _list_url() -> str:
    try:
        return reverse(PIPELINES_LIST)
    except NoReverseMatch:
        return ""


def _record_url(object_type: str, pk: int) -> str:
    try:
        return reverse(registry.get(object_type).detail_url_name, args=[pk])
    except (KeyError, NoReverseMatch):
        return ""


def _api_move_url() -> str:
    """The API's move endpoint with placeholders the board's script fills in."""
    return reverse("api:move_record", kwargs={"object_type": "OBJECT_TYPE", "id": 1}).replace(
        "/1/", "/ID/"
    )


# The board.


@service_view
@require_GET
def board_page(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    filters, filter_errors = _filters(request)
    found = board.board(user, pk, filters=filters)
    query = filters.as_query()
    return render(
        request,
        "pipelines/board.html",
        {
            "board": found,
            "filter_errors": filter_errors,
            "owner_choices": board.owner_choices(user),
            "team_choices": board.team_choices(),
            "query": query,
            "can_move": can(user, "edit", found.object_type),
            "list_url": _list_url(),
            "api_move_url": _api_move_url(),
            "record_label": board.record_label(found.object_type),
        },
    )


@service_view
@require_GET
def board_column(request: HttpRequest, pk: int, stage_id: int) -> HttpResponse:
    """More cards of one column: a fragment for the board's "Show more" button, or a page of
    its own without JavaScript."""
    user = request.user
    filters, _errors = _filters(request)
    try:
        offset = max(0, min(int(request.GET.get("offset", 0)), 10**9))
    except ValueError:
        offset = 0
    pipeline, column = board.column(user, pk, stage_id, filters=filters, offset=offset)
    stages = list(pipeline.active_stages)
    query = filters.as_query()
    board_url = reverse("pipelines:board", args=[pipeline.pk])
    context = {
        "pipeline": pipeline,
        "column": column,
        "stages": stages,
        "query": query,
        "board_url": board_url + ("?" + urlencode(query) if query else ""),
        "next_url": request.get_full_path(),
        "can_move": can(user, "edit", pipeline.object_type),
        "has_amounts": bool(subjects.get(pipeline.object_type).amount_field),
    }
    if request.headers.get("HX-Request"):
        # The cards join the board: a move from one of them comes back to the board.
        context["next_url"] = context["board_url"]
        return render(request, "pipelines/_column_cards.html", context)
    return render(request, "pipelines/board_column.html", context)


@service_view
@require_GET
def board_card(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    """One card as the board shows it now, for the board's script after a move."""
    user = request.user
    card = board.card(user, object_type, pk)
    if card is None:
        raise Http404(_("This record is in no pipeline."))
    stages = list(card.stage.pipeline.stages.filter(is_active=True).order_by("order"))
    return render(
        request,
        "pipelines/_card.html",
        {
            "card": card,
            "stages": stages,
            "can_move": can(user, "edit", object_type),
            "has_amounts": bool(subjects.get(object_type).amount_field),
            "next_url": request.GET.get("next", ""),
        },
    )


# Moving a record.


def _next_url(request: HttpRequest, object_type: str, pk: int) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return _record_url(object_type, pk) or reverse("home")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@service_view
@require_POST
def move_record(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    """Move a record to the posted stage, then go back where the user came from."""
    user = request.user
    next_url = _next_url(request, object_type, pk)
    stage_id = request.POST.get("stage_id", "")
    version = _int_or_none(request.POST.get("version"))
    confirm = request.POST.get("confirm") == "1"
    try:
        result = services.move(user, object_type, pk, stage_id, version=version, confirm=confirm)
    except services.ConfirmationNeeded as needed:
        _subject, record = board.record_of(user, object_type, pk)
        stage = Stage.objects.get(pk=int(stage_id))
        return render(
            request,
            "pipelines/move_confirm.html",
            {
                "record": record,
                "record_url": _record_url(object_type, pk),
                "object_type": object_type,
                "stage": stage,
                "messages_of_gate": [m for ms in needed.errors.values() for m in ms],
                "version": version,
                "next_url": next_url,
            },
        )
    except errors.StaleVersion:
        messages.error(
            request,
            _(
                "Someone else changed this record after you opened the page; it was not "
                "moved. Here it is as it is now: move it again if it still applies."
            ),
        )
        return redirect(next_url)
    except (errors.ValidationFailed, errors.Conflict) as failure:
        reasons = [str(m) for ms in getattr(failure, "errors", {}).values() for m in ms]
        messages.error(
            request,
            _("Not moved: %(reasons)s") % {"reasons": " ".join(reasons) or failure.detail},
        )
        return redirect(next_url)
    stage = getattr(result.record, subjects.get(object_type).stage_field)
    if result.gated is not None:
        approved = result.gated.request.status == result.gated.request.Status.APPROVED
        (messages.success if approved else messages.info)(
            request, services.gated_message(result.gated)
        )
    elif result.change is None:
        messages.info(
            request,
            _("%(record)s is already in %(stage)s.")
            % {"record": result.record, "stage": stage.label},
        )
    else:
        messages.success(
            request,
            _("%(record)s moved to %(stage)s.") % {"record": result.record, "stage": stage.label},
        )
        for warning in result.warnings:
            messages.warning(request, warning)
    return redirect(next_url)


urlpatterns: list = [
    path("<int:pk>/board/", board_page, name="board"),
    path("<int:pk>/board/stages/<int:stage_id>/", board_column, name="board-column"),
    path("records/<str:object_type>/<int:pk>/move/", move_record, name="move"),
    path("records/<str:object_type>/<int:pk>/card/", board_card, name="card"),
]
