"""The daily snapshot of every pipeline's open value, from which the trend report is drawn.

``take_snapshot(day)`` writes, per pipeline, one ``PipelineSnapshot`` row per stage, owner and
currency of the records in open stages: how many, their amount, and their weighted amount
(amount * probability / 100). Each pipeline is one ``INSERT ... SELECT`` of an aggregate, so
the cost does not grow with Python loops over records.

It is idempotent: a pipeline that already has rows for the day is skipped, and the insert
itself ends in ``ON CONFLICT DO NOTHING`` on the unique key (day, stage, owner, currency), so
two workers that start at the same moment write each row once. A worker killed half-way
leaves whole pipelines done or not done; the next sweep finishes the rest.

The sweeper runs on the first sweep after local midnight and takes the snapshot of the day
that just ended (the open value as it stood at its end). Once a process has done a day it
answers later sweeps that day without a query.
"""

import datetime as dt

from django.db import connections, router, transaction

from trellis.core import clock, sweep

from . import reports, subjects
from .models import Pipeline, PipelineSnapshot

# The last day this process finished; later sweeps that day cost nothing.
_done_day: dt.date | None = None


def take_snapshot(day: dt.date) -> int:
    """Record every pipeline's open value as of now under ``day``; the number of rows written
    (0 when the day was taken already)."""
    written = 0
    for pipeline in Pipeline.objects.order_by("pk"):
        try:
            subject = subjects.get(pipeline.object_type)
        except KeyError:
            continue
        if PipelineSnapshot.objects.filter(pipeline=pipeline, day=day).exists():
            continue
        written += _insert(pipeline, subject, day)
    return written


def _insert(pipeline: Pipeline, subject: subjects.Subject, day: dt.date) -> int:
    """One ``INSERT ... SELECT`` of the pipeline's open records grouped by stage, owner and
    currency; rows already there for the day are left alone."""
    records = subject.model._default_manager.filter(
        **{f"{subject.stage_field}__pipeline_id": pipeline.pk}
    )
    select = reports.open_value_rows(records, subject, "stage_key", "owner_key", "currency_key")
    database = router.db_for_write(PipelineSnapshot)
    connection = connections[database]
    sql, params = select.query.sql_with_params()
    q = connection.ops.quote_name
    meta = PipelineSnapshot._meta
    columns = ", ".join(
        q(meta.get_field(name).column)
        for name in (
            "day",
            "pipeline",
            "stage",
            "owner",
            "currency",
            "records",
            "amount",
            "weighted_amount",
        )
    )
    # Only names from the models are formatted in; values go as parameters. The WHERE keeps
    # SQLite from reading ON CONFLICT as part of the SELECT.
    statement = (
        f"INSERT INTO {q(meta.db_table)} ({columns}) "  # noqa: S608
        "SELECT %s, %s, s.stage_key, s.owner_key, s.currency_key, s.n_records, "
        "ROUND(s.amount_sum, 2), ROUND(s.weighted_sum / 100.0, 2) "
        f"FROM ({sql}) s WHERE s.n_records > 0 "
        "ON CONFLICT DO NOTHING"
    )
    with transaction.atomic(using=database), connection.cursor() as cursor:
        cursor.execute(
            statement,
            (connection.ops.adapt_datefield_value(day), pipeline.pk, *params),
        )
        return max(cursor.rowcount, 0)


def sweep_snapshots() -> int:
    """Take yesterday's snapshot on the first sweep of the local day; nothing after that."""
    global _done_day
    day = clock.today() - dt.timedelta(days=1)
    if _done_day == day:
        return 0
    written = take_snapshot(day)
    _done_day = day
    return written


sweep.register("pipeline-snapshots", sweep_snapshots)
