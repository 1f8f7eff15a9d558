# Set-up and checks. Each target creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

.PHONY: test lint lab bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: re-install when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(PY)
	$(PIP) install -e '.[$(subst +,$(comma),$*)]'
	touch $@

comma := ,

## make test: install everything the tests need, then run them all (PostgreSQL and browser
## tests included; they skip locally with a hint when the server or browser is missing).
test: $(VENV)/.stamp-test+postgres+e2e+lab
	$(PY) tests/run_tests.py $(ARGS)

## make lint: ruff (style and likely bugs) over the repository, then mypy over the package;
## both read their settings from pyproject.toml and fail on any finding. The postgres extra is
## installed too so that mypy checks the PostgreSQL store against psycopg's own types.
lint: $(VENV)/.stamp-lint+postgres
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## make lab: open JupyterLab on the example notebooks (LAB_ARGS for more options).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(VENV)/.stamp-lab+postgres
	cd notebooks && ../$(PY) -m jupyterlab $(ROOT_FLAG) $(LAB_ARGS)

## make bench: run the benchmarks and print ratios against their baselines (QUICK=1: small).
bench: $(VENV)/.stamp-bench+test
	QUICK=$(QUICK) $(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache benchmarks/results/*.tmp
