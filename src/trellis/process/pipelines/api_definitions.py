"""The JSON API of pipelines: definitions.

Everyone reads the pipelines of the kinds of record they may see (any other is a 404); only
admins write. A definition is replaced as a whole (``PUT`` with the ``version`` read): the
stages in order, those with an ``id`` kept, those without one new, those left out removed (or
retired, when records went through them). Blackout windows hang off their pipeline.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, Version, json_response, refuse_unknown_params, text
from trellis.core.errors import NotFound, StaleVersion
from trellis.core.models import User
from trellis.core.visibility import can

from .. import cel
from . import services, subjects
from .models import BlackoutWindow, Pipeline, Stage

router = Router(tags=["Pipelines"])

KindName = Literal[tuple(Stage.Kind.values)]
GateName = Literal[tuple(Stage.Gate.values)]

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_CONFLICT = {
    "responses": {
        409: {
            "description": "The `version` you sent is stale: someone changed the pipeline since "
            "you read it. Nothing was written; `current` is the pipeline as it is now.",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
    }
}


class Output(Schema):
    model_config = ConfigDict(extra="forbid")


class ActivityOut(Output):
    en: str
    ko: str


class StageOut(Output):
    id: int
    code: str
    name: str
    name_ko: str
    order: int = Field(description="1 for the first stage.")
    kind: KindName
    probability: int = Field(description="Applied on a move unless the owner set one by hand.")
    max_dwell_days: int | None = Field(description="Null for no limit.")
    dwell_in_business_days: bool
    expected_activities: list[ActivityOut]
    gate: GateName
    gate_condition: str = Field(description="A CEL condition over the record's fields.")
    gate_message: str
    gate_message_ko: str
    approval_process_id: int | None = Field(
        description="For the `approve` gate: the approval process a move into the stage is "
        "submitted to."
    )


class PipelineOut(Output):
    id: int
    object_type: str = Field(description="The kind of record it runs on, e.g. `opportunity`.")
    code: str
    name: str
    name_ko: str
    is_default: bool = Field(description="New records of its kind enter it.")
    is_active: bool
    version: int = Field(description="Send it back with `PUT`.")
    created_at: dt.datetime
    updated_at: dt.datetime
    stages: list[StageOut] = Field(
        description="Its stages in order. Retired stages (removed after records went through "
        "them) are not listed; the moves that went through them keep their ids."
    )
    condition_fields: list[str] = Field(
        description="The fields of the record a gate condition may read."
    )


class ActivityIn(Input):
    en: text(min_length=1, max_length=200) = Field(description="In English.")
    ko: text(max_length=200) = Field("", description="In Korean.")


class StageIn(Input):
    id: Id | None = Field(
        None, description="A stage of this pipeline to keep; leave it out for a new stage."
    )
    code: text(max_length=40) = Field(description="Lower-case letters, digits, hyphens.")
    name: text(max_length=100)
    name_ko: text(max_length=100) = ""
    kind: KindName = "open"
    probability: int = Field(0, ge=0, le=100)
    max_dwell_days: int | None = Field(None, ge=1, le=3650)
    dwell_in_business_days: bool = False
    expected_activities: list[ActivityIn] = Field(default=[], max_length=50)
    gate: GateName = Field(
        "free",
        description="`free`: any move enters. `warn`: a move whose record fails "
        "`gate_condition` needs confirming. `require`: the condition must hold. `approve`: "
        "a move is submitted to `approval_process_id` and made once approved.",
    )
    gate_condition: text(max_length=2000) = Field(
        "",
        description="CEL, e.g. `amount >= 10000000.0 && expected_close_date != null`; "
        "see `condition_fields`. Needed by `warn` and `require`.",
    )
    gate_message: text(max_length=300) = Field("", description="Shown when the gate holds a move.")
    gate_message_ko: text(max_length=300) = ""
    approval_process_id: Id | None = Field(
        None,
        description="Needed by `approve`, and only by it: an active approval process of the "
        "pipeline's kind of record. A move into the stage is made at once when the process's "
        "entry condition does not hold for the record.",
    )


class PipelineCreate(Input):
    object_type: text(max_length=40) = Field(
        description="The kind of record it runs on: `opportunity`, `lead` or `account`."
    )
    code: text(max_length=40) = Field(description="Unique; lower-case letters, digits, hyphens.")
    name: text(max_length=100)
    name_ko: text(max_length=100) = ""
    is_default: bool = Field(False, description="Makes it the default of its kind instead.")
    is_active: bool = True
    stages: list[StageIn] = Field(
        max_length=100, description="In order; at least one open and one won stage."
    )


class PipelineReplace(Input):
    code: text(max_length=40)
    name: text(max_length=100)
    name_ko: text(max_length=100) = ""
    is_default: bool = False
    is_active: bool = True
    stages: list[StageIn] = Field(
        max_length=100,
        description="The whole list, in order: a stage with an `id` is kept and changed, one "
        "without is new, one left out is removed (retired if records went through it; refused "
        "while records are in it).",
    )
    version: Version


class PipelineListParams(Schema):
    object_type: text(max_length=40) | None = Field(
        None, description="Only pipelines of this kind of record."
    )
    is_active: bool | None = None


class BlackoutIn(Input):
    name: text(max_length=200)
    name_ko: text(max_length=200) = ""
    stage_id: Id | None = Field(None, description="A stage of the pipeline; null for all of it.")
    starts_on: dt.date | None = Field(None, description="Fixed dates: the first day.")
    ends_on: dt.date | None = Field(None, description="Fixed dates: the last day, included.")
    quarter_week_from: int | None = Field(
        None,
        ge=1,
        le=services.QUARTER_WEEKS,
        description="Or weeks of every quarter, counted from its first day: the first week.",
    )
    quarter_week_to: int | None = Field(
        None, ge=1, le=services.QUARTER_WEEKS, description="The last week, included."
    )


class BlackoutOut(Output):
    id: int
    pipeline_id: int
    stage_id: int | None
    name: str
    name_ko: str
    starts_on: dt.date | None
    ends_on: dt.date | None
    quarter_week_from: int | None
    quarter_week_to: int | None


# What the answers hold.


def _stage_row(stage: Stage) -> dict[str, Any]:
    return {
        "id": stage.pk,
        "code": stage.code,
        "name": stage.name,
        "name_ko": stage.name_ko,
        "order": stage.order,
        "kind": stage.kind,
        "probability": stage.probability,
        "max_dwell_days": stage.max_dwell_days,
        "dwell_in_business_days": stage.dwell_in_business_days,
        "expected_activities": [
            {"en": a["en"], "ko": a.get("ko", "")} for a in stage.expected_activities
        ],
        "gate": stage.gate,
        "gate_condition": stage.gate_condition,
        "gate_message": stage.gate_message,
        "gate_message_ko": stage.gate_message_ko,
        "approval_process_id": stage.approval_process_id,
    }


def _pipeline_row(pipeline: Pipeline) -> dict[str, Any]:
    stages = getattr(pipeline, "active_stages", None)
    if stages is None:
        stages = pipeline.stages.filter(is_active=True).order_by("order")
    return {
        "id": pipeline.pk,
        "object_type": pipeline.object_type,
        "code": pipeline.code,
        "name": pipeline.name,
        "name_ko": pipeline.name_ko,
        "is_default": pipeline.is_default,
        "is_active": pipeline.is_active,
        "version": pipeline.version,
        "created_at": pipeline.created_at,
        "updated_at": pipeline.updated_at,
        "stages": [_stage_row(stage) for stage in stages],
        "condition_fields": sorted(cel.fields_of(subjects.get(pipeline.object_type).model)),
    }


def _blackout_row(window: BlackoutWindow) -> dict[str, Any]:
    return {
        "id": window.pk,
        "pipeline_id": window.pipeline_id,
        "stage_id": window.stage_id,
        "name": window.name,
        "name_ko": window.name_ko,
        "starts_on": window.starts_on,
        "ends_on": window.ends_on,
        "quarter_week_from": window.quarter_week_from,
        "quarter_week_to": window.quarter_week_to,
    }


def _viewable(user: User) -> list[str]:
    return [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]


def _pipelines(user: User) -> Any:
    return Pipeline.objects.filter(object_type__in=_viewable(user)).prefetch_related(
        Prefetch(
            "stages",
            queryset=Stage.objects.filter(is_active=True).order_by("order"),
            to_attr="active_stages",
        )
    )


def _pipeline(user: User, pk: int) -> Pipeline:
    pipeline = _pipelines(user).filter(pk=pk).first()
    if pipeline is None:
        raise NotFound(_("No such pipeline."))
    return pipeline


@contextmanager
def _answering_for(user: User, pk: int) -> Iterator[None]:
    """A stale version's 409 carries the pipeline as it is now, as this API shows it."""
    try:
        yield
    except StaleVersion as conflict:
        conflict.current = _pipeline_row(_pipeline(user, pk))
        raise


