#!/usr/bin/env bash
# The whole test suite: static checks, then pytest on SQLite and on PostgreSQL.
#
# PostgreSQL: TRELLIS_TEST_POSTGRES_URL names a database to test against (CI sets it, so CI
# always runs both passes). Without it, a PostgreSQL answering on 127.0.0.1:5432 is used
# through a throwaway database; with neither, the script says loudly that the PostgreSQL pass
# did not run.
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

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing Debian's chromium for the browser tests"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The browser tests need Debian's chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

if [ ! -x /usr/sbin/dovecot ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing Debian's dovecot for the IMAP polling tests"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
  else
    echo "The IMAP polling tests need Debian's dovecot: sudo apt-get install dovecot-imapd" >&2
    exit 1
  fi
fi

step "tests on SQLite"
TRELLIS_VAR_DIR="$(mktemp -d)" $BIN/pytest -q -n 2 --dist loadgroup "$@"

pg_url="${TRELLIS_TEST_POSTGRES_URL:-}"
psql_admin() { psql -q -h 127.0.0.1 -U postgres "$@"; }
if [ -z "$pg_url" ] && command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
  throwaway="trellis_test_$$"
  drop_throwaway() {
    # The database and the per-worker test databases pytest-django made from its name.
    for name in $(psql_admin -At -c \
        "SELECT datname FROM pg_database WHERE datname LIKE '%${throwaway}%'"); do
      psql_admin -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"
    done
  }
  trap drop_throwaway EXIT
  psql_admin -c "CREATE DATABASE $throwaway"
  pg_url="postgres://postgres@127.0.0.1:5432/$throwaway"
fi
if [ -n "$pg_url" ]; then
  step "tests on PostgreSQL"
  DATABASE_URL="$pg_url" TRELLIS_VAR_DIR="$(mktemp -d)" $BIN/pytest -q -n 2 --dist loadgroup "$@"
else
  step "tests on PostgreSQL: NOT RUN"
  echo "No PostgreSQL on 127.0.0.1:5432 and TRELLIS_TEST_POSTGRES_URL is not set."
  echo "Only the SQLite pass ran; CI runs both."
fi
