# `make run` and `make test` build .venv from requirements.lock on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/sample.yaml

.PHONY: run test test-fast venv lock docs clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

## The main job on the bundled corpus: vocabulary, DDP training, checkpoints, bulk translation, BLEU.
run: $(STAMP)
	$(PY) -m job train --config $(CONFIG) $(if $(SET),--set $(SET))

## The whole test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest

## Unit and fast integration tests only.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

## Regenerate the config reference in README.md from the pydantic models.
docs: $(STAMP)
	$(PY) tools/gen_docs.py

## Re-pin requirements.lock from a fresh environment.
lock:
	rm -rf /tmp/seq2seq-lock && $(PYTHON) -m venv /tmp/seq2seq-lock
	/tmp/seq2seq-lock/bin/pip install --quiet torch==2.13.0 -e ".[report,test]"
	/tmp/seq2seq-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

clean:
	rm -rf $(VENV) runs
