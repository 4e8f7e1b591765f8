"""The floor of the approvals benchmark: the same three-step approval with no engine at all,
only the statements that any engine persisting each step must send, written by hand.

    python floor_side.py --requests 2000 [--clients 4] \
        --database postgres://postgres@127.0.0.1:5432/trellis_bench_approvals_floor

It is not a product and not a competitor: it shows how many requests per second this machine's
Python and PostgreSQL allow when nothing but the state is kept, so that the other sides can be
read against it. Tables: ``deal`` (made before the timing), ``approval_request`` (one row per
request: status, the step waiting and its approver) and ``approval_decision`` (one row per
decision, unique per request and step, so that a decision is recorded once). Submitting locks
the deal, refuses a second pending request (a unique index) and inserts the request. Each
decision locks the request (``SELECT ... FOR UPDATE``), checks its status and the approver,
inserts the decision and moves the request on, in one transaction. The approvers are fixed in
the code: nothing is resolved, no condition is evaluated, no history, timeline, notice, timer
or lock of the record is written.

With ``--optimistic`` the steps take no lock and no explicit transaction: submitting is one
INSERT that reads the deal, and each decision reads the request, then inserts the decision and
moves the request on in one statement that finds nothing when the request changed since it was
read (a version number), 7 statements per request. Two decisions at once cannot both land; the
one that finds nothing would read again and be refused.
"""

import argparse
import sys

import by_hand
import driver
import psycopg
from by_hand import connect

APPROVERS = ["approver-1", "approver-2", "approver-3"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS deal (
    id bigserial PRIMARY KEY, name text NOT NULL, amount numeric(18, 2) NOT NULL,
    owner text NOT NULL
);
CREATE TABLE IF NOT EXISTS approval_request (
    id bigserial PRIMARY KEY,
    deal_id bigint NOT NULL REFERENCES deal (id),
    submitter text NOT NULL,
    status text NOT NULL,
    step integer NOT NULL,
    waiting_for text,
    version integer NOT NULL DEFAULT 1
);
ALTER TABLE approval_request ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX IF NOT EXISTS floor_one_pending
    ON approval_request (deal_id) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS approval_decision (
    id bigserial PRIMARY KEY,
    request_id bigint NOT NULL REFERENCES approval_request (id),
    step integer NOT NULL,
    actor text NOT NULL,
    approved boolean NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, step)
);
"""


def submit(db: psycopg.Connection, deal_id: int, submitter: str) -> int:
    with db.transaction():
        if (
            db.execute(
                "SELECT id FROM deal WHERE id = %s AND owner = %s FOR UPDATE", [deal_id, submitter]
            ).fetchone()
            is None
        ):
            raise LookupError("no such deal")
        return db.execute(
            "INSERT INTO approval_request (deal_id, submitter, status, step, waiting_for)"
            " VALUES (%s, %s, 'pending', 0, %s) RETURNING id",
            [deal_id, submitter, APPROVERS[0]],
        ).fetchone()[0]


def decide(db: psycopg.Connection, request_id: int, actor: str, approved: bool) -> str:
    with db.transaction():
        row = db.execute(
            "SELECT status, step, waiting_for FROM approval_request WHERE id = %s FOR UPDATE",
            [request_id],
        ).fetchone()
        if row is None:
            raise LookupError("no such request")
        status, step, waiting_for = row
        if status != "pending":
            raise ValueError(f"already {status}")
        if waiting_for != actor:
            raise PermissionError("not an approver of this step")
        db.execute(
            "INSERT INTO approval_decision (request_id, step, actor, approved)"
            " VALUES (%s, %s, %s, %s)",
            [request_id, step, actor, approved],
        )
        status, step, waiting_for = _next(step, approved)
        db.execute(
            "UPDATE approval_request SET status = %s, step = %s, waiting_for = %s WHERE id = %s",
            [status, step, waiting_for, request_id],
        )
    return status


def _next(step: int, approved: bool) -> tuple[str, int, str | None]:
    """The request's status, step and approver after a decision at ``step``."""
    step += 1
    if not approved or step == len(APPROVERS):
        return ("approved" if approved else "rejected"), step, None
    return "pending", step, APPROVERS[step]


def submit_optimistic(db: psycopg.Connection, deal_id: int, submitter: str) -> int:
    row = db.execute(
        "INSERT INTO approval_request (deal_id, submitter, status, step, waiting_for)"
        " SELECT id, %s, 'pending', 0, %s FROM deal WHERE id = %s AND owner = %s RETURNING id",
        [submitter, APPROVERS[0], deal_id, submitter],
    ).fetchone()
    if row is None:
        raise LookupError("no such deal")
    return row[0]


def decide_optimistic(db: psycopg.Connection, request_id: int, actor: str, approved: bool) -> str:
    row = db.execute(
        "SELECT status, step, waiting_for, version FROM approval_request WHERE id = %s",
        [request_id],
    ).fetchone()
    if row is None:
        raise LookupError("no such request")
    status, step, waiting_for, version = row
    if status != "pending":
        raise ValueError(f"already {status}")
    if waiting_for != actor:
        raise PermissionError("not an approver of this step")
    status, moved_to, waiting_for = _next(step, approved)
    landed = db.execute(
        "WITH moved AS (UPDATE approval_request SET status = %s, step = %s, waiting_for = %s,"
        " version = version + 1 WHERE id = %s AND version = %s RETURNING id)"
        " INSERT INTO approval_decision (request_id, step, actor, approved)"
        " SELECT id, %s, %s, %s FROM moved RETURNING id",
        [status, moved_to, waiting_for, request_id, version, step, actor, approved],
    ).fetchone()
    if landed is None:
        raise ValueError("the request changed meanwhile")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--optimistic", action="store_true", help="no locks, 7 statements")
    args = parser.parse_args()
    start, decide_one = (
        (submit_optimistic, decide_optimistic) if args.optimistic else (submit, decide)
    )
    db = connect(args.database)
    db.execute(SCHEMA)
    deals = by_hand.make_deals(db, args.requests)
    result = by_hand.run(args.database, deals, args.clients, start, decide_one, APPROVERS)
    result |= {
        "side": "floor_optimistic" if args.optimistic else "floor",
        # Locked: submit: SELECT deal FOR UPDATE, INSERT; each decision: SELECT FOR UPDATE,
        # INSERT, UPDATE; each transaction also BEGIN and COMMIT. Optimistic: submit: INSERT;
        # each decision: SELECT, then UPDATE and INSERT in one statement.
        "statements_per_request": 1 + 3 * 2 if args.optimistic else 2 + 3 * 3 + 4 * 2,
        "python": sys.version.split()[0],
    }
    driver.report(result)


if __name__ == "__main__":
    main()
