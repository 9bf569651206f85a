"""The simulation's hierarchical estimator: the exact quadrature summaries against the
library's quadrature engine, its draws and full NUTS, interval coverage, worker-independence,
and the stage."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import ArrowLambda, CollapsedLambda, prepare_lambda_data
from hetfx.paper import simulation as S

HIER = S.hierarchical_estimator


def _inputs(design, index, root=12, replicate=0):
    cond = S.conditions(design)[index]
    data, truth = S.simulate_condition(root, replicate, cond)
    return cond, data, truth, S._lambda_inputs(data, cond)


@pytest.mark.parametrize("design,index", [(1, 4), (2, 3)])
def test_arrow_log_posterior_equals_the_dense_collapse(design, index):
    """The arrow-structured collapse gives the log posterior of the dense (p + G) collapse to
    1e-9, in both of its coordinate systems (saturated Z of design 1: alpha = Z gamma)."""
    _, _, _, (y, t, X, g, Z) = _inputs(design, index)
    d = prepare_lambda_data(y, t, X, g, Z)
    prior = ScalePrior.brms_default()
    ref = CollapsedLambda(d, 1.0, 1.0, prior, prior)
    rng = np.random.default_rng(0)
    u = np.column_stack([rng.normal(0, 0.2, 300), rng.uniform(-20, 1, 300)])
    for saturated in {False, design == 1}:
        fast = ArrowLambda(d, 1.0, 1.0, prior, prior, saturated=saturated)
        np.testing.assert_allclose(fast.logpost(u), ref.logpost(u), rtol=0, atol=1e-9)


@pytest.mark.parametrize("design,index", [(1, 3), (2, 3)])
def test_exact_summaries_agree_with_the_library_engine_and_its_draws(design, index):
    """The simulation's exact summaries equal fit_lambda_model(engine="quadrature")'s (other
    grid: within 5e-7), and the engine's draws scatter around them within Monte
    Carlo error (means: z-scores; quantiles: 5 Monte Carlo SEs)."""
    from hetfx.models.lambda_model import fit_lambda_model

    _, _, _, (y, t, X, g, Z) = _inputs(design, index, replicate=1)
    summ, info = S.lambda_quadrature_summary(y, t, X, g, Z)
    assert info["grid_edge_mass"] < 1e-9
    n = 8000
    fit = fit_lambda_model(y, t, X, g, Z, engine="quadrature", chains=4, draws=n // 4, seed=4)
    ge = fit.group_effects(level=0.9)
    for ours, theirs in (
        ("q50", "estimate"),
        ("q025", "q025"),
        ("q05", "q05"),
        ("q95", "q95"),
        ("q975", "q975"),
    ):
        np.testing.assert_allclose(summ[ours], ge[theirs], rtol=0, atol=5e-7)
    lam = fit.idata.posterior["lambda"].transpose(..., "group").to_numpy().reshape(n, -1)
    z = (lam.mean(axis=0) - summ["mean"].to_numpy()) / (summ["sd"].to_numpy() / np.sqrt(n))
    assert np.abs(z).max() < 4.5
    assert 0.4 < np.mean(z**2) < 2.0  # draws are not systematically shifted
    np.testing.assert_allclose(lam.std(axis=0, ddof=1), summ["sd"], rtol=0.05)
    for p in (0.05, 0.5, 0.95):
        # Monte Carlo SE of a sample quantile: sqrt(p (1 - p) / n) / density
        q = summ[f"q{round(100 * p):02d}"].to_numpy()
        dens = np.exp(-0.5 * ((q - summ["mean"]) / summ["sd"]) ** 2) / (
            np.sqrt(2 * np.pi) * summ["sd"]
        )
        se = np.sqrt(p * (1 - p) / n) / dens
        assert (np.abs(np.quantile(lam, p, axis=0) - q) < 5 * se).all(), p


def test_hierarchical_coverage_is_nominal():
    """90% and 95% intervals cover tau at the nominal rate over replicates: per condition
    within 4 replicate-level Monte Carlo SEs, pooled within 3 points (both designs).
    Deterministic (exact quadrature summaries, fixed seeds): the same on any CPU."""
    conds = [*S.conditions(1)[:3], S.conditions(2)[3]]  # 8, 16, 32 groups; strong imbalance
    frames = []
    for r in range(24):
        for cond in conds:
            data, truth = S.simulate_condition(31, r, cond)
            est = truth.merge(HIER(data, cond), on="group")
            frames.append(
                est.assign(
                    design=cond.design,
                    condition=cond.label,
                    n_groups=cond.n_groups,
                    scenario=cond.scenario,
                    replicate=r,
                    model="hierarchical",
                )
            )
    e = pd.concat(frames, ignore_index=True)
    s = S.summarise(e)
    assert len(s) == 4 and (s["n_replicates"] == 24).all()
    for lvl, nominal, lo, hi in (("90", 0.90, "q05", "q95"), ("95", 0.95, "q025", "q975")):
        cov, mcse = s[f"coverage_{lvl}"], s[f"coverage_{lvl}_mcse"]
        assert (np.abs(cov - nominal) < 4 * mcse).all(), (lvl, cov.tolist(), mcse.tolist())
        pooled = ((e[lo] <= e["tau"]) & (e["tau"] <= e[hi])).mean()
        assert abs(pooled - nominal) < 0.03, (lvl, pooled)
    assert (s["max_grid_edge_mass"] < 1e-6).all()


def test_hierarchical_results_do_not_depend_on_workers():
    est = {"ols": S.ols_estimator, "hierarchical": HIER}
    one = S.run_simulation(
        2, designs=(2,), root_seed=5, estimators=est, n_jobs=1, backend="sequential", progress=False
    )
    two = S.run_simulation(2, designs=(2,), root_seed=5, estimators=est, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(one.estimates, two.estimates)
    pd.testing.assert_frame_equal(one.summary, two.summary)
    alone = S.run_replicate(2, 1, 5, est)  # a replicate rerun alone is the same
    pd.testing.assert_frame_equal(
        alone, one.estimates.loc[one.estimates["replicate"] == 1].reset_index(drop=True)
    )


def test_simulate_stage_small_profile(tmp_path):
    """The stage script end to end with the small profile: the artifact contract."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["simulation"] |= {
        "replicates": 2,
        "small": True,
        "n_jobs": 1,
        "backend": "sequential",
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "simulate.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "[simulate] done in" in run.stdout
    sim = tmp_path / "results" / "simulation"
    for name, cond, levels in (
        ("spec", "n_groups", {8, 16, 32, 64, 128}),
        ("groupsize", "scenario", set(S.IMBALANCE_SCENARIOS)),
    ):
        summary = pd.read_csv(sim / name / "summary.csv")
        assert len(summary) == 2 * len(levels)
        assert set(summary[cond]) == levels and set(summary["model"]) == {"ols", "hierarchical"}
        for col in (
            "rmse_mean",
            "rmse_mcse",
            "n_replicates",
            "coverage_90",
            "coverage_95",
            "coverage_90_mcse",
            "coverage_95_mcse",
        ):
            assert col in summary, col
        assert (summary["n_replicates"] == 2).all()
        one = pd.read_csv(sim / name / "one_replicate.csv")
        assert {cond, "model", "rmse"} <= set(one.columns) and (one["replicate"] == 0).all()
        est = pd.read_parquet(sim / name / "estimates.parquet")
        assert {
            "replicate",
            "condition",
            "group",
            "n",
            "tau",
            "model",
            "estimate",
            "q025",
            "q05",
            "q95",
            "q975",
        } <= set(est.columns)
        assert set(est["replicate"]) == {0, 1}
        merged = summary.merge(one, on=[cond, "model"])
        np.testing.assert_allclose(merged["rmse"], merged["rmse_one_replicate"])
        assert (sim / name / "bias_by_size.csv").exists()
    for i in (1, 2, 3, 4):
        for ext in ("png", "svg"):
            assert (tmp_path / "manuscript" / "figures" / f"figure{i}.{ext}").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("design,index,replicate", [(1, 1, 0), (1, 3, 1), (2, 3, 0)])
