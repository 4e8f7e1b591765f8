"""Counters kept in rows that many processes bump at once: rate limits, number sequences.

``increment`` is one ``INSERT ... ON CONFLICT ... DO UPDATE ... RETURNING`` on PostgreSQL and on
SQLite (3.35+): no read first, no lost increment, no savepoint to recover from a race.
"""

from typing import Any

from django.db import connection, models


def increment(model: type[models.Model], field: str, **key: Any) -> int:
    """Add one to ``field`` of the row identified by ``key`` (created at 1); the new value.

    ``key`` must name the columns of a unique constraint of ``model``.
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = [quote(model._meta.get_field(name).column) for name in key]
    counter = quote(model._meta.get_field(field).column)
    # Only names from the model are formatted in; values go as parameters.
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}, {counter}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(columns))}, 1) "
        f"ON CONFLICT ({', '.join(columns)}) DO UPDATE SET {counter} = {table}.{counter} + 1 "
        f"RETURNING {counter}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(key.values()))
        (value,) = cursor.fetchone()
    return value
