"""Speed of the paper's model fits against the original brms run (not a pipeline stage).

Usage::

    python analysis/benchmark.py              # fast engines and full NUTS (nutpie)
    python analysis/benchmark.py --fast-only  # the pipeline's engines only
    python analysis/benchmark.py --many-groups  # the quadrature engine on many groups
    python analysis/benchmark.py --many-cells   # hetfx.fit's default on one column of cells
    python analysis/benchmark.py --per-call     # hetfx.fit(draws=0) on a simulated data set
    python analysis/benchmark_bambi.py          # hetfx.fit's default against bambi

Prints one row per model and engine: compile and sampling seconds (the total includes data
preparation and compilation), min bulk ESS, ESS per second, and how many times faster than
brms (tests/fixtures/brms/timings.csv: compile + sampling, 4 chains x 1000 draws, on the
same kind of 2-core machine). Settings are those of params.yaml, with the draws of the
original run. Needs the cleaned data (dvc repro clean_tomz_weeks clean_bush_prather).

``--many-groups`` times the lambda model's quadrature engine on synthetic Gaussian data with
5 controls and 4 binary modifiers (additive effect equation: 5 coefficients) for
(n, G) = (100,000, 32), (10,000, 256), (1,000,000, 4,096): the fit (4 x 1000 draws and their
R-hat/ESS included), the exact summaries (``group_effects()`` and ``coefs()``), the CPU
seconds and the peak resident memory of the process that ran it (one fresh process per row).
Full NUTS (nutpie, the same model and priors, 4 chains x 1000 draws after 1000 warm-up) runs on
the (10,000, 256) setting only (``--no-nutpie`` skips it): on 4,096 groups and a million rows
it would take many minutes (every gradient touches every row).

``--many-cells`` times the public API as a user calls it, ``hetfx.fit(big, "y", "treat",
["cell"])`` with its defaults (pooled baselines, scale-aware priors, 4 x 1000 draws), on a
million rows whose cells are one string column: 4,096 and 65,536 cells (equal sizes, half of
each cell treated; each cell's baseline shifted by N(0, .3), its effect N(.2, .1)). Wall and
CPU seconds of the fit and of ``group_effects()`` and ``coefs()``, and the peak resident memory
of the process (one fresh process per row, the data built before the clock starts).

Measured on the project's 2-core machine (2026-12-06, two runs) with the exact engine of
:mod:`hetfx.models.exact` (its compiled node kernel; numba's import and cached kernel count in
the fit's time): 4,096 cells 3.6-3.7 s to fit, 3.9-4.0 s with the summaries, 0.93 GB peak,
272 grid points; 65,536 cells 34-35 s to fit, 39 s in all, 7.1 GB, 342 grid points (the
4,000 draws of alpha, theta and lambda take 2.1 GB each, and drawing them is 2.7 s of the
4,096-cell fit).

``--per-call`` times ``hetfx.fit(..., draws=0)`` (exact summaries, no draws; what a
simulation study calls thousands of times), design building included, on one simulated data
set of the simulation study (2,000 rows, 128 cells of 7 binary modifiers, controls z1-z3) for
``baselines`` "none", "fixed" and "pooled", and ``build_design`` alone: the fastest of 7 calls
after a warm-up call. Measured on the shared 2-core machine: 49, 49 and 167 ms per fit,
17-22 ms of it the design.

``analysis/benchmark_bambi.py`` compares :func:`hetfx.fit` (its defaults: pooled cell
baselines, scale-aware priors) with bambi, with priors matched to those hetfx records, and
with nutpie on bambi's PyMC model: an M1-like and an M2-like Tomz-Weeks model and a 512-cell
simulated model (speed ratio, agreement of the cells' effect medians against bambi's own
seed-to-seed noise, the reference cell's error); its table is in
``analysis/benchmark_bambi.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _stage import load_params  # noqa: E402
from hetfx.paper import studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRMS = ROOT / "tests" / "fixtures" / "brms" / "timings.csv"
#: brms run each of our models is compared with (A1: the adapt_delta .95 run, no divergence)
BRMS_RUN = {
    "m1": "m1",
    "m2": "m2_published",
    "a1": "m3_ad95",
    "m1_ols": "m1_ols",
    "m2_ols": "m2_ols",
    "bp": None,
}
FULL_ENGINE = {"m1": "nutpie", "m2": "nutpie", "a1": "nutpie", "bp": "nutpie"}


def run_one(model: str, engine: str | None, tw, bp, params) -> dict:
    cfg = params.models
    sampler = studies.Sampler(seed=cfg.seed, chains=cfg.chains, draws=cfg.draws, tune=cfg.tune)
    settings = getattr(cfg, model, None)
    settings = settings.model_dump() if settings is not None else {}
    if engine:
        settings["engine"] = engine
    start = time.perf_counter()
    if model == "bp":
        fit = studies.fit_bush_prather(bp, "published", settings, sampler)
    else:
        fit = studies.fit_tomz_weeks(tw, model, "published", settings, sampler)
    total = time.perf_counter() - start
    row = {"model": model, "sampler": engine or settings.get("engine", "ols"), "total_s": total}
    if hasattr(fit, "diagnostics_record"):
        d = fit.diagnostics_record
        row.update(
            compile_s=d.compile_seconds,
            sampling_s=d.sampling_seconds,
            min_ess_bulk=d.min_ess_bulk,
            max_r_hat=d.max_r_hat,
            divergences=d.divergences,
            ess_per_s=d.min_ess_bulk / total,
        )
    return row


MANY_GROUPS = ((100_000, 32), (10_000, 256), (1_000_000, 4_096))
#: The setting nutpie runs on (full NUTS cost grows with n times the gradient's work).
MANY_GROUPS_NUTPIE = (10_000, 256)


def many_groups_child(n: int, G: int, seed: int = 1, engine: str = "quadrature") -> dict:
    """One many-groups fit of the published model (run in a fresh process by
    :func:`many_groups`): the exact engine (``"quadrature"``) or NUTS (``"nutpie"``)."""
    import resource

    from hetfx.models.lambda_model import fit_lambda_model
    from hetfx.models.pooled import fit_exact_lambda

    rng = np.random.default_rng(seed)
    mods = rng.integers(0, 2, (G, 4))
    Z = pd.DataFrame(
        np.column_stack([np.ones(G), mods]),
        columns=["Intercept", "m1", "m2", "m3", "m4"],
        index=[f"g{i}" for i in range(G)],
    )
    lam = Z.to_numpy() @ np.array([0.2, 0.1, -0.1, 0.05, 0.0]) + rng.normal(0, 0.15, G)
    group = rng.integers(0, G, n)
    treat = rng.integers(0, 2, n).astype(float)
    xa = rng.normal(size=(n, 5))
    X = pd.DataFrame(
        np.column_stack([np.ones(n), xa]), columns=["Intercept"] + [f"x{j}" for j in range(1, 6)]
    )
    y = xa @ np.array([0.3, -0.2, 0.1, 0.0, 0.05]) + lam[group] * treat + rng.normal(size=n)

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    start, cpu0 = time.perf_counter(), cpu()
    if engine == "quadrature":
        fit = fit_exact_lambda(y, treat, X, group, Z, baselines="none", seed=seed)
    else:
        fit = fit_lambda_model(y, treat, X, group, Z, seed=seed, engine=engine)
    fitted = time.perf_counter()
    groups = fit.group_effects()
    fit.coefs()
    done = time.perf_counter()
    d = fit.diagnostics_record
    return {
        "engine": engine,
        "n": n,
        "groups": G,
        "fit_s": fitted - start,
        "summaries_s": done - fitted,
        "total_s": done - start,
        "cpu_s": cpu() - cpu0,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "grid_points": int(fit.idata.attrs.get("grid_points", 0)),
        "max_r_hat": d.max_r_hat,
        "min_ess_bulk": d.min_ess_bulk,
        "divergences": d.divergences,
        "rmse": float(np.sqrt(np.mean((groups["estimate"] - lam) ** 2))),
    }


#: (rows, cells) of ``--many-cells``.
MANY_CELLS = ((1_000_000, 4_096), (1_000_000, 65_536))


def many_cells_child(n: int, G: int, seed: int = 1) -> dict:
    """One ``hetfx.fit`` of a million rows in ``G`` cells of one string column."""
    import resource

    import hetfx

    rng = np.random.default_rng(seed)
    g = rng.permutation(np.arange(n) % G)  # n / G rows per cell (15 or 16 at 65,536)
    treat = np.empty(n, dtype=np.int64)
    treat[np.argsort(g, kind="stable")] = np.arange(n) % 2  # both arms in every cell
    lam = rng.normal(0.2, 0.1, G)
    y = rng.normal(0, 0.3, G)[g] + lam[g] * treat + rng.normal(size=n)
    labels = np.array([f"cell{i:05d}" for i in range(G)])
    big = pd.DataFrame({"cell": labels[g], "treat": treat, "y": y})
    import arviz  # noqa: F401  (its import, seconds, is not the fit's)

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    start, cpu0 = time.perf_counter(), cpu()
    res = hetfx.fit(big, "y", "treat", ["cell"], seed=seed)
    fitted, cpu1 = time.perf_counter(), cpu()
    groups = res.group_effects()
    res.coefs()
    done = time.perf_counter()
    truth = pd.Series(lam, index=labels).loc[groups["cell"]].to_numpy()
    d = res.diagnostics_record
    return {
        "n": n,
        "cells": G,
        "fit_s": fitted - start,
        "summaries_s": done - fitted,
        "total_s": done - start,
        "fit_cpu_s": cpu1 - cpu0,
        "cpu_s": cpu() - cpu0,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "grid_points": int(res.draws.attrs.get("grid_points", 0)),
        "max_r_hat": d.max_r_hat,
        "rmse": float(np.sqrt(np.mean((groups["estimate"].to_numpy() - truth) ** 2))),
    }


def many_cells() -> pd.DataFrame:
    """Time :func:`many_cells_child` for every row of :data:`MANY_CELLS`."""
    rows = []
    for n, G in MANY_CELLS:
        print(f"many cells: n = {n:,}, G = {G:,} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--child-cells", str(n), str(G)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows)


def per_call(repeats: int = 7) -> pd.DataFrame:
    """Time ``hetfx.fit(..., draws=0)`` and ``build_design`` (see the module notes)."""
    import warnings

    import hetfx
    from hetfx.api import build_design
    from hetfx.paper import simulation as S

    cond = next(c for c in S.conditions(1) if c.n_groups == 128)
    data, _ = S.simulate_condition(12, 0, cond, baseline_sd=0.3)
    mods = [f"x{i}" for i in range(1, 8)]
    rows = []
    for baselines in ("none", "fixed", "pooled"):
        kw = dict(controls=["z1", "z2", "z3"], group="group", baselines=baselines)
        times = {"fit": [], "design": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # baselines="none" warns
            hetfx.fit(data, "y", "treat", mods, draws=0, **kw)
            for _ in range(repeats):
                t0 = time.perf_counter()
                hetfx.fit(data, "y", "treat", mods, draws=0, **kw)
                t1 = time.perf_counter()
                build_design(data, "y", "treat", mods, **kw)
                times["fit"].append(t1 - t0)
                times["design"].append(time.perf_counter() - t1)
        rows.append(
            {
                "baselines": baselines,
                "fit_ms": 1e3 * min(times["fit"]),
                "build_design_ms": 1e3 * min(times["design"]),
            }
        )
    return pd.DataFrame(rows)


def many_groups(nutpie: bool = True) -> pd.DataFrame:
    """Time :func:`many_groups_child` for every row of :data:`MANY_GROUPS` (quadrature) and,
    with ``nutpie``, for :data:`MANY_GROUPS_NUTPIE` with full NUTS."""
    runs = [(n, G, "quadrature") for n, G in MANY_GROUPS]
    if nutpie:
        runs.append((*MANY_GROUPS_NUTPIE, "nutpie"))
    rows = []
    for n, G, engine in runs:
        print(f"many groups: n = {n:,}, G = {G:,}, {engine} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--child-many", str(n), str(G), "--engine", engine],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast-only", action="store_true", help="skip full NUTS (nutpie)")
    parser.add_argument("--models", default="m1,m2,a1,bp,m1_ols,m2_ols")
    parser.add_argument(
        "--many-groups",
        action="store_true",
        help="time the quadrature engine on many groups (synthetic data)",
    )
    parser.add_argument("--no-nutpie", action="store_true", help="--many-groups without NUTS")
    parser.add_argument(
        "--many-cells",
        action="store_true",
        help="time hetfx.fit's default on a million rows in thousands of cells",
    )
    parser.add_argument(
        "--per-call", action="store_true", help="time hetfx.fit(draws=0) on a simulated data set"
    )
    parser.add_argument("--child-many", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-cells", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="quadrature", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_many:
        print(json.dumps(many_groups_child(*args.child_many, engine=args.engine)))
        return 0
    if args.child_cells:
        print(json.dumps(many_cells_child(*args.child_cells)))
        return 0
    if args.per_call:
        print(per_call().to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        return 0
    if args.many_cells:
        table = many_cells()
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        return 0
    if args.many_groups:
        table = many_groups(nutpie=not args.no_nutpie)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        return 0
    os.chdir(ROOT)
    params = load_params()
    tw = pd.read_parquet("data/clean/tomz_weeks.parquet")
    bp = pd.read_parquet("data/clean/bush_prather.parquet")
    brms = pd.read_csv(BRMS).drop_duplicates("fit").set_index("fit")
    rows = []
    for model in args.models.split(","):
        engines = [None]
        if not args.fast_only and model in FULL_ENGINE:
            engines.append(FULL_ENGINE[model])
        for engine in engines:
            print(
                f"fitting {model} ({engine or 'pipeline engine'}) ...", file=sys.stderr, flush=True
            )
            rows.append(run_one(model, engine, tw, bp, params))
    table = pd.DataFrame(rows)
    ref = table["model"].map(BRMS_RUN)
    table["brms_total_s"] = ref.map(brms["total_wall_s"])
    table["brms_min_ess"] = ref.map(brms["min_bulk_ess"])
    table["times_faster"] = table["brms_total_s"] / table["total_s"]
    cols = [
        "model",
        "sampler",
        "compile_s",
        "sampling_s",
        "total_s",
        "min_ess_bulk",
        "ess_per_s",
        "max_r_hat",
        "divergences",
        "brms_total_s",
        "brms_min_ess",
        "times_faster",
    ]
    print(table.reindex(columns=cols).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
