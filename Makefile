# KeyTech Panel — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# one BLAS thread unless set (python/keytech/__init__.py explains; tests import numpy first)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test venv bench docs reference clean evaluate

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/keytech demo

# two pytest-xdist workers; each test module (or the modules sharing a session warehouse) is one
# unit of work, heaviest first (tests/python/conftest.py); TEST_WORKERS=0 runs serially
TEST_WORKERS ?= 2
test: venv
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: venv
	$(BIN)/python -m keytech.bench

docs: venv
	$(BIN)/keytech docs

# frozen R reference values for tests/python/test_parity_r.py (needs Debian's r-base-core,
# r-cran-mass, r-cran-sandwich, r-cran-aer, r-cran-plm, r-cran-matchit; make test never calls R)
reference:
	Rscript tests/python/reference/make_reference.R

# dbt-project-evaluator (the vars in dbt_project.yml declare our conventions) when a copy of the
# package is present locally: EVALUATOR=path/to/dbt_project_evaluator (default
# ../dbt_project_evaluator). `dbt deps` cannot reach the hub offline, so the package is not a
# dependency; this target writes a temporary packages.yml pointing at the local copy (its own
# dependencies must be local too), builds only the evaluator's models and tests into a scratch
# warehouse (target/evaluator.duckdb) and removes packages.yml and dbt_packages afterwards.
EVALUATOR ?= ../dbt_project_evaluator
evaluate: venv
	@if [ ! -f "$(EVALUATOR)/dbt_project.yml" ]; then \
	  echo "dbt-project-evaluator not found at $(EVALUATOR) (set EVALUATOR=path to a local copy): skipped"; \
	  exit 0; fi; \
	if [ -e packages.yml ]; then echo "packages.yml exists: not overwriting it"; exit 1; fi; \
	trap 'rm -f packages.yml package-lock.yml; rm -rf dbt_packages' EXIT; \
	printf 'packages:\n  - local: %s\n' "$$(cd "$(EVALUATOR)" && pwd)" > packages.yml; \
	mkdir -p target; \
	$(BIN)/dbt deps --profiles-dir . --project-dir . && \
	KEYTECH_DB=target/evaluator.duckdb $(BIN)/dbt build --profiles-dir . --project-dir . \
	  --select package:dbt_project_evaluator

clean:
	rm -rf data/warehouse.duckdb data/landing output target logs
