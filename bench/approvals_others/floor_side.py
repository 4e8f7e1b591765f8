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
"""

import argparse
import sys

import driver
import psycopg

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
    waiting_for text
);
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

connection: psycopg.Connection | None = None


def connect(url: str) -> psycopg.Connection:
    global connection
    if connection is None or connection.closed:
        connection = psycopg.connect(url, autocommit=True)
    return connection


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
        step += 1
        if not approved or step == len(APPROVERS):
            status, waiting_for = ("approved" if approved else "rejected"), None
        else:
            waiting_for = APPROVERS[step]
        db.execute(
            "UPDATE approval_request SET status = %s, step = %s, waiting_for = %s WHERE id = %s",
            [status, step, waiting_for, request_id],
        )
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    db = connect(args.database)
    db.execute(SCHEMA)
    with db.transaction():
        deals = [
            row[0]
            for row in db.execute(
                "INSERT INTO deal (name, amount, owner) SELECT 'Deal ' || n, 80000000, 'seller'"
                " FROM generate_series(1, %s) AS n RETURNING id",
                [args.requests],
            ).fetchall()
        ]
    db.execute("ANALYZE")

    def drive(items: list[int]) -> None:
        db = connect(args.database)
        for deal_id in items:
            request_id = submit(db, deal_id, "seller")
            for approver in APPROVERS:
                status = decide(db, request_id, approver, True)
            if status != "approved":
                raise SystemExit(f"request {request_id} ended {status}")

    def backend_pid() -> int:
        return connect(args.database).info.backend_pid

    def close() -> None:
        global connection
        if connection is not None:
            connection.close()
            connection = None

    result = driver.run(drive, backend_pid, close, deals, args.clients)
    result |= {
        "side": "floor",
        # submit: SELECT deal FOR UPDATE, INSERT; each decision: SELECT FOR UPDATE, INSERT,
        # UPDATE; each transaction also BEGIN and COMMIT.
        "statements_per_request": 2 + 3 * 3 + 4 * 2,
        "python": sys.version.split()[0],
    }
    driver.report(result)


if __name__ == "__main__":
    main()
