"""The JSON API of the approvals report.

``GET /api/v1/approval-processes/{id}/report`` with the filters of the pipeline reports:
``start`` and ``end`` (dates, both days included; by default this month and the two before it)
and ``granularity`` (week, month or quarter). The answer mirrors the page. A process of a kind
of record the caller may not see at all is a 404; the figures count only the requests about
records the caller may see. ``PUT .../exception-alert`` sets the threshold (administrators).
"""

import datetime as dt
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, json_response, refuse_unknown_params

from ..pipelines.reports import GRANULARITIES
from . import reports, services
from .models import ApprovalRequest, ExceptionRequest

router = Router(tags=["Approvals"])

Granularity = Literal[GRANULARITIES]


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


class AlertIn(Input):
    exception_alert_pct: int | None = Field(
        description="Flag a step whose exception requests per request pass this percentage "
        f"(0 to {services.MAX_ALERT_PCT}); null for no alert."
    )


class Output(Schema):
    # Extra keys fail the tests that check answers against the schema.
    model_config = ConfigDict(extra="forbid")


class PeriodOut(Output):
    start: dt.date
    end: dt.date = Field(description="The last day, included.")
    granularity: Granularity


class KindOut(Output):
    kind: Literal[tuple(ExceptionRequest.Kind.values)]
    count: int
    rate: float | None = Field(description="Exception requests of this kind per request, in %.")


class StatusOut(Output):
    status: Literal[tuple(ApprovalRequest.Status.values)]
    count: int


class StepOut(Output):
    position: int = Field(description="The step's position in the definition, from 1.")
    name: str = Field(description="As the current version names it.")
    requests: int = Field(description="Requests of the period that reached the step.")
    runs: int = Field(description="Runs of the step; one sent back and run again counts again.")
    skipped: int = Field(description="Runs with nobody to ask: the step's condition was false.")
    decided: int = Field(description="Runs that ended approved or rejected.")
    median_hours: float | None = Field(
        description="Median hours from the start of a decided run to its end."
    )
    p90_hours: float | None = Field(description="90th percentile of the same, interpolated.")
    waiting: int = Field(description="Runs waiting for a decision now.")
    timed_out: int = Field(
        description="Runs that passed their due time: decided after it, escalated, or still "
        "waiting past it."
    )
    escalated: int
    exceptions: list[KindOut] = Field(description="Exception requests made at this step.")
    exception_count: int
    exception_rate: float | None = Field(
        description="Exception requests per request that reached the step, in %."
    )
    flagged: bool = Field(
        description="The exception rate passes the process's threshold: the step may need redesign."
    )


class BucketOut(Output):
    start: dt.date
    label: str
    requests: int = Field(description="Requests submitted in the bucket.")
    exceptions: int = Field(description="Their exception requests.")


class ReportOut(Output):
    process_id: int
    period: PeriodOut
    exception_alert_pct: int | None = Field(description="The threshold; null for no alert.")
    requests: int = Field(description="Requests submitted in the period.")
    statuses: list[StatusOut] = Field(description="Those requests by their status now.")
    exceptions: list[KindOut]
    exception_count: int
    exception_rate: float | None = Field(description="Exception requests per request, in %.")
    steps: list[StepOut]
    buckets: list[BucketOut]


class AlertOut(Output):
    process_id: int
    exception_alert_pct: int | None


def _kinds(rows: list[reports.KindCount]) -> list[dict[str, Any]]:
    return [{"kind": r.kind, "count": r.count, "rate": r.rate} for r in rows]


def report_row(report: reports.ApprovalReport) -> dict[str, Any]:
    period = report.period
    return {
        "process_id": report.process.pk,
        "period": {
            "start": period.first_day,
            "end": period.last_day,
            "granularity": period.granularity,
        },
        "exception_alert_pct": report.threshold,
        "requests": report.requests,
        "statuses": [{"status": s.status, "count": s.count} for s in report.statuses],
        "exceptions": _kinds(report.exceptions),
        "exception_count": report.exception_count,
        "exception_rate": report.exception_rate,
        "steps": [
            {
                "position": s.index + 1,
                "name": s.name,
                "requests": s.requests,
                "runs": s.runs,
                "skipped": s.skipped,
                "decided": s.decided,
                "median_hours": s.median_hours,
                "p90_hours": s.p90_hours,
                "waiting": s.waiting,
                "timed_out": s.timed_out,
                "escalated": s.escalated,
                "exceptions": _kinds(s.exceptions),
                "exception_count": s.exception_count,
                "exception_rate": s.exception_rate,
                "flagged": s.flagged,
            }
            for s in report.steps
        ],
        "buckets": [
            {
                "start": b.start,
                "label": b.label,
                "requests": b.requests,
                "exceptions": b.exceptions,
            }
            for b in report.buckets
        ],
    }


@router.get(
    "/approval-processes/{id}/report",
    response=ReportOut,
    operation_id="approval_process_report",
    summary="Report of an approval process",
    description="For the requests submitted in the period: how many, by status; per step, "
    "runs, median and 90th percentile hours, timeouts and escalations; exception requests per "
    "request by kind, and the steps whose rate passes the process's threshold. Filters: "
    "`start`, `end` (both days included) and `granularity`; an end before the start or an "
    "unknown granularity is a 422.",
)
def report(request: HttpRequest, id: Id, params: Query[ReportParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, ReportParams.model_fields)
    process = reports.report_process(request.auth, id)
    period = reports.period(params.start, params.end, params.granularity)
    return json_response(report_row(reports.report(request.auth, process, period)))


@router.put(
    "/approval-processes/{id}/exception-alert",
    response=AlertOut,
    operation_id="approval_process_exception_alert",
    summary="Set the exception alert of an approval process",
    description="The exception rate above which the report flags a step (administrators). "
    "A setting of the process: it publishes no new version.",
)
def exception_alert(request: HttpRequest, id: Id, body: AlertIn) -> HttpResponse:
    process = services.set_exception_alert(request.auth, id, body.exception_alert_pct)
    return json_response(
        {"process_id": process.pk, "exception_alert_pct": process.exception_alert_pct}
    )
