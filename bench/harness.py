"""What the benchmark scripts share: databases made with psql, the environment Trellis runs
in, a snapshot of the code under test, and statements sorted by kind."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432/"


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-Atqc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def ensure_database(name: str, fresh: bool) -> bool:
    """Create the database if missing (dropping it first with ``fresh``); True if new."""
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"
    if exists and fresh:
        psql(f'DROP DATABASE "{name}" WITH (FORCE)')
        exists = False
    if not exists:
        psql(f'CREATE DATABASE "{name}"')
    return not exists


def trellis_environment(database: str, snapshot: Path | None = None) -> dict[str, str]:
    """Trellis on ``database``, quiet, running the code copied to ``snapshot`` if there is one."""
    var_dir = Path(os.environ.get("TRELLIS_VAR_DIR", str(ROOT / "bench" / "out")))
    var_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "DATABASE_URL": PG + database,
        "DJANGO_SETTINGS_MODULE": "trellis.settings",
        "TRELLIS_VAR_DIR": str(var_dir),
        "TRELLIS_LOG_LEVEL": "ERROR",
        **({"PYTHONPATH": str(snapshot)} if snapshot and (snapshot / "trellis").exists() else {}),
    }


def take_snapshot(snapshot: Path) -> None:
    """Copy src/trellis, so that one run measures one version of the code."""
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(
        ROOT / "src" / "trellis",
        snapshot / "trellis",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def statement_kind(sql: str) -> str:
    """``SELECT process_approvalrequest``: the verb and the first table named."""
    words = sql.replace('"', "").split()
    verb = words[0].upper()
    table = ""
    keywords = {"INSERT": ("INTO",), "UPDATE": ("UPDATE",)}.get(verb, ("FROM", "INTO", "UPDATE"))
    for keyword in keywords:
        if keyword in words[:-1]:
            table = words[words.index(keyword) + 1]
            break
    if verb == "SELECT" and table == "":
        table = "(no table)"
    return f"{verb} {table}".strip()
