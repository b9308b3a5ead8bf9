# Front door: `make evaluate` runs the main job, `make test` the tests. See README.md.
PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CONFIG  ?= configs/cpu.yaml
DATA_DIR ?=
DOWNLOAD ?=
SHARED  ?= ../shared
# Cluster runs (README "Running on a cluster"): the dashboard address, a job id, extra CLI flags.
RAY_ADDRESS ?=
JOB     ?=
ARGS    ?=
# `ray job` through pipeline/jobs.py: a missing or unreachable cluster is one `error:` line, exit 2.
RAY_JOB  = RAY_ADDRESS=$(RAY_ADDRESS) $(PY) -m pipeline.jobs

.PHONY: install test lint evaluate clean submit status logs

install: $(STAMP)

# Re-installs only when requirements.txt or pyproject.toml change; otherwise a no-op.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

test: install
	NB201_SHARED=$(SHARED) $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

evaluate: install
	$(PY) -m pipeline evaluate --config $(CONFIG) $(if $(DATA_DIR),--data-dir $(DATA_DIR),) $(if $(DOWNLOAD),--download,)

# The same pipeline as a Ray Job on a running cluster; the head runs the driver, so paths in
# CONFIG/ARGS are the head's. Prints the job id and how to follow it.
submit: install
	@id=$(or $(JOB),nb201-$$(date +%Y%m%d-%H%M%S)); \
	$(RAY_JOB) submit --submission-id $$id --no-wait --working-dir . \
		-- python -m pipeline evaluate --config $(CONFIG) $(ARGS) \
	&& printf '\nsubmitted job %s\n  status: make status JOB=%s%s\n  logs:   make logs JOB=%s%s\n' \
		$$id $$id "$(if $(RAY_ADDRESS), RAY_ADDRESS=$(RAY_ADDRESS),)" $$id "$(if $(RAY_ADDRESS), RAY_ADDRESS=$(RAY_ADDRESS),)"

status: install
	@test -n "$(JOB)" || { echo "error: set JOB=<id> (make submit printed it)" >&2; exit 2; }
	@$(RAY_JOB) status $(JOB)

# Follows the job's output until it ends.
logs: install
	@test -n "$(JOB)" || { echo "error: set JOB=<id> (make submit printed it)" >&2; exit 2; }
	@$(RAY_JOB) logs --follow $(JOB)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
