# Every target sets up its own environment: a fresh machine needs only Python 3.11 and make.
# Python 3.11 (dm-reverb 0.14 has wheels up to 3.11): python3.11 on PATH, else the one uv manages when uv is
# installed; `make PYTHON=/path/to/python3.11 ...` overrides both.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || { command -v uv >/dev/null 2>&1 && uv python find 3.11 2>/dev/null; } || echo python3.11)
# GPU=1: a venv of its own (.venv-gpu) with tensorflow[and-cuda] in place of tensorflow-cpu, never both in one.
GPU ?=
ifeq ($(GPU),1)
VENV := .venv-gpu
TF_REQUIREMENT := tensorflow[and-cuda]
else
VENV := .venv
TF_REQUIREMENT := tensorflow-cpu
endif
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/quickstart
# Test processes (pytest-xdist); 2 suits a 2-core machine: the suite took 11.8 min, against 17-18 serially.
TEST_WORKERS ?= 2

.PHONY: setup demo test bench fault-bench clean

# The venv is rebuilt whenever requirements.txt, requirements-nodeps.txt or pyproject.toml change.
$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: Python 3.11 not found (dm-reverb 0.14 needs Python <= 3.11): install it with 'uv python install 3.11' (uv: https://docs.astral.sh/uv/) or your system's python3.11 package, or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'), not 3.11 (dm-reverb 0.14 needs Python <= 3.11, TensorFlow 2.15 >= 3.9): run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=64" wheel
	sed 's/^tensorflow-cpu==/$(TF_REQUIREMENT)==/' requirements.txt > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) binaries/train_main.py --gin_file=gin/quickstart.gin --root_dir=$(DEMO_DIR)

test: setup
	$(PY) -m pytest tests -p no:cacheprovider -n $(TEST_WORKERS)

bench: setup
	$(PY) binaries/bench_main.py --output=BENCHMARKS.md

# Protégé's own processes killed and fed bad state (about 6 minutes); replaces BENCHMARKS.md's "Faults".
fault-bench: setup
	$(PY) binaries/fault_bench_main.py --output=BENCHMARKS.md

clean:
	rm -rf .venv .venv-gpu runs build *.egg-info
