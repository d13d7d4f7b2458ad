# `make demo`, `make test`, `make bench` each set up .venv (Python 3.10, the
# pinned set of requirements/pinned.txt, then `pip install -e .`) when it is
# missing or out of date, and never reinstall anything on a second run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.objcrop-installed
PYTEST_ARGS ?=
UV := uv==0.13.9
# `make test` runs the tests in pytest-xdist processes, one per logical CPU (at most 4), to keep the suite
# within issue 23's time on 2 cores (compare `make test` with `make test PYTEST_PARALLEL=`, one process).
# `--dist loadfile` keeps each file on one process (a fixture built once per file stays so);
# tests/conftest.py hands out the longest files first.
PYTEST_PARALLEL ?= -n logical --maxprocesses 4 --dist loadfile --no-loadscope-reorder
# Idle OpenMP threads sleep instead of spinning: on a loaded 2-core machine spinning
# threads made a training step 4-6x slower (measured in the pretraining work, issue 5).
export OMP_WAIT_POLICY ?= PASSIVE

# Python 3.10: pyenv's 3.10.x, else `python3.10` on PATH; each candidate must
# actually run (a pyenv shim exists even where 3.10 is not selected).
PYTHON310 := $(shell for c in $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.10.*/bin/python 2>/dev/null) $$(command -v python3.10 2>/dev/null); do \
	"$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$$c"; break; }; done)

.PHONY: setup demo test bench study clean test-compat

setup: $(STAMP)

$(VENV)/bin/python:
	@if [ -z "$(PYTHON310)" ]; then \
	  echo "objcrop needs Python 3.10 (the pinned detectron2 wheel is built for it)."; \
	  echo "Install it (e.g. 'pyenv install 3.10' or your OS package python3.10) so that 'python3.10' is on PATH, then rerun make."; \
	  exit 1; fi
	@echo "creating $(VENV) with $(PYTHON310)"
	$(PYTHON310) -m venv $(VENV)

# The pinned set goes in with uv (UV, pinned below): the same versions pip resolves, installed in
# parallel: `make setup` on a clean clone took 33 s with it and 2 min 18 s with pip alone (issue 23's
# note), most of `make test`'s setup. Where uv cannot be installed or fails, pip installs the same file.
$(STAMP): $(VENV)/bin/python requirements/pinned.txt setup.py
	$(PY) -m pip install --no-cache-dir --quiet --upgrade "pip<25" wheel
	$(PY) -m pip install --no-cache-dir --quiet "$(UV)" && $(VENV)/bin/uv pip install --python $(PY) --no-cache --quiet -r requirements/pinned.txt \
	  || $(PY) -m pip install --no-cache-dir --quiet -r requirements/pinned.txt
	$(PY) -m pip install --no-cache-dir --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/run_pipeline.sh --preset demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS) tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The small-scale study (docs/results.md): hours on 2 CPU cores; rerun to continue.
study: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/study.sh output

# `make test-compat`: the lent GPU machine's environment (device KINDS.md: Python 3.12, torch 2.11,
# torchvision 0.26, numpy 2) in .venv-compat, on CPU, so that an API change there is found here
# and not in a GPU call. It holds requirements/compat.txt, objcrop with its declared dependencies
# (.[detection,dev]: install_requires as a user gets them, not the pinned set) and detectron2's
# Python sources without _C from the GPU kit (scripts/gpu_kit/prepare.sh), put on the path by a
# .pth file as scripts/gpu_kit/run_gpu.sh does there. Like .venv: built once, never reinstalled.
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.objcrop-installed
GPU_KIT := .gpu_kit
PYTHON312 := $(shell for c in $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.12.*/bin/python 2>/dev/null) $$(command -v python3.12 2>/dev/null); do \
	"$$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$c"; break; }; done)
# The stages' tests that run on the GPU machine: pretraining with its proposals (OpenCV 5
# resolves here), views, probe, convert, detection (detectron2 without _C, as there: training,
# resume through detectron2's checkpointer with torch 2.11's torch.load, both evaluators) and
# report. Left out: the pipeline, SLURM, datasets, the CLI and the install tests (pinned set only).
COMPAT_TESTS := \
	tests/test_pretrain_engine.py tests/test_pretrain_methods.py tests/test_pretrain_optim.py \
	tests/test_pretrain_data.py tests/test_pretrain_faults.py tests/test_pretrain_stem.py \
	tests/test_proposals_compute.py tests/test_proposals_saliency.py tests/test_proposals_store.py \
	tests/test_proposals_cli.py \
	tests/test_views_augment.py tests/test_views_policies.py tests/test_views_copy_paste.py \
	tests/test_views_released.py tests/test_views_cli.py \
	tests/test_probe_linear.py tests/test_probe_lincls.py tests/test_probe_config.py \
	tests/test_convert_checkpoints.py tests/test_convert_names.py tests/test_convert_roundtrip.py \
	tests/test_detect_no_c.py tests/test_detect_config.py tests/test_detect_train.py \
	tests/test_detect_curve.py tests/test_fidelity_detection.py \
	tests/test_report_baseline.py tests/test_report_gap.py tests/test_report_record.py \
	tests/test_report_stats.py tests/test_report_study_prereg.py tests/test_report_table.py

$(COMPAT_VENV)/bin/python:
	@if [ -z "$(PYTHON312)" ]; then \
	  echo "make test-compat needs Python 3.12 (the GPU machine's): e.g. 'pyenv install 3.12', then rerun make."; \
	  exit 1; fi
	@echo "creating $(COMPAT_VENV) with $(PYTHON312)"
	$(PYTHON312) -m venv $(COMPAT_VENV)

# The kit is made from .venv's detectron2 (the pinned wheel): .venv is set up first where it is
# missing (CI's `make test` has made it), and left as it is where it exists.
$(GPU_KIT)/MANIFEST.txt:
	@[ -f $(STAMP) ] || $(MAKE) setup
	bash scripts/gpu_kit/prepare.sh $(GPU_KIT)

# One resolver run for the pins and objcrop's ranges, so numpy 2 holds for everything.
$(COMPAT_STAMP): $(COMPAT_VENV)/bin/python requirements/compat.txt setup.py | $(GPU_KIT)/MANIFEST.txt
	$(COMPAT_PY) -m pip install --no-cache-dir --quiet --upgrade "pip<25" wheel
	$(COMPAT_PY) -m pip install --no-cache-dir --quiet -r requirements/compat.txt -e ".[detection,dev]"
	echo "$(CURDIR)/$(GPU_KIT)/src" > "$$($(COMPAT_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/objcrop_gpu_kit_detectron2.pth"
	$(COMPAT_PY) -c 'import sys, numpy, torch, torchvision, detectron2; print("compat:", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "numpy", numpy.__version__, "detectron2", detectron2.__version__, "(no _C)")'
	@touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	$(COMPAT_PY) -m pytest -q $(PYTEST_ARGS) $(COMPAT_TESTS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) *.egg-info

# Mutation testing of the pure core modules against their fast tests (benchmarks/mutation.md):
# not part of `make test`; 10 CPU-minutes on 2 workers (14 min of wall time on 2 cores shared at load ~9).
# MUTATION_ARGS="--only objcrop/report/stats.py" narrows it.
.PHONY: mutation
MUTATION_ARGS ?=
mutation: $(STAMP)
	$(PY) -m pip install --quiet -r requirements/mutation.txt
	nice -n 10 $(PY) benchmarks/mutation/run.py $(MUTATION_ARGS)
