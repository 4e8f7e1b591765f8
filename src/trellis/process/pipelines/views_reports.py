"""Pages of pipelines: reports.

``/pipelines/<pk>/reports/`` shows, for a period and a granularity (``start``, ``end``,
``granularity`` in the query string), the bottleneck, the funnel, time in stage, backward moves
and value drops, the pipeline's value by stage and owner, and its trend. The figures come from
``reports`` (aggregate SQL, record visibility applied); this module only shapes them for the
charts, which the template draws as inline SVG. Every chart has its numbers in a table too.

A pipeline of a kind of record the user may not see at all is a 404. A period that is not
valid (an end before the start, an unknown granularity, a date that is not one) shows the
form again with its errors and status 422.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from trellis.core import clock
from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.money import format_money

from . import reports
from .models import Pipeline

GRANULARITY_CHOICES = (
    ("week", gettext_lazy("Week")),
    ("month", gettext_lazy("Month")),
    ("quarter", gettext_lazy("Quarter")),
)

# Horizontal bar charts: label column, then the bars, in percent of the chart's width.
BAR_X = 30.0
BAR_SPAN = 55.0
BAR_HEIGHT, BAR_STEP, ROW_GAP = 16, 20, 10
# The trend chart's drawing area, in the units of its viewBox.
TREND_WIDTH, TREND_HEIGHT = 640, 220
TREND_LEFT, TREND_RIGHT, TREND_TOP, TREND_BOTTOM = 8, 632, 12, 196


def _pct(value: float | Decimal | int | None, largest: float | Decimal | int) -> float:
    if not value or not largest:
        return 0.0
    return min(100.0, float(value) * 100.0 / float(largest))


def _x(pct: float) -> str:
    """A position along the bars, ``pct`` percent of the way, as an SVG length."""
    return f"{BAR_X + pct * BAR_SPAN / 100:.2f}%"


def _width(pct: float) -> str:
    return f"{pct * BAR_SPAN / 100:.2f}%"


@dataclass
class Bar:
    """One bar of a horizontal bar chart, placed in percent of the chart's width."""

    pct: float
    text: str
    css: str = ""
    y: int = 0

    @property
    def width(self) -> str:
        return _width(self.pct)

    @property
    def end(self) -> str:
        return _x(self.pct + 1)

    @property
    def text_y(self) -> int:
        return self.y + BAR_HEIGHT - 4


@dataclass
class ChartRow:
    label: str
    bars: list[Bar]
    marker: str = ""  # the x position of a limit, or empty
    marker_text: str = ""
    description: str = ""
    y: int = 0
    height: int = 0

    @property
    def label_y(self) -> int:
        return self.y + self.height // 2 + 4

    @property
    def bottom(self) -> int:
        return self.y + self.height


@dataclass
class BarChart:
    """Rows of one or more bars each, laid out top to bottom in SVG user units."""

    title: str
    rows: list[ChartRow]
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    height: int = 0

    def __post_init__(self) -> None:
        y = 0
        for row in self.rows:
            row.y = y
            row.height = max(1, len(row.bars)) * BAR_STEP
            for index, bar in enumerate(row.bars):
                bar.y = y + index * BAR_STEP
            y += row.height + ROW_GAP
        self.height = max(y, BAR_STEP)

    @property
    def bar_x(self) -> str:
        return f"{BAR_X:.2f}%"

    @property
    def bar_height(self) -> int:
        return BAR_HEIGHT


def _days(value: float | None) -> str:
    if value is None:
        return "–"
    return _("%(days)s d") % {"days": f"{value:g}"}


# The charts.


def funnel_chart(report: reports.Funnel) -> BarChart:
    largest = max((row.entered for row in report.stages), default=0)
    rows = []
    for row in report.stages:
        entered = Bar(_pct(row.entered, largest), str(row.entered), "entered")
        bars = [entered]
        description = _("%(stage)s: %(entered)d entered") % {
            "stage": row.stage.label,
            "entered": row.entered,
        }
        if row.converted is not None:
            conversion = f"{row.conversion:g}%" if row.conversion is not None else "–"
            bars.append(
                Bar(
                    _pct(row.converted, largest),
                    f"{row.converted} ({conversion})",
                    "converted",
                )
            )
            description += ", " + _("%(converted)d went on (%(conversion)s)") % {
                "converted": row.converted,
                "conversion": conversion,
            }
        rows.append(ChartRow(row.stage.label, bars, description=description))
    return BarChart(
        _("Funnel"),
        rows,
        [("entered", _("Entered")), ("converted", _("Went on to a later stage"))],
    )


