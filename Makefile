# `make run` sets everything up and starts Trellis; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run setup test test-sqlite test-postgres lint format messages clean

run: setup
	$(BIN)/trellis serve

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole suite: lint, contracts, migrations up to date, tests on SQLite, then on PostgreSQL
# when DATABASE_URL points at one (CI sets it), and the browser tests in Chromium.
test: setup
	bash scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

messages: setup
	cd src/trellis && ../../$(BIN)/trellis manage makemessages -l ko --no-obsolete && ../../$(BIN)/trellis manage compilemessages

clean:
	rm -rf $(VENV) var
