#!/usr/bin/env bash
# The whole test suite: static checks, then pytest on SQLite and on PostgreSQL.
#
# PostgreSQL: TRELLIS_TEST_POSTGRES_URL names a server database to test against (CI sets it).
# Without it, a PostgreSQL answering on 127.0.0.1:5432 is used through a throwaway database;
# with neither, the PostgreSQL pass is reported as not run and the script fails, unless
# TRELLIS_TEST_SQLITE_ONLY=1 says that is intended.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n== %s\n' "$*"; }

step "lint"
$BIN/ruff check .
$BIN/ruff format --check .
$BIN/lint-imports --no-cache

step "migrations match the models"
TRELLIS_VAR_DIR="$(mktemp -d)" $BIN/trellis manage makemigrations --check --dry-run

if [ ! -x "${TRELLIS_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "Chromium is needed for the browser tests: apt-get install chromium (or set TRELLIS_CHROMIUM)" >&2
  exit 1
fi

step "tests on SQLite"
TRELLIS_VAR_DIR="$(mktemp -d)" $BIN/pytest -q -n 2 --dist loadgroup "$@"

pg_url="${TRELLIS_TEST_POSTGRES_URL:-}"
throwaway=""
if [ -z "$pg_url" ] && command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
  throwaway="trellis_test_$$"
  psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $throwaway" >/dev/null
  trap 'psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $throwaway WITH (FORCE)" >/dev/null; psql -q -h 127.0.0.1 -U postgres -At -c "SELECT datname FROM pg_database WHERE datname LIKE '"'"'test_${throwaway}%'"'"'" | xargs -r -I{} psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS {} WITH (FORCE)" >/dev/null' EXIT
  pg_url="postgres://postgres@127.0.0.1:5432/$throwaway"
fi
if [ -n "$pg_url" ]; then
  step "tests on PostgreSQL"
  DATABASE_URL="$pg_url" TRELLIS_VAR_DIR="$(mktemp -d)" $BIN/pytest -q -n 2 --dist loadgroup -m "not e2e" "$@"
elif [ "${TRELLIS_TEST_SQLITE_ONLY:-}" = 1 ]; then
  echo "PostgreSQL pass not run (TRELLIS_TEST_SQLITE_ONLY=1)"
else
  echo "No PostgreSQL to test against: set TRELLIS_TEST_POSTGRES_URL, start one on 127.0.0.1:5432," >&2
  echo "or run with TRELLIS_TEST_SQLITE_ONLY=1." >&2
  exit 1
fi
