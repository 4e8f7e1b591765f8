"""Pipeline reports: the funnel, time in stage and the bottleneck, backward moves and value
drops, pipeline value, and its trend from the daily snapshots.

The funnel and the time spent in stages by the records that left them read the daily sums
that every move keeps (``rollups``): thousands of rows for a period rather than millions of
moves. Everything else is an aggregate computed by the database over ``StageChange`` rows or
over the subject's own table; no report loops over rows in Python. Every report honours record
visibility: the stage changes counted are those of records ``visible(user, model)`` returns,
and the daily sums are those of owners whose records the user may see (``owner_filter``). For
a user who sees every record the restriction is left out.

Medians come from histograms, never from sorting rows (SQLite has no ``percentile_cont``):
counts and sums of stays per bucket, and the mean of the bucket that holds the middle stay.
Value drops compare a move's amount with the record's previous move through ``LAG() OVER``
(SQLite 3.25+, PostgreSQL).

A period is ``[start, end)``; buckets (week from Monday, month, quarter) are local calendar
periods in the server's time zone.
"""

import datetime as dt
import functools
import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import (
    Case,
    Count,
    DateField,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, Floor, Lag, Trunc
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from trellis.core import clock, registry
from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.models import Scope, User
from trellis.core.visibility import can, right, subordinate_ids, visible

from . import services, subjects
from .models import (
    BlackoutWindow,
    Pipeline,
    PipelineSnapshot,
    Stage,
    StageChange,
    StageDay,
    StageDwellBucket,
)
from .rollups import limit_days

GRANULARITIES = ("week", "month", "quarter")
# A period longer than this, or one cut into more buckets, is refused: it would draw an
# unreadable chart and cost a long query.
MAX_PERIOD_DAYS = 3660
MAX_BUCKETS = 260
# How many stuck records the bottleneck lists (the oldest first); the count covers all.
STUCK_ROWS = 20

DAY_SECONDS = 86400.0
CENT = Decimal("0.01")
_LOST = Stage.Kind.LOST
_OPEN = Stage.Kind.OPEN


# The period and the pipeline.


@dataclass(frozen=True)
class Period:
    """Whole local days, ``first_day`` to ``last_day`` included, cut into ``granularity``."""

    first_day: dt.date
    last_day: dt.date
    granularity: str

    @property
    def start(self) -> dt.datetime:
        return _midnight(self.first_day)

    @property
    def end(self) -> dt.datetime:
        return _midnight(self.last_day + dt.timedelta(days=1))


def _midnight(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time()), timezone.get_current_timezone())


def default_period(today: dt.date | None = None) -> Period:
    """This month and the two before it, by month."""
    today = today or clock.today()
    first = today.replace(day=1)
    for _step in range(2):
        first = (first - dt.timedelta(days=1)).replace(day=1)
    return Period(first, today, "month")


def period(start: Any = None, end: Any = None, granularity: Any = None) -> Period:
    """The period a report is asked for, from text (ISO dates) or dates; what is not given
    comes from ``default_period``. Raises ``ValidationFailed`` naming ``start``, ``end`` or
    ``granularity``."""
    default = default_period()
    errors: dict[str, list[str]] = {}
    first = _day(start, "start", errors) or default.first_day
    last = _day(end, "end", errors) or default.last_day
    kind = granularity or default.granularity
    if kind not in GRANULARITIES:
        errors["granularity"] = [_("Choose week, month or quarter.")]
    if "start" not in errors and "end" not in errors:
        if last < first:
            errors["end"] = [_("The end of the period comes before its start.")]
        elif (last - first).days + 1 > MAX_PERIOD_DAYS:
            errors["end"] = [_("Choose a period of at most ten years.")]
        elif (
            "granularity" not in errors
            and len(bucket_starts(first, last + dt.timedelta(days=1), kind)) > MAX_BUCKETS
        ):
            errors["granularity"] = [
                _("This period has too many %(granularity)s buckets; choose a longer one.")
                % {"granularity": kind}
            ]
    if errors:
        raise ValidationFailed(errors, detail=_("The report's period is not valid."))
    return Period(first, last, kind)


def _day(value: Any, name: str, errors: dict[str, list[str]]) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        day = dt.date.fromisoformat(str(value).strip())
    except ValueError:
        errors[name] = [_("Give a date as YYYY-MM-DD.")]
        return None
    # A day next to the ends of the calendar cannot be turned into a period.
    if not (dt.date(1900, 1, 1) <= day <= dt.date(2999, 12, 31)):
        errors[name] = [_("Give a date between 1900 and 2999.")]
        return None
    return day


