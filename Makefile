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

test: install  ## the whole suite against real Redis, PostgreSQL, Delta files and GE
	$(BIN)/pytest -q

# Started from inside DAGSTER_HOME so the production dagster.yaml at the root is not picked up (and not warned
# about). The one warning filtered on purpose: Dagster 1.13 marks `dagster dev` as superseded by `dg dev`.
ui: install  ## the Dagster UI (webserver + daemon) on the demo's SQLite instance, http://127.0.0.1:3000
	cd $(DAGSTER_HOME) && PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded" \
		$(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h 127.0.0.1 -p 3000

bench: install  ## benchmarks with their baselines; writes bench/results/latest.json and bench/RESULTS.md
	$(BIN)/python -m bench.run

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:  ## drop the lake and the demo instance's history (its committed dagster.yaml stays)
	rm -rf lake
	find .dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
