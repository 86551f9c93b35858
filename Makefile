# Segflow: `make test` and `make run` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install browser test unit integration flows lint run bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Segflow with its dev tools

browser: ## Debian's Chromium, for the console's browser tests (installed where missing)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the console's browser tests"; \
	  $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 || { \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }; }

test: $(STAMP) browser ## unit + integration tests (embedded broker, Postgres and Chromium set up by the tests and make)
	$(BIN)/pytest tests

unit: $(STAMP) ## unit tests only
	$(BIN)/pytest tests/unit

integration: $(STAMP) browser ## integration tests only
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