def report_pipeline(user: User, pk: Any) -> Pipeline:
    """The pipeline whose reports ``user`` asks for: they must be able to see records of its
    kind at all (which ones, visibility decides per report). Otherwise ``NotFound``."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotFound(_("No such pipeline.")) from None
    pipeline = Pipeline.objects.filter(pk=pk).first()
    if pipeline is None:
        raise NotFound(_("No such pipeline."))
    try:
        subjects.get(pipeline.object_type)
    except KeyError:
        raise NotFound(_("No such pipeline.")) from None
    if not can(user, "view", pipeline.object_type):
        raise NotFound(_("No such pipeline."))
    return pipeline


def _as_datetime(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return _midnight(value)


def _local_day(value: dt.datetime | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).date()
    return value


def _day_range(start: dt.datetime | dt.date, end: dt.datetime | dt.date) -> tuple[dt.date, dt.date]:
    """The local days ``[first, until)`` that ``[start, end)`` touches."""
    first, until = _local_day(start), _local_day(end)
    if isinstance(end, dt.datetime) and _as_datetime(until) < end:
        until += dt.timedelta(days=1)
    return first, until


# Buckets.


def bucket_start(day: dt.date, granularity: str) -> dt.date:
    if granularity == "week":
        return day - dt.timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


def _next_bucket(day: dt.date, granularity: str) -> dt.date:
    if granularity == "week":
        return day + dt.timedelta(days=7)
    months = 1 if granularity == "month" else 3
    month = day.month - 1 + months
    return dt.date(day.year + month // 12, month % 12 + 1, 1)


def bucket_starts(first: dt.date, end: dt.date, granularity: str) -> list[dt.date]:
    """The first days of the buckets that touch the days ``[first, end)``."""
    starts = []
    day = bucket_start(first, granularity)
    while day < end:
        starts.append(day)
        day = _next_bucket(day, granularity)
    return starts


def bucket_label(day: dt.date, granularity: str) -> str:
    if granularity == "week":
        year, week, _weekday = day.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "month":
        return f"{day.year}-{day.month:02d}"
    return f"{day.year} Q{(day.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class Bucket:
    start: dt.date
    label: str


def _buckets(start: dt.datetime, end: dt.datetime, granularity: str) -> list[Bucket]:
    first = _local_day(start)
    last = _local_day(end - dt.timedelta(microseconds=1))
    return [
        Bucket(day, bucket_label(day, granularity))
        for day in bucket_starts(first, last + dt.timedelta(days=1), granularity)
    ]


def _bucket_of(value: Any) -> dt.date:
    """A bucket as a raw query returns it: a date, a datetime, or text on SQLite."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _trunc(name: str, granularity: str) -> Trunc:
    return Trunc(
        name, granularity, output_field=DateField(), tzinfo=timezone.get_current_timezone()
    )


# Visibility and the rows reports start from.


def _visible_ids(user: User, subject: subjects.Subject) -> QuerySet | None:
    """The ids of the subject's records ``user`` may see; ``None`` when they see them all."""
    if right(user, subject.object_type)[0] == Scope.ALL:
        return None
    return visible(user, subject.model).order_by().values("pk")


def _changes(user: User, pipeline: Pipeline, subject: subjects.Subject) -> QuerySet:
    """The pipeline's stage changes of records ``user`` may see."""
    changes = StageChange.objects.filter(pipeline=pipeline).order_by()
    ids = _visible_ids(user, subject)
    if ids is not None:
        changes = changes.filter(object_id__in=ids)
    return changes


def _records(user: User, pipeline: Pipeline, subject: subjects.Subject) -> QuerySet:
    """The subject's records ``user`` may see that are in the pipeline now."""
    return (
        visible(user, subject.model)
        .filter(**{f"{subject.stage_field}__pipeline": pipeline})
        .order_by()
    )


def _stages(pipeline: Pipeline) -> list[Stage]:
    """The pipeline's stages in order, retired ones included: history may point at them."""
    return list(Stage.objects.filter(pipeline=pipeline).order_by("order", "pk"))


def _shown(stages: list[Stage], used: Iterable[int]) -> list[Stage]:
    """Active stages, and retired ones only where there is something to show."""
    used = set(used)
    return [s for s in stages if s.is_active or s.pk in used]


def _has_field(model: Any, name: str) -> bool:
    try:
        model._meta.get_field(name)
    except Exception:
        return False
    return True


