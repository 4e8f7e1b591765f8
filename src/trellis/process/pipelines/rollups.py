"""The stage changes summed per day ahead of time, for the funnel and time-in-stage reports.

Summing millions of moves when a report is asked for takes seconds; summing them as they
happen costs each move a few upserts. Every move adds to at most four rows, keyed by stage,
local day and owner (the record's owner at the time of the move):

- the entered stage's ``StageDay`` of the day: ``entered`` + 1;
- the left stage's ``StageDay`` of the day: the longest stay;
- the left stage's ``StageDwellBucket`` of the day and of the stay's bucket: ``count`` + 1
  and ``dwell_sum`` + the stay, from which averages and medians are read;
- when the record leaves forward to a stage that is not lost, the left stage's ``StageDay``
  of the day it entered that stage, under the owner it had then: ``converted`` + 1.

The upserts add to what is there (``ON CONFLICT DO UPDATE SET n = n + excluded.n``), so
concurrent moves never lose a count, and they run in the move's transaction, so a move that
rolls back leaves no trace. ``rebuild`` computes the same rows from the ``StageChange`` rows
alone with the same ``Tally``; a test holds the two to each other.

Stays fall into buckets 2^(1/16) wide (about 4.4%) from one minute up. Each bucket keeps the
sum of its stays, so the median read from them is the mean of the bucket holding the middle
stay: exact when the stays in that bucket are equal, and never off by more than the bucket's
width.
"""

import datetime as dt
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from .models import Stage, StageChange, StageDay, StageDwellBucket

BUCKETS_PER_DOUBLING = 16
SHORTEST_BUCKETED = 60.0  # seconds; shorter stays share bucket 0
# A dwell limit in business days is compared with calendar time as five working days a week.
BUSINESS_WEEK = Decimal(7) / Decimal(5)
WRITE_BATCH = 5000

# Positions in a StageDay tally.
_ENTERED, _CONVERTED, _MAX = range(3)


def bucket_of(seconds: float) -> int:
    if seconds < SHORTEST_BUCKETED:
        return 0
    return 1 + int(BUCKETS_PER_DOUBLING * math.log2(seconds / SHORTEST_BUCKETED))


def limit_days(stage: Stage) -> Decimal | None:
    """The stage's expected maximum dwell in calendar days (business days as five a week)."""
    if stage.max_dwell_days is None:
        return None
    days = Decimal(stage.max_dwell_days)
    return days * BUSINESS_WEEK if stage.dwell_in_business_days else days


def local_day(moment: dt.datetime) -> dt.date:
    """The day a moment counts under: the server's time zone, as the reports' periods."""
    return timezone.localtime(moment, timezone.get_default_timezone()).date()


class Tally:
    """Rollup rows being summed: ``days`` and ``buckets`` keyed as their unique keys (with the
    pipeline first). ``lost`` holds the ids of lost stages: leaving for one is no conversion."""

    def __init__(self, lost: Iterable[int]):
        self.lost = set(lost)
        self.days: dict[tuple, list] = {}
        self.buckets: dict[tuple, list] = {}

    def _day(self, pipeline_id: int, stage_id: int, day: dt.date, owner: int) -> list:
        key = (pipeline_id, stage_id, day, owner)
        row = self.days.get(key)
        if row is None:
            row = self.days[key] = [0, 0, 0.0]
        return row

    def add(self, change: Any, previous: Any | None) -> None:
        """Count one move. ``change`` and ``previous`` (the record's move before it, or None)
        need the attributes of ``StageChange`` named in ``COLUMNS``."""
        owner = change.owner_id or 0
        day = local_day(change.at)
        self._day(change.pipeline_id, change.to_stage_id, day, owner)[_ENTERED] += 1
        left = change.from_stage_id
        if left is None or change.from_entered_at is None:
            return
        stay = max((change.at - change.from_entered_at).total_seconds(), 0.0)
        row = self._day(change.pipeline_id, left, day, owner)
        row[_MAX] = max(row[_MAX], stay)
        bucket = self.buckets.setdefault(
            (change.pipeline_id, left, day, owner, bucket_of(stay)), [0, 0.0]
        )
        bucket[0] += 1
        bucket[1] += stay
        went_on = (
            change.direction == StageChange.Direction.FORWARD
            and change.to_stage_id not in self.lost
        )
        # The entry being left is the record's previous move, when that move entered this
        # stage at the time the record says it did.
        if (
            went_on
            and previous is not None
            and previous.to_stage_id == left
            and previous.at == change.from_entered_at
        ):
            entry_day = local_day(change.from_entered_at)
            self._day(change.pipeline_id, left, entry_day, previous.owner_id or 0)[_CONVERTED] += 1

    def write(self) -> None:
        """Add the tally to the rows in the database."""
        _upsert(
            StageDay,
            ["pipeline", "stage", "day", "owner_pk"],
            ["entered", "converted", "dwell_max"],
            self.days,
            greatest={"dwell_max"},
        )
        _upsert(
            StageDwellBucket,
            ["pipeline", "stage", "day", "owner_pk", "bucket"],
            ["count", "dwell_sum"],
            self.buckets,
        )


