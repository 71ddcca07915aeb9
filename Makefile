# twin-server: `make run` serves the demo, `make test` runs the tests.
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.toml
PYTEST_ARGS ?=

.PHONY: run test soak bench check lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/twin-server run $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/twin-server check $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -m "not soak" $(PYTEST_ARGS)

# the daemon for SOAK_SECONDS (default 600) under UaExpert/SCADA-like clients, checking
# that memory, objects, tasks, descriptors and nodes stay bounded and no tick is missed;
# then the endpoint fuzzed for SOAK_SECONDS (malformed and mutated frames);
# not part of `make test`. SOAK_SECONDS=120 make soak for a shorter run.
soak: $(STAMP)
	$(PY) -m pytest -m soak -s tests/test_soak.py tests/security/test_fuzz.py $(PYTEST_ARGS)

# ruff and mypy (strict on twin_server); not part of `make test`
lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	$(VENV)/bin/ruff check twin_server tests
	$(VENV)/bin/mypy

# the benchmarks against their baselines (a few minutes; not part of `make test`):
# bench-results/results.md with the table and PNG plots. BENCH=word selects modules.
BENCH ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m tests.bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