def _owner_names(ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {pk for pk in ids if pk is not None}
    return {user.pk: str(user) for user in User.objects.filter(pk__in=wanted)}


def _money(value: Any) -> Decimal:
    if value is None:
        return Decimal(0).quantize(CENT)
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def _raw(queryset: QuerySet, outer: str, params: Iterable[Any] = ()) -> list[tuple]:
    """Run ``outer`` with each ``{inner}`` replaced by the SQL of ``queryset`` (and its
    parameters repeated for each), then ``params``, on the queryset's database."""
    try:
        sql, inner_params = queryset.query.sql_with_params()
    except EmptyResultSet:
        return []
    copies = outer.count("{inner}")
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(outer.replace("{inner}", sql), (*inner_params * copies, *params))
        return cursor.fetchall()


class Seconds(Func):
    """Seconds from the second expression to the first, as a float, on both databases."""

    arity = 2
    output_field = FloatField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, tuple]:
        later, later_params = compiler.compile(self.source_expressions[0])
        earlier, earlier_params = compiler.compile(self.source_expressions[1])
        if connection.vendor == "sqlite":
            sql = f"((julianday({later}) - julianday({earlier})) * 86400.0)"
        else:
            # date_part is double precision; EXTRACT would compute in numeric, several times
            # slower over millions of rows.
            sql = f"date_part('epoch', {later} - {earlier})"
        return sql, (*later_params, *earlier_params)


# Funnel.


@dataclass
class FunnelStage:
    stage: Stage
    entered: int
    # Of those, how many went on to a later stage (other than a lost one); None for won and
    # lost stages, which have nowhere further to go.
    converted: int | None

    @property
    def conversion(self) -> float | None:
        """Percent, one decimal."""
        if self.converted is None or not self.entered:
            return None
        return round(100.0 * self.converted / self.entered, 1)


@dataclass
class FunnelBucket:
    bucket: Bucket
    stages: list[FunnelStage]


@dataclass
class Funnel:
    pipeline: Pipeline
    granularity: str
    stages: list[FunnelStage]
    buckets: list[FunnelBucket]


def funnel(
    user: User,
    pipeline: Pipeline,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    granularity: str = "month",
) -> Funnel:
    """Per stage, the entries into it in ``[start, end)`` and how many of those entries left
    forward to a later stage that is not lost (at any time up to now); the same per bucket.
    A record that comes back to a stage and enters it again counts again: each entry is a pass
    through the funnel. Read from the daily rollups (``rollups``)."""
    start, end = _as_datetime(start), _as_datetime(end)
    first, until = _day_range(start, end)
    stages = _stages(pipeline)
    rows = StageDay.objects.filter(pipeline=pipeline, day__gte=first, day__lt=until, entered__gt=0)
    owners = owner_filter(user, pipeline.object_type, "owner_pk")
    if owners is not None:
        rows = rows.filter(owners)
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_bucket: dict[tuple[int, dt.date], list[int]] = defaultdict(lambda: [0, 0])
    for row in (
        rows.order_by()
        .values("stage_id", "day")
        .annotate(entered_sum=Sum("entered"), converted_sum=Sum("converted"))
    ):
        bucket = bucket_start(_bucket_of(row["day"]), granularity)
        for cell in (totals[row["stage_id"]], by_bucket[row["stage_id"], bucket]):
            cell[0] += row["entered_sum"]
            cell[1] += row["converted_sum"]
    shown = _shown(stages, totals)

    def cell(stage: Stage, counts: list[int] | None) -> FunnelStage:
        entered, converted = counts or (0, 0)
        return FunnelStage(stage, entered, converted if stage.kind == _OPEN else None)

    return Funnel(
        pipeline=pipeline,
        granularity=granularity,
        stages=[cell(stage, totals.get(stage.pk)) for stage in shown],
        buckets=[
            FunnelBucket(
                bucket, [cell(stage, by_bucket.get((stage.pk, bucket.start))) for stage in shown]
            )
            for bucket in _buckets(start, end, granularity)
        ],
    )


# Time in stage.


@dataclass
class Dwell:
    """How long records stayed: how many, the average, the median and the longest, in days,
    and how many stayed longer than the stage's limit."""

    count: int = 0
    average_days: float | None = None
    median_days: float | None = None
    longest_days: float | None = None
    over_limit: int = 0


@dataclass
class OwnerDwell:
    owner_id: int | None
    owner_name: str
    dwell: Dwell


