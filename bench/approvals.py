"""Approvals on PostgreSQL: requests driven through three steps per second, side by side with
SpiffWorkflow and django-viewflow, and the inbox of one approver among 100,000 pending requests.

    .venv/bin/python bench/approvals.py                         # both parts, 2,000 requests a run
    .venv/bin/python bench/approvals.py --requests 500 --runs 3 --clients 4
    .venv/bin/python bench/approvals.py --skip-inbox            # throughput only
    .venv/bin/python bench/approvals.py --skip-throughput       # the inbox only

Throughput. Each side drives ``--requests`` requests, one after the other from one process
(and, with ``--clients 4``, once more from 4 processes at a time), from submission through three
approval steps to "approved", every step persisted in PostgreSQL 15 on 127.0.0.1 before the next:

- Trellis: ``approvals.services.submit`` and ``approve`` x3, as the submitter and then each
  step's approver, on the process ``bench-three-steps`` (three steps, each a named user, decision
  rule "first", no timeout), published once with ``save_process``. The users have e-mail
  addresses, as in use. Each step queues a task that writes its approvers' notices and
  e-mails; no worker runs during the timing, so these tasks are run afterwards and their cost
  is reported apart (``deferred_work``, and ``deferred_to_the_worker`` in the profile).
  Database ``trellis_bench_approvals``.
- SpiffWorkflow (BPMN): ``approvals_others/spiff_side.py``; database
  ``trellis_bench_approvals_spiff``.
- django-viewflow: ``approvals_others/viewflow_side.py`` and its project ``vfbench``; database
  ``trellis_bench_approvals_viewflow``.
- The floors, references rather than competitors: ``approvals_others/floor_side.py``, the
  statements an engine persisting each step must send, written by hand, with no engine
  (decision 0012): ``floor`` locks and decides in a transaction per step, ``floor_optimistic``
  checks a version number instead (``--optimistic``); databases
  ``trellis_bench_approvals_floor`` and ``trellis_bench_approvals_floor_optimistic``. The
  target's ratios leave them out; ``against_the_floor`` reads the target and every side
  against each floor.

The deals are created before the timing, on every side. The sides run in turn, each in its
own process, in a rotating order (Trellis, Spiff, viewflow, the floors; then Spiff, viewflow,
the floors, Trellis; ...), ``--runs`` times; the figure is the median. Besides requests per
second (wall time, which other work on a shared machine inflates) each run gives the CPU per
request of the client and of its PostgreSQL backend, read from /proc. SpiffWorkflow, viewflow
and the floors live in their own virtualenv, ``~/.cache/trellis-bench/approvals-venv``
(created on first use with pip; never in Trellis' venv). Trellis' side is then profiled:
statements per request, and cProfile.

Inbox. Database ``trellis_bench_approvals_inbox`` (created, migrated and filled when it holds no
requests; ``--fresh`` drops it first): 1,000 salespeople under 200 managers under 20 directors,
and a finance approver; a process of three steps (the submitter's manager, the manager's
manager, the finance approver); 100,000 deals, each with a pending request at its first, second
or third step and the rows the engine writes for it (step runs, approved before the current
one; one assignment per step run), written with COPY. The measured manager has exactly 500
requests waiting at their step; the finance approver, about 33,000. Then, for each, 200 warm
calls of ``approvals.queries.inbox`` (the first 100 rows, soonest due first, with their
records) and ``inbox_counts`` (waiting and overdue), which the inbox page, the navigation badge
and ``GET /api/approvals/inbox`` use; p50 and p95, CPU per call, and EXPLAIN ANALYZE of their
queries; and, for ratios measured in the same run, the inbox query as it was before it read
plain values instead of model instances (``instances_inbox``, and called in turn with the
current one: ``inbox_in_turn_with_instances``) and the inbox queries as they were before the
due time was copied onto the assignments (``before_*``).

Prints JSON (also written to ``--out``). Only 127.0.0.1 is contacted, and PyPI by pip when the
virtualenv is made.
"""

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import PG, ROOT

