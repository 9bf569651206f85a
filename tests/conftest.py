"""Shared fixtures: the project's own paths and helpers to make damaged copies of raw files,
and the order in which parallel (pytest-xdist) workers take the test files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyreadstat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
MANIFEST = ROOT / "data" / "manifest.csv"
TW_FILE = "tomz-weeks-2021/2017-04-YouGov-extracted.dta"
BP_FILE = "bush-prather-2020/bush-prather-us-data-all.dta"


def small_block_model(rng, y_scale: float = 1.0):
    """The published (``baselines="none"``) lambda model of the exact engine on a small
    simulated data set drawn from ``rng`` (12 groups, 800 rows), the outcome times
    ``y_scale``: the draws' tests perturb it or its grid in the last bits."""
    import numpy as np
    import pandas as pd

    from hetfx.models.lambda_model import prepare_lambda_data
    from hetfx.models.pooled import lambda_block_model

    G, n = 12, 800
    Z = pd.DataFrame({"Intercept": 1.0, "a": np.arange(G) % 2}, index=[f"g{i}" for i in range(G)])
    g = rng.integers(0, G, n)
    t = rng.integers(0, 2, n).astype(float)
    X = pd.DataFrame({"Intercept": 1.0, "x": rng.normal(size=n)})
    y = (0.2 + 0.3 * rng.normal(size=G))[g] * t + 0.5 * X["x"].to_numpy() + rng.normal(size=n)
    return lambda_block_model(prepare_lambda_data(y * y_scale, t, X, g, Z), "none")


def write_like(original: Path, frame, target: Path) -> Path:
    """Write ``frame`` as Stata to ``target`` with the value labels of ``original``."""
    _, meta = pyreadstat.read_dta(str(original), metadataonly=True)
    labels = {
        c: v
        for c, v in meta.variable_value_labels.items()
        if c in frame.columns and frame[c].dtype.kind in "if"  # labels fit numeric columns only
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    pyreadstat.write_dta(frame, str(target), variable_value_labels=labels)
    return target


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root with the raw data, manifest and params of this one."""
    shutil.copytree(RAW, tmp_path / "data" / "raw")
    shutil.copy(MANIFEST, tmp_path / "data" / "manifest.csv")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


# --------------------------------------------------------------------- parallel workers
# `make test` runs one pytest-xdist worker per core with `--dist loadfile`: a test file stays on
# one worker (its module-scoped fits run once) and the workers take files in collection order
# (pytest_configure below turns off xdist's own reordering by number of tests, which would
# start a long file of few tests last). The longest files go first
# (longest-processing-time-first), so that none of them starts last and runs alone at the end;
# measured on 2 cores (sums of the per-test durations of `make test`), longest first (others
# keep their order).
LONGEST_FIRST = (
    "test_bernoulli.py",  # qmc fits of four replicates; NUTS on the published logit
    "test_simulation_hierarchical.py",
    "test_cross_cpu.py",  # two processes fitting every model, one of them emulating another CPU
    "test_render.py",  # real Quarto renders where it is on PATH
    "test_stages.py",
    "test_api.py",
    "test_varying_slopes.py",
    "test_dvc_deps.py",
    "test_simulation.py",
    "test_models.py",
    "test_simulation_sensitivity.py",
    "test_exact.py",
    "test_figures.py",
    "test_examples.py",
    "test_mcse_precision.py",
    "test_api_paper.py",
    "test_robustness.py",
)


def pytest_configure(config) -> None:
    """Under pytest-xdist's --dist loadfile/loadscope, take the files in collection order."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one BLAS/OpenMP thread per worker (and its subprocesses): the workers fill the cores
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist, the longest files first; a serial run keeps the file order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))
