"""Pages of the approvals report.

``/approvals/reports/`` lists the processes whose report the user may open;
``/approvals/processes/<pk>/report/`` shows one, for a period (``start``, ``end``,
``granularity`` in the query string, as the pipeline reports take them). The figures come from
``reports``; this module shapes them for two bar charts, drawn as inline SVG by the pipeline
reports' template, each with its numbers in a table too. Administrators set the exception alert
threshold on the same page.

A process of a kind of record the user may not see at all is a 404. A period that is not valid
shows the form again with its errors and status 422.
"""

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from trellis.core.errors import ValidationFailed
from trellis.core.views import service_view
from trellis.core.visibility import is_admin

from ..pipelines.views_reports import (
    BAR_SPAN,
    BAR_X,
    GRANULARITY_CHOICES,
    Bar,
    BarChart,
    ChartRow,
)
from . import reports, services


def _pct(value: float | int | None, largest: float | int) -> float:
    if not value or not largest:
        return 0.0
    return min(100.0, float(value) * 100.0 / float(largest))


def _hours(value: float | None) -> str:
    if value is None:
        return "–"
    return _("%(hours)s h") % {"hours": f"{value:g}"}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:g}%"


def duration_chart(report: reports.ApprovalReport) -> BarChart:
    shown = [step for step in report.steps if step.decided]
    largest = max((step.p90_hours or 0 for step in shown), default=0)
    rows = [
        ChartRow(
            step.name,
            [
                Bar(_pct(step.median_hours, largest), _hours(step.median_hours), "median"),
                Bar(_pct(step.p90_hours, largest), _hours(step.p90_hours), "average"),
            ],
            description=_("%(step)s: median %(median)s, 90th percentile %(p90)s")
            % {
                "step": step.name,
                "median": _hours(step.median_hours),
                "p90": _hours(step.p90_hours),
            },
        )
        for step in shown
    ]
    return BarChart(
        _("Time per step"),
        rows,
        [("median", _("Median")), ("average", _("90th percentile"))],
    )


def exception_chart(report: reports.ApprovalReport) -> BarChart:
    threshold = report.threshold
    largest = max([step.exception_rate or 0 for step in report.steps] + [threshold or 0], default=0)
    marker = ""
    if threshold is not None and largest:
        marker = f"{BAR_X + _pct(threshold, largest) * BAR_SPAN / 100:.2f}%"
    rows = []
    for step in report.steps:
        label = step.name
        if step.flagged:
            label = _("%(step)s (may need redesign)") % {"step": label}
        rows.append(
            ChartRow(
                label,
                [
                    Bar(
                        _pct(step.exception_rate, largest),
                        _percent(step.exception_rate),
                        "over" if step.flagged else "backward",
                    )
                ],
                marker=marker,
                marker_text=_("alert above %(pct)s") % {"pct": _percent(threshold)},
                description=_("%(step)s: %(count)d exception requests, %(rate)s per request")
                % {
                    "step": step.name,
                    "count": step.exception_count,
                    "rate": _percent(step.exception_rate),
                },
            )
        )
    legend = [("backward", _("Exception requests per request"))]
    if threshold is not None:
        legend += [("limit", _("Alert threshold")), ("over", _("Above the threshold"))]
    return BarChart(_("Exception rate per step"), rows, legend)


@service_view
@require_http_methods(["GET", "HEAD"])
def report_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "approvals/report_list.html",
        {"processes": reports.reportable(request.user).select_related("owner")},
    )


@service_view
@require_http_methods(["GET", "HEAD", "POST"])
def report_page(request: HttpRequest, pk: int) -> HttpResponse:
    process = reports.report_process(request.user, pk)
    alert_errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            services.set_exception_alert(
                request.user, pk, request.POST.get("exception_alert_pct", "")
            )
        except ValidationFailed as exc:
            alert_errors = exc.errors
        else:
            messages.success(request, _("The exception alert is saved."))
            query = request.GET.urlencode()
            target = request.path + (f"?{query}" if query else "")
            return redirect(target)
    asked = {name: request.GET.get(name, "") for name in ("start", "end", "granularity")}
    context: dict[str, Any] = {
        "process": process,
        "granularities": GRANULARITY_CHOICES,
        "asked": asked,
        "errors": {},
        "alert_errors": alert_errors,
        "alert_value": request.POST.get("exception_alert_pct", process.exception_alert_pct),
        "may_set_alert": is_admin(request.user),
    }
    try:
        period = reports.period(asked["start"], asked["end"], asked["granularity"])
    except ValidationFailed as exc:
        context["errors"] = exc.errors
        return render(request, "approvals/report.html", context, status=422)
    context["asked"] = {
        "start": period.first_day.isoformat(),
        "end": period.last_day.isoformat(),
        "granularity": period.granularity,
    }
    report = reports.report(request.user, process, period)
    context.update(
        {
            "report": report,
            "duration_chart": duration_chart(report),
            "exception_chart": exception_chart(report),
            "kind_labels": [k.label for k in report.exceptions],
        }
    )
    return render(request, "approvals/report.html", context, status=422 if alert_errors else 200)


urlpatterns = [
    path("reports/", report_list, name="reports"),
    path("processes/<int:pk>/report/", report_page, name="process-report"),
]
