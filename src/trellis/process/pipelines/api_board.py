"""The JSON API of pipelines: the board, a record's stages, and moving a record.

Reads come from ``board`` (through record visibility: a card of a record you may not see is not
listed, counted or summed; a record you may not see is a 404); a move is ``services.move``.
A move to a ``warn`` stage whose condition does not hold is refused with the problem titled
"Confirmation needed" until it is sent again with ``confirm: true``. A move to an ``approve``
stage is answered 202 with ``pending_approval``: the record was submitted for approval and stays
where it is until the request is approved.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, Version, json_response, refuse_unknown_params, text
from trellis.core.errors import StaleVersion
from trellis.core.models import User
from trellis.core.money import MINOR_UNITS

from . import board, services, subjects
from .models import GatedMove, Pipeline, Stage, StageChange

router = Router(tags=["Pipelines"])

KindName = Literal[tuple(Stage.Kind.values)]
DirectionName = Literal[tuple(StageChange.Direction.values)]
ObjectType = text(max_length=40)

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_MOVE_ANSWERS = {
    "responses": {
        409: {
            "description": "The `version` you sent is stale: someone changed the record since "
            "you read it. Nothing moved; `current` is where the record stands now (the "
            "fields of `RecordStageOut`). Also when the record is locked by a pending approval, "
            "or waits for approval to enter a stage: the message names the request.",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        },
        422: {
            "description": "The stage is not one of the record's pipeline, does not exist or "
            "is retired; a `require` gate's condition does not hold (its message under "
            "`stage_id`); or, titled `Confirmation needed`, a `warn` gate's condition does not "
            "hold: send the move again with `confirm: true` to go on.",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        },
    }
}


class Output(Schema):
    model_config = ConfigDict(extra="forbid")


class StageRef(Output):
    id: int
    code: str
    name: str = Field(description="In English.")
    name_ko: str = Field(description="In Korean; may be empty.")


class StageColumnOut(StageRef):
    order: int
    kind: KindName
    probability: int
    max_dwell_days: int | None = Field(description="The expected maximum dwell; null for none.")
    dwell_in_business_days: bool


class PipelineRef(Output):
    id: int
    object_type: str
    code: str
    name: str
    name_ko: str


class WaitingOut(Output):
    request_id: int = Field(description="The approval request: `GET /approval-requests/{id}`.")
    stage_id: int = Field(description="The stage the record moves to once it is approved.")


class CardOut(Output):
    id: int
    name: str
    owner_id: int | None
    owner_name: str = Field(description="The owner's first name.")
    amount: str | None = Field(
        description="In the currency's minor units; null for kinds of record without amounts."
    )
    currency: str | None
    expected_close_date: dt.date | None
    stage_id: int
    stage_entered_at: dt.datetime | None
    seconds_in_stage: int | None
    days_in_stage: int | None = Field(description="Whole days since the record entered.")
    over_dwell_limit: bool = Field(
        description="In the stage longer than its expected maximum dwell (counted in "
        "business days where the stage says so)."
    )
    version: int = Field(description="Send it back with a move.")
    pending_approval: WaitingOut | None = Field(
        description="A move into an `approve` stage waiting for its approval; null for none."
    )


class TotalOut(Output):
    currency: str
    amount: str


class ColumnOut(Output):
    stage: StageColumnOut
    count: int = Field(description="Records in the stage that you may see, with the filters.")
    sums: list[TotalOut] = Field(
        description="The sum of their amounts per currency; empty for kinds without amounts."
    )
    cards: list[CardOut] = Field(description="Newest-entered first.")
    offset: int = Field(description="The position of the first card in the whole column.")
    has_more: bool = Field(description="Whether more cards follow; ask for them with `offset`.")


class FiltersOut(Output):
    owner: str
    team: int | None


class BoardOut(Output):
    pipeline: PipelineRef
    filters: FiltersOut
    per_stage: int
    columns: list[ColumnOut] = Field(description="The active stages, in order.")


class BoardParams(Schema):
    owner: str | None = Field(
        None, description="`all` (the default), `mine`, or the id of a user: whose records."
    )
    team: str | None = Field(None, description="The id of a team: only its records.")
    per_stage: int = Field(
        board.PER_STAGE, ge=1, le=board.MAX_PER_STAGE, description="Cards per column."
    )


class ColumnParams(Schema):
    owner: str | None = Field(None, description="As for the board.")
    team: str | None = Field(None, description="As for the board.")
    offset: int = Field(0, ge=0, le=10**9, description="Skip this many cards.")
    limit: int = Field(board.PER_STAGE, ge=1, le=board.MAX_PER_STAGE)


class MoveIn(Input):
    stage_id: Id = Field(
        description="A stage of the record's pipeline (or, for a record in "
        "no pipeline yet, of any active pipeline of its kind)."
    )
    version: Version
    confirm: bool = Field(
        False, description="Go on although a `warn` gate's condition does not hold."
    )


class ChangeOut(Output):
    id: int
    direction: DirectionName = Field(
        description="`entered` the pipeline, `forward` or `backward` (any distance)."
    )
    at: dt.datetime


class PendingApprovalOut(Output):
    request_id: int = Field(description="The approval request: `GET /approval-requests/{id}`.")
    process_id: int
    process_name: str = Field(description="In your language.")
    status: str = Field(
        description="`pending`; or `approved` or `rejected` when the process decided at once "
        "(every step skipped, or a step that rejects when its condition is false)."
    )
    stage: StageRef = Field(description="The stage the record moves to once it is approved.")
    message: str = Field(description="What happened, to show to the mover.")


class MoveOut(Output):
    id: int = Field(description="The record's id.")
    version: int = Field(description="The record's version after the move.")
    stage: StageRef
    change: ChangeOut | None = Field(
        description="The stage change written; null when the record already was in the stage."
    )
    warnings: list[str] = Field(description="The message of a `warn` gate moved past.")
    pending_approval: PendingApprovalOut | None = Field(
        description="Set when the stage has an `approve` gate whose process applies to the "
        "record: the record was submitted for approval (the answer is then 202) and stays in "
        "`stage` until the request is approved. Null when no approval was needed."
    )


class StageStepOut(StageRef):
    order: int
    kind: KindName
    current: bool
    is_active: bool = Field(description="False for a retired stage the record is still in.")


class StayOut(Output):
    stage: StageRef
    entered_at: dt.datetime
    left_at: dt.datetime | None = Field(description="Null while the record is still there.")
    seconds: int = Field(description="Time spent there (so far).")
    actor_id: int | None = Field(description="Who moved the record into the stage.")
    actor_name: str | None
    direction: DirectionName


class RecordStageOut(Output):
    object_type: str
    id: int
    version: int
    pipeline: PipelineRef | None = Field(description="Null for a record in no pipeline.")
    current_stage: StageRef | None
    stage_entered_at: dt.datetime | None
    seconds_in_stage: int | None
    days_in_stage: int | None
    over_dwell_limit: bool
    expected_activities: list[str] = Field(
        description="What is expected in the current stage, in your language."
    )
    stages: list[StageStepOut] = Field(description="The pipeline's stages, in order.")
    history: list[StayOut] = Field(
        description=f"Each stay in a stage, oldest first (the latest {board.HISTORY_LIMIT})."
    )


# What the answers hold.


def _money(amount: Decimal | None, currency: str) -> str | None:
    if amount is None:
        return None
    digits = MINOR_UNITS.get(currency, 2)
    return format(amount.quantize(Decimal(1).scaleb(-digits)), "f")


def _stage_ref(stage: Stage) -> dict[str, Any]:
    return {"id": stage.pk, "code": stage.code, "name": stage.name, "name_ko": stage.name_ko}


def _pipeline_ref(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "id": pipeline.pk,
        "object_type": pipeline.object_type,
        "code": pipeline.code,
        "name": pipeline.name,
        "name_ko": pipeline.name_ko,
    }


def _seconds(delta: dt.timedelta | None) -> int | None:
    return int(delta.total_seconds()) if delta is not None else None


def card_row(card: board.Card, has_amounts: bool) -> dict[str, Any]:
    return {
        "id": card.pk,
        "name": card.name,
        "owner_id": card.owner.pk if card.owner else None,
        "owner_name": card.owner_name,
        "amount": _money(card.amount, card.currency) if has_amounts else None,
        "currency": card.currency if has_amounts else None,
        "expected_close_date": card.close_date,
        "stage_id": card.stage.pk,
        "stage_entered_at": card.entered_at,
        "seconds_in_stage": _seconds(card.in_stage),
        "days_in_stage": card.days_in_stage,
        "over_dwell_limit": card.over_limit,
        "version": card.version,
        "pending_approval": (
            {"request_id": card.waiting.request_id, "stage_id": card.waiting.to_stage_id}
            if card.waiting
            else None
        ),
    }


def _column_row(column: board.Column, has_amounts: bool) -> dict[str, Any]:
    stage = column.stage
    return {
        "stage": {
            **_stage_ref(stage),
            "order": stage.order,
            "kind": stage.kind,
            "probability": stage.probability,
            "max_dwell_days": stage.max_dwell_days,
            "dwell_in_business_days": stage.dwell_in_business_days,
        },
        "count": column.count,
        "sums": [
            {"currency": total.currency, "amount": _money(total.amount, total.currency)}
            for total in column.sums
        ],
        "cards": [card_row(card, has_amounts) for card in column.cards],
        "offset": column.offset,
        "has_more": column.has_more,
    }


def _filters(params: Any) -> board.Filters:
    return board.filters_from(params.owner, params.team)


def record_stage_row(user: User, object_type: str, pk: int) -> dict[str, Any]:
    """Where a record stands in its pipeline, with its history, as this API shows it."""
    _subject, record = board.record_of(user, object_type, pk)
    panel = board.panel(user, record)
    current = panel.current
    return {
        "object_type": object_type,
        "id": record.pk,
        "version": record.version,
        "pipeline": _pipeline_ref(panel.pipeline) if panel.pipeline else None,
        "current_stage": _stage_ref(current) if current else None,
        "stage_entered_at": panel.entered_at,
        "seconds_in_stage": _seconds(panel.in_stage),
        "days_in_stage": panel.days_in_stage,
        "over_dwell_limit": panel.over_limit,
        "expected_activities": panel.activities,
        "stages": [
            {
                **_stage_ref(stage),
                "order": stage.order,
                "kind": stage.kind,
                "current": current is not None and stage.pk == current.pk,
                "is_active": stage.is_active,
            }
            for stage in panel.stages
        ],
        "history": [
            {
                "stage": _stage_ref(stay.stage),
                "entered_at": stay.entered_at,
                "left_at": stay.left_at,
                "seconds": int(stay.spent.total_seconds()),
                "actor_id": stay.actor.pk if stay.actor else None,
                "actor_name": str(stay.actor) if stay.actor else None,
                "direction": stay.direction,
            }
            for stay in panel.history
        ],
    }


@contextmanager
def answering_for(user: User, object_type: str, pk: int) -> Iterator[None]:
    """A stale version's 409 carries where the record stands now."""
    try:
        yield
    except StaleVersion as conflict:
        conflict.current = record_stage_row(user, object_type, pk)
        raise


