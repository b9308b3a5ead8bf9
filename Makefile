# Front door: `make evaluate` runs the main job, `make test` the tests. See README.md.
PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CONFIG  ?= configs/cpu.yaml
DATA_DIR ?=
DOWNLOAD ?=
SHARED  ?= ../shared

.PHONY: install test lint evaluate clean

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
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

evaluate: install
	$(PY) -m pipeline evaluate --config $(CONFIG) $(if $(DATA_DIR),--data-dir $(DATA_DIR),) $(if $(DOWNLOAD),--download,)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
