# Every target sets up its own environment: a fresh machine needs only Python (3.11 or 3.13) and make.
# Two stacks (README, "Two stacks"), picked from the Python found:
#   Python 3.11: TensorFlow 2.15, dm-reverb 0.14, NumPy 1 (requirements.txt): everything, Reverb deployments included.
#   Python 3.13: TensorFlow 2.21, tf-keras, NumPy 2, no Reverb (requirements-py313.txt): single-machine runs
#   (Python 3.12 gets the same pins, which have 3.12 wheels; its tests have run on 3.13 only).
# python3.11 on PATH, else the 3.11 uv manages when uv is installed, else python3.13 (the same two ways), else
# python3.12; `make PYTHON=/path/to/python ...` overrides them.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || { command -v uv >/dev/null 2>&1 && uv python find 3.11 2>/dev/null; } || command -v python3.13 2>/dev/null || { command -v uv >/dev/null 2>&1 && uv python find 3.13 2>/dev/null; } || command -v python3.12 2>/dev/null || echo python3.11)
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifneq ($(filter 3.12 3.13,$(PYTHON_VERSION)),)
REQUIREMENTS := requirements-py313.txt
NODEPS_REQUIREMENTS := requirements-py313-nodeps.txt
VENV_NAME := .venv-py$(subst .,,$(PYTHON_VERSION))
else
REQUIREMENTS := requirements.txt
NODEPS_REQUIREMENTS := requirements-nodeps.txt
VENV_NAME := .venv
endif
# GPU=1: a venv of its own (.venv-gpu, .venv-py313-gpu, ...) with tensorflow[and-cuda] in place of tensorflow-cpu.
GPU ?=
ifeq ($(GPU),1)
VENV := $(VENV_NAME)-gpu
TF_REQUIREMENT := tensorflow[and-cuda]
else
VENV := $(VENV_NAME)
TF_REQUIREMENT := tensorflow-cpu
endif
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/quickstart
# Test processes (pytest-xdist); 2 suits a 2-core machine: the suite took 11.8 min, against 17-18 serially.
TEST_WORKERS ?= 2
# What `make test` runs (files or folders); .ci/py313 runs a part of the suite on the second stack.
TESTS ?= tests

.PHONY: setup demo test bench fault-bench clean

# The venv is rebuilt whenever its requirements files or pyproject.toml change.
$(VENV)/.installed: $(REQUIREMENTS) $(NODEPS_REQUIREMENTS) pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: no Python 3.11 or 3.13 found: install one with 'uv python install 3.11' (uv: https://docs.astral.sh/uv/) or your system's python3.11 / python3.13 package, or run 'make PYTHON=/path/to/python ...'. Python 3.11 runs everything; 3.13 runs without Reverb (README, \"Two stacks\")."; exit 1; }
	@case "$(PYTHON_VERSION)" in 3.11|3.13) ;; 3.12) echo "note: Python 3.12 gets the Python 3.13 stack (requirements-py313.txt): its wheels exist for 3.12, but its tests have run on 3.13 only (README, \"Two stacks\")";; *) echo "error: $(PYTHON) is Python $(PYTHON_VERSION): Protégé's stacks are Python 3.11 (TensorFlow 2.15 with dm-reverb 0.14, which has no wheel past 3.11) and Python 3.13 (TensorFlow 2.21, no Reverb): run 'make PYTHON=/path/to/python3.11 ...' or 'make PYTHON=/path/to/python3.13 ...' (README, \"Two stacks\")."; exit 1;; esac
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
	sed 's/^tensorflow-cpu==/$(TF_REQUIREMENT)==/' $(REQUIREMENTS) > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	$(PY) -m pip install --quiet --no-deps -r $(NODEPS_REQUIREMENTS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) binaries/train_main.py --gin_file=gin/quickstart.gin --root_dir=$(DEMO_DIR)

test: setup
	$(PY) -m pytest $(TESTS) -p no:cacheprovider -n $(TEST_WORKERS)

bench: setup
	$(PY) binaries/bench_main.py --output=BENCHMARKS.md

# Protégé's own processes killed and fed bad state (about 6 minutes); replaces BENCHMARKS.md's "Faults".
fault-bench: setup
	$(PY) binaries/fault_bench_main.py --output=BENCHMARKS.md

clean:
	rm -rf .venv .venv-gpu .venv-py31[23] .venv-py31[23]-gpu runs build *.egg-info
