# One entry point for people and CI. Every target creates .venv first if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Compute emulator is its own distribution; it is installed next to the pipeline, editable too.
COMPUTE_EMULATOR := emulators/compute

.PHONY: venv up down status demo test test-unit lint fmt bench clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml $(COMPUTE_EMULATOR)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet --no-deps -e $(COMPUTE_EMULATOR)
	@touch $(STAMP)

## Start the local stack in the background (emulators, Compute emulator, functions); writes .local/env.
up: venv
	$(PY) -m devstack up

## Stop exactly what `make up` started. Safe to run twice.
down: venv
	$(PY) -m devstack down

status: venv
	$(PY) -m devstack status

## The whole story on the sample app: release, release under load, a failing release, a rollback.
demo: venv
	$(PY) -m devstack.demo

## Lint and type-check, then the whole suite, the Compute emulator's own tests included; tests start (and stop) their own isolated stack.
test: venv lint
	$(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared functions releasectl devstack main.py $(COMPUTE_EMULATOR)/compute_emulator
# bench is a namespace package (run as `python -m bench`); its rpc_counting directory is put on
# PYTHONPATH of the functions it measures, so its modules are top-level ones and checked as such.
	$(VENV)/bin/mypy -p bench --exclude bench/rpc_counting
	$(VENV)/bin/mypy bench/rpc_counting
	$(VENV)/bin/mypy tests
	bash scripts/check-infra.sh

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv
	$(PY) -m bench

clean: down
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
