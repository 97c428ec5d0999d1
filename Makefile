# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export FS_LAKE_DIR ?= $(CURDIR)/lake

.PHONY: install demo test ui bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the main job end to end on the real data, then a summary
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/fstore demo

test: install  ## the whole suite against real Redis, PostgreSQL, Delta files and GE (.ci/prepare installs and starts what they need)
	.ci/prepare
	$(BIN)/pytest -q

# `dg dev` reads the project from pyproject.toml ([tool.dg]); DAGSTER_HOME points it at the demo's instance.
ui: install  ## the Dagster UI (webserver + daemons) on the demo's SQLite instance, http://127.0.0.1:3000
	@mkdir -p $(DAGSTER_HOME)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev -h 127.0.0.1 -p 3000

bench: install  ## benchmarks with their baselines; writes bench/results/latest.json and bench/RESULTS.md
	$(BIN)/python -m bench.run

lint: install  ## ruff, and every Dagster definition loads (`dg check defs`)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg check defs

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:  ## drop the lake and the demo instance's history (its committed dagster.yaml stays)
	rm -rf lake
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
