"""What one list request costs, in queries and time, measured inside Django (no HTTP, no load).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/trellis_bench_10k \\
        .venv/bin/python bench/list_cost.py

Run it against a small and a big database: the query count of each list request must be the
same constant, and its time must not grow with the table. Prints one JSON object; with
``--explain`` also the plan of each request's main query.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trellis.settings")
django.setup()

from django.db import connection, reset_queries  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from trellis.core.models import User  # noqa: E402
from trellis.core.services import create_api_token  # noqa: E402
from trellis.crm.models import Opportunity  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_api_bench import TRELLIS_TARGETS  # noqa: E402


def create_cost(client: Client, path: str, body: str, args) -> dict:
    """Queries and time of a create; the records made are deleted again."""

    def post(n: int):
        data = body.replace("{n}", f"list-cost {n}")
        response = client.post(path, data, content_type="application/json")
        assert response.status_code == 201, response.content
        return response

    post(0)
    reset_queries()
    with CaptureQueriesContext(connection) as captured:
        post(1)
    queries = list(captured.captured_queries)
    times = []
    for n in range(args.repeat):
        started = time.perf_counter()
        post(n + 2)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    Opportunity.objects.filter(name__startswith="Bench deal list-cost").delete()
    return {
        "path": f"POST {path}",
        "queries": len(queries),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
        "sql": [q["sql"][:200] for q in queries],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()

    admin = User.objects.get(username="admin")
    minji = User.objects.get(username="minji")
    newest = Opportunity.objects.order_by("-id").values("account_id").first()
    values = {"minji_id": minji.pk, "account_id": newest["account_id"]}
    _token, raw = create_api_token(admin, "list-cost")
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {raw}")
    report = {"opportunities": Opportunity.objects.count(), "requests": {}}
    for name, method, path, body in TRELLIS_TARGETS:
        if "opportunit" not in path:
            continue
        path = path.format(**values)
        if method == "POST":
            report["requests"][name] = create_cost(client, path, body.format(**values), args)
            continue
        assert client.get(path).status_code == 200, path
        # Each request starts by emptying the query log; start from an empty one too.
        reset_queries()
        with CaptureQueriesContext(connection) as captured:
            client.get(path)
        # A view of the connection's log, which the next request empties: copy it now.
        queries = list(captured.captured_queries)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        entry = {
            "path": path,
            "queries": len(queries),
            "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            "sql": [q["sql"] for q in queries],
        }
        if args.explain:
            main_query = max(queries, key=lambda q: float(q["time"]))["sql"]
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + main_query)
                entry["plan"] = [row[0] for row in cursor.fetchall()]
        report["requests"][name] = entry
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
