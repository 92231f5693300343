# Two commands do all the set-up on a fresh clone:
#   make run    create .venv, install the pinned stack, run the main job
#   make test   create .venv, install the pinned stack, run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all bench lint

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

TEST_STAMP := $(VENV)/.installed-test

# Reference implementations for the parity tests (torch, CPU build).
$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $(TEST_STAMP)

BENCH_STAMP := $(VENV)/.installed-bench

# Solver-benchmark peers (skglm, celer): `make bench` compares against them.
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $(BENCH_STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m conceptjax.cli main

test: $(TEST_STAMP)
	$(PY) -m pytest

test-all: $(TEST_STAMP)
	$(PY) -m pytest -m ""

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.sparse_solvers

lint: $(STAMP)
	$(VENV)/bin/ruff check conceptjax tests benchmarks experiments
