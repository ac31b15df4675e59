# Two commands do everything on a fresh clone:  `make paper` (regenerate figures/tables)  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.memla-setup
PRESET ?= small
ARGS ?=
# The pinned environment: exact versions + sha256 of every runtime and test package (memla_utils/lockfile.py).
LOCK := requirements-lock.txt
PINS := requirements-pins.txt
# `make lock` runs uv (pinned) from its own tool venv, never from the project's environment.
UV_VERSION := 0.13.8
TOOLS := .venv-tools
# Where the CPU torch wheel lies (a folder or a find-links URL); the project's machines keep it in /opt/wheels.
FIND_LINKS ?= /opt/wheels
# `make setup-unpinned` only: torch==2.13.0 resolves to a CPU wheel on the project's machines; elsewhere pass
# e.g. TORCH_SPEC="torch" (CUDA).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup setup-unpinned lock lock-upgrade drift kernel paper report paper-full test test-unit test-notebooks bench clean-runs book

## Install the locked environment (re-runs when the lock, pyproject.toml or this file change). The installer is
## uv (pinned, from its own tool venv, as `make lock`): the same wheels, checked against the same sha256 hashes as
## `pip install --require-hashes -r $(LOCK)`, in about a tenth of pip's CPU time (README, "Pinned environment").
## INSTALLER=pip installs with the venv's own pip instead (the same packages; e.g. where uv cannot be installed).
## Both write the packages' bytecode at install time (uv: --compile-bytecode; pip does by default): with
## PYTHONDONTWRITEBYTECODE set (as on the CI image) every process would otherwise compile torch's and
## transformers' sources again, about 6 s per process and 14 processes per `make paper` (README, issue 15).
INSTALLER ?= uv
setup: $(STAMP)

$(STAMP): $(LOCK) $(PINS) pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m memla_utils.lockfile check
ifeq ($(INSTALLER),pip)
	@$(PY) -m pip install -q --require-hashes -r $(LOCK)
	@$(PY) -m pip install -q --no-deps --no-build-isolation -e .
else
	@$(MAKE) --no-print-directory $(TOOLS)/bin/uv
	@$(TOOLS)/bin/uv pip install -q --python $(PY) --require-hashes --compile-bytecode -r $(LOCK)
	@$(TOOLS)/bin/uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .
endif
	@touch $(STAMP)
	@echo "environment ready: $(VENV) (from $(LOCK), installed with $(INSTALLER))"

# The notebooks run on the Jupyter kernel "memla"; (re)point it at this checkout's venv every time (under a
# second), so another clone that registered the same name cannot silently run these notebooks.
kernel: $(STAMP)
	@$(PY) -m ipykernel install --user --name memla --display-name "Python (memla)" >/dev/null

## Not reproducible: the dependency ranges of pyproject.toml (a GPU machine, another platform or Python).
## Runs record it: their manifest lists every package whose version differs from the lock.
setup-unpinned:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	@$(PY) -m pip install -q -e ".[dev]"

$(TOOLS)/bin/uv:
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/python -m pip install -q "uv==$(UV_VERSION)"

## Regenerate the lock from pyproject.toml + requirements-pins.txt, keeping the versions already locked
## (a deliberate commit). `make lock-upgrade` moves every package to its newest allowed version.
lock: $(TOOLS)/bin/uv
	$(PYTHON) -m memla_utils.lockfile compile --uv $(TOOLS)/bin/uv --find-links "$(FIND_LINKS)"

lock-upgrade: $(TOOLS)/bin/uv
	$(PYTHON) -m memla_utils.lockfile compile --uv $(TOOLS)/bin/uv --find-links "$(FIND_LINKS)" --upgrade

## Fail when the regenerated benchmark or tables differ from the commit (run after `make test` or `make paper`).
drift: setup
	$(PY) -m memla_utils.drift --against HEAD

## Regenerate every figure and table of the companion (notebooks 00-07 through papermill).
paper: setup kernel
	$(PY) -m memla_utils.batch --preset $(PRESET) $(ARGS)

## Notebook 07 alone on a run's committed results (tables, figures, claims table), on this checkout's report code,
## e.g. `make report PRESET=medium` for a multi-session run made on earlier code (its model, records, parameters
## must match; README, section "The medium preset", item "Report only")
report: setup kernel
	$(PY) -m memla_utils.batch --preset $(PRESET) --report-only $(ARGS)

## The paper's scale (12 languages, >= 1,000 records, all methods): meant for a GPU.
paper-full:
	$(MAKE) paper PRESET=full

## The companion as a static website from the last `make paper` of PRESET (no re-execution): runs/$(PRESET)/book/html,
## checked in headless Chromium when installed (screenshots in runs/$(PRESET)/book/screenshots). BOOK_ARGS=--notebooks auto
## shows the source of notebooks the run has no executed copy of.
BOOK_ARGS ?=
book: setup
	$(PY) -m memla_utils.book --preset $(PRESET) $(BOOK_ARGS)

## The whole test suite: unit + integration tests (2 processes), then every notebook through nbval, in order;
## each part's wall time is printed (CI's report)
test: setup kernel
	@t=$$(date +%s); $(MAKE) --no-print-directory test-unit && echo "make test: test-unit took $$(( $$(date +%s) - t )) s"
	@t=$$(date +%s); $(MAKE) --no-print-directory test-notebooks && echo "make test: test-notebooks took $$(( $$(date +%s) - t )) s"

## Unit + integration tests in 2 xdist processes, each taking whole test modules (--dist loadscope), so a module's
## expensive fixtures (the default tokenizer's build, ~80 s; a Ray cluster) are built in one process, not in both.
## (--dist loadgroup would be finer but fails with pytest 9.2: pytest-xdist issue #1386.)
test-unit: setup kernel
	$(PY) -m pytest tests -n 2 --dist loadscope -q -p no:cacheprovider --durations=30

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
