# Set-up and checks. Each target creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

.PHONY: test lint lab bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras: re-install when pyproject.toml changes. A set is also satisfied
# by a stamp newer than pyproject.toml whose set includes it, so `make lab` installs nothing
# after `make test` (whose extras include lab's).
$(VENV)/.stamp-%: pyproject.toml | $(PY)
	@for stamp in $(VENV)/.stamp-*; do \
	  [ -e "$$stamp" ] && [ "$$stamp" -nt pyproject.toml ] && $(PY) -c "$$SUBSET" '$*' \
	    "$${stamp##*/.stamp-}" && echo "extras $* are installed ($${stamp##*/})" && \
	    touch $@ && exit 0; \
	done; \
	$(PIP) install -e '.[$(subst +,$(comma),$*)]' && touch $@

export SUBSET := import sys; a, b = (set(x.split("+")) for x in sys.argv[1:3]); sys.exit(not a <= b)

comma := ,

## make test: install everything the tests need, run `make lint` (a finding fails the run), then
## every test (PostgreSQL and browser tests included; they skip locally with a hint when the
## server or browser is missing, and fail under CI=true).
test: $(VENV)/.stamp-test+postgres+e2e+lab+lint
	@$(MAKE) --no-print-directory lint
	$(PY) tests/run_tests.py $(ARGS)

## make lint: ruff (style and likely bugs) over the repository, then mypy over the package;
## both read their settings from pyproject.toml and fail on any finding. The postgres extra is
## installed too so that mypy checks the PostgreSQL store against psycopg's own types.
lint: $(VENV)/.stamp-lint+postgres
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## make lab: open JupyterLab on the example notebooks; LAB_ARGS for more options, e.g.
## make lab LAB_ARGS="--port 8899 --no-browser". Ctrl+C twice stops it.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(VENV)/.stamp-lab+postgres
	cd notebooks && ../$(PY) -m jupyterlab $(ROOT_FLAG) $(LAB_ARGS)

## make bench: run the benchmarks and print ratios against their baselines (QUICK=1: small).
bench: $(VENV)/.stamp-bench+test
	QUICK=$(QUICK) $(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache benchmarks/results/*.tmp
