"""The approvals report: per process and per step, how many requests ran, how long the steps
took (median and 90th percentile), how many timed out and escalated, and the exception
requests per request, by kind, with the steps whose rate passes the process's alert threshold.

A request counts in the period it was submitted in (``[start, end)``, whole local days, as the
pipeline reports take them); its steps and its exception requests count with it, whenever they
happened, so a rate always divides things about the same requests. Steps are matched by their
position in the definition and named as the current version names them.

Visibility follows the pipeline reports: the report of a process is there for whoever may view
records of its object type at all, and counts only the requests about records they may see.

Everything is an aggregate computed by the database. The percentiles are exact and
interpolated as ``percentile_cont`` does it, on SQLite as well (which lacks it): a window
numbers each step's durations in order, and only the two rows around each percentile's
position come back.
"""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Count, DateField, Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Trunc
from django.utils import timezone
from django.utils.translation import gettext as _

from trellis.core import clock
from trellis.core.errors import NotFound
from trellis.core.models import Scope, User
from trellis.core.visibility import can, right, visible

from ..pipelines.reports import Period, Seconds, bucket_label, bucket_starts, period
from . import subjects
from .models import (
    ApprovalAssignment,
    ApprovalProcess,
    ApprovalProcessVersion,
    ApprovalRequest,
    ApprovalStepRun,
    ExceptionRequest,
)

__all__ = ["Period", "period", "report", "report_process"]

HOUR_SECONDS = 3600.0
# Beyond ten exception requests per request the threshold means nothing any more.
StepStatus = ApprovalStepRun.Status
Kinds = ExceptionRequest.Kind


def report_process(user: User, pk: Any) -> ApprovalProcess:
    """The process whose report ``user`` asks for: they must be able to see records of its
    kind at all. Otherwise ``NotFound``, as for a process that does not exist."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(_("No such approval process.")) from None
    process = ApprovalProcess.objects.filter(pk=pk).first() if 0 < pk < 2**63 else None
    if process is None:
        raise NotFound(_("No such approval process."))
    try:
        subjects.get(process.object_type)
    except KeyError:
        raise NotFound(_("No such approval process.")) from None
    if not can(user, "view", process.object_type):
        raise NotFound(_("No such approval process."))
    return process


def reportable(user: User) -> QuerySet[ApprovalProcess]:
    """The processes whose report ``user`` may open."""
    types = [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]
    return ApprovalProcess.objects.filter(object_type__in=types).order_by("object_type", "name")


# What the report holds.


@dataclass
class KindCount:
    kind: str
    label: str
    count: int = 0
    # Exception requests of this kind per request, in percent (one decimal).
    rate: float | None = None


@dataclass
class StepReport:
    index: int
    name: str
    # Requests of the period that reached the step (it had approvers), and its runs: a step
    # sent back and run again counts once more.
    requests: int = 0
    runs: int = 0
    # Runs that had nobody to ask: the step's condition was false.
    skipped: int = 0
    # Runs that ended approved or rejected; their durations give the median and p90.
    decided: int = 0
    median_hours: float | None = None
    p90_hours: float | None = None
    # Runs still waiting for a decision.
    waiting: int = 0
    # Runs that passed their due time: decided after it, escalated, or still waiting past it.
    timed_out: int = 0
    escalated: int = 0
    exceptions: list[KindCount] = field(default_factory=list)
    exception_count: int = 0
    exception_rate: float | None = None
    flagged: bool = False


@dataclass
class StatusCount:
    status: str
    label: str
    count: int


@dataclass
class BucketCount:
    start: dt.date
    label: str
    requests: int = 0
    exceptions: int = 0


@dataclass
class ApprovalReport:
    process: ApprovalProcess
    period: Period
    # The process's alert threshold in percent, or None for no alerts.
    threshold: int | None
    requests: int
    statuses: list[StatusCount]
    exceptions: list[KindCount]
    exception_count: int
    exception_rate: float | None
    steps: list[StepReport]
    buckets: list[BucketCount]

    @property
    def flagged(self) -> list[StepReport]:
        return [step for step in self.steps if step.flagged]


def _rate(count: int, requests: int) -> float | None:
    if not requests:
        return None
    return round(100.0 * count / requests, 1)


def _hours(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return round(seconds / HOUR_SECONDS, 2)


def _kinds(counts: dict[str, int], requests: int) -> list[KindCount]:
    return [
        KindCount(kind, label, counts.get(kind, 0), _rate(counts.get(kind, 0), requests))
        for kind, label in Kinds.choices
    ]


# The rows the report starts from.


def _requests(user: User, process: ApprovalProcess, period: Period) -> QuerySet[ApprovalRequest]:
    """The process's requests submitted in the period about records ``user`` may see."""
    requests = ApprovalRequest.objects.filter(
        process=process, submitted_at__gte=period.start, submitted_at__lt=period.end
    ).order_by()
    if right(user, process.object_type)[0] != Scope.ALL:
        model = subjects.get(process.object_type).model
        requests = requests.filter(object_id__in=visible(user, model).order_by().values("pk"))
    return requests