# Pipelines.


@router.get(
    "/pipelines",
    response=list[PipelineOut],
    operation_id="list_pipelines",
    summary="List pipelines",
    description="The pipelines of the kinds of record you may see, with their stages, by kind "
    "and name. An unknown query parameter is an error, not ignored.",
)
def list_pipelines(request: HttpRequest, params: Query[PipelineListParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, PipelineListParams.model_fields)
    pipelines = _pipelines(request.auth)
    if params.object_type is not None:
        pipelines = pipelines.filter(object_type=params.object_type)
    if params.is_active is not None:
        pipelines = pipelines.filter(is_active=params.is_active)
    rows = [_pipeline_row(p) for p in pipelines.order_by("object_type", "name", "pk")]
    return json_response(rows)


@router.get(
    "/pipelines/{id}",
    response=PipelineOut,
    operation_id="get_pipeline",
    summary="Read a pipeline",
)
def get_pipeline(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_pipeline_row(_pipeline(request.auth, id)))


@router.post(
    "/pipelines",
    response={201: PipelineOut},
    operation_id="create_pipeline",
    summary="Create a pipeline",
    description="Admins only. A gate condition that does not compile or reads a field the "
    "record does not have is refused with its position, under "
    "`stages.<n>.gate_condition`.",
)
def create_pipeline(request: HttpRequest, payload: PipelineCreate) -> HttpResponse:
    user = request.auth
    pipeline = services.save_pipeline(user, payload.model_dump())
    return json_response(_pipeline_row(_pipeline(user, pipeline.pk)), status=201)


@router.put(
    "/pipelines/{id}",
    response=PipelineOut,
    operation_id="replace_pipeline",
    summary="Replace a pipeline's definition",
    description="Admins only. Send the whole definition with the `version` you read. Past "
    "moves are never rewritten: they keep pointing at the stages they went through.",
    openapi_extra=_CONFLICT,
)
def replace_pipeline(request: HttpRequest, id: Id, payload: PipelineReplace) -> HttpResponse:
    user = request.auth
    data = payload.model_dump()
    version = data.pop("version")
    for stage in data["stages"]:
        if stage["id"] is None:
            del stage["id"]
    with _answering_for(user, id):
        services.save_pipeline(user, data, pk=id, version=version)
    return json_response(_pipeline_row(_pipeline(user, id)))


# Blackout windows.


@router.get(
    "/pipelines/{id}/blackouts",
    response=list[BlackoutOut],
    operation_id="list_blackouts",
    summary="List a pipeline's blackout windows",
    description="Stretches of the calendar when the pipeline's work is known to stall: fixed "
    "dates, or the same weeks of every quarter.",
)
def list_blackouts(request: HttpRequest, id: Id) -> HttpResponse:
    pipeline = _pipeline(request.auth, id)
    windows = BlackoutWindow.objects.filter(pipeline=pipeline).order_by("pk")
    return json_response([_blackout_row(w) for w in windows])


@router.post(
    "/pipelines/{id}/blackouts",
    response={201: BlackoutOut},
    operation_id="create_blackout",
    summary="Add a blackout window",
    description="Admins only. Give either `starts_on` and `ends_on`, or `quarter_week_from` "
    "and `quarter_week_to` (1 to 14).",
)
def create_blackout(request: HttpRequest, id: Id, payload: BlackoutIn) -> HttpResponse:
    window = services.save_blackout(request.auth, id, payload.model_dump())
    return json_response(_blackout_row(window), status=201)


@router.put(
    "/pipelines/{id}/blackouts/{bid}",
    response=BlackoutOut,
    operation_id="replace_blackout",
    summary="Replace a blackout window",
    description="Admins only. Every field is replaced; one left out becomes empty.",
)
def replace_blackout(request: HttpRequest, id: Id, bid: Id, payload: BlackoutIn) -> HttpResponse:
    window = services.save_blackout(request.auth, id, payload.model_dump(), pk=bid)
    return json_response(_blackout_row(window))


@router.delete(
    "/pipelines/{id}/blackouts/{bid}",
    response={204: None},
    operation_id="delete_blackout",
    summary="Delete a blackout window",
    description="Admins only.",
)
def delete_blackout(request: HttpRequest, id: Id, bid: Id) -> HttpResponse:
    services.delete_blackout(request.auth, id, bid)
    return HttpResponse(status=204)