OTHERS = ROOT / "bench" / "approvals_others"
DATABASES = {
    "trellis": "trellis_bench_approvals",
    "spiffworkflow": "trellis_bench_approvals_spiff",
    "viewflow": "trellis_bench_approvals_viewflow",
    "floor": "trellis_bench_approvals_floor",
    "floor_optimistic": "trellis_bench_approvals_floor_optimistic",
}
# The sides the target compares Trellis with; the floors are references, not competitors.
OTHERS_COMPARED = ("spiffworkflow", "viewflow")
FLOORS = ("floor", "floor_optimistic")
INBOX_DATABASE = "trellis_bench_approvals_inbox"
WORK = Path.home() / ".cache" / "trellis-bench"
VENV = WORK / "approvals-venv"
# The Trellis side runs from a copy of src/trellis taken at the start: one run, one version.
SNAPSHOT = WORK / "approvals-src"
# Pinned, so that two runs compare the same code; the newest on PyPI when this was written.
OTHER_PACKAGES = [
    "SpiffWorkflow==3.2.0",
    "django-viewflow==2.4.0",
    "django==5.2.19",
    "psycopg[binary]==3.3.9",
]
PROCESS_CODE = "bench-three-steps"
# The task that writes the approvers' notices and e-mails after a decision commits.
TELL_TASK = "trellis.process.approvals.tasks.tell_approvers"

sys.path.insert(0, str(OTHERS))
import driver  # noqa: E402


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = {p.split("==")[0].split("[")[0].lower(): p.split("==")[1] for p in OTHER_PACKAGES}
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True
    ).stdout.lower()
    if any(f"{name}=={version}" not in frozen for name, version in wanted.items()):
        subprocess.run([str(python), "-m", "pip", "install", "-q", *OTHER_PACKAGES], check=True)
    return python


def migrate_trellis(database: str) -> None:
    trellis = str(ROOT / ".venv" / "bin" / "trellis")
    environment = harness.trellis_environment(database, SNAPSHOT)
    subprocess.run([trellis, "manage", "migrate", "-v0"], check=True, env=environment)


# The Trellis side of the throughput part (run as ``--side trellis`` in a process of its own).


def _trellis_people():
    from trellis.core import services as core
    from trellis.core.models import Role, Team, User
    from trellis.crm import services as crm
    from trellis.crm.models import Account
    from trellis.process.approvals import services as approvals
    from trellis.process.approvals.models import ApprovalProcess

    core.ensure_default_rights()

    def user(username: str, role: str, **fields) -> User:
        found = User.objects.filter(username=username).first()
        return found or core.create_user(username, None, role=role, **fields)

    team = Team.objects.get_or_create(name="Bench")[0]
    admin = user("bench-admin", Role.ADMIN, is_superuser=True)
    approvers = [
        user(f"bench-approver-{n}", Role.MANAGER, team=team, email=f"approver{n}@example.co.kr")
        for n in (1, 2, 3)
    ]
    seller = user(
        "bench-seller", Role.SALES, team=team, manager=approvers[0], email="seller@example.co.kr"
    )
    process = ApprovalProcess.objects.filter(code=PROCESS_CODE).first()
    if process is None:
        steps = [
            {"name": f"Step {n}", "approvers": [{"kind": "user", "user_id": a.pk}]}
            for n, a in enumerate(approvers, 1)
        ]
        process = approvals.save_process(
            admin,
            {
                "object_type": "opportunity",
                "code": PROCESS_CODE,
                "name": "Three steps",
                "entry_condition": "amount > 50000000.0",
                "steps": steps,
            },
        )
    account = Account.objects.filter(owner=seller).first() or crm.create(
        seller, "account", {"name": "Bench account"}
    )
    return seller, approvers, process, account


def _trellis_deals(seller, account, count: int) -> list[int]:
    from decimal import Decimal

    from trellis.crm.models import Opportunity

    made = Opportunity.objects.bulk_create(
        Opportunity(
            name=f"Deal {n}",
            account=account,
            amount=Decimal(80_000_000),
            currency="KRW",
            owner=seller,
            team=seller.team,
            search_text=f"deal {n}",
        )
        for n in range(count)
    )
    return [deal.pk for deal in made]


