# Two entry points, both from a fresh clone: `make repro` (the whole pipeline) and `make test`.
# The environment is built from uv.lock into .venv/ with a pinned uv, itself installed into .uv/.
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .uv/bin/uv
VENV_BIN := $(CURDIR)/.venv/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
export OPENBLAS_NUM_THREADS ?= 1
# let Python write the bytecode of the modules it imports (once, by the first process that
# imports them): with PYTHONDONTWRITEBYTECODE set, as on this project's machines, every
# stage, worker and test process otherwise compiled scipy, pandas, arviz, ... from source
# again (2.5 s of a stage's 3 s start-up, measured). Compiling the whole environment at
# install time instead (UV_COMPILE_BYTECODE) cost about 17 s of a fresh clone's install,
# for the 1.5 GB of modules of which the stages import a tenth (about 5 s to compile).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: env repro verify timing test test-fast lint benchmark

# uv itself: pip installs it into .uv/ (its binary in .uv/bin), no virtual environment needed
# (making one with pip in it took 3.7 s of a fresh clone's 9.8 s before the first stage);
# where that pip refuses (none, too old, an externally managed Python), into a virtual
# environment as before
# (uv has no dependencies and runs as a binary: --no-deps and --no-compile skip pip's
# resolution and the bytecode of its small Python wrapper, about 0.5 s)
PIP_QUIET := --quiet --disable-pip-version-check
$(UV):
	$(PYTHON) -m pip install $(PIP_QUIET) --root-user-action=ignore --upgrade --no-deps --no-compile --target .uv uv==$(UV_VERSION) \
	  || { rm -rf .uv && $(PYTHON) -m venv .uv && .uv/bin/python -m pip install $(PIP_QUIET) uv==$(UV_VERSION); }

# the locked versions of the library, its `pipeline` extra (dvc, pandoc, typst, dask, ...) and
# the dev group (pytest, ruff)
env: $(UV)
	$(UV) sync --frozen --extra pipeline

# While DVC starts and the light stages run on one core, analysis/precompile.py compiles on
# the other, at a lower priority, the bytecode of the modules the stages import (PRECOMPILE,
# their list) and the fit stages' numba kernels; `make repro PRECOMPILE=` leaves both to the
# stages (as `analysis/timing.py --fresh-clone --precompile-list` does to derive the list)
PRECOMPILE ?= analysis/precompile.txt
repro: env
	@if [ -n "$(PRECOMPILE)" ]; then $(VENV_BIN)/python analysis/precompile.py --list "$(PRECOMPILE)" >/dev/null 2>&1 & fi; \
	echo 'PATH="$(VENV_BIN):$$PATH" dvc repro'; PATH="$(VENV_BIN):$$PATH" dvc repro; \
	status=$$?; wait; exit $$status

# compare the outputs in the working tree with the committed ones (after `make repro`):
# every numeric cell of results/ and data/clean/ CSVs, every quoted number of the manuscript
verify: env
	PATH="$(VENV_BIN):$$PATH" python analysis/verify.py

# the speed table of analysis/benchmark.py (against the stored brms run) in the pipeline's
# environment, then the one of analysis/benchmark_bambi.py against bambi and nutpie with the
# `bench` group (bambi) installed for it alone: that group brings arviz-plots, which breaks
# `import arviz` under matplotlib 3.11 (analysis/benchmark_bambi.md), so benchmark.py cannot
# run there; the environment is synced back to the pipeline's afterwards, whatever the outcome
benchmark: env
	PATH="$(VENV_BIN):$$PATH" python analysis/benchmark.py
	$(UV) sync --frozen --extra pipeline --group bench
	PATH="$(VENV_BIN):$$PATH" python analysis/benchmark_bambi.py; \
	status=$$?; $(UV) sync --frozen --extra pipeline; exit $$status

# rerun every stage (dvc repro --force) and print the wall seconds of each
timing: env
	PATH="$(VENV_BIN):$$PATH" python analysis/timing.py

# the linter and the format check, then every test, the full-NUTS comparisons of the fast
# engines included, in parallel pytest-xdist workers (one per core; a test file stays on one
# worker so that its module-scoped fits run once): about 525 s of CPU (Quarto renders included)
# shared by the workers
PYTEST_WORKERS ?= auto
test: lint
	PATH="$(VENV_BIN):$$PATH" python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15

# without the full-NUTS comparisons
test-fast: env
	PATH="$(VENV_BIN):$$PATH" python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

lint: env
	$(VENV_BIN)/ruff check src analysis tests
	$(VENV_BIN)/ruff format --check src analysis tests