def _step_names(process: ApprovalProcess, used: set[int]) -> dict[int, str]:
    """Each position's name in the current version, else in the latest version that has it."""
    names: dict[int, str] = {}
    versions = ApprovalProcessVersion.objects.filter(process=process).order_by("-number")
    for steps in versions.values_list("steps", flat=True):
        for index, step in enumerate(steps):
            names.setdefault(index, step.get("name") or "")
        if used <= names.keys():
            break
    return names


def _percentiles(runs: QuerySet[ApprovalStepRun]) -> dict[int, tuple[float, float]]:
    """Per step position, the median and the 90th percentile of the decided runs' durations
    in seconds, interpolated between the two nearest ranks (as ``percentile_cont``)."""
    inner = runs.values(idx=F("index"), secs=Seconds(F("finished_at"), F("started_at")))
    try:
        sql, params = inner.query.sql_with_params()
    except EmptyResultSet:
        return {}
    # Ranks from 0; integer division is a floor on both databases for these non-negatives.
    outer = (
        "SELECT idx, pos, n, secs FROM ("  # noqa: S608
        "SELECT idx, secs, ROW_NUMBER() OVER (PARTITION BY idx ORDER BY secs) - 1 AS pos, "
        "COUNT(*) OVER (PARTITION BY idx) AS n "
        f"FROM ({sql}) d) ranked "
        "WHERE pos IN ((n - 1) / 2, n / 2, ((n - 1) * 9) / 10, ((n - 1) * 9 + 9) / 10)"
    )
    values: dict[int, dict[int, float]] = defaultdict(dict)
    sizes: dict[int, int] = {}
    with connections[inner.db].cursor() as cursor:
        cursor.execute(outer, params)
        for idx, pos, n, secs in cursor.fetchall():
            values[idx][int(pos)] = max(0.0, float(secs))
            sizes[idx] = int(n)

    def at(idx: int, tenths: int) -> float:
        n = sizes[idx]
        low, rest = divmod((n - 1) * tenths, 10)
        high = low + (1 if rest else 0)
        return values[idx][low] + (values[idx][high] - values[idx][low]) * rest / 10

    return {idx: (at(idx, 5), at(idx, 9)) for idx in sizes}


# The report.


