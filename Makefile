# KeyTech Panel — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# one BLAS thread unless set (python/keytech/__init__.py explains; tests import numpy first)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo test venv bench docs reference clean

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

clean:
	rm -rf data/warehouse.duckdb data/landing output target logs
