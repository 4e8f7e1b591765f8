"""Counters kept in rows that many processes bump at once: rate limits, number sequences.

``increment`` is one ``INSERT ... ON CONFLICT ... DO UPDATE ... RETURNING`` on PostgreSQL and on
SQLite (3.35+): no read first, no lost increment, no savepoint to recover from a race.
``increment_many`` bumps many rows of one table in one such statement.
"""

from collections.abc import Mapping
from typing import Any

from django.db import connection, models


def increment(model: type[models.Model], field: str, by: int = 1, **key: Any) -> int:
    """Add ``by`` to ``field`` of the row identified by ``key`` (created at ``by``); the new
    value.

    ``key`` must name the columns of a unique constraint of ``model``.
    """
    (name, value), *common = key.items()
    return increment_many(model, field, name, {value: by}, **dict(common))[value]


def increment_many(
    model: type[models.Model],
    field: str,
    name: str,
    amounts: Mapping[Any, int],
    **common: Any,
) -> dict[Any, int]:
    """Add ``amounts[v]`` to ``field`` of the row whose column ``name`` is ``v`` and whose other
    key columns are ``common`` (each row created at its amount), in one statement; the new
    value of each row, by ``v``.

    ``name`` and ``common`` together must name the columns of a unique constraint of
    ``model``; ``name`` should be a text or integer column, whose values come back from the
    database as they went in. The rows are written in the order of their ``v``: two
    transactions that bump overlapping rows then wait for each other instead of
    deadlocking.
    """
    if not amounts:
        return {}
    quote = connection.ops.quote_name
    meta = model._meta
    table = quote(meta.db_table)
    varying = quote(meta.get_field(name).column)
    columns = [varying, *(quote(meta.get_field(column).column) for column in common)]
    counter = quote(meta.get_field(field).column)
    row = f"({', '.join(['%s'] * (len(columns) + 1))})"
    values = sorted(amounts)
    # Only names from the model are formatted in; values go as parameters.
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}, {counter}) "  # noqa: S608
        f"VALUES {', '.join([row] * len(values))} "
        f"ON CONFLICT ({', '.join(columns)}) "
        f"DO UPDATE SET {counter} = {table}.{counter} + excluded.{counter} "
        f"RETURNING {varying}, {counter}"
    )
    parameters = [p for v in values for p in (v, *common.values(), amounts[v])]
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return dict(cursor.fetchall())
