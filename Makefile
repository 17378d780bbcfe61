# Quick start:  make demo   (set up, then train/publish/score/deploy on the local engine)
#               make test   (set up, then run the test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# The demo data: AMLOPS_DATA_DIR if set, else a shared/data folder beside the project that holds bike-no.csv
# (then the local workspace's cache, then the public URL: pipelines/datasets.py).
ifeq ($(AMLOPS_DATA_DIR),)
ifneq ($(wildcard ../shared/data/bike-no.csv),)
export AMLOPS_DATA_DIR := $(abspath ../shared/data)
endif
endif

.PHONY: setup system-deps demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-lock.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PY) -m pip install -q -r requirements-lock.txt -r requirements-dev.txt >> $(VENV)/pip.log 2>&1 || (tail -50 $(VENV)/pip.log; exit 1)
	$(PY) -m pip install -q --no-deps -e . >> $(VENV)/pip.log 2>&1 || (tail -50 $(VENV)/pip.log; exit 1)
	touch $@

# Debian tools the tests and benchmarks use: ab (apache2-utils) and headless Chromium.
system-deps:
	@command -v ab >/dev/null && command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq apache2-utils chromium >/dev/null; }

demo: setup
	$(PY) -m pipelines.demo

test: setup system-deps
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# Benchmarks print their numbers and write them to BENCHMARKS.md; run them on a quiet machine.
bench: setup system-deps
	$(PY) -m benchmarks.train_quality
	$(PY) -m benchmarks.batch_throughput
	$(PY) -m benchmarks.pipeline_service
	$(PY) -m benchmarks.serving
	$(PY) -m benchmarks.faults

clean:
	rm -rf .amlops
