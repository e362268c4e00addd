# KeyTech Panel — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# one BLAS thread unless set (python/keytech/__init__.py explains; tests import numpy first)
export OPENBLAS_NUM_THREADS ?= 1
# one thread for pyfixest's Rust demeaner: the same numbers on every machine (same file explains)
export RAYON_NUM_THREADS ?= 1

.PHONY: demo test venv bench docs reference clean evaluate

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# the demo's estimation in DEMO_JOBS worker processes (the machine's cores, at most 4; the stored
# results are the same for any number: keytech estimate --help)
DEMO_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
demo: venv
	$(BIN)/keytech demo --jobs $(DEMO_JOBS)

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
# package and of its dependency dbt_utils is present locally: EVALUATOR=path/to/dbt_project_evaluator
# (default ../dbt_project_evaluator), DBT_UTILS=path/to/dbt-utils (default: dbt-utils beside the
# evaluator). Neither is a dependency of the project and `dbt deps` is not run: it would reach the
# package hub, and it resolves a local package's own `local:` dependencies from our project root
# (dbt-core issue 5410), so the two copies are linked into dbt_packages/ directly. Builds only the
# evaluator's models and tests into a scratch warehouse (target/evaluator.duckdb), prints the
# findings of every fct_* table (tests/tools/evaluator_findings.py: fails on a finding that
# docs/architecture.md does not accept) and removes dbt_packages afterwards.
# Tested with dbt-project-evaluator v1.3.2 and dbt-utils 1.4.1 (docs/architecture.md).
EVALUATOR ?= ../dbt_project_evaluator
DBT_UTILS ?= $(EVALUATOR)/../dbt-utils
evaluate: venv
	@if [ ! -f "$(EVALUATOR)/dbt_project.yml" ]; then \
	  echo "dbt-project-evaluator not found at $(EVALUATOR) (set EVALUATOR=path to a local copy): skipped"; \
	  exit 0; fi; \
	if [ ! -f "$(DBT_UTILS)/dbt_project.yml" ]; then \
	  echo "dbt_utils not found at $(DBT_UTILS) (set DBT_UTILS=path to a local copy of dbt-utils)"; exit 1; fi; \
	if [ -e dbt_packages ]; then echo "dbt_packages/ exists: not overwriting it"; exit 1; fi; \
	trap 'rm -rf dbt_packages' EXIT; \
	mkdir -p dbt_packages target; \
	ln -s "$$(cd "$(EVALUATOR)" && pwd)" dbt_packages/dbt_project_evaluator; \
	ln -s "$$(cd "$(DBT_UTILS)" && pwd)" dbt_packages/dbt_utils; \
	rm -f target/evaluator.duckdb; \
	KEYTECH_DB=target/evaluator.duckdb $(BIN)/dbt build --profiles-dir . --project-dir . \
	  --select package:dbt_project_evaluator; \
	status=$$?; \
	$(BIN)/python tests/tools/evaluator_findings.py target/evaluator.duckdb || status=1; \
	exit $$status

clean:
	rm -rf data/warehouse.duckdb data/landing output target logs
