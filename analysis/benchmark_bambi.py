"""hetfx against bambi (what a Python user would pick) and nutpie on the same models.

Usage::

    make benchmark    # benchmark.py, then this script with the `bench` group (bambi)
    python analysis/benchmark_bambi.py              # every row, two bambi seeds, nutpie
    python analysis/benchmark_bambi.py --rows cells --bambi-seeds 1 --no-nutpie

Rows (each :func:`hetfx.fit` with its defaults: pooled cell baselines, scale-aware priors):

``m1``
    Tomz-Weeks, the 32 experimental conditions (``treat_group``) as cells, M1's controls.
    The saturated effect design has one column per cell, so hetfx keeps its intercept and
    the cells' deviations carry the rest: bambi ``force ~ controls + alliance + (1 + alliance
    | treat_group)``.
``m2``
    Tomz-Weeks, the demographic cells (``het_group``), additive effect equation in the five
    demographics, their main effects and M2's controls in the outcome equation: bambi
    ``force ~ controls + alliance * (dem + rep + high_newsint + white + male) + (1 + alliance
    | het_group)``.
``cells``
    Simulated: one 512-level string ``cell`` column, n = 20,000, known baselines and effects
    (:func:`simulate_cells`): ``y ~ treat + (1 + treat | cell)``.

bambi's priors are set from the priors hetfx records on its result (:func:`bambi_priors`):
flat on the outcome equation's coefficients, N(0, 2.5 sd(y) / sd(T)) on the effect
equation's, half-Student-t(3) on sigma, sigma_alpha (``1|cell``) and sigma_theta
(``treat|cell``), the baselines and the effects' deviations independent (bambi's ``(1 + x |
g)`` has no correlation either). Both samplers draw 4 chains x 1000 draws after 1000
warm-up on 2 cores. Each row prints the wall and CPU seconds (hetfx: the median of three
fit calls after a warm-up fit, so imports are excluded; bambi and nutpie: model
construction, compilation and sampling, CPU of the sampling workers included), the ratio,
the largest absolute difference of the cells' effect medians between hetfx and the first
bambi seed, and the same between two bambi seeds (bambi's own Monte Carlo noise); the
``cells`` row adds the error of the reference (first) cell's effect against the truth, its
90% interval, and the largest change of any hetfx median when that cell is renamed to sort
last. ``analysis/benchmark_bambi.md`` holds a measured table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# arviz 0.23 imports arviz_plots (installed with bambi), which reads ``matplotlib.style.core``
# as an attribute; matplotlib 3.11 no longer imports that submodule, so import it first
import matplotlib.style.core  # noqa: E402, F401
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hetfx  # noqa: E402
from hetfx.paper import studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = {"chains": 4, "draws": 1000, "tune": 1000}
CORES = 2


@dataclass
class Row:
    """One model: its data, the :func:`hetfx.fit` call and the equivalent bambi formula."""

    name: str
    data: pd.DataFrame
    outcome: str
    treatment: str
    cell: str
    modifiers: list[str]
    controls: list[str]
    effect: str | None
    bambi_formula: str
    #: modifiers of the effect equation (bambi terms ``treatment:modifier``)
    effect_terms: list[str] = field(default_factory=list)
    truth: pd.Series | None = None


def tomz_rows(tw: pd.DataFrame) -> list[Row]:
    """The M1-like and M2-like rows on the cleaned Tomz-Weeks data (published coding)."""
    df = studies.coding_frame(tw, "published")
    m1_controls = list(studies.M1_CONTROLS)
    m1 = Row(
        "m1",
        df,
        "force",
        "alliance",
        "treat_group",
        list(studies.CONDITION_FACTORS),
        m1_controls,
        "saturated",
        f"force ~ {' + '.join(m1_controls)} + alliance + (1 + alliance | treat_group)",
    )
    demo = list(studies.DEMOGRAPHIC_KEYS)
    m2_controls = list(studies.M2_CONTROLS)
    m2 = Row(
        "m2",
        df,
        "force",
        "alliance",
        "het_group",
        demo,  # party (a function of dem and rep) only labels the cells
        m2_controls,
        " + ".join(demo),
        f"force ~ {' + '.join(m2_controls)} + alliance * ({' + '.join(demo)})"
        " + (1 + alliance | het_group)",
        effect_terms=demo,
    )
    return [m1, m2]


def simulate_cells(n: int = 20_000, G: int = 512, seed: int = 7) -> Row:
    """One string ``cell`` column with G levels, baselines N(0, .3), effects .2 + N(0, .1),
    noise N(0, 1). The reference cell (``c000``, first in sorted order, bambi's and formula
    coding's reference level) gets an atypical baseline (+.6) and effect (.35), so that any
    prior that treats it differently from the other cells shows in its estimate."""
    rng = np.random.default_rng(seed)
    labels = np.array([f"c{g:03d}" for g in range(G)])
    alpha = rng.normal(0, 0.3, G)
    tau = 0.2 + rng.normal(0, 0.1, G)
    alpha[0], tau[0] = 0.6, 0.35
    g = rng.integers(0, G, n)
    treat = rng.integers(0, 2, n)
    y = alpha[g] + tau[g] * treat + rng.normal(0, 1, n)
    data = pd.DataFrame({"cell": labels[g], "treat": treat, "y": y})
    return Row(
        "cells",
        data,
        "y",
        "treat",
        "cell",
        ["cell"],
        [],
        None,
        "y ~ treat + (1 + treat | cell)",
        truth=pd.Series(tau, index=labels),
    )


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (PyMC's sampling workers)."""
    import resource

    return sum(
        r.ru_utime + r.ru_stime
        for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def fit_hetfx(row: Row, seed: int = 1):
    """Wall seconds and the :func:`hetfx.fit` result (default baselines and priors)."""
    start = time.perf_counter()
    res = hetfx.fit(
        row.data,
        row.outcome,
        row.treatment,
        row.modifiers,
        row.controls or None,
        effect=row.effect,
        group=row.cell if row.cell not in row.modifiers else None,
        missing="raise",
        seed=seed,
        **LAYOUT,
    )
    return time.perf_counter() - start, res


def hetfx_effects(res, row: Row) -> pd.Series:
    """The cells' effect medians, indexed by cell label."""
    g = res.group_effects()
    return pd.Series(g["estimate"].to_numpy(), index=g[row.cell].astype(str).to_numpy())


def _bambi_prior(p):
    import bambi as bmb

    if p.family == "flat":
        return bmb.Prior("Flat")
    if p.family == "normal":
        return bmb.Prior("Normal", mu=0.0, sigma=p.scale)
    if p.family == "half_normal":
        return bmb.Prior("HalfNormal", sigma=p.scale)
    return bmb.Prior("HalfStudentT", nu=p.nu, sigma=p.scale)


def bambi_priors(priors, row: Row) -> dict:
    """bambi's priors matching the :class:`hetfx.Priors` recorded on a hetfx result."""
    import bambi as bmb

    control = _bambi_prior(priors.control)
    effect = _bambi_prior(priors.effect)
    out = {"Intercept": _bambi_prior(priors.intercept or priors.control)}
    out.update({c: control for c in row.controls + row.effect_terms})
    out[row.treatment] = effect
    out.update({f"{row.treatment}:{m}": effect for m in row.effect_terms})
    out[f"1|{row.cell}"] = bmb.Prior("Normal", mu=0.0, sigma=_bambi_prior(priors.sigma_alpha))
    out[f"{row.treatment}|{row.cell}"] = bmb.Prior(
        "Normal", mu=0.0, sigma=_bambi_prior(priors.sigma_theta)
    )
    out["sigma"] = _bambi_prior(priors.sigma)
    return out


def fit_bambi(row: Row, priors: dict, seed: int, sampler: str = "pymc"):
    """Wall seconds (model construction, compilation, sampling) and the InferenceData."""
    import bambi as bmb

    start = time.perf_counter()
    model = bmb.Model(row.bambi_formula, row.data, priors=priors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = model.fit(
            **LAYOUT,
            cores=CORES,
            random_seed=seed,
            inference_method=sampler,
            progressbar=False,
        )
    return time.perf_counter() - start, idata


def bambi_effects(idata, row: Row) -> pd.Series:
    """The cells' effect medians from bambi's draws: the treatment's coefficient, its
    interactions with the cell's modifier values, and the cell's deviation."""
    post = idata.posterior
    dev = post[f"{row.treatment}|{row.cell}"]
    dim = [d for d in dev.dims if d not in ("chain", "draw")][0]
    labels = [str(v) for v in dev[dim].values]
    draws = dev.to_numpy().reshape(-1, len(labels)) + post[row.treatment].to_numpy().reshape(-1, 1)
    if row.effect_terms:
        cells = row.data.groupby(row.cell)[row.effect_terms].first().loc[labels]
        for m in row.effect_terms:
            coef = post[f"{row.treatment}:{m}"].to_numpy().reshape(-1, 1)
            draws = draws + coef * cells[m].to_numpy()[None, :]
    return pd.Series(np.median(draws, axis=0), index=labels)


def max_diff(a: pd.Series, b: pd.Series) -> float:
    """Largest absolute difference over the cells (labels matched)."""
    return float((a - b.reindex(a.index)).abs().max())


def diagnostics(idata) -> tuple[float, int]:
    """Max R-hat and divergences of a bambi fit."""
    import arviz as az

    rhat = float(az.rhat(idata).to_array().max())
    div = int(idata.sample_stats["diverging"].sum()) if "sample_stats" in idata else -1
    return rhat, div


def relabelled_diff(row: Row, effects: pd.Series, ref: str) -> float:
    """Largest change of a hetfx cell-effect median when the reference cell ``ref`` is
    renamed to sort last (0 when no cell's position in the level order matters)."""
    last = "~" + ref  # "~" sorts after letters and digits
    data = row.data.assign(**{row.cell: row.data[row.cell].replace({ref: last})})
    moved = dataclasses.replace(row, data=data)
    again = hetfx_effects(fit_hetfx(moved)[1], moved).rename({last: ref})
    return max_diff(effects, again)


def run_row(row: Row, bambi_seeds: list[int], nutpie: bool) -> dict:
    """Time hetfx, bambi (each seed) and, optionally, bambi's model under nutpie."""
    fit_hetfx(row, seed=2)  # warm-up: first-call imports and caches
    load = os.getloadavg()[0]
    cpu = cpu_seconds()
    times = [fit_hetfx(row)[0] for _ in range(2)]
    h_s, res = fit_hetfx(row)
    h_cpu = (cpu_seconds() - cpu) / 3
    h_s = float(np.median([*times, h_s]))  # the median of three (the machine is shared)
    h = hetfx_effects(res, row)
    priors = bambi_priors(res.priors, row)
    out = {
        "row": row.name,
        "cells": len(h),
        "n": len(row.data),
        "hetfx_s": h_s,
        "hetfx_cpu_s": h_cpu,
    }
    if nutpie:
        print(f"{row.name}: bambi model, nutpie ...", file=sys.stderr, flush=True)
        cpu = cpu_seconds()
        n_s, idata = fit_bambi(row, priors, bambi_seeds[0], sampler="nutpie")
        out["nutpie_s"], out["nutpie_cpu_s"] = n_s, cpu_seconds() - cpu
        out["max_diff_hetfx_nutpie"] = max_diff(h, bambi_effects(idata, row))
        out["nutpie_rhat"], out["nutpie_div"] = diagnostics(idata)
    fits = []
    for seed in bambi_seeds:
        print(f"{row.name}: bambi seed {seed} ...", file=sys.stderr, flush=True)
        cpu = cpu_seconds()
        b_s, idata = fit_bambi(row, priors, seed)
        fits.append((b_s, bambi_effects(idata, row), *diagnostics(idata)))
        out.setdefault("bambi_cpu_s", cpu_seconds() - cpu)
    out["bambi_s"] = fits[0][0]
    if len(fits) > 1:
        out["bambi_s_2"] = fits[1][0]
    out["times_faster"] = np.mean([f[0] for f in fits]) / h_s
    out["bambi_rhat"] = max(f[2] for f in fits)
    out["bambi_div"] = sum(f[3] for f in fits)
    out["max_diff_hetfx_bambi"] = max_diff(h, fits[0][1])
    if len(fits) > 1:
        out["max_diff_bambi_seeds"] = max_diff(fits[1][1], fits[0][1])
    if row.truth is not None:
        ref = row.truth.index[0]
        out["ref_truth"] = row.truth[ref]
        out["ref_err_hetfx"] = h[ref] - row.truth[ref]
        out["ref_err_bambi"] = fits[0][1][ref] - row.truth[ref]
        g = res.group_effects(level=0.9).set_index(row.cell)
        out["ref_relabelled_diff_hetfx"] = relabelled_diff(row, h, ref)
        out["ref_hetfx_q05"], out["ref_hetfx_q95"] = g.loc[ref, ["lower", "upper"]]
        out["rmse_hetfx"] = float(np.sqrt(((h - row.truth.reindex(h.index)) ** 2).mean()))
        b = fits[0][1]
        out["rmse_bambi"] = float(np.sqrt(((b - row.truth.reindex(b.index)) ** 2).mean()))
    out["load_1min"] = (load + os.getloadavg()[0]) / 2
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="m1,m2,cells")
    parser.add_argument("--bambi-seeds", type=int, default=2, help="bambi fits per row (1-2)")
    parser.add_argument("--no-nutpie", action="store_true", help="skip the nutpie fits")
    parser.add_argument("--draws", type=int, default=1000, help="draws (and warm-up) per chain")
    args = parser.parse_args(argv)
    LAYOUT.update(draws=args.draws, tune=args.draws)
    os.chdir(ROOT)
    wanted = args.rows.split(",")
    rows = []
    if {"m1", "m2"} & set(wanted):
        rows += tomz_rows(pd.read_parquet("data/clean/tomz_weeks.parquet"))
    if "cells" in wanted:
        rows.append(simulate_cells())
    seeds = [11, 12][: args.bambi_seeds]
    results = []
    for r in (r for r in rows if r.name in wanted):
        results.append(run_row(r, seeds, not args.no_nutpie))
        print(json.dumps(results[-1], default=float), flush=True)
    table = pd.DataFrame(results)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(table.T.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
