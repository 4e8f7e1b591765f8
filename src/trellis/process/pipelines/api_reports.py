"""The JSON API of pipelines: reports.

``GET /api/v1/pipelines/{id}/reports/funnel|time-in-stage|bottleneck|moves|value|trend`` with
the filters of the report pages: ``start`` and ``end`` (dates, both days included; by default
this month and the two before it) and ``granularity`` (week, month or quarter). The answers
mirror the pages. A pipeline of a kind of record the caller may not see at all is a 404; the
figures count only the records the caller may see.
"""

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core import clock
from trellis.core.api import Id, json_response, refuse_unknown_params
from trellis.core.money import MINOR_UNITS

from . import reports
from .models import Pipeline, Stage

router = Router(tags=["Pipelines"])

Granularity = Literal[reports.GRANULARITIES]
Amount = Field(description="A decimal number as a string, in the currency's minor units.")


class ReportParams(Schema):
    start: dt.date | None = Field(
        None,
        description="The first day of the period (default: the first day of the month "
        "two months back).",
    )
    end: dt.date | None = Field(
        None, description="The last day of the period, included (default: today)."
    )
    granularity: Granularity | None = Field(
        None, description="How the period is cut into buckets (default: month)."
    )


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


class StageOut(Output):
    id: int
    code: str
    name: str = Field(description="In the language asked for (Accept-Language).")
    kind: Literal[tuple(Stage.Kind.values)]
    order: int
    is_active: bool = Field(description="False for a retired stage that history still shows.")


class PeriodOut(Output):
    start: dt.date
    end: dt.date = Field(description="The last day, included.")
    granularity: Granularity


class FunnelStageOut(Output):
    stage: StageOut
    entered: int = Field(
        description="Entries into the stage in the period; a record that enters again counts again."
    )
    converted: int | None = Field(
        description="Of those entries, how many ended with a move forward to a later stage "
        "other than a lost one (up to now); null for won and lost stages."
    )
    conversion: float | None = Field(description="converted / entered, in percent.")


class FunnelBucketOut(Output):
    start: dt.date
    label: str
    stages: list[FunnelStageOut]


class FunnelOut(Output):
    pipeline_id: int
    period: PeriodOut
    stages: list[FunnelStageOut]
    buckets: list[FunnelBucketOut]


class DwellOut(Output):
    count: int
    average_days: float | None
    median_days: float | None
    longest_days: float | None
    over_limit: int = Field(description="How many stayed longer than the stage's limit.")


class OwnerDwellOut(Output):
    owner_id: int | None
    owner_name: str
    left: DwellOut


class StageDwellOut(Output):
    stage: StageOut
    limit_days: float | None = Field(
        description="The expected maximum dwell in calendar days (business days count as "
        "five a week); null for none."
    )
    ratio: float | None = Field(description="median_days of `left` / limit_days.")
    left: DwellOut = Field(
        description="Records that left the stage in the period: from entering to leaving it."
    )
    current: DwellOut = Field(
        description="Records in the stage now (open stages): since they entered it."
    )
    owners: list[OwnerDwellOut] = Field(description="`left`, per owner at the time of the move.")


class TimeInStageOut(Output):
    pipeline_id: int
    period: PeriodOut
    stages: list[StageDwellOut]


class StuckOut(Output):
    id: int
    name: str
    owner_id: int | None
    owner_name: str
    entered_at: dt.datetime
    days: float
    url: str = Field(description="The record's page.")


class BlackoutOut(Output):
    id: int
    name: str
    stage_id: int | None = Field(description="Null for a window of the whole pipeline.")
    first_day: dt.date = Field(description="Within the period.")
    last_day: dt.date


class BottleneckOut(Output):
    pipeline_id: int
    period: PeriodOut
    stage: StageDwellOut | None = Field(
        description="The stage whose median dwell exceeds its limit by the largest ratio; "
        "null when none exceeds it."
    )
    stuck_count: int = Field(description="Records in the stage now for longer than its limit.")
    stuck: list[StuckOut] = Field(description="The oldest of them (at most 20).")
    blackouts: list[BlackoutOut] = Field(
        description="Blackout windows of the stage or the whole pipeline within the period."
    )


class MoneyOut(Output):
    currency: str
    amount: str = Amount


class StageMovesOut(Output):
    stage: StageOut
    backward: int = Field(description="Moves back from this stage to an earlier one.")
    value_drops: int = Field(
        description="Moves out of this stage at a lower amount than at the record's previous "
        "move, in the same currency."
    )
    dropped: list[MoneyOut] = Field(description="By how much, per currency.")


class MovesBucketOut(Output):
    start: dt.date
    label: str
    stages: list[StageMovesOut]


class MovesOut(Output):
    pipeline_id: int
    period: PeriodOut
    stages: list[StageMovesOut]
    buckets: list[MovesBucketOut]


