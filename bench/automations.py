"""Automations on PostgreSQL: rule evaluation throughput with 50 rules, and the time-rule sweep
over 1,000,000 scheduled timers.

    .venv/bin/python bench/automations.py                     # both parts, 3 runs each
    .venv/bin/python bench/automations.py --skip-sweep --events 500
    .venv/bin/python bench/automations.py --skip-events       # the sweep only
    .venv/bin/python bench/automations.py --fresh             # drop and rebuild both databases

Events. Database ``trellis_bench_automations``: a salesperson with ``--deals`` deals (created
through ``crm.services.create`` before any rule exists) and 50 enabled rules on opportunities,
each saved with ``automations.services.save_rule`` (so each passes the cycle and race checks):
25 on "updated" (19 "only when newly met", 6 "every time"), 20 on "a field changed" (amount,
probability, currency, name) and 5 on "created"; conditions in CEL over amount, probability,
currency and name; actions that set the description or the expected close date (which no rule
reads), create a task for the owner, or send an e-mail. An event is one
``crm.services.update`` of a deal by the salesperson (amount, probability, sometimes the name
or the currency; the same seeded sequence every run), run outside any transaction, so that it
commits at once and the engine's subscribers run right after the commit, as in production.
Each run replays ``--events`` events round-robin over the deals, which are reset beforehand;
the baseline replays the same events with the 50 rules disabled (through the service). Rule
runs and baseline runs take turns. Figures: events per second (wall time), statements per
event, and CPU per event of this process and of its PostgreSQL backend (read from /proc), the
median of ``--runs`` runs each; then cProfile over ``--profile-events`` events.

Sweep. Database ``trellis_bench_automations_timers``: ``--timer-deals`` deals (200,000 by
default, written with COPY) and five time rules saved through the service, which plans one
timer per rule and deal: 1,000,000 timers. The rules: a follow-up task 14 days after the
expected close date, an e-mail 3 business days before it, a note in the description the day
after it, a check-in task 30 days after the deal was created, and a task 60 days after it
entered its stage. The clock is held (time-machine, ticking) one day after the data was made,
when no timer is due; the due set is the 10,000 timers with ``(object_id + rule_id) % 100 = 0``
(2,000 of each rule, on 10,000 different deals), made due by setting ``due_at`` a few minutes
in the past. Each run: reset (the due set's runs, tasks and descriptions removed, ``due_at``
set again, the emptied tables vacuumed; not timed), then ``fire_due_timers()`` until nothing
is due. The time rules' timers are planned by the bench itself, as the queued task that saving
a rule starts would. In turn with each run, the same due set is swept by ``--sweepers``
processes at once (2; forked, warm), as the sweep loops of a worker sweep it. With nothing due:
the median of ``--idle-calls`` calls. Median of ``--runs`` runs; one more run under cProfile
(``--profile-out`` keeps it for pstats).

Prints JSON (also written to ``--out``). Only 127.0.0.1 is contacted. Each part runs in a
process of its own, from a copy of ``src/trellis`` taken at the start
(``~/.cache/trellis-bench/automations-src``), so that one run measures one version of the code.
"""

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import harness
from harness import ROOT

EVENTS_DATABASE = "trellis_bench_automations"
SWEEP_DATABASE = "trellis_bench_automations_timers"
WORK = Path.home() / ".cache" / "trellis-bench"
SNAPSHOT = WORK / "automations-src"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIME_RULE_PREFIX = "Bench time: "
EVENT_RULE_PREFIX = "Bench: "


# Running things: databases, the snapshot, the parts in processes of their own.


def take_snapshot() -> str:
    """Copy src/trellis; return a short hash of the engine, to tell versions apart."""
    harness.take_snapshot(SNAPSHOT)
    engine = SNAPSHOT / "trellis" / "process" / "automations" / "engine.py"
    return hashlib.sha256(engine.read_bytes()).hexdigest()[:12]


