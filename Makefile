# `make demo`, `make test`, `make bench` each set up .venv (Python 3.10, the
# pinned set of requirements/pinned.txt, then `pip install -e .`) when it is
# missing or out of date, and never reinstall anything on a second run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.objcrop-installed
PYTEST_ARGS ?=
# Idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning
# threads made a training step 4-6x slower (measured in the pretraining work, issue 5).
export OMP_WAIT_POLICY ?= PASSIVE

# Python 3.10: pyenv's 3.10.x, else `python3.10` on PATH; each candidate must
# actually run (a pyenv shim exists even where 3.10 is not selected).
PYTHON310 := $(shell for c in $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.*/bin/python 2>/dev/null) $$(command -v python3.10 2>/dev/null); do \
	"$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$$c"; break; }; done)

.PHONY: setup demo test bench study clean

setup: $(STAMP)

$(VENV)/bin/python:
	@if [ -z "$(PYTHON310)" ]; then \
	  echo "objcrop needs Python 3.10 (the pinned detectron2 wheel is built for it)."; \
	  echo "Install it (e.g. 'pyenv install 3.10' or your OS package python3.10) so that 'python3.10' is on PATH, then rerun make."; \
	  exit 1; fi
	@echo "creating $(VENV) with $(PYTHON310)"
	$(PYTHON310) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python requirements/pinned.txt setup.py
	$(PY) -m pip install --no-cache-dir --quiet --upgrade "pip<25" wheel
	$(PY) -m pip install --no-cache-dir --quiet -r requirements/pinned.txt
	$(PY) -m pip install --no-cache-dir --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/run_pipeline.sh --preset demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The small-scale study (docs/results.md): hours on 2 CPU cores; rerun to continue.
study: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/study.sh output

clean:
	rm -rf $(VENV) *.egg-info