# The columns of StageChange that the tally reads.
COLUMNS = (
    "pk",
    "content_type_id",
    "object_id",
    "pipeline_id",
    "from_stage_id",
    "to_stage_id",
    "direction",
    "at",
    "from_entered_at",
    "owner_id",
)


def add_move(change: StageChange, left: Stage | None, entered: Stage) -> None:
    """Count a move just written, in its transaction (called by the move service)."""
    previous = None
    if left is not None and change.direction == StageChange.Direction.FORWARD:
        previous = (
            StageChange.objects.filter(
                content_type_id=change.content_type_id, object_id=change.object_id
            )
            .exclude(pk=change.pk)
            .order_by("-at", "-pk")
            .only(*COLUMNS)
            .first()
        )
    tally = Tally([entered.pk] if entered.kind == Stage.Kind.LOST else [])
    tally.add(change, previous)
    tally.write()


def rebuild(pipeline_ids: Iterable[int] | None = None) -> int:
    """Recompute the rollups of the given pipelines (all by default) from their stage changes;
    the number of stage changes read. Moves made while it runs may be missed: run it while
    records are not being moved (after a bulk load, or to repair)."""
    changes = StageChange.objects.all()
    stages = Stage.objects.all()
    if pipeline_ids is not None:
        pipeline_ids = list(pipeline_ids)
        changes = changes.filter(pipeline_id__in=pipeline_ids)
        stages = stages.filter(pipeline_id__in=pipeline_ids)
    tally = Tally(stages.filter(kind=Stage.Kind.LOST).values_list("pk", flat=True))
    previous = None
    read = 0
    # In the order of the record index, so that each record's moves come together.
    rows = changes.order_by("content_type_id", "object_id", "at", "pk").only(*COLUMNS)
    for change in rows.iterator(chunk_size=WRITE_BATCH):
        same_record = previous is not None and (
            previous.content_type_id == change.content_type_id
            and previous.object_id == change.object_id
        )
        tally.add(change, previous if same_record else None)
        previous = change
        read += 1
    with transaction.atomic():
        for model in (StageDay, StageDwellBucket):
            rows_of = model.objects.all()
            if pipeline_ids is not None:
                rows_of = rows_of.filter(pipeline_id__in=pipeline_ids)
            rows_of.delete()
        tally.write()
    # Fresh statistics, or the planner takes the new rows for a handful and sorts them.
    connection = connections[router.db_for_write(StageDay)]
    with connection.cursor() as cursor:
        for model in (StageDay, StageDwellBucket):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return read


def _upsert(
    model: type,
    keys: list[str],
    values: list[str],
    rows: dict[tuple, list],
    *,
    greatest: set[str] = frozenset(),
) -> None:
    """Insert ``rows`` (key tuple -> values), adding the values to a row already there (or
    keeping the greater, for the names in ``greatest``)."""
    if not rows:
        return
    database = router.db_for_write(model)
    connection = connections[database]
    q = connection.ops.quote_name
    meta = model._meta
    table = q(meta.db_table)
    key_columns = [q(meta.get_field(name).column) for name in keys]
    value_columns = [q(meta.get_field(name).column) for name in values]
    bigger = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    updates = ", ".join(
        f"{column} = {bigger}({table}.{column}, excluded.{column})"
        if name in greatest
        else f"{column} = {table}.{column} + excluded.{column}"
        for name, column in zip(values, value_columns, strict=True)
    )
    width = len(keys) + len(values)
    # The unique key leaves out the pipeline, which the stage implies.
    conflict = ", ".join(key_columns[1:])
    day_at = keys.index("day")
    items = list(rows.items())
    size = min(WRITE_BATCH, (connection.features.max_query_params or 10**6) // width)
    with transaction.atomic(using=database), connection.cursor() as cursor:
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            placeholders = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(batch))
            params: list[Any] = []
            for key, value in batch:
                key = list(key)
                key[day_at] = connection.ops.adapt_datefield_value(key[day_at])
                params += [*key, *value]
            # Only names from the model are formatted in; every value is a parameter.
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(key_columns + value_columns)}) "  # noqa: S608
                f"VALUES {placeholders} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                params,
            )
