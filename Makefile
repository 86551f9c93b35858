# Segflow: `make test` and `make run` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: help install test unit integration flows lint run bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Segflow with its dev tools

test: $(STAMP) ## unit + integration tests (embedded broker and Postgres started by the tests)
	$(BIN)/pytest tests

unit: $(STAMP) ## unit tests only
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## integration tests only
	$(BIN)/pytest tests/integration

flows: $(STAMP) ## run the catalog test files (ours and the peer suite) with `segflow test`
	sed 's#examples/segment/#segment/#' tests/peer/estuary-segmentation-tests.flow.yaml > $(VENV)/peer-tests.flow.yaml
	$(BIN)/segflow test tests/flows/*.flow.yaml $(VENV)/peer-tests.flow.yaml
	$(BIN)/segflow --catalog tests/flows/catalogs/groups test tests/flows/catalogs/groups/flows/*.flow.yaml

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

run: $(STAMP) ## the whole pipeline on embedded defaults, with demo traffic (Ctrl-C stops)
	$(BIN)/segflow dev

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## profile layer, then Segflow vs naive Faust, Quix Streams, Bytewax on the demo and toggle-heavy mixes (BIG=1: and the demo at 1M events); writes docs/benchmarks*.md
	$(BIN)/python -m bench.profiles
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.run --workload toggles
	$(if $(BIG),$(BIN)/python -m bench.run --big,)

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .segflow
