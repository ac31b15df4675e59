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

.PHONY: setup kernel paper paper-full test test-unit test-notebooks bench clean-runs book

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

## The companion as a static website from the last `make paper` of PRESET (no re-execution): runs/$(PRESET)/book/html,
## checked in headless Chromium when installed (screenshots in runs/$(PRESET)/book/screenshots). BOOK_ARGS=--notebooks auto
## shows the source of notebooks the run has no executed copy of.
BOOK_ARGS ?=
book: setup
	$(PY) -m memla_utils.book --preset $(PRESET) $(BOOK_ARGS)

## The whole test suite: unit + integration tests (2 processes), then every notebook through nbval, in order.
test: setup test-unit test-notebooks

test-unit: setup kernel
	$(PY) -m pytest tests -n 2 -q -p no:cacheprovider

test-notebooks: setup kernel
	$(PY) -m pytest notebooks --nbval-lax --nbval-kernel-name memla --nbval-cell-timeout 3000 -q -p no:cacheprovider

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
