# pconv-jax: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash

# Python 3.12 where it exists (pyenv or on PATH), else python3 (>= 3.11).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
PY312 := $(firstword $(wildcard $(PYENV_ROOT)/versions/3.12.*/bin/python3.12) \
           $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null))
PYTHON ?= $(if $(PY312),$(PY312),python3)

VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist), each taking whole files: much of the suite waits on
# subprocesses (the CLIs, pip's resolutions, the browser), so more workers than cores pays.
# PYTEST_WORKERS=0 runs in this process alone (what `pytest FILE` does without -n).
PYTEST_WORKERS ?= 3

# Accelerator build of JAX: `make install ACCEL=cuda12` (cuda13, tpu) installs '.[dev,ACCEL]';
# empty (the default) is the CPU build. Each ACCEL has its own stamp, so switching re-installs.
ACCEL ?=
ACCELS := cuda12 cuda13 tpu
ifneq ($(filter-out $(ACCELS),$(ACCEL))$(word 2,$(ACCEL)),)
$(error ACCEL=$(ACCEL) is not valid; use one of: $(ACCELS) (or leave it empty for CPU))
endif
comma := ,
EXTRAS := dev$(if $(ACCEL),$(comma)$(ACCEL))
STAMP := $(VENV)/.installed$(if $(ACCEL),-$(ACCEL))
# JAX's plugin packages per accelerator: installing one ACCEL removes the others' plugins (two
# plugins for one platform conflict). The ACCEL install includes '.[dev]', so it also marks the
# CPU stamp done: a later `make test` keeps the accelerator. Back to CPU only: make clean install.
ACCEL_PKGS_cuda12 := jax-cuda12-plugin jax-cuda12-pjrt
ACCEL_PKGS_cuda13 := jax-cuda13-plugin jax-cuda13-pjrt
ACCEL_PKGS_tpu := libtpu
OTHER_ACCELS := $(if $(ACCEL),$(filter-out $(ACCEL),$(ACCELS)))

.PHONY: install test browser torch-venv app lint bench demo cpu-hour ablation clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed, $(PYTHON) is " + sys.version)'
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(if $(ACCEL),-$(VPY) -m pip uninstall -q -y --disable-pip-version-check \
		$(foreach a,$(OTHER_ACCELS),$(ACCEL_PKGS_$(a))) 2>/dev/null)
	$(VPY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	$(if $(ACCEL),@rm -f $(foreach a,$(OTHER_ACCELS),$(VENV)/.installed-$(a)))
	@touch $(STAMP)$(if $(ACCEL), $(VENV)/.installed)

test: install browser torch-venv
	PCONV_TORCH_PYTHON=$(if $(wildcard $(TORCH_STAMP)),$(abspath $(TORCH_VENV))/bin/python) \
		$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# A torch-only interpreter for the tests against PyTorch networks (tests/test_convert.py:
# naoto0804's network, its own torch.save files in both formats), never imported by the
# package. CPU torch 2.13.0 (a local wheel where there is one; elsewhere pass e.g.
# TORCH_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"). When it cannot be
# installed, those tests are skipped and say why.
TORCH_VENV := .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
TORCH_PY ?= $(firstword $(shell command -v python3.11 2>/dev/null) python3)
TORCH_PIP_ARGS ?=
torch-venv:
	@test -f $(TORCH_STAMP) || { \
	  { test -x $(TORCH_VENV)/bin/python || $(TORCH_PY) -m venv $(TORCH_VENV); } && \
	  $(TORCH_VENV)/bin/pip install -q --disable-pip-version-check "torch==2.13.0+cpu" numpy \
	    safetensors $(TORCH_PIP_ARGS) && touch $(TORCH_STAMP) || \
	  echo "warning: CPU torch could not be installed in $(TORCH_VENV); the tests against PyTorch will be skipped"; }

# The app's browser test drives Debian's chromium through Playwright (no browser download).
# Installed with apt-get where it is missing and we are root; otherwise that test is skipped
# and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test (apt-get)"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	    || echo "warning: chromium could not be installed; the browser test will be skipped"; \
	  else echo "note: no chromium and no root apt-get; the browser test will be skipped"; fi; }

# The inpainting page on the demo run (trained first when it is missing): http://127.0.0.1:7860
DEMO_WORKDIR ?= runs/demo
APP_WORKDIR ?= $(DEMO_WORKDIR)
app: install
	@test -d $(APP_WORKDIR)/checkpoints || { \
	  if [ "$(APP_WORKDIR)" = "$(DEMO_WORKDIR)" ]; then $(MAKE) demo; \
	  else echo "error: $(APP_WORKDIR) holds no checkpoints (train it first, or leave APP_WORKDIR unset for the demo run)" >&2; exit 1; fi; }
	$(VPY) -m pconv_jax.app --workdir $(APP_WORKDIR) $(APP_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks experiments

bench: install
	$(VPY) -m benchmarks.bench

demo: install
	$(VPY) -m pconv_jax.train --config experiments/configs/demo.py --workdir $(DEMO_WORKDIR)

# One CPU hour (experiments/configs/cpu_hour.py), then its table on the two photos it never saw
# (20 seeded masks per hole-ratio bucket and border class) beside Telea, Navier-Stokes and the
# mean fill: CPU_HOUR_WORKDIR_eval/table.md and examples.png. Interrupted, it resumes.
CPU_HOUR_WORKDIR ?= runs/cpu_hour
cpu-hour: install
	$(VPY) -m pconv_jax.train --config experiments/configs/cpu_hour.py --workdir $(CPU_HOUR_WORKDIR)
	$(VPY) -m pconv_jax.masks make-eval-set \
		--out $(CPU_HOUR_WORKDIR)_masks --per-bucket 20 --size 128 --seed 0
	$(VPY) -m pconv_jax.evaluate --workdir $(CPU_HOUR_WORKDIR) \
		--images samples:motorcycle_left,motorcycle_right --masks $(CPU_HOUR_WORKDIR)_masks \
		--out $(CPU_HOUR_WORKDIR)_eval
	@echo "table: $(CPU_HOUR_WORKDIR)_eval/table.md; images: $(CPU_HOUR_WORKDIR)_eval/examples.png"

# The loss-weight ablation notebook at its default (demo) scale, headless: ~14 min on 2 cores.
# Parameters: PAPERMILL_ARGS="-p steps 300 ..."; output folder: ABLATION_DIR.
ABLATION_DIR ?= runs/ablation
ablation: install
	@mkdir -p $(ABLATION_DIR)
	$(VENV)/bin/papermill experiments/notebooks/loss_weight_ablation.ipynb \
		$(ABLATION_DIR)/notebook.ipynb -p output_dir $(abspath $(ABLATION_DIR)) $(PAPERMILL_ARGS)
	@echo "executed notebook: $(ABLATION_DIR)/notebook.ipynb; results: $(ABLATION_DIR)/"

clean:
	rm -rf $(VENV) $(TORCH_VENV) $(DEMO_WORKDIR) .pytest_cache .ruff_cache

# The offline GPU check (docs/accelerators.md, "The offline GPU check"): the wheels a GPU host without network
# lacks, at constraints.txt's versions, into .gpu-bundle/ (fails over 64 MiB with the source
# tree); GPU_BUNDLE_ARGS="--dry-run" only resolves them, "--tar FILE" also writes tree + bundle.
# On the host: benchmarks/gpu_check/run.sh (tests and measures in <= 8 min).
.PHONY: gpu-bundle
gpu-bundle: install
	$(VPY) -m benchmarks.gpu_check.bundle --dest .gpu-bundle $(GPU_BUNDLE_ARGS)