def trellis_side(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.db import connection, connections

    from trellis.process.approvals import services as approvals
    from trellis.process.approvals.models import ApprovalRequest

    seller, approvers, process, account = _trellis_people()
    deals = _trellis_deals(seller, account, args.requests)
    _drop_queued()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    def drive(items: list[int]) -> None:
        for deal_id in items:
            request = approvals.submit(seller, "opportunity", deal_id, process_id=process.pk)
            for approver in approvers:
                request = approvals.approve(approver, request.pk)

    def backend_pid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    result = driver.run(drive, backend_pid, connections.close_all, deals, args.clients)
    approved = ApprovalRequest.objects.filter(
        object_id__in=deals, status=ApprovalRequest.Status.APPROVED
    ).count()
    if approved != len(deals):
        raise SystemExit(f"{len(deals) - approved} requests did not end approved")
    result |= {
        "deferred_work": _deferred_work(len(deals), backend_pid),
        "side": "trellis",
        "statements_per_request": len(_statements_of_one(seller, approvers, process, account)),
        "python": sys.version.split()[0],
    }
    driver.report(result)


def _drop_queued() -> None:
    """Tasks an earlier run left queued (no worker runs here): their requests are finished."""
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.filter(task_path=TELL_TASK).delete()


def _deferred_work(requests: int, backend_pid) -> dict:
    """Run, as a task worker would, the approver notices the timed requests queued, and what
    that costs per request: the timed part leaves this work to the worker. Every approver has
    already decided by now, so the worker finds nobody left to tell; the cost of telling them
    is measured on the statements of one request instead (``statements_per_request``)."""
    from django_tasks_db.models import DBTaskResult

    from trellis.process.approvals import services as approvals

    queued = list(DBTaskResult.objects.filter(task_path=TELL_TASK).values_list("id", "args_kwargs"))
    pid = backend_pid()
    cpu, pg = driver.own_cpu(), driver.backend_cpu(pid)
    started = time.perf_counter()
    told = sum(approvals.tell_approvers(*arguments["args"]) for _id, arguments in queued)
    seconds = time.perf_counter() - started
    DBTaskResult.objects.filter(id__in=[pk for pk, _arguments in queued]).delete()
    return {
        "tasks": len(queued),
        "approvers_told": told,
        "wall_ms_per_request": round(1000 * seconds / requests, 2),
        "cpu_ms_per_request": round(
            1000 * (driver.own_cpu() - cpu + driver.backend_cpu(pid) - pg) / requests, 2
        ),
    }


def _told_of_one(seller, approvers, process, account) -> dict:
    """One request driven through, its tasks run as a worker would after each transaction
    (before the next decision, so each approver is told): statements and CPU of that work."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_tasks_db.models import DBTaskResult

    from trellis.process.approvals import services as approvals

    (deal_id,) = _trellis_deals(seller, account, 1)
    _drop_queued()
    statements, cpu = 0, 0.0

    def work() -> None:
        nonlocal statements, cpu
        queued = list(
            DBTaskResult.objects.filter(task_path=TELL_TASK).values_list("id", "args_kwargs")
        )
        started = driver.own_cpu()
        with CaptureQueriesContext(connection) as captured:
            for _id, arguments in queued:
                approvals.tell_approvers(*arguments["args"])
        cpu += driver.own_cpu() - started
        statements += len(captured.captured_queries)
        DBTaskResult.objects.filter(id__in=[pk for pk, _arguments in queued]).delete()

    request = approvals.submit(seller, "opportunity", deal_id, process_id=process.pk)
    work()
    for approver in approvers:
        approvals.approve(approver, request.pk)
        work()
    return {"statements": statements, "client_cpu_ms": round(1000 * cpu, 2)}


def _statements_of_one(seller, approvers, process, account) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trellis.process.approvals import services as approvals

    deal_id, warm_up = _trellis_deals(seller, account, 2)
    # One request first, so that the counts are those of a process that has run a while.
    request = approvals.submit(seller, "opportunity", warm_up, process_id=process.pk)
    for approver in approvers:
        approvals.approve(approver, request.pk)
    with CaptureQueriesContext(connection) as queries:
        request = approvals.submit(seller, "opportunity", deal_id, process_id=process.pk)
        for approver in approvers:
            approvals.approve(approver, request.pk)
    return [query["sql"] for query in queries.captured_queries]


def trellis_profile(args: argparse.Namespace) -> None:
    """Where a Trellis request's time goes: its statements, and cProfile over a few."""
    import cProfile
    import pstats

    import django

    django.setup()
    from trellis.process.approvals import services as approvals

    seller, approvers, process, account = _trellis_people()
    warm_up, *deals = _trellis_deals(seller, account, args.profile_requests + 1)
    request = approvals.submit(seller, "opportunity", warm_up, process_id=process.pk)
    for approver in approvers:
        approvals.approve(approver, request.pk)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for deal_id in deals:
        request = approvals.submit(seller, "opportunity", deal_id, process_id=process.pk)
        for approver in approvers:
            approvals.approve(approver, request.pk)
    profile.disable()
    seconds = time.perf_counter() - started
    # After the profiled requests, so that the caches are warm as in the timed runs.
    statements = _statements_of_one(seller, approvers, process, account)
    told = _told_of_one(seller, approvers, process, account)
    kinds: dict[str, int] = {}
    for sql in statements:
        kind = harness.statement_kind(sql)
        kinds[kind] = kinds.get(kind, 0) + 1
    stats = pstats.Stats(profile)
    total = stats.total_tt
    count = len(deals)

    def rows(prefixes: tuple[str, ...], key: int, limit: int) -> list[dict]:
        found = []
        for (path, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
            if not any(prefix in path for prefix in prefixes):
                continue
            short = path.split("/site-packages/")[-1].split(f"{SNAPSHOT.name}/")[-1]
            found.append(
                {
                    "function": f"{short}:{line}({name})",
                    "calls_per_request": round(calls / count, 1),
                    "ms_per_request": round(1000 * (cumtime if key else tottime) / count, 2),
                    "share": round((cumtime if key else tottime) / total, 3),
                }
            )
        found.sort(key=lambda row: -row["ms_per_request"])
        return found[:limit]

    result = {
        "requests": count,
        "profiled_ms_per_request": round(1000 * seconds / count, 1),
        "statements_per_request": len(statements),
        "statements_by_kind": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
        # The approvers' notices and e-mails, written by the task worker after each decision.
        "deferred_to_the_worker": told,
        "trellis_functions_cumulative": rows(("trellis/",), 1, 30),
        "database_driver_own_time": rows(("psycopg/",), 0, 5),
    }
    driver.report(result)


# Running the sides.


def run_side(side: str, args: argparse.Namespace, python: Path, clients: int) -> dict:
    database = DATABASES[side]
    if side == "trellis":
        command = [sys.executable, __file__, "--side", "trellis"]
        environment = harness.trellis_environment(database, SNAPSHOT)
    elif side == "spiffworkflow":
        command = [str(python), str(OTHERS / "spiff_side.py"), "--database", PG + database]
        environment = dict(os.environ)
    elif side in FLOORS:
        command = [str(python), str(OTHERS / "floor_side.py"), "--database", PG + database]
        command += ["--optimistic"] if side == "floor_optimistic" else []
        environment = dict(os.environ)
    else:
        command = [str(python), str(OTHERS / "viewflow_side.py")]
        environment = {**os.environ, "DATABASE_URL": PG + database}
    command += ["--requests", str(args.requests), "--clients", str(clients)]
    load_before = os.getloadavg()[0]
    print(f"{side}: {args.requests} requests, {clients} client(s)", file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, env=environment, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_before"] = round(load_before, 2)
    print(f"  {result['requests_per_second']} requests/s", file=sys.stderr, flush=True)
    return result


def throughput(args: argparse.Namespace) -> dict:
    python = ensure_venv()
    for side, database in DATABASES.items():
        if harness.ensure_database(database, args.fresh) and side == "trellis":
            migrate_trellis(database)
        elif side == "trellis":
            migrate_trellis(database)  # a no-op unless the code has new migrations
    sides = list(DATABASES)
    result: dict = {"requests_per_run": args.requests, "runs": args.runs}
    for clients in sorted({1, args.clients}):
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for run in range(args.runs):
            order = sides[run % len(sides) :] + sides[: run % len(sides)]
            for side in order:
                runs[side].append(run_side(side, args, python, clients))
        summary = {}
        for side, measured in runs.items():
            summary[side] = {
                "requests_per_second_median": statistics.median(
                    r["requests_per_second"] for r in measured
                ),
                "cpu_ms_per_request_median": statistics.median(
                    r["cpu_ms_per_request"]["total"] for r in measured
                ),
                "runs": measured,
            }
        trellis = summary["trellis"]
        others = list(OTHERS_COMPARED)
        fastest = max(others, key=lambda s: summary[s]["requests_per_second_median"])
        leanest = min(others, key=lambda s: summary[s]["cpu_ms_per_request_median"])
        summary["ratio"] = {
            "trellis_to_faster_other_requests_per_second": round(
                trellis["requests_per_second_median"]
                / summary[fastest]["requests_per_second_median"],
                2,
            ),
            "faster_other": fastest,
            # Requests per CPU second, Trellis over the other side that needs the least CPU.
            "trellis_to_leanest_other_per_cpu_second": round(
                summary[leanest]["cpu_ms_per_request_median"]
                / trellis["cpu_ms_per_request_median"],
                2,
            ),
            "leanest_other": leanest,
            **{
                f"trellis_to_{side}_requests_per_second": round(
                    trellis["requests_per_second_median"]
                    / summary[side]["requests_per_second_median"],
                    2,
                )
                for side in others
            },
        }
        # What the target asks for, read against each floor: above 1, no engine that persists
        # each step in that way could meet it on this machine, however little else it writes.
        target = 5 * summary[fastest]["requests_per_second_median"]
        summary["against_the_floor"] = {
            "target_requests_per_second": round(target, 1),
            "target_cpu_ms_per_request": round(
                summary[leanest]["cpu_ms_per_request_median"] / 5, 2
            ),
        }
        for floor in FLOORS:
            rate = summary[floor]["requests_per_second_median"]
            summary["against_the_floor"] |= {
                f"target_to_{floor}_requests_per_second": round(target / rate, 2),
                **{
                    f"{side}_to_{floor}_requests_per_second": round(
                        summary[side]["requests_per_second_median"] / rate, 2
                    )
                    for side in ("trellis", *others)
                },
            }
        result[f"clients_{clients}"] = summary
    if args.profile_requests:
        print("profiling the Trellis side", file=sys.stderr, flush=True)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                "trellis-profile",
                "--profile-requests",
                str(args.profile_requests),
            ],
            check=True,
            env=harness.trellis_environment(DATABASES["trellis"], SNAPSHOT),
            capture_output=True,
            text=True,
        )
        result["trellis_profile"] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# The inbox part.


MANAGERS = 200
SELLERS_PER_MANAGER = 5
DIRECTORS = 20
REQUESTS = 100_000


def _copy(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def fill_inbox_database(seed: int) -> dict:
    """People, deals and 100,000 pending requests with their step runs and assignments."""
    from decimal import Decimal

    from django.contrib.auth.hashers import make_password
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    from trellis.core import clock
    from trellis.core import services as core
    from trellis.core.models import Role, Team, User
    from trellis.crm.models import Account, Opportunity
    from trellis.process.approvals import services as approvals
    from trellis.process.approvals.models import ApprovalRequest

    started = time.monotonic()
    rng = random.Random(seed)
    core.ensure_default_rights()
    roles = {role.code: role for role in Role.objects.all()}
    password = make_password(None)
    admin = core.create_user("bench-admin", None, role=Role.ADMIN, is_superuser=True)
    finance = core.create_user(
        "bench-finance", None, role=Role.MANAGER, email="finance@example.co.kr"
    )
    teams = Team.objects.bulk_create(Team(name=f"Team {n}") for n in range(MANAGERS))

    def people(prefix: str, count: int, role: str, **by_index) -> list[User]:
        return User.objects.bulk_create(
            User(
                username=f"{prefix}-{n}",
                password=password,
                email=f"{prefix}{n}@example.co.kr",
                role=roles[role],
                **{field: value(n) for field, value in by_index.items()},
            )
            for n in range(count)
        )

    directors = people("bench-director", DIRECTORS, Role.MANAGER)
    managers = people(
        "bench-manager",
        MANAGERS,
        Role.MANAGER,
        manager=lambda n: directors[n % DIRECTORS],
        team=lambda n: teams[n],
    )
    sellers = people(
        "bench-seller",
        MANAGERS * SELLERS_PER_MANAGER,
        Role.SALES,
        manager=lambda n: managers[n // SELLERS_PER_MANAGER],
        team=lambda n: teams[n // SELLERS_PER_MANAGER],
    )
    accounts = Account.objects.bulk_create(
        Account(name=f"Account {n}", owner=seller, team=seller.team, search_text=f"account {n}")
        for n, seller in enumerate(sellers)
    )
    step = {"timeout_hours": 16, "remind_before_hours": 4, "escalation": "manager"}
    process = approvals.save_process(
        admin,
        {
            "object_type": "opportunity",
            "code": PROCESS_CODE,
            "name": "Three steps",
            "entry_condition": "amount > 50000000.0",
            "steps": [
                {"name": "Manager", "approvers": [{"kind": "manager"}], **step},
                {"name": "Director", "approvers": [{"kind": "managers_manager"}], **step},
                {
                    "name": "Finance",
                    "approvers": [{"kind": "user", "user_id": finance.pk}],
                    **step,
                },
            ],
        },
    )
    version = approvals.current_version(process)
    deal_type = ContentType.objects.get_for_model(Opportunity)
    now = clock.now()
    # The measured manager: all the deals of their five salespeople wait at the first step.
    measured = managers[0]
    with transaction.atomic(), connection.cursor() as cursor:
        first = {}
        for table in (
            "crm_opportunity",
            "process_approvalrequest",
            "process_approvalsteprun",
            "process_approvalassignment",
        ):
            cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
            first[table] = cursor.fetchone()[0]
        deals, requests, runs, assignments = [], [], [], []
        run_id = first["process_approvalsteprun"]
        assignment_id = first["process_approvalassignment"]
        for n in range(REQUESTS):
            seller = sellers[n % len(sellers)]
            manager_index = n % len(sellers) // SELLERS_PER_MANAGER
            manager, director = managers[manager_index], directors[manager_index % DIRECTORS]
            deal_id = first["crm_opportunity"] + n
            request_id = first["process_approvalrequest"] + n
            submitted = now - dt.timedelta(minutes=rng.randrange(20 * 24 * 60))
            deals.append(
                (
                    deal_id, 1, submitted, submitted, f"deal {n}", f"Deal {n}",
                    Decimal(rng.randrange(51, 900) * 1_000_000), "KRW", 10, "open", "",
                    accounts[n % len(accounts)].pk, seller.pk, seller.team_id, False,
                )
            )  # fmt: skip
            at = 0 if manager == measured else n % 3
            requests.append(
                (
                    request_id, deal_id, "pending", "submitted", at, "", submitted, "{}",
                    1 + 2 * at, deal_type.pk, process.pk, version.pk, seller.pk,
                )
            )  # fmt: skip
            began = submitted
            vias = ("manager", "managers_manager", "user")
            for index, approver in enumerate((manager, director, finance)[: at + 1]):
                pending = index == at
                ended = None if pending else began + dt.timedelta(hours=rng.randrange(1, 30))
                due = began + dt.timedelta(days=2)
                runs.append(
                    (
                        run_id, index + 1, index, ("Manager", "Director", "Finance")[index],
                        "pending" if pending else "approved", "first", 1, began, ended,
                        due - dt.timedelta(hours=6), due, due if pending else None, "", request_id,
                    )
                )  # fmt: skip
                assignments.append(
                    (
                        assignment_id, vias[index],
                        "pending" if pending else "approved", began, ended, "", approver.pk,
                        request_id, run_id, due, began,
                    )
                )  # fmt: skip
                run_id += 1
                assignment_id += 1
                began = ended or began
        _copy(
            cursor,
            "crm_opportunity",
            ["id", "version", "created_at", "updated_at", "search_text", "name", "amount",
             "currency", "probability", "status", "description", "account_id", "owner_id",
             "team_id", "probability_manual"],
            deals,
        )  # fmt: skip
        _copy(
            cursor,
            "process_approvalrequest",
            ["id", "object_id", "status", "origin", "step_index", "comment", "submitted_at",
             "approved_values", "version", "content_type_id", "process_id", "process_version_id",
             "submitter_id"],
            requests,
        )  # fmt: skip
        _copy(
            cursor,
            "process_approvalsteprun",
            ["id", "seq", "index", "name", "status", "rule", "required", "started_at",
             "finished_at", "remind_at", "due_at", "timer_at", "note", "request_id"],
            runs,
        )  # fmt: skip
        _copy(
            cursor,
            "process_approvalassignment",
            ["id", "via", "status", "created_at", "decided_at", "comment", "user_id",
             "request_id", "step_run_id", "due_at", "told_at"],
            assignments,
        )  # fmt: skip
        for table in first:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "pending_requests": ApprovalRequest.objects.filter(status="pending").count(),
        "step_runs": len(runs),
        "assignments": len(assignments),
        "generate_seconds": round(time.monotonic() - started, 1),
    }


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 2),
        "max_ms": round(ordered[-1], 2),
    }


def _timed(function, repeat: int) -> dict[str, float]:
    """Wall-time percentiles, and the mean CPU per call of this process and of its PostgreSQL
    backend: on a loaded machine the wall time also counts the waiting for a core."""
    from django.db import connection

    function()  # warm
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    times = []
    cpu, pg = driver.own_cpu(), driver.backend_cpu(pid)
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return _percentiles(times) | {
        "cpu_ms_per_call": round(
            1000 * (driver.own_cpu() - cpu + driver.backend_cpu(pid) - pg) / repeat, 2
        )
    }


def _in_turn(functions: dict, repeat: int) -> dict[str, dict[str, float]]:
    """Like ``_timed`` for several functions called in turn, one call of each per round (the
    first of a round changing every round), so that a change of the machine's load during the
    measurement falls on all of them alike."""
    from django.db import connection

    for function in functions.values():
        function()  # warm
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    for n in range(repeat):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            own, pg = driver.own_cpu(), driver.backend_cpu(pid)
            started = time.perf_counter()
            functions[name]()
            times[name].append((time.perf_counter() - started) * 1000)
            cpu[name] += driver.own_cpu() - own + driver.backend_cpu(pid) - pg
    return {
        name: _percentiles(times[name]) | {"cpu_ms_per_call": round(1000 * cpu[name] / repeat, 2)}
        for name in names
    }


def _fetch(sql: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()


def _explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return [row[0] for row in cursor.fetchall()]


def inbox(args: argparse.Namespace) -> dict:
    environment = harness.trellis_environment(INBOX_DATABASE, SNAPSHOT)
    if harness.ensure_database(INBOX_DATABASE, args.fresh):
        print("migrating the inbox database", file=sys.stderr, flush=True)
    migrate_trellis(INBOX_DATABASE)
    os.environ.update(environment)
    if (SNAPSHOT / "trellis").exists():
        sys.path.insert(0, str(SNAPSHOT))
    import django

    django.setup()
    from django.db import connection
    from django.db.models import F
    from django.test.utils import CaptureQueriesContext

    from trellis.core import clock
    from trellis.core.models import User
    from trellis.process.approvals import queries
    from trellis.process.approvals.models import ApprovalAssignment, ApprovalRequest

    def inbox_before(user) -> list:
        """The inbox query as it was before the due time was copied onto the assignment:
        joined to the step run for its status and order, every column of six tables."""
        return list(
            ApprovalAssignment.objects.filter(
                user=user, status="pending", step_run__status="pending"
            )
            .select_related(
                "request__process",
                "request__submitter",
                "request__content_type",
                "step_run",
                "on_behalf_of",
            )
            .order_by(F("step_run__due_at").asc(nulls_last=True), "pk")[:100]
        )

    def inbox_as_instances(user) -> list:
        """The inbox query as it was before it read plain values (2026-12-04): the same three
        tables in the same order, but a model instance for each assignment, request, step run
        and deal, and the processes and people set on them."""
        from django.contrib.contenttypes.models import ContentType

        from trellis.process.approvals.models import ApprovalProcess

        rows = list(
            ApprovalAssignment.objects.filter(user=user, status="pending")
            .select_related("request", "step_run")
            .only(
                "id", "status", "due_at", "on_behalf_of_id", "request", "request__object_id",
                "request__content_type_id", "request__process_id", "request__submitter_id",
                "step_run", "step_run__name",
            )
            .order_by(F("due_at").asc(nulls_last=True), "id")[:100]
        )  # fmt: skip
        processes = ApprovalProcess.objects.only("name", "name_ko", "object_type").in_bulk(
            {a.request.process_id for a in rows}
        )
        people = User.objects.only("username", "first_name", "last_name").in_bulk(
            {a.request.submitter_id for a in rows} | {a.on_behalf_of_id for a in rows} - {None}
        )
        wanted: dict[int, set[int]] = {}
        for a in rows:
            a.request.process = processes[a.request.process_id]
            a.request.submitter = people[a.request.submitter_id]
            a.on_behalf_of = people.get(a.on_behalf_of_id)
            wanted.setdefault(a.request.content_type_id, set()).add(a.request.object_id)
        records = {}
        for content_type_id, ids in wanted.items():
            model = ContentType.objects.get_for_id(content_type_id).model_class()
            names = [
                f.name
                for f in model._meta.concrete_fields
                if f.name in ("name", "sku", "subject", "title")
            ]
            for pk, record in model._default_manager.only(*names).in_bulk(ids).items():
                records[(content_type_id, pk)] = record
        now = clock.now()
        return [
            (
                a,
                records.get((a.request.content_type_id, a.request.object_id)),
                a.due_at is not None and a.due_at < now,
            )
            for a in rows
        ]

    def counts_before(user) -> tuple[int, int]:
        waiting = ApprovalAssignment.objects.filter(
            user=user, status="pending", step_run__status="pending"
        )
        return waiting.count(), waiting.filter(step_run__due_at__lt=clock.now()).count()

    result: dict = {}
    if not ApprovalRequest.objects.exists():
        print("generating 100,000 pending requests", file=sys.stderr, flush=True)
        result["generated"] = fill_inbox_database(args.seed)
    result["pending_requests"] = ApprovalRequest.objects.filter(status="pending").count()
    for who, username in (("manager_500", "bench-manager-0"), ("finance", "bench-finance")):
        user = User.objects.get(username=username)
        counts = queries.inbox_counts(user)
        with CaptureQueriesContext(connection) as captured:
            rows = queries.inbox(user)
        with CaptureQueriesContext(connection) as counted:
            queries.inbox_counts(user)
        sql = [q["sql"] for q in captured.captured_queries]
        waiting, overdue = counts_before(user)
        result[who] = {
            "waiting": waiting,
            "overdue": overdue,
            "counts_shown": counts,
            "rows_shown": len(rows),
            "inbox": _timed(lambda u=user: queries.inbox(u), args.inbox_repeat),
            "inbox_counts": _timed(lambda u=user: queries.inbox_counts(u), args.inbox_repeat),
            # What GET /api/approvals/inbox reads.
            "inbox_and_counts": _timed(
                lambda u=user: (queries.inbox(u), queries.inbox_counts(u)), args.inbox_repeat
            ),
            # The inbox now and as it was before it read plain values, called in turn.
            "inbox_in_turn_with_instances": _in_turn(
                {
                    "values": lambda u=user: queries.inbox(u),
                    "instances": lambda u=user: inbox_as_instances(u),
                },
                args.inbox_repeat,
            ),
            # The main query alone, without building the rows.
            "inbox_main_query_sql_only": _timed(lambda q=sql[0]: _fetch(q), args.inbox_repeat),
            # The inbox as it was before it read plain values, measured in this run.
            "instances_inbox": _timed(lambda u=user: inbox_as_instances(u), args.inbox_repeat),
            # The same calls as before the due time was copied onto the assignments.
            "before_inbox": _timed(lambda u=user: inbox_before(u), args.inbox_repeat),
            "before_inbox_counts": _timed(lambda u=user: counts_before(u), args.inbox_repeat),
            "queries": len(sql) + len(counted.captured_queries),
            "sql": sql + [q["sql"] for q in counted.captured_queries],
            "explain_inbox": _explain(sql[0]),
            "explain_counts": [_explain(q["sql"]) for q in counted.captured_queries],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per run and side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1, help="also measure with N clients")
    parser.add_argument("--profile-requests", type=int, default=50, help="0: no profile")
    parser.add_argument("--inbox-repeat", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the databases")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-inbox", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "approvals.json"))
    parser.add_argument("--side", choices=["trellis", "trellis-profile"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "trellis":
        trellis_side(args)
        return
    if args.side == "trellis-profile":
        trellis_profile(args)
        return
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "postgresql": harness.psql("SHOW server_version"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
    }
    harness.take_snapshot(SNAPSHOT)
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
    if not args.skip_inbox:
        result["inbox"] = inbox(args)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
