# The two entry points of the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast system-deps reliability bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,fast]'
	touch $(STAMP)

# Runs the gateway on the embedded default config (loopback only, demo listener and user).
run: $(STAMP)
	$(BIN)/mailward run --demo

# Installs the system peers the end-to-end tests use (postfix, slapd, swaks, curl) when
# missing, then runs the whole suite.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

system-deps:
	@sh scripts/system-deps.sh

reliability: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python bench/reliability.py

bench: $(STAMP) system-deps
	$(BIN)/python bench/relay.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
