# nlc: two entry points. `make demo` sets up .venv, draws the HOPE level graph and trains HOPE for a
# few minutes on the bundled corpus; `make test` sets up
# .venv with the test extras (and Chromium, Graphviz and Mermaid for the rendering tests) and runs the test suite.
# The set-up itself lives in scripts/setup.sh, shared with the README and CI.

VENV ?= .venv
PY := $(VENV)/bin/python

# The one place the test command is spelled out: one process per core, at most four (pytest-xdist; each
# test file stays in one process, its fixtures built once), one torch thread each (more per process
# would oversubscribe the cores), and the 25 slowest tests listed at the end.
TEST_WORKERS ?= auto
PYTEST_ARGS ?= -q -x --timeout=900 --durations=25 -n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile
TEST_CMD = OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: demo test setup setup-test

# The main job: compile HOPE, train it for a few minutes on the bundled corpus (CPU), plot the losses.
DEMO_STEPS ?= 200
DEMO_RUN ?= runs/hope-demo

demo: setup
	$(VENV)/bin/nlc graph examples/hope.nl
	$(VENV)/bin/nlc train examples/hope.nl --steps $(DEMO_STEPS) --batch 8 --seq 256 --eval-every 25 \
		--checkpoint-every 25 --out $(DEMO_RUN) --force
	$(VENV)/bin/nlc generate $(DEMO_RUN) --prompt "Alice was " --max-new-tokens 200 --seed 0
	@echo
	@echo "loss curve: $(DEMO_RUN)/loss.png   per-level update norms: $(DEMO_RUN)/update_norms.png"

# The Mermaid that setup fetched, for the test that renders the Mermaid output (unless one is named)
test: setup-test
	NLC_MERMAID_JS="$${NLC_MERMAID_JS:-$$(ls $(VENV)/share/mermaid-*.min.js 2>/dev/null | head -n 1)}" $(TEST_CMD)

setup:
	VENV=$(VENV) scripts/setup.sh

setup-test:
	VENV=$(VENV) scripts/setup.sh --test

# The side-by-side study of docs/results.md: train and evaluate the four specs of examples/study/ from
# scratch (20 to 60 minutes on two CPU cores), write results/study/results.json, the plots and the table.
# Scale it with e.g. `make study STUDY_ARGS="--steps 500 --mqar-steps 300"`.
STUDY_ARGS ?=

study: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/study.py $(STUDY_ARGS)
