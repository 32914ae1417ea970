# Developer tasks.  `make` lists them.  VENV=/path/to/venv to use another virtualenv.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
MESSAGE ?=

.DEFAULT_GOAL := help
.PHONY: help install lint typecheck test run migration bench lock

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## create the virtualenv (VENV, default .venv) and pip install -e ".[test]"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'

lint: ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: ## mypy (configured in pyproject.toml)
	$(BIN)/mypy

test: ## the test suite (Redis/PostgreSQL tests skip when those are absent, fail under CI=true)
	$(BIN)/pytest

run: ## receiver + worker in one process (SQLite, in-process queue)
	$(BIN)/callpush run

migration: ## autogenerate a migration from the models: make migration MESSAGE="add x"
	@test -n "$(MESSAGE)" || { echo 'usage: make migration MESSAGE="what changed"'; exit 2; }
	$(BIN)/python -m worker.storage.migrations revision -m "$(MESSAGE)"
	$(BIN)/ruff format worker/storage/alembic_scripts/versions
	$(BIN)/ruff check --fix-only --quiet worker/storage/alembic_scripts/versions
	$(BIN)/python -m worker.storage.migrations check

bench: ## the benchmarks
	$(BIN)/python -m bench all

# Resolved for Python 3.11 on every platform (--universal: the image is built for amd64 and
# arm64), with the hash of every wheel and sdist so `pip install --require-hashes` accepts any.
UV_COMPILE := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --quiet
lock: ## refresh requirements/runtime.txt and requirements/test.txt from pyproject.toml (uv)
	test -x $(BIN)/uv || $(BIN)/pip install -e '.[lock]'
	$(UV_COMPILE) --upgrade -o requirements/runtime.txt
	$(UV_COMPILE) --upgrade --extra test -o requirements/test.txt