def dwell_chart(report: reports.TimeInStage, bottleneck: reports.Bottleneck) -> BarChart:
    shown = [row for row in report.stages if row.left.count or row.limit_days]
    largest = max(
        (
            value
            for row in shown
            for value in (row.left.median_days, row.left.average_days, row.limit_days)
            if value is not None
        ),
        default=0,
    )
    worst = bottleneck.stage.stage.pk if bottleneck.stage else None
    rows = []
    for row in shown:
        over = row.limit_days is not None and (row.left.median_days or 0) > row.limit_days
        css = "over" if over else ""
        label = row.stage.label
        if row.stage.pk == worst:
            label = _("%(stage)s (bottleneck)") % {"stage": label}
        median = Bar(
            _pct(row.left.median_days, largest), _days(row.left.median_days), f"median {css}"
        )
        average = Bar(
            _pct(row.left.average_days, largest), _days(row.left.average_days), f"average {css}"
        )
        marker = _x(_pct(row.limit_days, largest)) if row.limit_days else ""
        rows.append(
            ChartRow(
                label,
                [median, average],
                marker=marker,
                marker_text=_("limit %(days)s") % {"days": _days(row.limit_days)},
                description=_("%(stage)s: median %(median)s, average %(average)s, limit %(limit)s")
                % {
                    "stage": row.stage.label,
                    "median": _days(row.left.median_days),
                    "average": _days(row.left.average_days),
                    "limit": _days(row.limit_days),
                },
            )
        )
    return BarChart(
        _("Time in stage"),
        rows,
        [
            ("median", _("Median")),
            ("average", _("Average")),
            ("limit", _("Expected maximum")),
            ("over", _("Over the expected maximum")),
        ],
    )


def moves_chart(report: reports.Moves) -> BarChart:
    largest = max((max(row.backward, row.value_drops) for row in report.stages), default=0)
    rows = [
        ChartRow(
            row.stage.label,
            [
                Bar(_pct(row.backward, largest), str(row.backward), "backward"),
                Bar(_pct(row.value_drops, largest), str(row.value_drops), "drops"),
            ],
            description=_("%(stage)s: %(backward)d moved back, %(drops)d value drops")
            % {"stage": row.stage.label, "backward": row.backward, "drops": row.value_drops},
        )
        for row in report.stages
    ]
    return BarChart(
        _("Backward moves and value drops"),
        rows,
        [("backward", _("Moved back")), ("drops", _("Value dropped"))],
    )


def value_charts(report: reports.PipelineValue) -> list[dict[str, Any]]:
    """Per currency, value and weighted value by stage and by owner."""
    currencies = [total.currency for total in report.totals]
    charts = []
    for currency in currencies:

        def bars(
            rows: list[tuple[str, list[reports.CurrencyValue]]],
            title: str,
            currency: str = currency,
        ) -> BarChart:
            found = [
                (label, next((v for v in values if v.currency == currency), None))
                for label, values in rows
            ]
            largest = max((v.amount for _label, v in found if v), default=0)
            chart_rows = []
            for label, v in found:
                amount = v.amount if v else Decimal(0)
                weighted = v.weighted if v else Decimal(0)
                chart_rows.append(
                    ChartRow(
                        label,
                        [
                            Bar(_pct(amount, largest), format_money(amount, currency), "amount"),
                            Bar(
                                _pct(weighted, largest),
                                format_money(weighted, currency),
                                "weighted",
                            ),
                        ],
                        description=_("%(label)s: value %(amount)s, weighted %(weighted)s")
                        % {
                            "label": label,
                            "amount": format_money(amount, currency),
                            "weighted": format_money(weighted, currency),
                        },
                    )
                )
            return BarChart(
                title,
                chart_rows,
                [("amount", _("Value")), ("weighted", _("Weighted value"))],
            )

        charts.append(
            {
                "currency": currency,
                "by_stage": bars(
                    [(s.stage.label, s.values) for s in report.stages],
                    _("Value by stage (%(currency)s)") % {"currency": currency},
                ),
                "by_owner": bars(
                    [(o.owner_name, o.values) for o in report.owners],
                    _("Value by owner (%(currency)s)") % {"currency": currency},
                ),
            }
        )
    return charts


