"""The django-viewflow side of the approvals benchmark: the same three-step approval as a
viewflow flow (``vfbench/flows.py``), persisted by viewflow's own Process and Task models.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/trellis_bench_approvals_viewflow \
        python viewflow_side.py --requests 2000 [--clients 4]

Runs in the benchmark's own virtualenv (Django, django-viewflow, psycopg). The deals are made
before the timing. Submitting locks the deal, refuses a second pending request for it, and
starts the flow (``StartHandle``), which creates the first step's task assigned to its approver.
Each decision does what viewflow's task view does on POST, without the HTTP: under the flow's
lock (``SELECT ... FOR UPDATE`` of the process) it loads the open task, checks that the actor may
execute it, records the decision on the process and executes the task, which runs the gateway
and creates the next task (or ends the process), in one transaction.
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vfbench.settings")

import django  # noqa: E402
import driver  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    django.setup()
    from importlib.metadata import version

    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.db import connection, connections, transaction
    from django.test.utils import CaptureQueriesContext
    from vfbench.flows import APPROVERS, ThreeStepApproval
    from vfbench.models import Deal, DealApproval
    from viewflow.workflow.models import Task
    from viewflow.workflow.status import PROCESS, STATUS

    call_command("migrate", "--no-input", verbosity=0)
    seller, _ = User.objects.get_or_create(username="seller")
    approvers = [User.objects.get_or_create(username=name)[0] for name in APPROVERS]
    deals = Deal.objects.bulk_create(
        Deal(name=f"Deal {n}", amount=80_000_000, owner=seller) for n in range(args.requests + 1)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    deal_type = ContentType.objects.get_for_model(Deal)

    def submit(actor: User, deal_id: int) -> DealApproval:
        with transaction.atomic():
            deal = Deal.objects.select_for_update().get(pk=deal_id, owner=actor)
            pending = DealApproval.objects.filter(
                artifact_content_type=deal_type,
                artifact_object_id=deal.pk,
                status=PROCESS.NEW,
            )
            if pending.exists():
                raise ValueError("this deal already waits for approval")
            return ThreeStepApproval.start.run(deal=deal)

    def decide(actor: User, process_pk: int, approved: bool) -> None:
        with ThreeStepApproval.lock(process_pk), transaction.atomic():
            task = Task.objects.get(
                process_id=process_pk, flow_task_type="HUMAN", status=STATUS.ASSIGNED
            )
            activation = task.flow_task.activation_class(task)
            if not task.flow_task.can_execute(actor, task):
                raise PermissionError("not an approver of this step")
            activation.start(None)
            process = activation.process
            process.data["decisions"].append(
                {"step": task.flow_task.name, "by": actor.username, "approved": approved}
            )
            process.save()
            activation.execute()

    def drive(items: list[int]) -> None:
        for deal_id in items:
            process = submit(seller, deal_id)
            for approver in approvers:
                decide(approver, process.pk, True)

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    timed = [deal.pk for deal in deals[:-1]]
    result = driver.run(drive, backend_pid, connections.close_all, timed, args.clients)
    done = DealApproval.objects.filter(
        artifact_content_type=deal_type, artifact_object_id__in=timed, status=PROCESS.DONE
    ).count()
    if done != len(timed):
        raise SystemExit(f"{len(timed) - done} requests did not end approved")
    # Statements of one more request, outside the timing.
    with CaptureQueriesContext(connection) as queries:
        process = submit(seller, deals[-1].pk)
        for approver in approvers:
            decide(approver, process.pk, True)
    result |= {
        "side": "viewflow",
        "version": version("django-viewflow"),
        "django": django.get_version(),
        "statements_per_request": len(queries),
        "python": sys.version.split()[0],
    }
    driver.report(result)


if __name__ == "__main__":
    main()