class CurrencyValueOut(Output):
    currency: str
    records: int
    amount: str = Amount
    weighted: str = Field(description="amount * probability / 100, as `amount`.")


class StageValueOut(Output):
    stage: StageOut
    records: int
    values: list[CurrencyValueOut]


class OwnerValueOut(Output):
    owner_id: int | None
    owner_name: str
    records: int
    values: list[CurrencyValueOut]


class ValueOut(Output):
    pipeline_id: int
    as_of: dt.datetime = Field(description="The value is that of the records as they are now.")
    records: int
    totals: list[CurrencyValueOut]
    stages: list[StageValueOut]
    owners: list[OwnerValueOut]


class TrendPointOut(Output):
    day: dt.date
    records: int
    amount: str = Amount
    weighted: str = Amount


class TrendSeriesOut(Output):
    currency: str
    points: list[TrendPointOut]


class TrendOut(Output):
    pipeline_id: int
    period: PeriodOut
    series: list[TrendSeriesOut]


# Rows.


def money(amount: Decimal, currency: str) -> str:
    """An amount in its currency's minor units, as text: 1500 KRW, 15.00 USD."""
    exponent = Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))
    return format(amount.quantize(exponent, rounding=ROUND_HALF_UP), "f")


def _stage(stage: Stage) -> dict[str, Any]:
    return {
        "id": stage.pk,
        "code": stage.code,
        "name": stage.label,
        "kind": stage.kind,
        "order": stage.order,
        "is_active": stage.is_active,
    }


def _period(period: reports.Period) -> dict[str, Any]:
    return {
        "start": period.first_day,
        "end": period.last_day,
        "granularity": period.granularity,
    }


def _dwell(dwell: reports.Dwell) -> dict[str, Any]:
    return {
        "count": dwell.count,
        "average_days": dwell.average_days,
        "median_days": dwell.median_days,
        "longest_days": dwell.longest_days,
        "over_limit": dwell.over_limit,
    }


def _stage_dwell(row: reports.StageDwell) -> dict[str, Any]:
    return {
        "stage": _stage(row.stage),
        "limit_days": row.limit_days,
        "ratio": row.ratio,
        "left": _dwell(row.left),
        "current": _dwell(row.current),
        "owners": [
            {"owner_id": o.owner_id, "owner_name": o.owner_name, "left": _dwell(o.dwell)}
            for o in row.owners
        ],
    }


def _values(values: list[reports.CurrencyValue]) -> list[dict[str, Any]]:
    return [
        {
            "currency": v.currency,
            "records": v.records,
            "amount": money(v.amount, v.currency),
            "weighted": money(v.weighted, v.currency),
        }
        for v in values
    ]


def funnel_row(report: reports.Funnel, period: reports.Period) -> dict[str, Any]:
    def cells(rows: list[reports.FunnelStage]) -> list[dict[str, Any]]:
        return [
            {
                "stage": _stage(r.stage),
                "entered": r.entered,
                "converted": r.converted,
                "conversion": r.conversion,
            }
            for r in rows
        ]

    return {
        "pipeline_id": report.pipeline.pk,
        "period": _period(period),
        "stages": cells(report.stages),
        "buckets": [
            {"start": b.bucket.start, "label": b.bucket.label, "stages": cells(b.stages)}
            for b in report.buckets
        ],
    }


def time_in_stage_row(report: reports.TimeInStage, period: reports.Period) -> dict[str, Any]:
    return {
        "pipeline_id": report.pipeline.pk,
        "period": _period(period),
        "stages": [_stage_dwell(row) for row in report.stages],
    }


def bottleneck_row(report: reports.Bottleneck, period: reports.Period) -> dict[str, Any]:
    return {
        "pipeline_id": report.pipeline.pk,
        "period": _period(period),
        "stage": _stage_dwell(report.stage) if report.stage else None,
        "stuck_count": report.stuck_count,
        "stuck": [
            {
                "id": r.id,
                "name": r.name,
                "owner_id": r.owner_id,
                "owner_name": r.owner_name,
                "entered_at": r.entered_at,
                "days": r.days,
                "url": r.url,
            }
            for r in report.stuck
        ],
        "blackouts": [
            {
                "id": b.window.pk,
                "name": b.name,
                "stage_id": b.window.stage_id,
                "first_day": b.first_day,
                "last_day": b.last_day,
            }
            for b in report.blackouts
        ],
    }


def moves_row(report: reports.Moves, period: reports.Period) -> dict[str, Any]:
    def cells(rows: list[reports.StageMoves]) -> list[dict[str, Any]]:
        return [
            {
                "stage": _stage(r.stage),
                "backward": r.backward,
                "value_drops": r.value_drops,
                "dropped": [
                    {"currency": d.currency, "amount": money(d.amount, d.currency)}
                    for d in r.dropped
                ],
            }
            for r in rows
        ]

    return {
        "pipeline_id": report.pipeline.pk,
        "period": _period(period),
        "stages": cells(report.stages),
        "buckets": [
            {"start": b.bucket.start, "label": b.bucket.label, "stages": cells(b.stages)}
            for b in report.buckets
        ],
    }


