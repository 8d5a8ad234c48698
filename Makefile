# pconv-jax: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash

# Python 3.12 where it exists (pyenv or on PATH), else python3 (>= 3.11).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
PY312 := $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin/python3.12) \
           $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null))
PYTHON ?= $(if $(PY312),$(PY312),python3)

VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint bench demo ablation clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed, $(PYTHON) is " + sys.version)'
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(VPY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: install
	$(VPY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: install
	$(VPY) -m benchmarks.bench

demo: install
	$(VPY) -m pconv_jax.train --config experiments/configs/demo.py --workdir runs/demo

# The loss-weight ablation notebook at its default (demo) scale, headless: ~14 min on 2 cores.
# Parameters: PAPERMILL_ARGS="-p steps 300 ..."; output folder: ABLATION_DIR.
ABLATION_DIR ?= runs/ablation
ablation: install
	@mkdir -p $(ABLATION_DIR)
	$(VENV)/bin/papermill experiments/notebooks/loss_weight_ablation.ipynb \
		$(ABLATION_DIR)/notebook.ipynb -p output_dir $(abspath $(ABLATION_DIR)) $(PAPERMILL_ARGS)
	@echo "executed notebook: $(ABLATION_DIR)/notebook.ipynb; results: $(ABLATION_DIR)/"

clean:
	rm -rf $(VENV) runs/demo .pytest_cache .ruff_cache
