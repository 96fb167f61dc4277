# wa-router — every target installs what it needs into .venv (from requirements.lock).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run worker test test-postgres test-fast lint fmt openapi bench lock clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the locked dependencies

run: $(STAMP) ## serve on SQLite (sandbox mode unless WA_ROUTER_ACCESS_TOKEN is set)
	$(BIN)/wa-router serve

worker: $(STAMP) ## run the dispatcher alone (with WA_ROUTER_WORKER=off on the API processes)
	$(BIN)/wa-router worker

test: $(STAMP) lint ## lint, then every test (PostgreSQL ones when WA_ROUTER_TEST_POSTGRES_URL is set)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q -m "not timing"
	$(BIN)/python -m pytest -q -n 0 -m timing  # rates and kill -9 races, alone on the machine

test-postgres: $(STAMP) ## the suite again with PostgreSQL behind every fixture (needs WA_ROUTER_TEST_POSTGRES_URL)
	WA_ROUTER_TEST_BACKEND=postgres $(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m "not slow and not timing"

test-fast: $(STAMP) ## the tests without the slow ones (real processes, long searches)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m "not slow"

lint: $(STAMP) ## ruff, mypy --strict, and the import direction app -> adapters -> domain
	$(BIN)/ruff check app adapters domain tests
	$(BIN)/ruff format --check app adapters domain tests
	$(BIN)/mypy
	$(BIN)/python -m tests.layers

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format app adapters domain tests
	$(BIN)/ruff check --fix app adapters domain tests

openapi: $(STAMP) ## regenerate openapi/openapi.json from the app
	$(BIN)/wa-router openapi --output openapi/openapi.json

bench: $(STAMP) ## benchmarks (tests/bench), printing ratios measured in one run
	$(BIN)/python -m pytest tests/bench -q -s -p no:xdist

lock: ## re-resolve requirements.lock from pyproject.toml (needs network)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal --python-version 3.11 -o requirements.lock

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
