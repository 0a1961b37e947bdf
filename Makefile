# Two commands a new user needs: `make run` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine: make run TORCH=torch
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH)" | tr -c 'a-zA-Z0-9.\n' '_')

.PHONY: install run test test-floor lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(STAMP)

# `mlflow run --env-manager local` runs the entry point with the `python` first on PATH;
# `main` runs the study, then analyze (the verdict) and report (reports/<study-name>/).
run: install
	PATH="$(abspath $(VENV))/bin:$$PATH" MLFLOW_EXPERIMENT_NAME=$${MLFLOW_EXPERIMENT_NAME:-study} \
	  mlflow run . -e main --env-manager local

# The tests in TEST_WORKERS processes (pytest-xdist; most of their time is subprocesses and
# servers, one torch thread each), a module's tests in one of them (its module fixtures, the
# trained studies and servers, are made once, not once per process). The tests that stop
# PostgreSQL stop a cluster of their own (tests/private_postgres.py), so none runs alone.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadscope
test: install
	$(PY) -m pytest $(XDIST)

# The storages, tracking and runtime tests on the oldest supported versions (constraints-floor.txt),
# in a venv of their own, so that pyproject.toml's lower bounds are tested, not hoped for.
FLOOR_VENV ?= .venv-floor
test-floor:
	test -x $(FLOOR_VENV)/bin/python || python3 -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(FLOOR_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	  -c constraints-floor.txt -e ".[dev]"
	$(FLOOR_VENV)/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
	  | grep -iE '^(mlflow|optuna|sqlalchemy|numpy|pandas|psycopg) '
	$(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider $(XDIST) \
	  tests/storages_tests tests/tracking_tests tests/runtime_tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(FLOOR_VENV) mlflow.db* optuna.db* mlruns mlartifacts .pytest_cache
