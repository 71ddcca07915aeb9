# twin-server: `make run` serves the demo, `make test` runs the tests.
# Both create .venv on first use and reinstall when pyproject.toml changes;
# `make test` also installs node-opcua (tests/nodeopcua, `npm ci`) when its
# package-lock.json changes, where npm is installed (else those tests are skipped).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.toml
PYTEST_ARGS ?=

NODE_DIR := tests/nodeopcua
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: run test soak bench check lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,campaigns]'
	touch $(STAMP)

# the independent OPC UA stack the conformance tests run (tests/nodeopcua/__init__.py)
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(NODE_DIR) && npm ci --no-progress && touch node_modules/.installed; \
	else echo "npm not found: the node-opcua tests (tests/nodeopcua) will be skipped"; fi

run: $(STAMP)
	$(VENV)/bin/twin-server run $(CONFIG)

check: $(STAMP)
	$(VENV)/bin/twin-server check $(CONFIG)

test: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m "not soak" $(PYTEST_ARGS)

# the daemon for SOAK_SECONDS (default 600) under UaExpert/SCADA-like clients, checking
# that memory, objects, tasks, descriptors and nodes stay bounded and no tick is missed;
# then the endpoint fuzzed for SOAK_SECONDS (malformed and mutated frames);
# not part of `make test`. SOAK_SECONDS=120 make soak for a shorter run.
soak: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m soak -s tests/test_soak.py tests/security/test_fuzz.py $(PYTEST_ARGS)

# ruff and mypy (strict on twin_server); not part of `make test`
lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,campaigns,dev]'
	$(VENV)/bin/ruff check twin_server tests
	$(VENV)/bin/mypy

# the benchmarks against their baselines (a few minutes; not part of `make test`):
# bench-results/results.md with the table and PNG plots. BENCH=word selects modules.
BENCH ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,campaigns,bench]'
	$(PY) -m tests.bench $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis $(NODE_DIR)/node_modules
