"""Where the time of one list request goes, in-process, under cProfile.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/trellis_bench_1m \\
        .venv/bin/python bench/profile_list.py [--path '/api/v1/opportunities/?page=1']

Prints the request's time split into a few parts (a part's time includes what it calls, so
the parts overlap a little) and the top functions by own time.
"""

import argparse
import cProfile
import os
import pstats
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trellis.settings")
django.setup()

from django.test import Client  # noqa: E402

from trellis.core.models import User  # noqa: E402
from trellis.core.services import create_api_token  # noqa: E402

# (label, file suffix, function name): cumulative time of these functions.
PARTS = [
    ("token lookup (query included)", "core/services.py", "authenticate_token"),
    ("SQL execution: psycopg execute", "psycopg/cursor.py", "execute"),
    ("SQL execution: fetching rows", "psycopg/cursor.py", "fetchmany"),
    ("ORM: compiling SQL", "django/db/models/sql/compiler.py", "as_sql"),
    ("ORM: building querysets (filter, values)", "django/db/models/query.py", "_filter_or_exclude"),
    ("rows -> JSON-ready dicts (present)", "trellis/crm/api.py", "present"),
    ("JSON encoding", "json/encoder.py", "encode"),
    ("ninja: parsing query parameters", "ninja/params/models.py", "resolve"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", default="/api/v1/opportunities/?page=1&page_size=25")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    _token, raw = create_api_token(User.objects.get(username="admin"), "profile")
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {raw}")
    for _ in range(20):
        assert client.get(args.path).status_code == 200
    started = time.perf_counter()
    for _ in range(args.requests):
        client.get("/healthz")
    healthz_ms = (time.perf_counter() - started) * 1000 / args.requests
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for _ in range(args.requests):
        client.get(args.path)
    profile.disable()
    wall_ms = (time.perf_counter() - started) * 1000 / args.requests
    stats = pstats.Stats(profile)
    print(f"{args.path}: {wall_ms:.2f} ms per request under cProfile")
    print(f"GET /healthz without profiling: {healthz_ms:.2f} ms per request")
    for label, suffix, function in PARTS:
        spent = sum(
            value[3]
            for (filename, _line, name), value in stats.stats.items()
            if filename.endswith(suffix) and name == function
        )
        print(f"  {label:<45} {spent * 1000 / args.requests:6.2f} ms")
    stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