def test_fast_path_agrees_with_nuts(design, index, replicate):
    """Full NUTS (nutpie, 4 x 1000 draws) vs the exact quadrature summaries on the same data:
    group medians within 0.15 posterior SD (largest) and 0.06 (mean), 95% interval ends
    within 0.35 and 0.10 (NUTS' Monte Carlo error is about 0.03 SD for a median and 0.07 SD
    for a 2.5% quantile at its effective sample size, so 0.35 is 5 of the latter).

    NUTS draws differ on another CPU, so the bounds are sized by measurement: with NUTS
    seeds 1-8 in place of the data's and seed 1 under the combined CPU emulation of
    tests/test_cross_cpu.py, the largest ratio to its bound over the three data sets was
    0.71 for the interval ends under the former 0.25 (0.51 of 0.35; 0.43 under the
    emulation), 0.39 for the medians and 0.51 for the means; a Gumbel law fitted to the 9
    maxima puts a failure of the former bound at 6e-4, of this one at 1e-6."""
    cond, data, _, _ = _inputs(design, index, replicate=replicate)
    fast = S.hierarchical_estimator(data, cond)
    nuts = S.hierarchical_estimator(data, cond, chains=4, draws=1000, engine="nutpie")
    width = (nuts["q975"] - nuts["q025"]) / (2 * 1.96)  # posterior SD
    tolerance = {"estimate": (0.15, 0.06), "q025": (0.35, 0.10), "q975": (0.35, 0.10)}
    for col, (max_tol, mean_tol) in tolerance.items():
        dz = (fast[col] - nuts[col]).abs() / width
        print(f"{cond.label} r{replicate} {col}: |diff|/sd max {dz.max():.3f} mean {dz.mean():.3f}")
        assert dz.max() < max_tol and dz.mean() < mean_tol