def run_part(part: str, database: str, args: argparse.Namespace) -> dict:
    env = harness.trellis_environment(database, SNAPSHOT)
    trellis = str(ROOT / ".venv" / "bin" / "trellis")
    print(f"{part}: migrating {database}", file=sys.stderr, flush=True)
    subprocess.run([trellis, "manage", "migrate", "-v0"], check=True, env=env)
    command = [sys.executable, __file__, "--part", part, *sys.argv[1:]]
    done = subprocess.run(command, check=True, env=env, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# Measuring: CPU of this process and of its PostgreSQL backend, statements, load.


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _backend_cpu(pid: int) -> float:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_ms_per(count: int, client: float, pg: float) -> dict:
    """CPU seconds of the clients and of PostgreSQL as milliseconds per item."""
    return {
        "client": round(1000 * client / count, 2),
        "postgresql": round(1000 * pg / count, 2),
        "total": round(1000 * (client + pg) / count, 2),
    }


class Meter:
    """Wall time, statements, and CPU of the client and its backend over a block."""

    def __init__(self) -> None:
        self.statements = 0

    def _count(self, execute, sql, params, many, context):
        self.statements += 1
        return execute(sql, params, many, context)

    def __enter__(self) -> "Meter":
        from django.db import connection

        self.pid = _backend_pid()
        self._wrapper = connection.execute_wrapper(self._count)
        self._wrapper.__enter__()
        self.load_before = _load()
        self.cpu, self.pg = _own_cpu(), _backend_cpu(self.pid)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.client_cpu = _own_cpu() - self.cpu
        self.pg_cpu = _backend_cpu(self.pid) - self.pg
        self.load_after = _load()
        self._wrapper.__exit__(*exc)

    def figures(self, count: int, unit: str) -> dict:
        return {
            unit: count,
            "seconds": round(self.seconds, 3),
            f"{unit}_per_second": round(count / self.seconds, 1),
            f"statements_per_{unit[:-1]}": round(self.statements / count, 1),
            f"cpu_ms_per_{unit[:-1]}": cpu_ms_per(count, self.client_cpu, self.pg_cpu),
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
        }


def sweep_in_processes(processes: int) -> dict:
    """``fire_due_timers()`` in ``processes`` processes at once, as that many ``trellis
    worker`` processes sweep one database: wall time from the start signal until the last one
    is done, and the CPU of all of them and of their PostgreSQL backends."""
    from django.db import connection

    from trellis.process.automations import engine

    connection.close()  # each process opens its own
    context = multiprocessing.get_context("fork")
    go, results = context.Event(), context.Queue()

    def sweep() -> None:
        pid = _backend_pid()
        cpu, pg = _own_cpu(), _backend_cpu(pid)
        results.put("ready")
        go.wait()
        fired = engine.fire_due_timers()
        results.put((fired, _own_cpu() - cpu, _backend_cpu(pid) - pg))

    workers = [context.Process(target=sweep) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert results.get() == "ready"
    load_before = _load()
    started = time.perf_counter()
    go.set()
    done = [results.get() for _ in workers]
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0, worker.exitcode
    fired = sum(d[0] for d in done)
    client, pg = sum(d[1] for d in done), sum(d[2] for d in done)
    return {
        "timers": fired,
        "processes": processes,
        "fired_by_each": [d[0] for d in done],
        "seconds": round(seconds, 3),
        "timers_per_second": round(fired / seconds, 1),
        "cpu_ms_per_timer": cpu_ms_per(fired, client, pg),
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


class Statements:
    """Every statement run in a block (CaptureQueriesContext keeps only the last 9,000)."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def _keep(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def __enter__(self) -> "Statements":
        from django.db import connection

        self._wrapper = connection.execute_wrapper(self._keep)
        self._wrapper.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._wrapper.__exit__(*exc)


def _kinds(statements: list[str], count: int) -> dict[str, float]:
    kinds: dict[str, int] = {}
    for sql in statements:
        kind = harness.statement_kind(sql)
        kinds[kind] = kinds.get(kind, 0) + 1
    ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    return {kind: round(n / count, 2) for kind, n in ordered}


def _profile_rows(profile, count: int, total: float, limit: int = 30) -> list[dict]:
    import pstats

    stats = pstats.Stats(profile)
    found = []
    for (path, line, name), (_cc, calls, _tottime, cumtime, _callers) in stats.stats.items():
        if "trellis/" not in path:
            continue
        short = path.split(f"{SNAPSHOT.name}/")[-1].split("/src/")[-1]
        found.append(
            {
                "function": f"{short}:{line}({name})",
                "calls_per_item": round(calls / count, 2),
                "ms_per_item": round(1000 * cumtime / count, 3),
                "share": round(cumtime / total, 3),
            }
        )
    found.sort(key=lambda row: -row["ms_per_item"])
    return found[:limit]


def _database_facts() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(" on ")[0]
        cursor.execute("SHOW shared_buffers")
        buffers = cursor.fetchone()[0]
    return {"postgresql": version, "shared_buffers": buffers}


def _people(prefix: str, sellers: int = 1):
    from trellis.core import services as core
    from trellis.core.models import Role, Team, User

    core.ensure_default_rights()

    def user(username: str, role: str, **fields) -> User:
        found = User.objects.filter(username=username).first()
        return found or core.create_user(username, None, role=role, **fields)

    team = Team.objects.get_or_create(name=f"{prefix} team")[0]
    admin = user(
        f"{prefix}-admin", Role.ADMIN, is_superuser=True, email=f"{prefix}-admin@example.co.kr"
    )
    manager = user(
        f"{prefix}-manager", Role.MANAGER, team=team, email=f"{prefix}-manager@example.co.kr"
    )
    seller_list = [
        user(
            f"{prefix}-seller-{n}",
            Role.SALES,
            team=team,
            manager=manager,
            email=f"{prefix}-seller-{n}@example.co.kr",
        )
        for n in range(1, sellers + 1)
    ]
    return admin, seller_list


# Part one: events through 50 rules.


def _amount_range(currency: str) -> tuple[float, float]:
    return (10_000, 1_000_000) if currency == "USD" else (10_000_000, 1_000_000_000)


def _amount(rng: random.Random, currency: str) -> Decimal:
    low, high = _amount_range(currency)
    # Log-uniform: as many deals of 10-100 million won as of 100 million to a billion.
    value = 10 ** rng.uniform(len(str(int(low))) - 1, len(str(int(high))) - 1)
    return Decimal(int(value) // 1000 * 1000)


# How often an update changes each field: tuned so that about one rule in five fires per update.
AMOUNT_CHANGES, PROBABILITY_CHANGES, NAME_CHANGES = 0.8, 0.8, 0.15
BASE_NAMES = ["Fleet renewal", "Plant upgrade", "New line", "Service contract", "Pilot"]


def initial_deals(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    deals = []
    for n in range(count):
        currency = "USD" if rng.random() < 0.2 else "KRW"
        deals.append(
            {
                "name": f"{rng.choice(BASE_NAMES)} {n}",
                "amount": _amount(rng, currency),
                "currency": currency,
                "probability": rng.choice((10, 20, 30, 40)),
                "description": "",
                "expected_close_date": dt.date(2027, 3, 31) + dt.timedelta(days=n % 90),
            }
        )
    return deals


def event_sequence(deals: list[dict], count: int, seed: int) -> list[tuple[int, dict]]:
    """``count`` updates (deal index, data), round-robin over the deals, each changing the
    amount and/or the probability, now and then the name or the currency."""
    rng = random.Random(seed + 1)
    state = [dict(d) for d in deals]
    events = []
    for n in range(count):
        index = n % len(deals)
        deal = state[index]
        data: dict = {}
        if rng.random() < 0.05:
            currency = "USD" if deal["currency"] == "KRW" else "KRW"
            data["currency"] = currency
            data["amount"] = _amount(rng, currency)
        elif rng.random() < AMOUNT_CHANGES:
            data["amount"] = _amount(rng, deal["currency"])
        if rng.random() < PROBABILITY_CHANGES or not data:
            choices = [p for p in range(10, 100, 10) if p != deal["probability"]]
            data["probability"] = rng.choice(choices)
        if rng.random() < NAME_CHANGES:
            base = deal["name"].removeprefix("Renewal: ")
            data["name"] = base if deal["name"] != base else f"Renewal: {base}"
        deal.update(data)
        events.append(
            (index, {k: str(v) if isinstance(v, Decimal) else v for k, v in data.items()})
        )
    return events


def _big(won: int, dollars: int) -> str:
    krw = f"currency == 'KRW' && amount >= {won}.0"
    return f"(({krw}) || (currency == 'USD' && amount >= {dollars}.0))"


def _task(title: str, hours: int = 24) -> dict:
    return {"kind": "create_task", "title": title, "assignee": "owner", "due_in_hours": hours}


def _mail(subject: str, to: str = "owner") -> dict:
    return {
        "kind": "send_email",
        "to": to,
        "subject": subject,
        "body": "{{ name }}: {{ amount }} {{ currency }}, {{ probability }}%.\n{{ record_url }}",
    }


def _note(text: str) -> dict:
    return {"kind": "set_fields", "values": {"description": f"'{text}: ' + name"}}


def event_rules() -> list[dict]:
    """The 50 rules: (trigger, params, mode, condition, actions) in order."""
    rules: list[dict] = []

    def add(name, trigger, condition="", actions=(), params=None, mode="newly"):
        rules.append(
            {
                "object_type": "opportunity",
                "name": EVENT_RULE_PREFIX + name,
                "trigger": trigger,
                "trigger_params": params or {},
                "mode": mode,
                "condition": condition,
                "actions": list(actions),
                "position": len(rules) + 1,
            }
        )

    # "Updated", only when the deal newly meets the condition.
    for p in (50, 60, 70, 80):
        add(
            f"Probability reached {p}%",
            "updated",
            f"probability >= {p}",
            [_task(f"Deal at {p}%: review the next step for {{{{ name }}}}")],
        )
    for p in (30, 40):
        add(
            f"Probability fell below {p}%",
            "updated",
            f"probability < {p}",
            [_mail(f"{{{{ name }}}} fell below {p}%")],
        )
    for won, usd in ((300_000_000, 250_000), (500_000_000, 400_000), (100_000_000, 80_000)):
        add(
            f"Large deal over {won:,} won",
            "updated",
            _big(won, usd),
            [_mail("Large deal: {{ name }}", "'deal-desk@example.co.kr'")],
        )
    add(
        "Large and likely",
        "updated",
        f"{_big(200_000_000, 150_000)} && probability >= 60",
        [_task("Involve the deal desk in {{ name }}", 8), _note("Deal desk")],
    )
    add(
        "Small and unlikely",
        "updated",
        f"!{_big(30_000_000, 25_000)} && probability <= 30",
        [_note("Low priority")],
    )
    add(
        "Renewal, likely",
        "updated",
        "name.startsWith('Renewal') && probability >= 50",
        [_task("Prepare the renewal contract for {{ name }}")],
    )
    add(
        "Renewal, large",
        "updated",
        f"name.contains('Renewal') && {_big(200_000_000, 150_000)}",
        [_mail("Large renewal: {{ name }}")],
    )
    add(
        "Dollar deal, likely",
        "updated",
        "currency == 'USD' && probability >= 60",
        [_task("Check the exchange-rate clause of {{ name }}")],
    )
    add(
        "Won deal in sight",
        "updated",
        "probability >= 90",
        [{"kind": "set_fields", "values": {"expected_close_date": "'2027-01-31'"}}],
    )
    add(
        "Weighted value over 100 million",
        "updated",
        "currency == 'KRW' && amount * double(probability) / 100.0 >= 100000000.0",
        [_note("Forecast"), _mail("{{ name }} counts in the forecast")],
    )
    add(
        "Pilot that became large",
        "updated",
        f"name.contains('Pilot') && {_big(100_000_000, 80_000)}",
        [_task("Turn the pilot {{ name }} into a contract")],
    )
    add(
        "Half likely",
        "updated",
        "probability >= 40 && probability <= 60",
        [_mail("{{ name }} is now at {{ probability }}%")],
    )
    add(
        "Mid-size, half likely",
        "updated",
        f"{_big(50_000_000, 40_000)} && !{_big(300_000_000, 250_000)} && probability == 50",
        [_note("Mid-size")],
    )
    # "Updated", every time the condition holds (they only notify: they read every field).
    add(
        "Every update of a likely deal",
        "updated",
        "probability >= 70",
        [_mail("Update on {{ name }}")],
        mode="every",
    )
    add(
        "Every update of a large deal",
        "updated",
        _big(200_000_000, 150_000),
        [_mail("Very large deal updated: {{ name }}", "'deal-desk@example.co.kr'")],
        mode="every",
    )
    add(
        "Every update of a dollar deal over 40%",
        "updated",
        "currency == 'USD' && probability >= 40",
        [_task("Re-quote {{ name }} at today's rate", 48)],
        mode="every",
    )
    add(
        "Every update of a large renewal",
        "updated",
        f"name.startsWith('Renewal') && {_big(400_000_000, 300_000)}",
        [_mail("Renewal {{ name }} changed")],
        mode="every",
    )
    add(
        "Every update of an unlikely deal",
        "updated",
        "probability <= 30",
        [_task("Decide whether to drop {{ name }}", 72)],
        mode="every",
    )
    add(
        "Every update of a likely mid-size deal",
        "updated",
        f"probability >= 50 && {_big(100_000_000, 80_000)}",
        [_mail("{{ name }} changed at {{ probability }}%")],
        mode="every",
    )
    # "A field changed".
    for p in (20, 40):
        add(
            f"Amount changed on a deal under {p}%",
            "field_changed",
            f"probability < {p}",
            [_note(f"Repriced under {p}%")],
            params={"field": "amount"},
            mode="every",
        )
    add(
        "Amount changed on a large deal",
        "field_changed",
        _big(300_000_000, 250_000),
        [_mail("New amount for {{ name }}")],
        params={"field": "amount"},
        mode="every",
    )
    add(
        "Amount changed, likely deal",
        "field_changed",
        "probability >= 60",
        [_task("Confirm the new amount of {{ name }} with the customer")],
        params={"field": "amount"},
        mode="every",
    )
    add(
        "Amount dropped under 50 million",
        "field_changed",
        "!" + _big(50_000_000, 40_000),
        [_mail("{{ name }} is now under 50 million")],
        params={"field": "amount"},
    )
    add(
        "Amount changed on a dollar deal",
        "field_changed",
        "currency == 'USD'",
        [_mail("New dollar amount for {{ name }}", "'finance@example.co.kr'")],
        params={"field": "amount"},
        mode="every",
    )
    add(
        "Amount changed on a deal over 20 million",
        "field_changed",
        "currency == 'KRW' && amount >= 20000000.0",
        [_mail("{{ name }}: new amount {{ amount }}", "'finance@example.co.kr'")],
        params={"field": "amount"},
        mode="every",
    )
    for p in (30, 60, 90):
        add(
            f"Probability set to {p}",
            "field_changed",
            "",
            [_note(f"Moved to {p}%")],
            params={"field": "probability", "to": p},
        )
    add(
        "Probability left 50",
        "field_changed",
        "",
        [_mail("{{ name }} left 50%")],
        params={"field": "probability", "from": 50},
    )
    add(
        "Probability changed on a large deal",
        "field_changed",
        _big(100_000_000, 80_000),
        [_mail("{{ name }} now at {{ probability }}%")],
        params={"field": "probability"},
        mode="every",
    )
    add(
        "Probability changed on a likely deal",
        "field_changed",
        "probability >= 50",
        [_task("Schedule the next call for {{ name }}")],
        params={"field": "probability"},
        mode="every",
    )
    add(
        "Probability under 30",
        "field_changed",
        "probability < 30",
        [_note("Cold")],
        params={"field": "probability"},
        mode="every",
    )
    add(
        "Currency set to dollars",
        "field_changed",
        "",
        [_task("Check the dollar price of {{ name }}"), _note("Repriced in USD")],
        params={"field": "currency", "to": "USD"},
    )
    add(
        "Currency set to won",
        "field_changed",
        "",
        [_mail("{{ name }} is now in won")],
        params={"field": "currency", "to": "KRW"},
    )
    add(
        "Currency changed on a likely deal",
        "field_changed",
        "probability >= 50",
        [_mail("Currency of {{ name }} changed", "'finance@example.co.kr'")],
        params={"field": "currency"},
        mode="every",
    )
    add(
        "Renamed to a renewal",
        "field_changed",
        "name.startsWith('Renewal')",
        [_task("Look up the last contract of {{ name }}")],
        params={"field": "name"},
    )
    add(
        "Renamed, large deal",
        "field_changed",
        _big(200_000_000, 150_000),
        [_mail("{{ name }} was renamed")],
        params={"field": "name"},
        mode="every",
    )
    add(
        "Renamed away from a renewal",
        "field_changed",
        "!name.startsWith('Renewal')",
        [_note("No longer a renewal")],
        params={"field": "name"},
    )
    # "Created": never fired by an update, but read and matched on every event.
    add(
        "New large deal",
        "created",
        _big(300_000_000, 250_000),
        [_mail("New large deal: {{ name }}", "'deal-desk@example.co.kr'")],
    )
    add("New dollar deal", "created", "currency == 'USD'", [_task("Price {{ name }} in USD")])
    add(
        "New renewal",
        "created",
        "name.startsWith('Renewal')",
        [_task("Look up the last contract of {{ name }}")],
    )
    add("New deal, welcome note", "created", "", [_note("New")])
    add("New likely deal", "created", "probability >= 50", [_mail("New likely deal: {{ name }}")])
    assert len(rules) == 50, len(rules)
    return rules


def events_part(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    import cProfile

    from django.db import connection
    from django.db.models import Count

    from trellis.crm import services as crm
    from trellis.crm.models import Opportunity
    from trellis.process.automations import services as automations
    from trellis.process.automations.models import Rule, RuleRun

    admin, (seller,) = _people("bench-auto")
    deals = initial_deals(args.deals, args.seed)
    ids = list(Opportunity.objects.filter(owner=seller).order_by("pk").values_list("pk", flat=True))
    if len(ids) < args.deals:
        account = crm.create(seller, "account", {"name": "Bench account"})
        print(f"events: creating {args.deals - len(ids)} deals", file=sys.stderr, flush=True)
        for deal in deals[len(ids) :]:
            crm.create(
                seller,
                "opportunity",
                {
                    **deal,
                    "account": account.pk,
                    "amount": str(deal["amount"]),
                    "expected_close_date": deal["expected_close_date"].isoformat(),
                },
            )
        ids = list(
            Opportunity.objects.filter(owner=seller).order_by("pk").values_list("pk", flat=True)
        )
    ids = ids[: args.deals]
    if not Rule.objects.filter(name__startswith=EVENT_RULE_PREFIX).exists():
        for data in event_rules():
            automations.save_rule(admin, data)
    rules = list(Rule.objects.filter(name__startswith=EVENT_RULE_PREFIX).order_by("position"))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    events = [(ids[i], data) for i, data in event_sequence(deals, args.events, args.seed)]

    def set_enabled(enabled: bool) -> None:
        # Enabling in their order: each is checked against the ones enabled before it.
        for rule in rules:
            rule.refresh_from_db()
            if rule.is_enabled != enabled:
                automations.set_rule_enabled(admin, rule.pk, enabled, rule.version)

    def reset() -> None:
        """The deals as they were made, and no rule runs (so no throttle carries over)."""
        objects = list(Opportunity.objects.filter(pk__in=ids).order_by("pk"))
        for deal, initial in zip(objects, deals, strict=True):
            for name, value in initial.items():
                setattr(deal, name, value)
        Opportunity.objects.bulk_update(objects, list(deals[0]), batch_size=500)
        RuleRun.objects.all().delete()

    def drive(items) -> None:
        for pk, data in items:
            version = Opportunity.objects.values_list("version", flat=True).get(pk=pk)
            crm.update(seller, "opportunity", pk, data, version)

    def one_run(with_rules: bool) -> dict:
        set_enabled(with_rules)
        reset()
        connection.close()  # a fresh backend per run, as after a deploy
        print(
            f"events: {len(events)} {'with' if with_rules else 'without'} rules",
            file=sys.stderr,
            flush=True,
        )
        with Meter() as meter:
            drive(events)
        figures = meter.figures(len(events), "events")
        outcomes = dict(RuleRun.objects.values_list("outcome").annotate(n=Count("pk")))
        figures["rule_runs_per_event"] = {k: round(v / len(events), 2) for k, v in outcomes.items()}
        fired0 = RuleRun.objects.filter(outcome="fired", depth=0).count()
        figures["rules_fired_per_event_by_the_update"] = round(fired0 / len(events), 2)
        print(f"  {figures['events_per_second']} events/s", file=sys.stderr, flush=True)
        return figures

    runs: dict[str, list[dict]] = {"rules": [], "baseline": []}
    for n in range(args.runs):
        order = (True, False) if n % 2 == 0 else (False, True)
        for with_rules in order:
            runs["rules" if with_rules else "baseline"].append(one_run(with_rules))

    def median(side: str, *path: str) -> float:
        values = []
        for run in runs[side]:
            value = run
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    result: dict = {
        "deals_updated": len(ids),
        "events_per_run": len(events),
        "rule_set": {
            "enabled": len(rules),
            "by_trigger": dict(
                Rule.objects.filter(name__startswith=EVENT_RULE_PREFIX)
                .values_list("trigger")
                .annotate(n=Count("pk"))
            ),
        },
    }
    for side in ("rules", "baseline"):
        result[side] = {
            "events_per_second": median(side, "events_per_second"),
            "statements_per_event": median(side, "statements_per_event"),
            "cpu_ms_per_event": {
                key: median(side, "cpu_ms_per_event", key)
                for key in ("client", "postgresql", "total")
            },
            "runs": runs[side],
        }
    result["ratio_events_per_second"] = round(
        result["rules"]["events_per_second"] / result["baseline"]["events_per_second"], 3
    )
    result["ratio_cpu_per_event"] = round(
        result["rules"]["cpu_ms_per_event"]["total"]
        / result["baseline"]["cpu_ms_per_event"]["total"],
        2,
    )

    result["database"] = _database_facts()
    if not args.profile_events:
        return result
    # Where the time goes: statements of a sample, and cProfile over more events.
    set_enabled(True)
    reset()
    sample = events[: args.profile_events]
    with Statements() as statements:
        drive(sample)
    result["statements_by_kind_per_event"] = _kinds(statements.sql, len(sample))
    reset()
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    drive(sample)
    profile.disable()
    seconds = time.perf_counter() - started
    result["profile"] = {
        "events": len(sample),
        "profiled_ms_per_event": round(1000 * seconds / len(sample), 2),
        "trellis_functions_cumulative": _profile_rows(profile, len(sample), seconds),
    }
    return result


# Part two: the sweep over a million timers.


def _copy(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def time_rules() -> list[dict]:
    def rule(name, field, offset, unit, direction, actions, condition="status == 'open'"):
        return {
            "object_type": "opportunity",
            "name": TIME_RULE_PREFIX + name,
            "trigger": "time",
            "trigger_params": {
                "field": field,
                "offset": offset,
                "unit": unit,
                "direction": direction,
            },
            "condition": condition,
            "actions": actions,
        }

    return [
        rule(
            "follow up after the close date",
            "expected_close_date",
            14,
            "days",
            "after",
            [_task("Follow up on {{ name }}: the close date passed two weeks ago", 8)],
        ),
        rule(
            "remind before the close date",
            "expected_close_date",
            3,
            "business_days",
            "before",
            [_mail("{{ name }} is due to close in three business days")],
        ),
        rule(
            "mark overdue",
            "expected_close_date",
            1,
            "days",
            "after",
            [{"kind": "set_fields", "values": {"description": "'Past its close date'"}}],
        ),
        rule(
            "check in a month after creation",
            "created_at",
            30,
            "days",
            "after",
            [_task("Check in on {{ name }}", 24)],
        ),
        rule(
            "stuck in a stage",
            "stage_entered_at",
            60,
            "days",
            "after",
            [_task("{{ name }} has been in its stage for 60 days", 24)],
            condition=f"status == 'open' && {_big(50_000_000, 40_000)}",
        ),
    ]


def fill_timer_database(args: argparse.Namespace) -> dict:
    """Deals by COPY, then the five time rules through the service (which plans the timers)."""
    from django.db import connection, transaction

    from trellis.core import clock
    from trellis.crm.models import Account
    from trellis.process.automations import engine
    from trellis.process.automations import services as automations
    from trellis.process.automations.models import RuleTimer
    from trellis.process.pipelines.models import Pipeline

    admin, sellers = _people("bench-timers", sellers=20)
    team_id = sellers[0].team_id
    rng = random.Random(args.seed)
    now = clock.now()
    timing: dict = {}
    started = time.perf_counter()
    accounts = Account.objects.bulk_create(
        Account(
            name=f"Customer {n}",
            owner=sellers[n % 20],
            team_id=team_id,
            search_text=f"customer {n}",
        )
        for n in range(1000)
    )
    stage = (
        Pipeline.objects.get(object_type="opportunity", is_default=True)
        .stages.order_by("order")
        .first()
    )
    columns = [
        "version",
        "created_at",
        "updated_at",
        "search_text",
        "name",
        "amount",
        "currency",
        "expected_close_date",
        "probability",
        "status",
        "description",
        "account_id",
        "owner_id",
        "team_id",
        "probability_manual",
        "stage_id",
        "stage_entered_at",
    ]
    today = clock.today()
    print(f"sweep: writing {args.timer_deals} deals", file=sys.stderr, flush=True)

    def rows(start: int, stop: int):
        for n in range(start, stop):
            currency = "USD" if rng.random() < 0.2 else "KRW"
            created = now - dt.timedelta(minutes=rng.randint(60, 20 * 24 * 60))
            name = f"{rng.choice(BASE_NAMES)} {n}"
            yield (
                1,
                created,
                created,
                name.lower(),
                name,
                _amount(rng, currency),
                currency,
                today + dt.timedelta(days=rng.randint(10, 365)),
                rng.choice((10, 20, 30, 40)),
                "open",
                "",
                accounts[n % len(accounts)].pk,
                sellers[n % 20].pk,
                team_id,
                False,
                stage.pk,
                created,
            )

    with connection.cursor() as cursor:
        for start in range(0, args.timer_deals, 50_000):
            with transaction.atomic():
                _copy(
                    cursor,
                    "crm_opportunity",
                    columns,
                    rows(start, min(start + 50_000, args.timer_deals)),
                )
        cursor.execute("ANALYZE")
    timing["deals_seconds"] = round(time.perf_counter() - started, 1)
    # Saving a time rule queues the planning of its timers; the queued task's work is done
    # here in the same process (a worker would do the same), timed with the save.
    timing["save_and_plan_time_rule_seconds"] = []
    for data in time_rules():
        print(f"sweep: saving {data['name']}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        rule = automations.save_rule(admin, data)
        engine.plan_rule(rule)
        timing["save_and_plan_time_rule_seconds"].append(round(time.perf_counter() - started, 1))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE process_ruletimer")
    timing["timers"] = RuleTimer.objects.count()
    return timing


def sweep_part(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    import cProfile

    import time_machine
    from django.db import connection
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext

    from trellis.crm.models import Opportunity
    from trellis.process.automations import engine
    from trellis.process.automations.models import Rule, RuleRun, RuleTimer
    from trellis.process.models import Task, Thread

    result: dict = {}
    if not Rule.objects.filter(name__startswith=TIME_RULE_PREFIX).exists():
        result["generation"] = fill_timer_database(args)
    rules = list(Rule.objects.filter(name__startswith=TIME_RULE_PREFIX).order_by("pk"))
    made_at = max(r.updated_at for r in rules)
    # The clock one day after the data was made: nothing is due yet, whenever this runs.
    moment = made_at + dt.timedelta(days=1)
    due_set = "(object_id + rule_id) %% 100 = 0"
    # A tenth of it, for the profiled run.
    profiled_set = "(object_id + rule_id) %% 1000 = 0"
    rule_ids = tuple(r.pk for r in rules)

    def sql(statement: str, params=None) -> int:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.rowcount

    def reset(due: bool, which: str = due_set) -> int:
        """Undo what a sweep of the due set did; with ``due``, make ``which`` due again."""
        RuleRun.objects.filter(rule_id__in=rule_ids).delete()
        threads = Thread.objects.filter(created_at__gte=moment - dt.timedelta(hours=1))
        Task.objects.filter(thread__in=threads).delete()
        threads.delete()
        # By id: with the statistics of deals that had no description, the planner would join
        # each described deal to a full scan of the timers.
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT DISTINCT object_id FROM process_ruletimer WHERE {due_set}", [])
            deal_ids = [row[0] for row in cursor.fetchall()]
        Opportunity.objects.filter(pk__in=deal_ids).exclude(description="").update(description="")
        # A few minutes overdue, spread so that the batches follow the due order.
        value = "%s - interval '1 second' * (600 - (object_id %% 600))" if due else "NULL"
        if due:
            sql(f"UPDATE process_ruletimer SET due_at = NULL WHERE {due_set}", [])
        count = sql(
            f"UPDATE process_ruletimer SET due_at = {value} WHERE {which}",
            [moment] if due else [],
        )
        # The rows a run wrote were deleted again: without a vacuum, the next run's planner
        # works from the counts of an empty table and walks the dead index entries. A table of
        # a real database is not emptied and refilled between sweeps.
        for table in ("process_task", "process_thread", "process_rulerun", "process_ruletimer"):
            sql(f"VACUUM ANALYZE {table}")
        return count

    with time_machine.travel(moment, tick=True):
        result["timers"] = RuleTimer.objects.count()
        result["timers_scheduled"] = RuleTimer.objects.filter(due_at__isnull=False).count()
        result["deals"] = Opportunity.objects.count()
        result["time_rules"] = [r.name.removeprefix(TIME_RULE_PREFIX) for r in rules]

        # Nothing due.
        reset(due=False)
        result["timers_scheduled_when_none_due"] = RuleTimer.objects.filter(
            due_at__isnull=False
        ).count()
        engine.fire_due_timers()
        times = []
        load_before = _load()
        for _ in range(args.idle_calls):
            started = time.perf_counter()
            fired = engine.fire_due_timers()
            times.append((time.perf_counter() - started) * 1000)
            assert fired == 0, fired
        with CaptureQueriesContext(connection) as queries:
            engine.fire_due_timers()
        select = next(q["sql"] for q in queries.captured_queries if "process_ruletimer" in q["sql"])
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + select)
            plan = [row[0] for row in cursor.fetchall()]
        result["nothing_due"] = {
            "calls": args.idle_calls,
            "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
            "statements": len(queries.captured_queries),
            "load_average_before": load_before,
            "load_average_after": _load(),
            "plan": plan,
        }
        print(
            f"sweep: nothing due {result['nothing_due']['median_ms']} ms",
            file=sys.stderr,
            flush=True,
        )

        def outcome(due: int) -> dict:
            """What a sweep of ``due`` timers left: timers still due, runs, tasks."""
            return {
                "due": due,
                "left_due": RuleTimer.objects.filter(due_at__lte=moment).count(),
                "runs": dict(
                    RuleRun.objects.filter(rule_id__in=rule_ids)
                    .values_list("outcome")
                    .annotate(n=Count("pk"))
                ),
                "tasks_created": Thread.objects.filter(
                    created_at__gte=moment - dt.timedelta(hours=1)
                ).count(),
            }

        # 10,000 due.
        runs, runs_together = [], []
        for n in range(args.runs + 1):
            profiled = n == args.runs
            due = reset(due=True, which=profiled_set if profiled else due_set)
            connection.close()
            print(
                f"sweep: {due} due{' (profiled)' if profiled else ''}", file=sys.stderr, flush=True
            )
            profile = cProfile.Profile() if profiled else None
            with Meter() as meter:
                if profile:
                    profile.enable()
                fired = engine.fire_due_timers()
                if profile:
                    profile.disable()
            figures = meter.figures(fired, "timers")
            figures.update(outcome(due))
            if profile:
                if args.profile_out:
                    profile.dump_stats(args.profile_out)
                result["profile"] = {
                    "timers": fired,
                    "profiled_seconds": round(meter.seconds, 2),
                    "trellis_functions_cumulative": _profile_rows(profile, fired, meter.seconds),
                }
            else:
                runs.append(figures)
                print(f"  {figures['seconds']} s", file=sys.stderr, flush=True)
                # The same due set swept by several processes at once, in turn with one.
                if args.sweepers > 1:
                    due = reset(due=True)
                    together = sweep_in_processes(args.sweepers)
                    together.update(outcome(due))
                    runs_together.append(together)
                    print(
                        f"  {together['seconds']} s in {args.sweepers} processes",
                        file=sys.stderr,
                        flush=True,
                    )
        # Statements by kind over a smaller due set: one batch of the sweep.
        reset(due=True)
        sql(
            f"UPDATE process_ruletimer SET due_at = NULL WHERE {due_set} AND object_id > 5000",
            [],
        )
        with Statements() as statements:
            fired = engine.fire_due_timers()
        result["statements_by_kind_per_timer"] = _kinds(statements.sql, fired)
        result["statements_by_kind_timers"] = fired
        reset(due=False)

    result["due"] = {
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "median_timers_per_second": statistics.median(r["timers_per_second"] for r in runs),
        "median_statements_per_timer": statistics.median(r["statements_per_timer"] for r in runs),
        "median_cpu_ms_per_timer": {
            key: statistics.median(r["cpu_ms_per_timer"][key] for r in runs)
            for key in ("client", "postgresql", "total")
        },
        "runs": runs,
    }
    if runs_together:
        result["due_in_processes"] = {
            "processes": args.sweepers,
            "median_seconds": statistics.median(r["seconds"] for r in runs_together),
            "median_cpu_ms_per_timer": {
                key: statistics.median(r["cpu_ms_per_timer"][key] for r in runs_together)
                for key in ("client", "postgresql", "total")
            },
            "runs": runs_together,
        }
    result["database"] = _database_facts()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('process_ruletimer'))")
        result["database"]["ruletimer_size"] = cursor.fetchone()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=200, help="updates per run")
    parser.add_argument("--deals", type=int, default=100, help="deals the updates go round")
    parser.add_argument("--profile-events", type=int, default=100)
    parser.add_argument(
        "--timer-deals",
        type=int,
        default=200_000,
        help="deals of the sweep database; five timers each",
    )
    parser.add_argument("--idle-calls", type=int, default=20)
    parser.add_argument(
        "--sweepers",
        type=int,
        default=2,
        help="also sweep the due set in this many processes at once (1: only one process)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-events", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="drop and rebuild the databases")
    parser.add_argument("--part", choices=("events", "sweep"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile-out", help="also write the sweep's full profile here, for pstats"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "automations.json"))
    args = parser.parse_args()
    if args.part:
        part = events_part if args.part == "events" else sweep_part
        print(json.dumps(part(args), default=str), flush=True)
        return
    started = dt.datetime.now(dt.UTC)
    result: dict = {
        "date": started.date().isoformat(),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/automations.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "shared": True,
            "python": sys.version.split()[0],
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "code": {
            "git_head": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
            ).stdout.strip(),
            "engine_sha256": take_snapshot(),
        },
    }
    if not args.skip_events:
        harness.ensure_database(EVENTS_DATABASE, args.fresh)
        result["events"] = run_part("events", EVENTS_DATABASE, args)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not args.skip_sweep:
        harness.ensure_database(SWEEP_DATABASE, args.fresh)
        result["sweep"] = run_part("sweep", SWEEP_DATABASE, args)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["minutes"] = round((dt.datetime.now(dt.UTC) - started).total_seconds() / 60, 1)
    text = json.dumps(result, indent=2, default=str)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