def trend_charts(report: reports.Trend) -> list[dict[str, Any]]:
    """Per currency, the lines of value and weighted value per day, in viewBox units."""
    charts = []
    for series in report.series:
        points = series.points
        largest = max((p.amount for p in points), default=Decimal(0)) or Decimal(1)
        first, last = points[0].day, points[-1].day
        span = max(1, (last - first).days)

        def place(
            day: Any,
            amount: Decimal,
            largest: Decimal = largest,
            first: Any = first,
            span: int = span,
        ) -> str:
            x = TREND_LEFT + (TREND_RIGHT - TREND_LEFT) * (day - first).days / span
            y = TREND_BOTTOM - (TREND_BOTTOM - TREND_TOP) * float(amount) / float(largest)
            return f"{x:.1f},{y:.1f}"

        charts.append(
            {
                "currency": series.currency,
                "amount_line": " ".join(place(p.day, p.amount) for p in points),
                "weighted_line": " ".join(place(p.day, p.weighted) for p in points),
                "dots": [
                    {
                        "xy": place(p.day, p.amount).split(","),
                        "text": f"{p.day.isoformat()}: {format_money(p.amount, series.currency)}",
                    }
                    for p in points
                ],
                "first": first,
                "last": last,
                "largest": format_money(largest, series.currency),
                "rows": [
                    {
                        "day": p.day,
                        "records": p.records,
                        "amount": format_money(p.amount, series.currency),
                        "weighted": format_money(p.weighted, series.currency),
                    }
                    for p in points
                ],
            }
        )
    return charts


def _money_list(values: list[reports.MoneyAmount]) -> str:
    return ", ".join(format_money(v.amount, v.currency) for v in values)


def _value_rows(values: list[reports.CurrencyValue]) -> list[dict[str, str]]:
    return [
        {
            "currency": v.currency,
            "records": v.records,
            "amount": format_money(v.amount, v.currency),
            "weighted": format_money(v.weighted, v.currency),
        }
        for v in values
    ]


# The page.


@login_required
@require_GET
def report_page(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        pipeline = reports.report_pipeline(request.user, pk)
    except NotFound as exc:
        raise Http404(exc.detail) from exc
    asked = {name: request.GET.get(name, "") for name in ("start", "end", "granularity")}
    context: dict[str, Any] = {
        "pipeline": pipeline,
        "granularities": GRANULARITY_CHOICES,
        "asked": asked,
        "errors": {},
    }
    try:
        period = reports.period(asked["start"], asked["end"], asked["granularity"])
    except ValidationFailed as exc:
        context["errors"] = exc.errors
        return render(request, "pipelines/report.html", context, status=422)
    context["asked"] = {
        "start": period.first_day.isoformat(),
        "end": period.last_day.isoformat(),
        "granularity": period.granularity,
    }
    context.update(_report_context(request, pipeline, period))
    return render(request, "pipelines/report.html", context)


def _report_context(request: HttpRequest, pipeline: Pipeline, period: reports.Period) -> dict:
    user = request.user
    start, end, granularity = period.start, period.end, period.granularity
    funnel = reports.funnel(user, pipeline, start, end, granularity)
    dwell = reports.time_in_stage(user, pipeline, start, end)
    bottleneck = reports.bottleneck(user, pipeline, start, end, dwell=dwell)
    moves = reports.moves(user, pipeline, start, end, granularity)
    value = reports.value(user, pipeline)
    trend = reports.trend(user, pipeline, start, end)
    return {
        "period": period,
        "now": clock.now(),
        "funnel": funnel,
        "funnel_chart": funnel_chart(funnel),
        "funnel_rows": [
            {"row": row, "cells": [bucket.stages[index] for bucket in funnel.buckets]}
            for index, row in enumerate(funnel.stages)
        ],
        "dwell": dwell,
        "dwell_chart": dwell_chart(dwell, bottleneck),
        "bottleneck": bottleneck,
        "moves": moves,
        "moves_chart": moves_chart(moves),
        "moves_rows": [
            {
                "stage": row.stage,
                "backward": row.backward,
                "value_drops": row.value_drops,
                "dropped": _money_list(row.dropped),
                "cells": [bucket.stages[index] for bucket in moves.buckets],
            }
            for index, row in enumerate(moves.stages)
        ],
        "value": value,
        "value_totals": _value_rows(value.totals),
        "value_stages": [
            {"stage": s.stage, "records": s.records, "values": _value_rows(s.values)}
            for s in value.stages
        ],
        "value_owners": [
            {"name": o.owner_name, "records": o.records, "values": _value_rows(o.values)}
            for o in value.owners
        ],
        "value_charts": value_charts(value),
        "trend_charts": trend_charts(trend),
        "trend_box": {"width": TREND_WIDTH, "height": TREND_HEIGHT},
    }


urlpatterns = [
    path("<int:pk>/reports/", report_page, name="reports"),
]
