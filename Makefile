# Two commands do everything on a fresh clone:  `make paper` (regenerate figures/tables)  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch==2.13.0 resolves to a CPU wheel on the project's machines; elsewhere pass e.g. TORCH_SPEC="torch" (CUDA)
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.memla-setup
PRESET ?= small
ARGS ?=

.PHONY: setup kernel paper paper-full test test-unit test-notebooks bench clean-runs

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)
	@echo "environment ready: $(VENV)"

# The notebooks run on the Jupyter kernel "memla"; (re)point it at this checkout's venv every time (under a
# second), so another clone that registered the same name cannot silently run these notebooks.
kernel: $(STAMP)
	@$(PY) -m ipykernel install --user --name memla --display-name "Python (memla)" >/dev/null

## Regenerate every figure and table of the companion (notebooks 00-07 through papermill).
paper: setup kernel
	$(PY) -m memla_utils.batch --preset $(PRESET) $(ARGS)

## The paper's scale (12 languages, >= 1,000 records, all methods): meant for a GPU.
paper-full:
	$(MAKE) paper PRESET=full

## The whole test suite: unit + integration tests (2 processes), then every notebook through nbval, in order.
test: setup test-unit test-notebooks

test-unit: setup kernel
	$(PY) -m pytest tests -n 2 -q -p no:cacheprovider

test-notebooks: setup kernel
	$(PY) -m pytest notebooks --nbval-lax --nbval-kernel-name memla --nbval-cell-timeout 3000 -q -p no:cacheprovider

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

## Every GPU figure in one command on random weights of real shapes (gemma3-270m, llama3-8b; bfloat16), planned
## to finish within 8 minutes on one H100/H200. Needs only torch, transformers and peft in the system python (no
## `make setup`: the GPU machine reaches no package registry). One JSON per benchmark + suite.json go to OUT.
## CPU smoke test of the same command: make bench-gpu OUT=/tmp/s BENCH_GPU_ARGS="--shape tiny"
.PHONY: bench-gpu
BENCH_GPU_ARGS ?=
bench-gpu:
	@test -n "$(OUT)" || { echo "usage: make bench-gpu OUT=<folder> [BENCH_GPU_ARGS='--shape tiny ...']" >&2; exit 2; }
	$(PYTHON) -m benchmarks.gpu_suite --out "$(OUT)" $(BENCH_GPU_ARGS)
