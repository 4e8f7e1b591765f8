"""The SpiffWorkflow side of the approvals benchmark: the same three-step approval as a BPMN
process (``three_step_approval.bpmn``), each request persisted in PostgreSQL after every step.

    python spiff_side.py --requests 2000 [--clients 4] \
        --database postgres://postgres@127.0.0.1:5432/trellis_bench_approvals_spiff

Runs in the benchmark's own virtualenv (SpiffWorkflow, psycopg). Tables: ``deal`` (the records
submitted, created before the timing), ``workflow_spec`` (the parsed process, serialized once,
as a server keeps it) and ``approval_request`` (one row per request: status, the step waiting,
its approver, and the workflow's state as JSON, without the spec). Submitting locks the deal,
refuses a second pending request (a unique index, as in Trellis), runs the workflow to its first
user task and inserts the row. Each decision locks the row (``SELECT ... FOR UPDATE``), restores
the workflow, checks that the actor is the step's approver, completes the task, runs the engine
to the next user task or the end, and writes the state back, in one transaction.
"""

import argparse
import json
import sys
from pathlib import Path

import by_hand
import driver
import psycopg
from by_hand import connect
from SpiffWorkflow import __version__ as spiff_version
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.util.task import TaskState

HERE = Path(__file__).resolve().parent
STEPS = ["step_1", "step_2", "step_3"]
APPROVERS = ["approver-1", "approver-2", "approver-3"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS deal (
    id bigserial PRIMARY KEY, name text NOT NULL, amount numeric(18, 2) NOT NULL,
    owner text NOT NULL, version integer NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS workflow_spec (
    id serial PRIMARY KEY, name text NOT NULL, spec jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS approval_request (
    id bigserial PRIMARY KEY,
    deal_id bigint NOT NULL REFERENCES deal (id),
    spec_id integer NOT NULL REFERENCES workflow_spec (id),
    submitter text NOT NULL,
    status text NOT NULL,
    waiting_step text,
    waiting_for text,
    -- json, not jsonb: restoring needs the tasks in the order they were written.
    state json NOT NULL,
    version integer NOT NULL DEFAULT 1,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS approval_one_pending
    ON approval_request (deal_id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS approval_inbox
    ON approval_request (waiting_for, id) WHERE status = 'pending';
"""

serializer = BpmnWorkflowSerializer()
spec = None
spec_dict: dict = {}
spec_id = 0


def load_spec(db: psycopg.Connection) -> None:
    """Parse the BPMN file and keep its serialized spec in the database, once."""
    global spec, spec_dict, spec_id
    parser = BpmnParser()
    parser.add_bpmn_file(str(HERE / "three_step_approval.bpmn"))
    spec = parser.get_spec("three_step_approval")
    spec_dict = serializer.to_dict(spec)
    with db.transaction():
        row = db.execute(
            "SELECT id FROM workflow_spec WHERE name = %s", ["three_step_approval"]
        ).fetchone()
        if row is None:
            row = db.execute(
                "INSERT INTO workflow_spec (name, spec) VALUES (%s, %s) RETURNING id",
                ["three_step_approval", json.dumps(spec_dict)],
            ).fetchone()
    spec_id = row[0]


def _state(workflow: BpmnWorkflow) -> str:
    data = serializer.to_dict(workflow)
    # The spec is stored once, not with every request (as spiff-arena does).
    del data["spec"], data["subprocess_specs"]
    return json.dumps(data)


def _restore(state: dict) -> BpmnWorkflow:
    state["spec"] = json.loads(json.dumps(spec_dict))  # restoring consumes the dict
    state["subprocess_specs"] = {}
    return serializer.from_dict(state)


def _waiting(workflow: BpmnWorkflow) -> tuple[str | None, str | None]:
    task = workflow.get_next_task(state=TaskState.READY, manual=True)
    if task is None:
        return None, None
    return task.task_spec.name, task.data["approvers"][task.task_spec.name]


def submit(db: psycopg.Connection, deal_id: int, submitter: str) -> int:
    with db.transaction():
        deal = db.execute(
            "SELECT id, amount FROM deal WHERE id = %s AND owner = %s FOR UPDATE",
            [deal_id, submitter],
        ).fetchone()
        if deal is None:
            raise LookupError("no such deal")
        workflow = BpmnWorkflow(spec)
        workflow.data["deal_id"] = deal_id
        start = workflow.get_next_task(state=TaskState.READY)
        start.data.update(
            {"deal_id": deal_id, "approvers": dict(zip(STEPS, APPROVERS, strict=True))}
        )
        workflow.do_engine_steps()
        step, approver = _waiting(workflow)
        return db.execute(
            "INSERT INTO approval_request (deal_id, spec_id, submitter, status, waiting_step,"
            " waiting_for, state) VALUES (%s, %s, %s, 'pending', %s, %s, %s) RETURNING id",
            [deal_id, spec_id, submitter, step, approver, _state(workflow)],
        ).fetchone()[0]


def decide(db: psycopg.Connection, request_id: int, actor: str, approved: bool) -> str:
    with db.transaction():
        row = db.execute(
            "SELECT status, state FROM approval_request WHERE id = %s FOR UPDATE", [request_id]
        ).fetchone()
        if row is None:
            raise LookupError("no such request")
        status, state = row
        if status != "pending":
            raise ValueError(f"already {status}")
        workflow = _restore(state)
        task = workflow.get_next_task(state=TaskState.READY, manual=True)
        if task.data["approvers"][task.task_spec.name] != actor:
            raise PermissionError("not an approver of this step")
        task.data["approved"] = approved
        task.data.setdefault("decisions", []).append(
            {"step": task.task_spec.name, "by": actor, "approved": approved}
        )
        task.run()
        workflow.do_engine_steps()
        step, approver = _waiting(workflow)
        if workflow.is_completed():
            status = "approved" if approved else "rejected"
        db.execute(
            "UPDATE approval_request SET status = %s, waiting_step = %s, waiting_for = %s,"
            " state = %s, version = version + 1, updated_at = now() WHERE id = %s",
            [status, step, approver, _state(workflow), request_id],
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
    load_spec(db)
    deals = by_hand.make_deals(db, args.requests)
    result = by_hand.run(args.database, deals, args.clients, submit, decide, APPROVERS)
    db = connect(args.database)
    state_bytes = db.execute(
        "SELECT avg(pg_column_size(state))::int FROM approval_request WHERE status = 'approved'"
    ).fetchone()[0]
    result |= {
        "side": "spiffworkflow",
        "version": spiff_version,
        # submit: SELECT deal FOR UPDATE, INSERT; each decision: SELECT FOR UPDATE, UPDATE;
        # each transaction also BEGIN and COMMIT.
        "statements_per_request": 2 + 3 * 2 + 4 * 2,
        "state_bytes_per_request": state_bytes,
        "python": sys.version.split()[0],
    }
    driver.report(result)


if __name__ == "__main__":
    main()