def value_row(report: reports.PipelineValue) -> dict[str, Any]:
    return {
        "pipeline_id": report.pipeline.pk,
        "as_of": clock.now(),
        "records": report.records,
        "totals": _values(report.totals),
        "stages": [
            {"stage": _stage(s.stage), "records": s.records, "values": _values(s.values)}
            for s in report.stages
        ],
        "owners": [
            {
                "owner_id": o.owner_id,
                "owner_name": o.owner_name,
                "records": o.records,
                "values": _values(o.values),
            }
            for o in report.owners
        ],
    }


def trend_row(report: reports.Trend, period: reports.Period) -> dict[str, Any]:
    return {
        "pipeline_id": report.pipeline.pk,
        "period": _period(period),
        "series": [
            {
                "currency": s.currency,
                "points": [
                    {
                        "day": p.day,
                        "records": p.records,
                        "amount": money(p.amount, s.currency),
                        "weighted": money(p.weighted, s.currency),
                    }
                    for p in s.points
                ],
            }
            for s in report.series
        ],
    }


def _ask(request: HttpRequest, id: int, params: ReportParams) -> tuple[Pipeline, reports.Period]:
    refuse_unknown_params(request.GET, ReportParams.model_fields)
    pipeline = reports.report_pipeline(request.auth, id)
    return pipeline, reports.period(params.start, params.end, params.granularity)


_FILTERS = (
    " Filters: `start`, `end` (both days included) and `granularity`; an end before the start "
    "or an unknown granularity is a 422."
)


@router.get(
    "/pipelines/{id}/reports/funnel",
    response=FunnelOut,
    operation_id="pipeline_report_funnel",
    summary="Funnel of a pipeline",
    description="Per stage, the entries into it in the period and how many of them went on "
    "to a later stage; the same per bucket of the period." + _FILTERS,
)
def funnel(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, period = _ask(request, id, params)
    report = reports.funnel(request.auth, pipeline, period.start, period.end, period.granularity)
    return json_response(funnel_row(report, period))


@router.get(
    "/pipelines/{id}/reports/time-in-stage",
    response=TimeInStageOut,
    operation_id="pipeline_report_time_in_stage",
    summary="Time in stage of a pipeline",
    description="Per stage and per owner, the average and median days spent by the records "
    "that left the stage in the period; and the records in each open stage now." + _FILTERS,
)
def time_in_stage(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, period = _ask(request, id, params)
    report = reports.time_in_stage(request.auth, pipeline, period.start, period.end)
    return json_response(time_in_stage_row(report, period))


@router.get(
    "/pipelines/{id}/reports/bottleneck",
    response=BottleneckOut,
    operation_id="pipeline_report_bottleneck",
    summary="Bottleneck of a pipeline",
    description="The stage whose median dwell exceeds its expected maximum the most, the "
    "records stuck there now (oldest first) and the blackout windows within the period." + _FILTERS,
)
def bottleneck(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, period = _ask(request, id, params)
    report = reports.bottleneck(request.auth, pipeline, period.start, period.end)
    return json_response(bottleneck_row(report, period))


@router.get(
    "/pipelines/{id}/reports/moves",
    response=MovesOut,
    operation_id="pipeline_report_moves",
    summary="Backward moves and value drops of a pipeline",
    description="Per stage and per bucket: moves back out of the stage, and moves out of it "
    "at a lower amount than at the record's previous move." + _FILTERS,
)
def moves(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, period = _ask(request, id, params)
    report = reports.moves(request.auth, pipeline, period.start, period.end, period.granularity)
    return json_response(moves_row(report, period))


@router.get(
    "/pipelines/{id}/reports/value",
    response=ValueOut,
    operation_id="pipeline_report_value",
    summary="Value of a pipeline",
    description="The records in the open stages now: value and weighted value (amount * "
    "probability / 100) by stage and by owner, per currency. The period filters are checked "
    "but do not change the figures.",
)
def value(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, _period_asked = _ask(request, id, params)
    return json_response(value_row(reports.value(request.auth, pipeline)))


@router.get(
    "/pipelines/{id}/reports/trend",
    response=TrendOut,
    operation_id="pipeline_report_trend",
    summary="Value trend of a pipeline",
    description="The open value per day of the period and per currency, from the daily "
    "snapshots (taken after midnight for the day that ended)." + _FILTERS,
)
def trend(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    pipeline, period = _ask(request, id, params)
    report = reports.trend(request.auth, pipeline, period.start, period.end)
    return json_response(trend_row(report, period))
