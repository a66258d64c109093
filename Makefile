# nlc: two entry points. `make demo` sets up .venv and draws the HOPE level graph; `make test` sets up
# .venv with the test extras (and Chromium for the browser tests) and runs the test suite.
# The set-up itself lives in scripts/setup.sh, shared with the README and CI.

VENV ?= .venv
PY := $(VENV)/bin/python

# The one place the test command is spelled out.
PYTEST_ARGS ?= -q -x --timeout=900
TEST_CMD = $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: demo test setup setup-test

demo: setup
	$(VENV)/bin/nlc graph examples/hope.nl

test: setup-test
	$(TEST_CMD)

setup:
	VENV=$(VENV) scripts/setup.sh

setup-test:
	VENV=$(VENV) scripts/setup.sh --test