@dataclass
class StageDwell:
    stage: Stage
    limit_days: float | None
    # Records that left the stage in the period: time from entering it to leaving it.
    left: Dwell
    # Records in the stage now (open stages only): time since they entered it.
    current: Dwell
    owners: list[OwnerDwell] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """How far the median dwell of those who left exceeds the limit: median / limit."""
        return _ratio(self.left.median_days, self.limit_days)

    @property
    def average_ratio(self) -> float | None:
        return _ratio(self.left.average_days, self.limit_days)


def _ratio(days: float | None, limit: float | None) -> float | None:
    if days is None or not limit:
        return None
    return round(days / limit, 2)


@dataclass
class TimeInStage:
    pipeline: Pipeline
    stages: list[StageDwell]


def _days(seconds: Any) -> float | None:
    if seconds is None:
        return None
    return round(float(seconds) / DAY_SECONDS, 2)


def _left(
    user: User,
    pipeline: Pipeline,
    stages: list[Stage],
    start: dt.datetime,
    end: dt.datetime,
    *,
    owners: bool,
) -> tuple[dict[tuple, Dwell], dict[tuple, Dwell]]:
    """The stays of the records that left a stage in the period, per stage and per stage and
    owner (at the time of the move), from the daily rollups: counts and sums per bucket of
    stay give the average, the median and how many stayed over the stage's limit; the day
    rows give the longest."""
    first, until = _day_range(start, end)
    owner_rows = owner_filter(user, pipeline.object_type, "owner_pk")
    buckets = StageDwellBucket.objects.filter(pipeline=pipeline, day__gte=first, day__lt=until)
    days = StageDay.objects.filter(pipeline=pipeline, day__gte=first, day__lt=until)
    if owner_rows is not None:
        buckets, days = buckets.filter(owner_rows), days.filter(owner_rows)
    histograms: dict[tuple, dict[int, list]] = defaultdict(dict)
    for row in (
        buckets.order_by()
        .values("stage_id", "owner_pk", "bucket")
        .annotate(n=Sum("count"), total=Sum("dwell_sum"))
    ):
        keys = [(row["stage_id"],)] + ([(row["stage_id"], row["owner_pk"])] if owners else [])
        for key in keys:
            cell = histograms[key].setdefault(row["bucket"], [0, 0.0])
            cell[0] += row["n"]
            cell[1] += row["total"]
    longest: dict[tuple, float] = defaultdict(float)
    for row in days.order_by().values("stage_id", "owner_pk").annotate(most=Max("dwell_max")):
        keys = [(row["stage_id"],)] + ([(row["stage_id"], row["owner_pk"])] if owners else [])
        for key in keys:
            longest[key] = max(longest[key], row["most"])
    limits = {
        stage.pk: float(limit) * DAY_SECONDS
        for stage in stages
        if (limit := limit_days(stage)) is not None
    }
    per_stage, per_owner = {}, {}
    for key, histogram in histograms.items():
        dwell = _histogram_dwell(histogram, longest[key], limit=limits.get(key[0]))
        if len(key) == 1:
            per_stage[key] = dwell
        else:
            per_owner[key[0], key[1] or None] = dwell
    return per_stage, per_owner