# Endpoints.


@router.get(
    "/pipelines/{id}/board",
    response=BoardOut,
    operation_id="get_pipeline_board",
    summary="Read a pipeline's board",
    description="The pipeline's active stages in order, each with the number of records in it "
    "that you may see, the sum of their amounts per currency, and its first cards, "
    "newest-entered first. Ask for more of one column with `GET .../board/stages/{stage_id}`. "
    "An unknown query parameter is an error, not ignored.",
)
def get_board(request: HttpRequest, id: Id, params: Query[BoardParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, BoardParams.model_fields)
    found = board.board(request.auth, id, filters=_filters(params), per_stage=params.per_stage)
    return json_response(
        {
            "pipeline": _pipeline_ref(found.pipeline),
            "filters": {"owner": found.filters.owner, "team": found.filters.team},
            "per_stage": found.per_stage,
            "columns": [_column_row(c, found.has_amounts) for c in found.columns],
        }
    )


@router.get(
    "/pipelines/{id}/board/stages/{stage_id}",
    response=ColumnOut,
    operation_id="get_pipeline_board_column",
    summary="Read one column of a pipeline's board",
    description="The cards of one stage from `offset` on, newest-entered first, with the "
    "column's count and sums. An unknown query parameter is an error, not ignored.",
)
def get_board_column(
    request: HttpRequest, id: Id, stage_id: Id, params: Query[ColumnParams]
) -> HttpResponse:
    refuse_unknown_params(request.GET, ColumnParams.model_fields)
    pipeline, found = board.column(
        request.auth,
        id,
        stage_id,
        filters=_filters(params),
        offset=params.offset,
        limit=params.limit,
    )
    has_amounts = bool(subjects.get(pipeline.object_type).amount_field)
    return json_response(_column_row(found, has_amounts))


@router.get(
    "/pipelines/records/{object_type}/{id}/stages",
    response=RecordStageOut,
    operation_id="get_record_stages",
    summary="Read where a record stands in its pipeline",
    description="The record's pipeline and its stages with the current one marked, the time "
    "in the current stage, what is expected there, and every stay in a stage so far: when "
    "entered, when left, how long, who moved it there and in which direction. "
    "`object_type` is `opportunity`, `lead` or `account`.",
)
def get_record_stages(request: HttpRequest, object_type: ObjectType, id: Id) -> HttpResponse:
    return json_response(record_stage_row(request.auth, object_type, id))


@router.post(
    "/pipelines/records/{object_type}/{id}/move",
    response={200: MoveOut, 202: MoveOut},
    operation_id="move_record",
    url_name="move_record",
    summary="Move a record to a stage",
    description="Forward or back, any distance, within the record's pipeline; a record in no "
    "pipeline enters the one the stage belongs to. Send the record's `version`. The move is "
    "recorded (from, to, when, who, direction, amount and close date at the time) and shows "
    "on the record's timeline; the stage's probability is applied unless the owner set one "
    "by hand. Nothing changes when the move is refused. A stage with an `approve` gate "
    "submits the record to its approval process instead (202, `pending_approval`): the move "
    "is made when the request is approved, and not at all when it is rejected or recalled.",
    openapi_extra=_MOVE_ANSWERS,
)
def move_record(
    request: HttpRequest, object_type: ObjectType, id: Id, payload: MoveIn
) -> HttpResponse:
    user = request.auth
    with answering_for(user, object_type, id):
        result = services.move(
            user,
            object_type,
            id,
            payload.stage_id,
            version=payload.version,
            confirm=payload.confirm,
        )
    record = result.record
    current = getattr(record, subjects.get(object_type).stage_field)
    change = result.change
    gated = result.gated
    pending = gated is not None and gated.request.status == gated.request.Status.PENDING
    return json_response(
        {
            "id": record.pk,
            "version": record.version,
            "stage": _stage_ref(current),
            "change": (
                {"id": change.pk, "direction": change.direction, "at": change.at}
                if change
                else None
            ),
            "warnings": result.warnings,
            "pending_approval": _pending_row(gated) if gated else None,
        },
        status=202 if pending else 200,
    )


def _pending_row(gated: GatedMove) -> dict[str, Any]:
    request = gated.request
    return {
        "request_id": request.pk,
        "process_id": request.process_id,
        "process_name": request.process.label,
        "status": request.status,
        "stage": _stage_ref(gated.to_stage),
        "message": services.gated_message(gated),
    }
