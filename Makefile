# `make run` and `make test` build .venv from requirements.lock on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/sample.yaml

.PHONY: run test test-fast lint format venv lock docs clean bench-onmt

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

## The main job on the bundled corpus: vocabulary, DDP training, checkpoints, bulk translation, BLEU.
run: $(STAMP)
	$(PY) -m job train --config $(CONFIG) $(if $(SET),--set $(SET))

## The whole test suite (what CI runs), then its 15 slowest tests.
test: $(STAMP)
	$(PY) -m pytest --durations=15

## Unit tests only: no Ray cluster started (a test that starts one fails unless marked integration).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not integration and not slow" --durations=5

LINTED := job tests bench tools

## ruff: lint rules and the formatter's check (what CI runs before the tests).
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

## Apply ruff's formatter and its safe fixes.
format: $(STAMP)
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

## OpenNMT-py 3.5.1 in .venv-onmt: the baseline bench/train_throughput.py measures side by side.
ONMT_VENV := .venv-onmt
bench-onmt: $(ONMT_VENV)/.installed

$(ONMT_VENV)/.installed: bench/onmt-requirements.txt
	$(PYTHON) -m venv $(ONMT_VENV)
	$(ONMT_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/onmt-requirements.txt
	$(ONMT_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps opennmt-py==3.5.1
	touch $@

## Regenerate the config reference in README.md from the pydantic models.
docs: $(STAMP)
	$(PY) tools/gen_docs.py

## Re-pin requirements.lock from a fresh environment.
lock:
	rm -rf /tmp/seq2seq-lock && $(PYTHON) -m venv /tmp/seq2seq-lock
	/tmp/seq2seq-lock/bin/pip install --quiet torch==2.13.0 -e ".[report,test]"
	/tmp/seq2seq-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

clean:
	rm -rf $(VENV) $(ONMT_VENV) runs
