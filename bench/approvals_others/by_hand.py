"""What the sides written with psycopg share (SpiffWorkflow's and the floors): one connection
per process, the deals made before the timing, and driving each request through its steps.
"""

from collections.abc import Callable
from typing import Any

import driver
import psycopg

Submit = Callable[[psycopg.Connection, int, str], int]
Decide = Callable[[psycopg.Connection, int, str, bool], str]

_connection: psycopg.Connection | None = None


def connect(url: str) -> psycopg.Connection:
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(url, autocommit=True)
    return _connection


def close() -> None:
    """Before a fork: a connection is not shared across processes."""
    global _connection
    if _connection is not None:
        _connection.close()
        _connection = None


def make_deals(db: psycopg.Connection, count: int) -> list[int]:
    """The deals to submit, made before the timing (as on the other sides)."""
    with db.transaction():
        deals = [
            row[0]
            for row in db.execute(
                "INSERT INTO deal (name, amount, owner) SELECT 'Deal ' || n, 80000000, 'seller'"
                " FROM generate_series(1, %s) AS n RETURNING id",
                [count],
            ).fetchall()
        ]
    db.execute("ANALYZE")
    return deals


def run(
    url: str,
    deals: list[int],
    clients: int,
    submit: Submit,
    decide: Decide,
    approvers: list[str],
) -> dict[str, Any]:
    """Submit each deal as the seller and have each approver approve it, in turn."""

    def drive(items: list[int]) -> None:
        db = connect(url)
        for deal_id in items:
            request_id = submit(db, deal_id, "seller")
            for approver in approvers:
                status = decide(db, request_id, approver, True)
            if status != "approved":
                raise SystemExit(f"request {request_id} ended {status}")

    def backend_pid() -> int:
        return connect(url).info.backend_pid

    return driver.run(drive, backend_pid, close, deals, clients)
