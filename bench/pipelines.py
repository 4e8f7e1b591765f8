"""Pipelines at scale on PostgreSQL: reports and the alert sweep over millions of stage changes.

    .venv/bin/python bench/pipelines.py                  # 1,000,000 deals, ~10 moves each
    .venv/bin/python bench/pipelines.py --scale 100000 --runs 3

Uses the database ``trellis_bench_pipelines`` (created, migrated and filled with
``trellis demo --scale N --method bulk --moves-per-deal M`` when it holds no deals; ``--fresh``
drops it first). Then, in this process, against that database:

- the kanban board of the default sales pipeline (counts, sums and the first 50 cards of each
  stage), as an administrator and as a salesperson;
- the funnel and time-in-stage reports (and the bottleneck) of the default sales pipeline over
  the last twelve months, as an administrator (who sees every deal) and as a salesperson (who
  sees their own): the median of ``--runs`` runs, each on a warm cache;
- the alert timers planned for every deal (a bulk load sends no events), then the alert sweep
  with the clock just before the soonest timer (nothing due), and at the due time of the
  ``--due``-th soonest: wall time until everything due has fired, and how many alerts fired.

Prints JSON (also written to ``--out``). Only 127.0.0.1 is contacted.
"""

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import PG, ROOT

DATABASE = "trellis_bench_pipelines"


def prepare(args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    """Create and fill the database unless it is there already; return how long that took."""
    harness.ensure_database(DATABASE, args.fresh)
    trellis = str(ROOT / ".venv" / "bin" / "trellis")
    subprocess.run([trellis, "manage", "migrate", "-v0"], check=True, env=env)
    deals = int(harness.psql("SELECT count(*) FROM crm_opportunity", DATABASE))
    timing = {}
    if deals == 0:
        started = time.monotonic()
        subprocess.run(
            [
                trellis,
                "demo",
                "--scale",
                str(args.scale),
                "--method",
                "bulk",
                "--moves-per-deal",
                str(args.moves_per_deal),
            ],
            check=True,
            env=env,
        )
        timing["generate_seconds"] = round(time.monotonic() - started, 1)
    return timing


def median_ms(function, runs: int) -> dict[str, float]:
    print(f"measuring {getattr(function, '__name__', '')}", file=sys.stderr, flush=True)
    function()  # warm the cache: the figures are for a server that has run a while
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }


def measure(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    import time_machine
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trellis.core import clock
    from trellis.core.models import User
    from trellis.process.pipelines import alerts, board, reports
    from trellis.process.pipelines.models import Pipeline, StageChange

    pipeline = Pipeline.objects.get(object_type="opportunity", is_default=True)
    admin = User.objects.get(username="admin")
    seller = User.objects.get(username="minji")
    result: dict = {"stage_changes": StageChange.objects.count()}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM crm_opportunity")
        result["deals"] = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM crm_opportunity WHERE owner_id = %s", [seller.pk])
        result["deals_of_the_salesperson"] = cursor.fetchone()[0]
        cursor.execute("SELECT version()")
        result["postgresql"] = cursor.fetchone()[0].split(" on ")[0]
    for who, user in (("admin", admin), ("sales", seller)):
        result[f"board_{who}"] = median_ms(lambda u=user: board.board(u, pipeline.pk), args.runs)
    today = clock.today()
    # What the report page shows by default: this month and the two before, by month.
    shown = reports.default_period()
    periods = {"3_months": (shown.start, shown.end)}
    if args.skip_reports:
        periods = {}
    elif args.year:
        year = reports.period(today - dt.timedelta(days=364), today, "month")
        periods["12_months"] = (year.start, year.end)
    for span, (start, end) in periods.items():
        for who, user in (("admin", admin), ("sales", seller)):
            for name, report in (
                ("funnel", lambda u=user, s=start, e=end: reports.funnel(u, pipeline, s, e)),
                (
                    "time_in_stage",
                    lambda u=user, s=start, e=end: reports.time_in_stage(u, pipeline, s, e),
                ),
                (
                    "bottleneck",
                    lambda u=user, s=start, e=end: reports.bottleneck(u, pipeline, s, e),
                ),
            ):
                result[f"{name}_{span}_{who}"] = median_ms(report, args.runs)

    # Alert timers: a bulk load sends no events, so plan them as after an import.
    started = time.perf_counter()
    result["planned_records"] = alerts.plan_all()
    result["plan_all_seconds"] = round(time.perf_counter() - started, 1)
    result["timers"] = alerts.timer_count()
    # As autovacuum would soon after millions of new timers: with the statistics of an empty
    # table, the planner reads every timer of a rule instead of those of the swept records.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE process_alerttimer")

    # The sweep, with the clock where nothing is due yet (just before the soonest timer), then
    # where exactly the ``--due`` soonest timers are due. Deals that sat too long before the
    # data was generated have timers due already; moving the clock back keeps them out.
    soonest = alerts.due_time_of_nth_timer(1)
    with time_machine.travel(soonest - dt.timedelta(seconds=1), tick=False):
        with CaptureQueriesContext(connection) as queries:
            alerts.sweep()
        result["sweep_nothing_due"] = median_ms(alerts.sweep, args.runs) | {"queries": len(queries)}
    # Each run fires the ``--due`` timers due soonest, so the next run takes the next ones.
    runs = []
    for _run in range(args.sweep_runs):
        due_at = alerts.due_time_of_nth_timer(args.due)
        with time_machine.travel(due_at + dt.timedelta(microseconds=1), tick=True):
            started = time.perf_counter()
            fired = 0
            sweeps = 0
            while batch := alerts.sweep():
                fired += batch
                sweeps += 1
            runs.append(
                {
                    "fired": fired,
                    "sweeps": sweeps,
                    "seconds": round(time.perf_counter() - started, 2),
                    "load_average": round(os.getloadavg()[0], 2),
                }
            )
    result["sweep_due"] = {
        "due": args.due,
        "median_seconds": statistics.median(run["seconds"] for run in runs),
        "runs": runs,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="deals to generate")
    parser.add_argument("--moves-per-deal", type=float, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--due", type=int, default=10_000, help="alert timers to make due")
    parser.add_argument("--sweep-runs", type=int, default=3, help="sweeps of --due timers")
    parser.add_argument("--fresh", action="store_true", help="drop and regenerate the data")
    parser.add_argument("--year", action="store_true", help="also report over twelve months")
    parser.add_argument("--skip-reports", action="store_true", help="the board and the sweep only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pipelines.json"))
    args = parser.parse_args()
    env = {
        **os.environ,
        "DATABASE_URL": PG + DATABASE,
        "DJANGO_SETTINGS_MODULE": "trellis.settings",
        "TRELLIS_VAR_DIR": os.environ.get("TRELLIS_VAR_DIR", str(ROOT / "bench" / "out")),
    }
    Path(env["TRELLIS_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    result = prepare(args, env)
    os.environ.update(env)
    result |= measure(args)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(result, indent=2, default=str)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
