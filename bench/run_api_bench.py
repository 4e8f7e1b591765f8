"""The API benchmark, end to end: data, servers, load, a markdown table.

    .venv/bin/python bench/run_api_bench.py                 # 1M opportunities + 10k, and BottleCRM
    .venv/bin/python bench/run_api_bench.py --scale 100000 --small-scale 0 --skip-bottlecrm

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth), Debian's ``wrk``, and for the
BottleCRM comparison Python 3.12 (``--bottlecrm-python``). Talks to nothing but 127.0.0.1
(and, once, the package index to install ``django-crm`` into its own virtualenv).

Databases (all named ``trellis_bench_*``) and the generated data are kept between runs and
reused; ``--fresh`` drops and regenerates them. Results are printed as markdown and written as
JSON to ``--out``.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TRELLIS_BIN = ROOT / ".venv" / "bin"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"

# The Trellis endpoints measured. {placeholders} come from trellis_fixture.py.
TRELLIS_LIST = "/api/v1/opportunities/"
TRELLIS_TARGETS = [
    ("ceiling: GET /healthz", "GET", "/healthz", None),
    ("opportunity list, page 1", "GET", TRELLIS_LIST + "?page=1&page_size=25", None),
    (
        "opportunity list, filtered (status+owner)",
        "GET",
        TRELLIS_LIST + "?status=open&owner={minji_id}&page=1&page_size=25",
        None,
    ),
    (
        "opportunity list, filtered (account)",
        "GET",
        TRELLIS_LIST + "?account={account_id}&page=1&page_size=25",
        None,
    ),
    ("opportunity search q=한빛소프트", "GET", TRELLIS_LIST + "?q=한빛소프트&page_size=25", None),
    ("opportunity search q=클라우드", "GET", TRELLIS_LIST + "?q=클라우드&page_size=25", None),
    (
        "opportunity create",
        "POST",
        TRELLIS_LIST,
        '{{"name": "Bench deal {{n}}", "account_id": {account_id}, "amount": "12000000",'
        ' "currency": "KRW", "expected_close_date": "2027-03-31", "probability": 30}}',
    ),
]
BOTTLECRM_TARGETS = [
    ("BottleCRM lead list", "GET", "/api/leads/", None),
    (
        "BottleCRM lead create",
        "POST",
        "/api/leads/",
        '{{"title": "Bench lead", "first_name": "Minji", "last_name": "Kim",'
        ' "email": "minji.kim.{{n}}@bench-create.example.com", "company_name": "Hanbit Soft",'
        ' "status": "assigned", "source": "call"}}',
    ),
]

WRK_LUA = """
local counter = 0
local template = [==[BODY]==]
wrk.method = "METHOD"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "AUTH"
setup = function(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
if template ~= "" then
  request = function()
    counter = counter + 1
    local body = template:gsub("{n}", "RUN-" .. tid .. "-" .. counter)
    return wrk.format(nil, nil, nil, body)
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d,'
    .. ' "status": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


# -- PostgreSQL


def pg_exec(sql: str, dbname: str = "postgres") -> list[tuple]:
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def db_exists(name: str) -> bool:
    return bool(pg_exec(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def recreate_db(name: str) -> None:
    assert name.startswith("trellis_bench"), name
    pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_exec(f'CREATE DATABASE "{name}"')


def count_rows(dbname: str, table: str) -> int:
    try:
        return pg_exec(f"SELECT count(*) FROM {table}", dbname)[0][0]
    except psycopg.errors.UndefinedTable:
        return 0


# -- servers


class Server:
    """gunicorn with two sync workers on 127.0.0.1, stopped on exit."""

    def __init__(self, gunicorn: Path, app: str, port: int, env: dict, cwd: Path):
        self.port = port
        self.log_path = cwd / f"gunicorn-{port}.log"
        command = [
            str(gunicorn),
            app,
            "--workers",
            "2",
            "--bind",
            f"{HOST}:{port}",
            "--no-control-socket",
            "--access-logfile",
            "-" if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null",
        ]
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=5):
                    pass
            except urllib.error.HTTPError:
                pass
            except OSError:
                time.sleep(0.3)
                continue
            time.sleep(0.5)
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited (port taken?); see {self.log_path}")
            return
        raise RuntimeError(f"server on port {self.port} did not answer; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def free_port() -> int:
    """A port nobody listens on now (other programs on this machine may use fixed ones)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def request(port: int, method: str, path: str, token: str, body: str | None) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://{HOST}:{port}{urllib.parse.quote(path, safe='/?=&%')}",
        method=method,
        data=body.encode() if body else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- load


def wrk(port, method, path, token, body, *, duration, connections, work) -> dict:
    script = work / "wrk.lua"
    script.write_text(
        WRK_LUA.replace("BODY", body or "")
        .replace("METHOD", method)
        .replace("AUTH", f"Bearer {token}" if token else "")
        .replace("RUN", secrets.token_hex(4))
    )
    url = f"http://{HOST}:{port}{urllib.parse.quote(path, safe='/?=&%')}"
    command = [
        "wrk",
        "--threads",
        str(min(2, connections)),
        "--connections",
        str(connections),
        "--duration",
        f"{duration}s",
        "--timeout",
        "60s",
        "--script",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    seconds = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": data["requests"] / seconds,
        "p50_ms": data["p50_us"] / 1000,
        "p95_ms": data["p95_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "requests": data["requests"],
        "errors": errors,
    }


def measure(name, port, method, path, token, body, args, work, duration=None, single=False):
    """Warm up, then ``args.runs`` runs; the median of each figure over the runs."""
    duration = duration or args.duration
    wrk(port, method, path, token, body, duration=2, connections=args.connections, work=work)
    runs = []
    load_before = os.getloadavg()[0]
    for _ in range(args.runs):
        runs.append(
            wrk(
                port,
                method,
                path,
                token,
                body,
                duration=duration,
                connections=args.connections,
                work=work,
            )
        )
    result = {
        key: statistics.median(run[key] for run in runs)
        for key in ("rps", "p50_ms", "p95_ms", "p99_ms")
    }
    if single and args.single_runs:
        # One connection: no request waits for another, so this is the latency of the
        # request itself (the runs above, with more connections than workers, include queueing).
        alone = [
            wrk(port, method, path, token, body, duration=duration, connections=1, work=work)
            for _ in range(args.single_runs)
        ]
        for key in ("rps", "p50_ms", "p95_ms"):
            result[f"{key}_1c"] = statistics.median(run[key] for run in alone)
        result["runs_1c"] = alone
    result["requests"] = sum(run["requests"] for run in runs)
    result["errors"] = sum(run["errors"] for run in runs)
    result["runs"] = runs
    # The machine is shared: the 1-minute load average says how busy it was.
    result["load"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    if "p95_ms_1c" in result:
        log(f"    1 connection: p50 {result['p50_ms_1c']:.1f} ms, p95 {result['p95_ms_1c']:.1f} ms")
    log(
        f"  {name}: {result['rps']:.1f} rps, p50 {result['p50_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms ({result['requests']} requests, {result['errors']} errors, "
        f"load {result['load']})"
    )
    return result


# -- Trellis


# Trellis' source as it was when the run started (see snapshot_source).
SNAPSHOT: Path | None = None


def snapshot_source(work: Path) -> str:
    """Copy ``src/trellis`` aside and run every Trellis process from the copy.

    Others may be editing the working tree while a benchmark runs; a half-saved file would
    turn a run into 500s. The copy shadows the editable install through PYTHONPATH.
    Returns a description of the measured code (commit, and whether the tree had changes).
    """
    global SNAPSHOT
    target = work / "snapshot"
    for attempt in range(20):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            ROOT / "src" / "trellis",
            target / "trellis",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        check = subprocess.run(
            [TRELLIS_BIN / "python", "-c", "import django; django.setup(); import trellis.urls"],
            env={
                **os.environ,
                "PYTHONPATH": str(target),
                "DJANGO_SETTINGS_MODULE": "trellis.settings",
                "TRELLIS_VAR_DIR": str(work / "var-check"),
            },
            capture_output=True,
            text=True,
        )
        if check.returncode == 0:
            break
        log(f"source does not import yet (attempt {attempt + 1}); retrying in 15 s")
        time.sleep(15)
    else:
        raise RuntimeError(f"Trellis does not import:\n{check.stderr[-2000:]}")
    SNAPSHOT = target
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True)
    return commit.stdout.strip() + (" + uncommitted changes in src/" if dirty.stdout else "")


def trellis_env(dbname: str, var_dir: Path, secret: str) -> dict:
    env = dict(os.environ)
    if SNAPSHOT:
        env["PYTHONPATH"] = str(SNAPSHOT)
    env.update(
        DATABASE_URL=f"postgres://postgres@{HOST}:5432/{dbname}",
        TRELLIS_VAR_DIR=str(var_dir),
        TRELLIS_SECRET_KEY=secret,
        TRELLIS_DEBUG="0",
        TRELLIS_LOG_LEVEL="ERROR",
    )
    return env


def prepare_trellis(scale: int, args, work: Path, secret: str) -> tuple[str, dict, dict]:
    dbname = f"trellis_bench_{label(scale)}"
    var_dir = work / f"var-{label(scale)}"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = trellis_env(dbname, var_dir, secret)
    info: dict = {"database": dbname}
    have = count_rows(dbname, "crm_opportunity") if db_exists(dbname) else -1
    if args.fresh or have not in (-1, scale):
        log(f"{dbname}: {have} opportunities, want {scale}: recreating")
        recreate_db(dbname)
        have = -1
    if have == -1:
        if not db_exists(dbname):
            recreate_db(dbname)
        log(f"{dbname}: migrate")
        subprocess.run(
            [TRELLIS_BIN / "trellis", "manage", "migrate", "-v", "0"], env=env, check=True
        )
        log(f"{dbname}: trellis demo --scale {scale} --seed 1")
        started = time.monotonic()
        subprocess.run(
            [TRELLIS_BIN / "trellis", "demo", "--scale", str(scale), "--seed", "1"],
            env=env,
            check=True,
            cwd=var_dir,
        )
        info["generation_seconds"] = round(time.monotonic() - started, 1)
        log(f"{dbname}: generated in {info['generation_seconds']} s")
    else:
        subprocess.run(
            [TRELLIS_BIN / "trellis", "manage", "migrate", "-v", "0"], env=env, check=True
        )
        log(f"{dbname}: reusing {have:,} opportunities")
    fixture = json.loads(
        subprocess.run(
            [TRELLIS_BIN / "python", BENCH / "trellis_fixture.py"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    info.update(fixture)
    return dbname, env, info


def bench_trellis(scale: int, args, work: Path, secret: str, targets) -> dict:
    dbname, env, info = prepare_trellis(scale, args, work, secret)
    port = args.port or free_port()
    server = Server(TRELLIS_BIN / "gunicorn", "trellis.wsgi:application", port, env, work)
    results = {}
    try:
        server.wait_ready("/healthz")
        for name, method, path, body in targets:
            path = path.format(**info)
            body = body.format(**info) if body else None
            if method == "POST" and args.skip_create:
                continue
            status, text = request(port, method, path, info["token"], body)
            if status >= 300:
                raise RuntimeError(f"{name}: {method} {path} -> {status}: {text[:300]}")
            results[name] = measure(
                name, port, method, path, info["token"], body, args, work, single=method == "GET"
            )
            results[name]["request"] = f"{method} {path}"
    finally:
        server.stop()
    # Creates are not kept: the next run should find the dataset it generated.
    pg_exec("DELETE FROM crm_opportunity WHERE name LIKE 'Bench deal %'", dbname)
    info.pop("token", None)
    info.pop("token_minji", None)
    return {"info": info, "results": results}


# -- BottleCRM


def bottlecrm_venv(args, work: Path) -> Path:
    venv = work / "bottlecrm-venv"
    if not (venv / "bin" / "gunicorn").exists():
        log(f"BottleCRM: creating {venv} with {args.bottlecrm_python}")
        subprocess.run([args.bottlecrm_python, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [venv / "bin" / "pip", "install", "--quiet", "django-crm", "gunicorn"], check=True
        )
    return venv


def bottlecrm_env(dbname: str, secret: str) -> dict:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("DATABASE_URL", "TRELLIS_"))]:
        del env[key]
    env.update(
        DJANGO_SETTINGS_MODULE="crm.settings",
        DBNAME=dbname,
        DBUSER="postgres",
        DBPASSWORD="",
        DBHOST=HOST,
        DBPORT="5432",
        SECRET_KEY=secret,
        ENV_TYPE="dev",
        DEBUG="False",
        ALLOWED_HOSTS=HOST,
        # Never reached in these requests (no assignee, so no e-mail task), but keep it local.
        CELERY_BROKER_URL=f"redis://{HOST}:6379/0",
        CELERY_RESULT_BACKEND=f"redis://{HOST}:6379/0",
    )
    return env


def bench_bottlecrm(leads: int, args, work: Path, secret: str) -> dict:
    venv = bottlecrm_venv(args, work)
    dbname = f"trellis_bench_bottlecrm_{label(leads)}"
    run_dir = work / f"bottlecrm-{label(leads)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = bottlecrm_env(dbname, secret)
    if args.fresh or not db_exists(dbname):
        recreate_db(dbname)
    log(f"{dbname}: migrate")
    subprocess.run(
        [venv / "bin" / "django-admin", "migrate", "-v", "0"],
        env=env,
        cwd=run_dir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    log(f"{dbname}: fill to {leads:,} leads")
    setup = json.loads(
        subprocess.run(
            [venv / "bin" / "python", BENCH / "bottlecrm_setup.py", "--leads", str(leads)],
            env=env,
            cwd=run_dir,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    )
    info = {"database": dbname, "leads": setup["leads"]}
    if setup["created"]:
        info["generation_seconds"] = setup["seconds"]
    port = args.port + 1 if args.port else free_port()
    server = Server(venv / "bin" / "gunicorn", "crm.wsgi:application", port, env, run_dir)
    results = {}
    try:
        server.wait_ready("/healthz/")
        for name, method, path, body in BOTTLECRM_TARGETS:
            if method == "POST" and args.skip_create:
                continue
            body = body.format() if body else None
            first_body = body.replace("{n}", secrets.token_hex(6)) if body else None
            status, text = request(port, method, path, setup["token"], first_body)
            if status >= 300:
                raise RuntimeError(f"{name}: {method} {path} -> {status}: {text[:300]}")
            duration = args.duration * (3 if leads >= 100_000 else 1)
            results[name] = measure(
                name, port, method, path, setup["token"], body, args, work, duration
            )
            results[name]["request"] = f"{method} {path}"
    finally:
        server.stop()
    pg_exec("DELETE FROM lead WHERE email LIKE '%@bench-create.example.com'", dbname)
    return {"info": info, "results": results}


# -- report


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(
        next(
            x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
        ).split()[1]
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "postgresql": pg_exec("SHOW server_version")[0][0],
        "python": platform.python_version(),
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0],
    }


def args_line(report: dict) -> str:
    a = report["args"]
    return (
        f"wrk, {a['connections']} connections, {a['runs']} runs of {a['duration']} s each "
        f"(median); 1-connection latency: {a['single_runs']} runs; gunicorn, 2 sync workers"
    )


def table(report: dict) -> str:
    lines = []
    for size, block in report["sizes"].items():
        ceiling = block["trellis"]["results"].get("ceiling: GET /healthz", {}).get("rps")
        lines += [
            f"\n### {size}\n",
            f"{args_line(report)}\n",
            "| endpoint | rps | p50 ms | p95 ms | ratio to ceiling | 1 conn: p50 / p95 ms "
            "| errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for system in ("trellis", "bottlecrm"):
            for name, r in block.get(system, {}).get("results", {}).items():
                ratio = f"{r['rps'] / ceiling:.1%}" if ceiling else "-"
                alone = f"{r['p50_ms_1c']:.1f} / {r['p95_ms_1c']:.1f}" if "p95_ms_1c" in r else "-"
                lines.append(
                    f"| {name} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                    f"| {ratio} | {alone} | {r['errors']} |"
                )
        trellis = block["trellis"]["results"]
        bottle = block.get("bottlecrm", {}).get("results", {})
        if bottle:
            lines.append("")
            pairs = [
                ("opportunity list, page 1", "BottleCRM lead list"),
                ("opportunity create", "BottleCRM lead create"),
            ]
            for ours, theirs in pairs:
                if ours in trellis and theirs in bottle:
                    factor = trellis[ours]["rps"] / bottle[theirs]["rps"]
                    lines.append(f"- {ours} / {theirs}: {factor:.1f}×")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="opportunities (big run)")
    parser.add_argument("--small-scale", type=int, default=10_000, help="0: skip the small run")
    parser.add_argument("--bottlecrm-leads", type=int, help="default: same as each scale")
    parser.add_argument("--skip-bottlecrm", action="store_true")
    parser.add_argument("--bottlecrm-python", default=shutil.which("python3.12") or "python3.12")
    parser.add_argument("--skip-create", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="drop and regenerate the databases")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--single-runs", type=int, default=3, help="runs with 1 connection (Trellis GETs)"
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--work-dir", default=str(Path.home() / ".cache" / "trellis-bench"))
    parser.add_argument("--out", default=str(BENCH / "results" / "api_bench.json"))
    args = parser.parse_args()

    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    secret_file = work / "secret_key"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
    secret = secret_file.read_text().strip()

    report = {"machine": machine(), "args": vars(args), "sizes": {}}
    report["machine"]["trellis_source"] = snapshot_source(work)
    scales = [s for s in (args.small_scale, args.scale) if s]
    for scale in scales:
        size = f"{scale:,} opportunities"
        log(f"== Trellis, {size}")
        block = {"trellis": bench_trellis(scale, args, work, secret, TRELLIS_TARGETS)}
        report["sizes"][size] = block
        if not args.skip_bottlecrm:
            leads = args.bottlecrm_leads or scale
            log(f"== BottleCRM, {leads:,} leads")
            block["bottlecrm"] = bench_bottlecrm(leads, args, work, secret)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\n## API benchmark ({report['machine']['date']})\n")
    print(json.dumps(report["machine"]))
    print(table(report))
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