def _histogram_dwell(
    histogram: dict[int, list],
    longest: float,
    *,
    limit: float | None = None,
    over: int | None = None,
) -> Dwell:
    """Count, average, median, longest and over-limit from buckets of (count, sum of stays):
    the median is the mean of the bucket holding the middle stay, or the mean of the two
    buckets holding the middle two. ``over`` the limit is given, or counted per bucket: a
    bucket is over ``limit`` when its mean is."""
    count = sum(n for n, _total in histogram.values())
    total = sum(total for _n, total in histogram.values())
    middle = {(count + 1) // 2, (count + 2) // 2}
    picked, seen = [], 0
    for bucket in sorted(histogram):
        n, bucket_total = histogram[bucket]
        picked += [bucket_total / n for position in middle if seen < position <= seen + n]
        seen += n
    if over is None:
        over = sum(n for n, total in histogram.values() if limit is not None and total / n > limit)
    return Dwell(
        count=count,
        average_days=_days(total / count),
        median_days=_days(sum(picked) / len(picked)),
        longest_days=_days(longest),
        over_limit=over,
    )


def _current(
    user: User, pipeline: Pipeline, subject: subjects.Subject, stages: list[Stage]
) -> dict[tuple, Dwell]:
    """Per open stage, the records in it now and how long they have been there.

    Counted from the records themselves (so deletions and changes of owner show at once), by
    whole days of stay in one hash aggregate that the (stage, entered) index covers for a user
    who sees everything; the medians come from the days as in ``_histogram_dwell``. Over the
    limit means entered before now minus the stage's limit: a comparison of the column, not
    arithmetic per row."""
    stage_id = subject.stage_field + "_id"
    entered = subject.entered_field
    now = clock.now()
    stay = Seconds(Value(now), F(entered))
    cutoffs = [
        Q(**{stage_id: stage.pk, f"{entered}__lt": now - dt.timedelta(days=float(limit))})
        for stage in stages
        if (limit := limit_days(stage)) is not None
    ]
    over = Count("pk", filter=functools.reduce(operator.or_, cutoffs)) if cutoffs else Value(0)
    rows = (
        visible(user, subject.model)
        .filter(
            **{
                f"{stage_id}__in": [stage.pk for stage in stages if stage.kind == _OPEN],
                f"{entered}__isnull": False,
            }
        )
        .order_by()
        .values(stage_key=F(stage_id), days=Floor(stay / DAY_SECONDS))
        .annotate(n=Count("pk"), total=Sum(stay), earliest=Min(entered), above=over)
    )
    histograms: dict[tuple, dict[int, list]] = defaultdict(dict)
    longest: dict[tuple, float] = defaultdict(float)
    above: dict[tuple, int] = defaultdict(int)
    for row in rows:
        key = (row["stage_key"],)
        histograms[key][int(row["days"])] = [row["n"], float(row["total"])]
        longest[key] = max(longest[key], (now - row["earliest"]).total_seconds())
        above[key] += row["above"]
    return {
        key: _histogram_dwell(histogram, longest[key], over=above[key])
        for key, histogram in histograms.items()
    }


def time_in_stage(
    user: User,
    pipeline: Pipeline,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    *,
    owners: bool = True,
) -> TimeInStage:
    """Per stage (and per stage and owner at the time of the move), the average and median
    time spent by the records that left the stage in ``[start, end)``; and, counted apart,
    the records in each open stage now and how long they have been there."""
    start, end = _as_datetime(start), _as_datetime(end)
    subject = subjects.get(pipeline.object_type)
    stages = _stages(pipeline)
    per_stage, per_owner = _left(user, pipeline, stages, start, end, owners=owners)
    current = _current(user, pipeline, subject, stages)
    names = _owner_names(owner for _stage, owner in per_owner)
    owner_rows: dict[int, list[OwnerDwell]] = defaultdict(list)
    for (stage_id, owner_id), dwell in per_owner.items():
        name = names.get(owner_id, _("(no owner)"))
        owner_rows[stage_id].append(OwnerDwell(owner_id, name, dwell))
    used = {key[0] for key in per_stage} | {key[0] for key in current}
    rows = []
    for stage in _shown(stages, used):
        limit = limit_days(stage)
        rows.append(
            StageDwell(
                stage=stage,
                limit_days=round(float(limit), 2) if limit is not None else None,
                left=per_stage.get((stage.pk,), Dwell()),
                current=current.get((stage.pk,), Dwell()),
                owners=sorted(
                    owner_rows.get(stage.pk, []), key=lambda o: (o.owner_name, o.owner_id or 0)
                ),
            )
        )
    return TimeInStage(pipeline, rows)


# The bottleneck.


@dataclass
class StuckRecord:
    id: int
    name: str
    owner_id: int | None
    owner_name: str
    entered_at: dt.datetime
    days: float
    url: str


@dataclass
class BlackoutSpan:
    window: BlackoutWindow
    first_day: dt.date
    last_day: dt.date

    @property
    def name(self) -> str:
        return str(self.window)

    @property
    def whole_pipeline(self) -> bool:
        return self.window.stage_id is None


@dataclass
class Bottleneck:
    pipeline: Pipeline
    # None when no stage's median dwell exceeds its limit.
    stage: StageDwell | None
    stuck: list[StuckRecord] = field(default_factory=list)
    stuck_count: int = 0
    blackouts: list[BlackoutSpan] = field(default_factory=list)


def bottleneck(
    user: User,
    pipeline: Pipeline,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    *,
    dwell: TimeInStage | None = None,
) -> Bottleneck:
    """The stage whose median dwell (of the records that left it in the period) exceeds its
    expected maximum by the largest ratio (the average's ratio breaks ties), with the records
    stuck there now (over the limit, oldest first) and the blackout windows that overlap the
    period for that stage. ``dwell`` reuses a time-in-stage report of the same period."""
    start, end = _as_datetime(start), _as_datetime(end)
    if dwell is None:
        dwell = time_in_stage(user, pipeline, start, end, owners=False)
    over = [row for row in dwell.stages if row.ratio is not None and row.ratio > 1]
    if not over:
        return Bottleneck(pipeline, None)
    worst = max(over, key=lambda row: (row.ratio, row.average_ratio or 0, -row.stage.order))
    subject = subjects.get(pipeline.object_type)
    stuck, count = _stuck(user, pipeline, subject, worst.stage)
    blackouts = blackout_spans(pipeline, worst.stage, _local_day(start), _local_day(end))
    return Bottleneck(pipeline, worst, stuck, count, blackouts)


def _stuck(
    user: User, pipeline: Pipeline, subject: subjects.Subject, stage: Stage
) -> tuple[list[StuckRecord], int]:
    limit = limit_days(stage)
    if limit is None:
        return [], 0
    now = clock.now()
    since = now - dt.timedelta(days=float(limit))
    entered = subject.entered_field
    records = _records(user, pipeline, subject).filter(
        **{subject.stage_field: stage, f"{entered}__lt": since}
    )
    has_owner = _has_field(subject.model, "owner")
    rows = records.order_by(entered, "pk")
    if has_owner:
        rows = rows.select_related("owner")
    detail = registry.get(subject.object_type).detail_url_name
    stuck = []
    for record in rows[:STUCK_ROWS]:
        owner = getattr(record, "owner", None) if has_owner else None
        at = getattr(record, entered)
        try:
            url = reverse(detail, args=[record.pk]) if detail else ""
        except NoReverseMatch:
            url = ""
        stuck.append(
            StuckRecord(
                id=record.pk,
                name=str(record),
                owner_id=owner.pk if owner else None,
                owner_name=str(owner) if owner else "",
                entered_at=at,
                days=round((now - at).total_seconds() / DAY_SECONDS, 2),
                url=url,
            )
        )
    count = len(stuck) if len(stuck) < STUCK_ROWS else records.count()
    return stuck, count


def blackout_spans(
    pipeline: Pipeline, stage: Stage | None, first: dt.date, end: dt.date
) -> list[BlackoutSpan]:
    """The blackout windows of the pipeline (whole, or of ``stage``) that overlap the days
    ``[first, end)``, each with the stretch of days it covers there; a window of weeks of
    every quarter gives one stretch per quarter. Weeks of a quarter count from its first day
    (week 1 is days 1 to 7); the last week ends with the quarter."""
    windows = BlackoutWindow.objects.filter(pipeline=pipeline).filter(
        Q(stage__isnull=True) | Q(stage=stage)
    )
    spans = [
        BlackoutSpan(window, since, until)
        for window in windows.order_by("pk")
        for since, until in services.blackout_spans(window, first, end)
    ]
    spans.sort(key=lambda span: (span.first_day, span.window.pk))
    return spans


# Backward moves and value drops.


@dataclass
class MoneyAmount:
    currency: str
    amount: Decimal


@dataclass
class StageMoves:
    stage: Stage
    # Moves back out of this stage to an earlier one.
    backward: int = 0
    # Moves out of this stage at a lower amount than when the record entered it (the value
    # dropped while the record was in this stage), and by how much, per currency.
    value_drops: int = 0
    dropped: list[MoneyAmount] = field(default_factory=list)


@dataclass
class MovesBucket:
    bucket: Bucket
    stages: list[StageMoves]


@dataclass
class Moves:
    pipeline: Pipeline
    granularity: str
    stages: list[StageMoves]
    buckets: list[MovesBucket]


def moves(
    user: User,
    pipeline: Pipeline,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
    granularity: str = "month",
) -> Moves:
    """Per stage a record left, and per bucket: backward moves out of it, and value drops —
    moves whose amount is lower than at the record's previous move in the same currency,
    found with ``LAG(amount) OVER`` the record's moves in time order."""
    start, end = _as_datetime(start), _as_datetime(end)
    subject = subjects.get(pipeline.object_type)
    stages = _stages(pipeline)
    moved = _changes(user, pipeline, subject).filter(at__gte=start, at__lt=end).values("object_id")

    def lag(name: str) -> Window:
        return Window(
            Lag(name),
            partition_by=[F("object_id")],
            order_by=[F("at").asc(), F("id").asc()],
        )

    # Earlier moves of the same records are needed for the previous amount; the period is
    # applied outside the window.
    inner = (
        StageChange.objects.filter(pipeline=pipeline, at__lt=end, object_id__in=moved)
        .order_by()
        .annotate(
            stage_key=F("from_stage_id"),
            bucket=_trunc("at", granularity),
            in_period=Case(When(at__gte=start, then=Value(1)), default=Value(0)),
            is_backward=Case(
                When(direction=StageChange.Direction.BACKWARD, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            ),
            prev_amount=lag("amount"),
            prev_currency=lag("currency"),
        )
        .values(
            "stage_key",
            "bucket",
            "in_period",
            "is_backward",
            "amount",
            "currency",
            "prev_amount",
            "prev_currency",
        )
    )
    drop = "amount < prev_amount AND currency = prev_currency"
    outer = (
        "SELECT stage_key, bucket, currency, SUM(is_backward), "  # noqa: S608
        f"SUM(CASE WHEN {drop} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {drop} THEN prev_amount - amount ELSE 0 END) "
        "FROM ({inner}) m WHERE in_period = 1 AND stage_key IS NOT NULL "
        "GROUP BY stage_key, bucket, currency"
    )
    totals: dict[int, StageMoves] = {}
    cells: dict[tuple[int, dt.date], StageMoves] = {}
    dropped: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    cell_dropped: dict[tuple[int, dt.date], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    by_pk = {stage.pk: stage for stage in stages}
    for stage_id, bucket, currency, backward, drops, lost in _raw(inner, outer):
        stage = by_pk.get(stage_id)
        if stage is None:
            continue
        day = _bucket_of(bucket)
        for target, key in ((totals, stage_id), (cells, (stage_id, day))):
            row = target.setdefault(key, StageMoves(stage))
            row.backward += int(backward or 0)
            row.value_drops += int(drops or 0)
        if drops:
            dropped[stage_id][currency or ""] += _money(lost)
            cell_dropped[(stage_id, day)][currency or ""] += _money(lost)
    for key, row in totals.items():
        row.dropped = [MoneyAmount(c, a) for c, a in sorted(dropped[key].items())]
    for key, row in cells.items():
        row.dropped = [MoneyAmount(c, a) for c, a in sorted(cell_dropped[key].items())]
    shown = _shown(stages, totals)
    return Moves(
        pipeline=pipeline,
        granularity=granularity,
        stages=[totals.get(stage.pk) or StageMoves(stage) for stage in shown],
        buckets=[
            MovesBucket(
                bucket,
                [cells.get((stage.pk, bucket.start)) or StageMoves(stage) for stage in shown],
            )
            for bucket in _buckets(start, end, granularity)
        ],
    )


# Pipeline value.


@dataclass
class CurrencyValue:
    currency: str
    records: int
    amount: Decimal
    weighted: Decimal


@dataclass
class StageValue:
    stage: Stage
    records: int
    values: list[CurrencyValue]


@dataclass
class OwnerValue:
    owner_id: int | None
    owner_name: str
    records: int
    values: list[CurrencyValue]


@dataclass
class PipelineValue:
    pipeline: Pipeline
    has_amounts: bool
    records: int
    totals: list[CurrencyValue]
    stages: list[StageValue]
    owners: list[OwnerValue]


def open_value_rows(queryset: QuerySet, subject: subjects.Subject, *group: str) -> QuerySet:
    """The records of ``queryset`` in open stages, grouped by ``group`` (names among
    ``stage_key``, ``owner_key``, ``currency_key``): count, amount, and amount * probability
    summed (divide by 100 for the weighted value): ``n_records``, ``amount_sum``,
    ``weighted_sum``. The probability is the record's own where
    the subject keeps one, else its stage's."""
    stage = subject.stage_field
    keys: dict[str, Any] = {
        "stage_key": F(stage + "_id"),
        "owner_key": F("owner_id") if _has_field(queryset.model, "owner") else Value(None),
        "currency_key": F(subject.currency_field) if subject.currency_field else Value(""),
    }
    money = DecimalField(max_digits=30, decimal_places=2)
    amount = F(subject.amount_field) if subject.amount_field else Value(0, output_field=money)
    probability = F(subject.probability_field or f"{stage}__probability")
    return (
        queryset.filter(**{f"{stage}__kind": _OPEN})
        .order_by()
        .values(**{name: keys[name] for name in group})
        .annotate(
            n_records=Count("pk"),
            amount_sum=Coalesce(Sum(amount, output_field=money), Value(0, output_field=money)),
            weighted_sum=Coalesce(
                Sum(ExpressionWrapper(amount * probability, output_field=money)),
                Value(0, output_field=money),
            ),
        )
    )


def value(user: User, pipeline: Pipeline) -> PipelineValue:
    """The records in the pipeline's open stages now: their value and weighted value
    (amount * probability / 100) by stage and by owner, per currency."""
    subject = subjects.get(pipeline.object_type)
    records = _records(user, pipeline, subject)
    stages = _stages(pipeline)

    def amounts(rows: list[dict]) -> list[CurrencyValue]:
        merged: dict[str, list] = {}
        for row in rows:
            slot = merged.setdefault(row["currency_key"] or "", [0, Decimal(0), Decimal(0)])
            slot[0] += row["n_records"]
            slot[1] += Decimal(row["amount_sum"])
            slot[2] += Decimal(row["weighted_sum"])
        return [
            CurrencyValue(currency, count, _money(amount), _money(weighted / 100))
            for currency, (count, amount, weighted) in sorted(merged.items())
        ]

    per_stage: dict[int, list[dict]] = defaultdict(list)
    for row in open_value_rows(records, subject, "stage_key", "currency_key"):
        per_stage[row["stage_key"]].append(row)
    per_owner: dict[int | None, list[dict]] = defaultdict(list)
    for row in open_value_rows(records, subject, "owner_key", "currency_key"):
        per_owner[row["owner_key"]].append(row)
    names = _owner_names(per_owner)
    stage_rows = [
        StageValue(
            stage, sum(r["n_records"] for r in per_stage[stage.pk]), amounts(per_stage[stage.pk])
        )
        for stage in stages
        if stage.kind == _OPEN and (stage.is_active or stage.pk in per_stage)
    ]
    owner_rows = sorted(
        (
            OwnerValue(
                owner,
                names.get(owner, _("(no owner)")),
                sum(r["n_records"] for r in rows),
                amounts(rows),
            )
            for owner, rows in per_owner.items()
        ),
        key=lambda row: (row.owner_name, row.owner_id or 0),
    )
    all_rows = [row for rows in per_stage.values() for row in rows]
    return PipelineValue(
        pipeline=pipeline,
        has_amounts=bool(subject.amount_field),
        records=sum(row["n_records"] for row in all_rows),
        totals=amounts(all_rows),
        stages=stage_rows,
        owners=owner_rows,
    )


# Trend.


@dataclass
class TrendPoint:
    day: dt.date
    records: int
    amount: Decimal
    weighted: Decimal


@dataclass
class TrendSeries:
    currency: str
    points: list[TrendPoint]


@dataclass
class Trend:
    pipeline: Pipeline
    series: list[TrendSeries]


def owner_filter(user: User, object_type: str, field: str) -> Q | None:
    """Which rows kept per owner (snapshots, rollups) ``user`` may count: such rows keep the
    owner at the time, not the record, so visibility is applied by that owner: all, their
    own, their subordinates', or their team's members' and their own for a team scope.
    ``None`` when they may count every row."""
    scope = right(user, object_type)[0]
    if scope == Scope.ALL:
        return None
    if scope == Scope.OWN or (scope == Scope.TEAM and user.team_id is None):
        return Q(**{field: user.pk})
    if scope == Scope.SUBORDINATES:
        return Q(**{f"{field}__in": subordinate_ids(user)})
    if scope == Scope.TEAM:
        members = User.objects.filter(team_id=user.team_id).values("pk")
        return Q(**{f"{field}__in": members}) | Q(**{field: user.pk})
    return Q(pk__in=[])


def trend(
    user: User,
    pipeline: Pipeline,
    start: dt.datetime | dt.date,
    end: dt.datetime | dt.date,
) -> Trend:
    """The pipeline's open value per day of ``[start, end)`` and per currency, from the daily
    snapshots: records, value and weighted value."""
    first, until = _day_range(start, end)
    rows = PipelineSnapshot.objects.filter(pipeline=pipeline, day__gte=first, day__lt=until)
    owners = owner_filter(user, pipeline.object_type, "owner_id")
    if owners is not None:
        rows = rows.filter(owners)
    series: dict[str, list[TrendPoint]] = defaultdict(list)
    for row in (
        rows.order_by()
        .values("day", "currency")
        .annotate(n=Sum("records"), total=Sum("amount"), weighted_total=Sum("weighted_amount"))
        .order_by("currency", "day")
    ):
        series[row["currency"]].append(
            TrendPoint(row["day"], row["n"], _money(row["total"]), _money(row["weighted_total"]))
        )
    return Trend(pipeline, [TrendSeries(c, points) for c, points in sorted(series.items())])