def report(user: User, process: ApprovalProcess, period: Period) -> ApprovalReport:
    """The figures of ``process`` for the requests submitted in ``period`` that ``user`` may
    see (``report_process`` has checked that they may see the process at all)."""
    requests = _requests(user, process, period)
    now = clock.now()

    statuses = {
        row["status"]: row["n"] for row in requests.values("status").annotate(n=Count("pk"))
    }
    total = sum(statuses.values())

    runs = ApprovalStepRun.objects.filter(request__in=requests.values("pk")).order_by()
    asked = Exists(ApprovalAssignment.objects.filter(step_run=OuterRef("pk")))
    runs = runs.annotate(asked=asked)
    decided = Q(asked=True, status__in=[StepStatus.APPROVED, StepStatus.REJECTED])
    late = (
        Q(escalated_at__isnull=False)
        | Q(finished_at__gt=F("due_at"))
        | Q(status=StepStatus.PENDING, due_at__lt=now)
    )
    per_step = {
        row["index"]: row
        for row in runs.values("index").annotate(
            n_requests=Count("request", distinct=True, filter=Q(asked=True)),
            n_runs=Count("pk", filter=Q(asked=True)),
            n_skipped=Count("pk", filter=Q(asked=False)),
            n_decided=Count("pk", filter=decided),
            n_waiting=Count("pk", filter=Q(asked=True, status=StepStatus.PENDING)),
            n_late=Count("pk", filter=Q(asked=True) & late),
            n_escalated=Count("pk", filter=Q(escalated_at__isnull=False)),
        )
    }
    percentiles = _percentiles(runs.filter(decided, finished_at__isnull=False))

    exceptions = ExceptionRequest.objects.filter(request__in=requests.values("pk")).order_by()
    by_step: dict[int | None, dict[str, int]] = defaultdict(dict)
    for row in exceptions.values("step_index", "kind").annotate(n=Count("pk")):
        by_step[row["step_index"]][row["kind"]] = row["n"]
    by_kind: dict[str, int] = defaultdict(int)
    for counts in by_step.values():
        for kind, n in counts.items():
            by_kind[kind] += n
    exception_count = sum(by_kind.values())

    threshold = process.exception_alert_pct
    positions = set(per_step) | {i for i in by_step if i is not None}
    names = _step_names(process, positions)
    steps = []
    for index in sorted(positions | set(names)):
        row = per_step.get(index, {})
        reached = row.get("n_requests", 0)
        counts = by_step.get(index, {})
        count = sum(counts.values())
        median, p90 = percentiles.get(index, (None, None))
        rate = _rate(count, reached)
        steps.append(
            StepReport(
                index=index,
                name=names.get(index) or _("Step %(n)d") % {"n": index + 1},
                requests=reached,
                runs=row.get("n_runs", 0),
                skipped=row.get("n_skipped", 0),
                decided=row.get("n_decided", 0),
                median_hours=_hours(median),
                p90_hours=_hours(p90),
                waiting=row.get("n_waiting", 0),
                timed_out=row.get("n_late", 0),
                escalated=row.get("n_escalated", 0),
                exceptions=_kinds(counts, reached),
                exception_count=count,
                exception_rate=rate,
                flagged=threshold is not None and rate is not None and rate > threshold,
            )
        )

    return ApprovalReport(
        process=process,
        period=period,
        threshold=threshold,
        requests=total,
        statuses=[
            StatusCount(status, label, statuses.get(status, 0))
            for status, label in ApprovalRequest.Status.choices
        ],
        exceptions=_kinds(by_kind, total),
        exception_count=exception_count,
        exception_rate=_rate(exception_count, total),
        steps=steps,
        buckets=_buckets(requests, exceptions, period),
    )


def _trunc(name: str, granularity: str) -> Trunc:
    return Trunc(
        name, granularity, output_field=DateField(), tzinfo=timezone.get_current_timezone()
    )


def _buckets(
    requests: QuerySet[ApprovalRequest], exceptions: QuerySet[ExceptionRequest], period: Period
) -> list[BucketCount]:
    """Requests submitted per bucket of the period, and their exception requests."""
    kind = period.granularity
    buckets = {
        start: BucketCount(start, bucket_label(start, kind))
        for start in bucket_starts(period.first_day, period.last_day + dt.timedelta(days=1), kind)
    }
    for row in requests.values(bucket=_trunc("submitted_at", kind)).annotate(n=Count("pk")):
        if row["bucket"] in buckets:
            buckets[row["bucket"]].requests = row["n"]
    rows = exceptions.values(bucket=_trunc("request__submitted_at", kind)).annotate(n=Count("pk"))
    for row in rows:
        if row["bucket"] in buckets:
            buckets[row["bucket"]].exceptions = row["n"]
    return list(buckets.values())


# The report's one setting.
