"""Simulation sensitivity to baseline shifts: DGP, the baseline-aware hierarchical estimators
(hetfx.fit with baselines "fixed" and "pooled") against brute force, and their coverage; the
exact engine's pooled and fixed-baselines models on the simulation's data."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetfx.api import build_design
from hetfx.models.exact import GRIDS, BlockPosterior, fit_block_model, lattice_grid_nd
from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import prepare_lambda_data
from hetfx.models.pooled import fit_exact_lambda, lambda_block_model
from hetfx.paper import simulation as S


def _lambda_inputs(data, cond):
    """Engine inputs ``(y, treat, X, codes, Z)`` of the published model on a simulated data set:
    ``X`` intercept, z1, z2, z3; ``Z`` the full factorial (saturated) or intercept +
    moderators (additive) of the cells present, in index order."""
    codes, present = pd.factorize(data["group_index"].to_numpy(), sort=True)
    xs = cond.moderators
    if cond.effect_terms == "saturated":
        terms = [t for r in range(len(xs) + 1) for t in itertools.combinations(xs, r)]
    else:
        terms = [(), *((x,) for x in xs)]
    bits = (present[:, None] >> np.arange(cond.k - 1, -1, -1)) & 1
    keys = pd.DataFrame(bits, columns=xs, index=[S.group_labels(cond.k)[i] for i in present])
    Z = pd.DataFrame(
        {":".join(t) or "Intercept": keys[list(t)].prod(axis=1).astype(float) for t in terms},
        index=keys.index,
    )
    X = pd.DataFrame({"Intercept": 1.0, "z1": data["z1"], "z2": data["z2"], "z3": data["z3"]})
    return data["y"].to_numpy(float), data["treat"].to_numpy(float), X, codes, Z


def _api_design(data, cond, baselines):
    """The design hetfx.fit builds for the study's estimator (S.fit_condition's arguments)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_design(
            data,
            "y",
            "treat",
            cond.moderators,
            ["z1", "z2", "z3"],
            effect=S.effect_formula(data, cond),
            group="group",
            baselines=baselines,
            single_arm_cells="pool",
        )


# ----------------------------------------------------------------------------- DGP


def test_shift_dgp_moments_and_unchanged_rest():
    cond = S.conditions(1)[4]  # 128 cells
    draws = np.concatenate([S.draw_baseline(12, r, cond) for r in range(20)])
    # N(0, 0.3): 2560 draws, mean SE .006, SD SE .004
    assert abs(draws.mean()) < 0.025
    assert abs(draws.std(ddof=1) - S.BASELINE_SD) < 0.015
    assert stats.kstest(draws, stats.norm(0, S.BASELINE_SD).cdf).pvalue > 1e-3
    for c in (S.conditions(1)[1], S.conditions(2)[3]):
        plain, truth0 = S.simulate_condition(12, 3, c)
        shifted, truth1 = S.simulate_condition(12, 3, c, baseline_sd=0.3)
        pd.testing.assert_frame_equal(truth0, truth1)
        same = [col for col in plain.columns if col != "y"]
        pd.testing.assert_frame_equal(plain[same], shifted[same])
        delta = S.draw_baseline(12, 3, c)
        g = plain["group_index"].to_numpy()
        np.testing.assert_allclose(shifted["y"] - plain["y"], delta[g], atol=1e-12)
        np.testing.assert_array_equal(shifted["baseline"], delta[g])
        # the shift moves the control arm's cell mean: cell means of the control-arm residual
        resid = shifted["y"] - 0.4 * shifted["z1"] + 0.3 * shifted["z2"] - 0.25 * shifted["z3"]
        ctrl = shifted["treat"] == 0
        cm = resid[ctrl].groupby(g[ctrl]).mean()
        n0 = pd.Series(g[ctrl]).value_counts().sort_index()
        z = (cm.to_numpy() - delta[cm.index]) * np.sqrt(n0.to_numpy())  # ~ N(0, 1)
        assert abs(z.mean()) < 4 / np.sqrt(len(z)) and 0.7 < z.std() < 1.3
    # the shifts of different conditions and replicates are different streams
    assert not np.allclose(
        S.draw_baseline(12, 0, S.conditions(1)[0]), S.draw_baseline(12, 1, S.conditions(1)[0])
    )


def test_unshifted_manifest_is_the_published_one(tmp_path):
    est = {"ols": S.ols_estimator}
    S.run_simulation(1, designs=(1,), estimators=est, work_dir=tmp_path / "a", progress=False)
    S.run_simulation(
        1, designs=(1,), estimators=est, work_dir=tmp_path / "b", progress=False, baseline_sd=0.3
    )
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "baseline_sd" not in a and b["baseline_sd"] == 0.3
    with pytest.raises(ValueError, match="different run"):
        S.run_simulation(
            1,
            designs=(1,),
            estimators=est,
            work_dir=tmp_path / "a",
            progress=False,
            baseline_sd=0.3,
        )


def test_separate_runs_combine_into_one_run():
    """The sensitivity stage reuses the published simulation's OLS and hierarchical fits and
    fits only its own models: the combined estimates equal one run with every model (here two
    cheap ones, both designs, two replicates), row for row."""
    kw = {"designs": (1, 2), "n_jobs": 1, "backend": "sequential", "progress": False}
    models = {"ols": S.ols_estimator, "ols_again": S.ols_estimator}
    full = S.run_simulation(2, estimators=models, **kw).estimates
    parts = [S.run_simulation(2, estimators={m: f}, **kw).estimates for m, f in models.items()]
    pd.testing.assert_frame_equal(S.combine_estimates(parts[::-1], list(models)), full)
    with pytest.raises(ValueError, match="not in"):
        S.combine_estimates(parts, ["ols"])


def test_fixed_baselines_estimator_is_invariant_to_the_shifts():
    """``hierarchical_fe_estimator`` (centring within the cells) gives the same numbers on a
    replicate's data with and without the cells' baseline shifts, to rounding: the premise of
    ``baseline_invariant``, under which the sensitivity stage fits it once for both DGPs. The
    published model (one baseline) is not invariant: the check can fail."""
    for cond in (S.conditions(1)[1], S.conditions(2)[2]):
        plain, _ = S.simulate_condition(12, 4, cond)
        shifted, _ = S.simulate_condition(12, 4, cond, baseline_sd=0.3)
        a, b = (S.hierarchical_fe_estimator(d, cond) for d in (plain, shifted))
        cols = ["estimate", *S.INTERVAL_COLUMNS]
        np.testing.assert_array_equal(a["group"], b["group"])
        np.testing.assert_allclose(a[cols], b[cols], rtol=1e-11, atol=1e-12)
        c, d = (S.hierarchical_estimator(x, cond) for x in (plain, shifted))
        assert np.abs(c["estimate"] - d["estimate"]).max() > 1e-3
    assert S.hierarchical_fe_estimator.baseline_invariant
    assert not getattr(S.hierarchical_pooled_estimator, "baseline_invariant", False)


def _counted_ols(data, cond):
    """OLS marked baseline-invariant (it is not: only to count the calls), a module-level
    function so that the joblib workers can pickle it."""
    _counted_ols.calls += 1
    return S.ols_estimator(data, cond)


_counted_ols.calls = 0
_counted_ols.baseline_invariant = True


def test_several_dgps_at_once_equal_one_run_each_and_share_invariant_fits(tmp_path):
    """run_simulations (both DGPs of a replicate in one task) gives each DGP's estimates and
    work files exactly as run_simulation per DGP does, fitting an estimator marked
    ``baseline_invariant`` once per replicate and condition for both DGPs; it resumes from
    the work directories (nothing fitted again)."""
    kw = {"designs": (2,), "n_jobs": 1, "backend": "sequential", "progress": False}
    est = {"ols": S.ols_estimator, "fe": S.hierarchical_fe_estimator}
    dgps = {"published": (0.0, {"fe": est["fe"]}), "shifted": (0.3, est)}
    one = {
        name: S.run_simulation(2, estimators=e, baseline_sd=sd, work_dir=tmp_path / name, **kw)
        for name, (sd, e) in dgps.items()
    }
    both = S.run_simulations(2, dgps, work_dir=tmp_path / "both", **kw)
    assert list(both) == ["published", "shifted"]
    for name in dgps:
        pd.testing.assert_frame_equal(both[name].estimates, one[name].estimates)
        pd.testing.assert_frame_equal(both[name].summary, one[name].summary)
        for path in sorted((tmp_path / name).rglob("*.parquet")):
            twin = tmp_path / "both" / name / path.relative_to(tmp_path / name)
            assert twin.read_bytes() == path.read_bytes()
    counted = {"published": (0.0, {"c": _counted_ols}), "shifted": (0.3, {"c": _counted_ols})}
    _counted_ols.calls = 0
    S.run_simulations(2, counted, work_dir=tmp_path / "counted", **kw)
    assert _counted_ols.calls == 2 * len(S.conditions(2))  # once per replicate and condition
    S.run_simulations(2, counted, work_dir=tmp_path / "counted", **kw)
    assert _counted_ols.calls == 2 * len(S.conditions(2))  # resumed
    with pytest.raises(ValueError, match="no DGPs"):
        S.run_simulations(1, {}, **kw)


# -------------------------------------------------------------- brute-force checks


def _small_problem(seed=1, G=4, n=60, saturated=False):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(G), n // G)
    t = (rng.random(n) < 0.5).astype(float)
    z = rng.standard_normal((n, 2))
    y = (
        0.5 * rng.standard_normal(G)[g]
        + (0.2 + 0.3 * rng.standard_normal(G))[g] * t
        + z @ [0.4, -0.3]
        + rng.standard_normal(n)
    )
    cols = [np.ones(G), [0, 1, 0, 1], [0, 0, 1, 1]] + ([[0, 0, 0, 1]] if saturated else [])
    Z = pd.DataFrame(
        np.column_stack(cols), columns=["I", "a", "b", "ab"][: len(cols)], index=list("pqrs")
    )
    return y, t, z, g, Z


def _dense_lambda(y, t, F, prior_var, Lmap, s):
    """Brute force: y = F c + e, c ~ N(0, diag(prior_var)); log p(y) and lambda = Lmap c."""
    n = len(y)
    C = s**2 * np.eye(n) + (F * prior_var) @ F.T
    ll = stats.multivariate_normal(np.zeros(n), C).logpdf(y)
    prec = np.diag(1 / prior_var) + F.T @ F / s**2
    cov = np.linalg.inv(prec)
    mean = cov @ F.T @ y / s**2
    return ll, Lmap @ mean, np.sqrt(np.diag(Lmap @ cov @ Lmap.T))


@pytest.mark.parametrize("saturated", [False, True])
def test_pooled_baselines_against_dense_brute_force(saturated):
    y, t, z, g, Z = _small_problem(saturated=saturated)
    G, q = Z.shape
    X = pd.DataFrame({"Intercept": 1.0, "z1": z[:, 0], "z2": z[:, 1]})
    model = lambda_block_model(prepare_lambda_data(y, t, X, g, Z), "pooled")
    oh = np.eye(G)[g]
    F = np.hstack([X.to_numpy(), t[:, None] * Z.to_numpy()[g], oh, t[:, None] * oh])
    Lmap = np.hstack([np.zeros((G, 3)), Z.to_numpy(), np.zeros((G, G)), np.eye(G)])
    pr = ScalePrior.brms_default()
    lps = []
    for u in ([0.0, -1.0, -1.5], [0.2, -0.5, 0.3], [-0.1, -3.0, -4.0], [0.1, 0.5, -0.2]):
        u = np.array(u)
        s, st, sa = np.exp(u)
        pv = np.concatenate([np.ones(3), np.ones(q), np.full(G, sa**2), np.full(G, st**2)])
        ll, m, sd = _dense_lambda(y, t, F, pv, Lmap, s)
        lp_dense = ll + sum(pr.logpdf_log(np.array([v]))[0][0] for v in u)
        # the engine's scales: log sigma, then the blocks' (alpha, theta) log SDs
        lp, m2, sd2 = model.logpost_and_moments(u[None, [0, 2, 1]])
        lps.append((lp[0], lp_dense))
        np.testing.assert_allclose(m2[0], m, atol=1e-10)
        np.testing.assert_allclose(sd2[0], sd, atol=1e-10)
    lps = np.array(lps)
    np.testing.assert_allclose(lps[:, 0], lps[:, 1], rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "design,index,replicate,shift",
    [(1, 1, 0, 0.3), (2, 2, 5, 0.3)],  # 16 cells; 64 cells (moderate imbalance), shifted
)
def test_pooled_estimator_is_the_api_model_on_a_converged_grid(design, index, replicate, shift):
    """The pooled estimator is hetfx.fit's pooled-baselines model (the design it builds: a
    saturated effect design reduced to its intercept, the moderators' main effects in X of the
    additive conditions; N(0, 1) priors on the coefficients) and its summaries are within 1e-4
    of a much finer and deeper grid."""
    cond = S.conditions(design)[index]
    data, _ = S.simulate_condition(12, replicate, cond, baseline_sd=shift)
    d = _api_design(data, cond, "pooled")
    if design == 1:
        assert list(d.Z.columns) == ["Intercept"] and list(d.X.columns)[-1] == "z3"
    else:
        assert list(d.Z.columns) == ["Intercept", *cond.moderators]
        assert list(d.X.columns) == ["Intercept", "z1", "z2", "z3", *cond.moderators]
    cols = ["q50", "q025", "q05", "q95", "q975"]
    fine_grid = {"hermite": None, "resolution": (2.0, 3.0, 3.0), "drop": 32.0, "prune": 0.0}
    fine = fit_exact_lambda(
        d.y, d.treat, d.X, d.codes, d.Z, baselines="pooled", draws=0, grid=fine_grid
    ).posterior.summarise_lambda(probs=(0.5, 0.025, 0.05, 0.95, 0.975))
    est = S.hierarchical_pooled_estimator(data, cond)
    assert list(est["group"]) == [str(v) for v in d.Z.index]
    np.testing.assert_allclose(
        est[["estimate", "q025", "q05", "q95", "q975"]].to_numpy(), fine[cols].to_numpy(), atol=1e-4
    )
    assert est["grid_edge_mass"].max() < 1e-4


def test_fixed_effects_equal_dense_cell_dummies():
    """The fixed-baselines model (within-cell centring) against brute force with one dummy
    per cell under a wide N(0, 1e4) prior: the log posterior up to a constant and the
    group effects' conditional moments."""
    y, t, z, g, Z = _small_problem(seed=2)
    G = Z.shape[0]
    Xz = pd.DataFrame({"z1": z[:, 0], "z2": z[:, 1]})
    fe = lambda_block_model(prepare_lambda_data(y, t, Xz, g, Z), "fixed")
    oh = np.eye(G)[g]
    wide = np.r_[np.full(G, 1e4), 1.0, 1.0]
    F = np.hstack([oh, Xz.to_numpy(), t[:, None] * Z.to_numpy()[g], t[:, None] * oh])
    Lmap = np.hstack([np.zeros((G, G + 2)), Z.to_numpy(), np.eye(G)])
    u = np.array([[0.0, -1.0], [0.2, -0.5], [-0.1, -3.0], [0.3, 0.4]])
    lp, m, sd = fe.logpost_and_moments(u)
    a = lp - fe.log_prior(u)
    b = np.empty(len(u))
    for j, (us, ut) in enumerate(u):
        pv = np.concatenate([wide**2, np.ones(Z.shape[1]), np.full(G, np.exp(2 * ut))])
        b[j], m_d, sd_d = _dense_lambda(y, t, F, pv, Lmap, np.exp(us))
        np.testing.assert_allclose(m[j], m_d, atol=1e-6)
        np.testing.assert_allclose(sd[j], sd_d, atol=1e-6)
    np.testing.assert_allclose(a - a[0], b - b[0], atol=1e-6)  # equal up to a constant


@pytest.mark.parametrize("design,index", [(1, 0), (2, 0)])
def test_fixed_effects_estimator_equals_wide_prior_fit(design, index):
    """The fixed-baselines estimator (hetfx.fit, baselines="fixed": within-cell centring)
    equals the model with one dummy per cell under a wide N(0, 1e4) prior, on the design the
    API builds (8 cells: Z reduced to its intercept; balanced imbalance scenario: additive)."""
    cond = S.conditions(design)[index]
    data, _ = S.simulate_condition(12, 2, cond, baseline_sd=0.3)
    est = S.hierarchical_fe_estimator(data, cond)
    d = _api_design(data, cond, "fixed")
    assert ("Intercept" not in d.X.columns) and d.Z.shape[1] == (1 if design == 1 else 7)
    G = d.Z.shape[0]
    oh = pd.DataFrame(np.eye(G)[d.codes], columns=[f"cell{j}" for j in range(G)])
    Xw = pd.concat([oh, d.X.reset_index(drop=True)], axis=1)
    fit = fit_exact_lambda(
        d.y,
        d.treat,
        Xw,
        d.codes,
        d.Z,
        baselines="none",
        beta_sd=np.r_[np.full(G, 1e4), np.ones(3)],
        draws=0,
    )
    ref = fit.posterior.summarise_lambda(probs=(0.5, 0.025, 0.05, 0.95, 0.975))
    np.testing.assert_allclose(
        est[["estimate", "q025", "q05", "q95", "q975"]].to_numpy(),
        ref[["q50", "q025", "q05", "q95", "q975"]].to_numpy(),
        atol=1e-5,
    )


def test_fixed_effects_are_invariant_to_cell_shifts():
    """Cell baselines as fixed effects: shifting every cell's baseline changes nothing (the
    saturated OLS has the same property; the published model does not)."""
    cond = S.conditions(1)[1]
    plain, _ = S.simulate_condition(12, 4, cond)
    shifted, _ = S.simulate_condition(12, 4, cond, baseline_sd=0.3)
    cols = ["estimate", "q025", "q05", "q95", "q975"]
    a = S.hierarchical_fe_estimator(plain, cond)[cols].to_numpy()
    b = S.hierarchical_fe_estimator(shifted, cond)[cols].to_numpy()
    np.testing.assert_allclose(a, b, atol=1e-9)
    pa = S.hierarchical_estimator(plain, cond)[cols].to_numpy()
    pb = S.hierarchical_estimator(shifted, cond)[cols].to_numpy()
    assert np.abs(pa - pb).max() > 0.05


def test_fixed_effects_refuses_an_intercept():
    y, t, z, g, Z = _small_problem()
    X = pd.DataFrame({"Intercept": 1.0, "z1": z[:, 0]})
    with pytest.raises(ValueError, match="constant column"):
        lambda_block_model(prepare_lambda_data(y, t, X, g, Z), "fixed")


# ---------------------------------------------------------------------- coverage


def test_coverage_under_shifts():
    """Under baseline shifts the main-effects and pooled-baselines models cover at nominal
    rates (within 3 MCSE) and the published model does not (its intervals miss the shifts).
    8, 16 and 32 cells (design 1) and the strong imbalance scenario (design 2), 8 replicates.
    Deterministic (exact quadrature summaries, fixed seeds): the same on any CPU."""
    conds = [*S.conditions(1)[:3], S.conditions(2)[3]]
    models = {
        "hierarchical": S.hierarchical_estimator,
        "hierarchical_fe": S.hierarchical_fe_estimator,
        "hierarchical_pooled": S.hierarchical_pooled_estimator,
    }
    rows = []
    for r in range(8):
        for cond in conds:
            data, truth = S.simulate_condition(12, r, cond, baseline_sd=S.BASELINE_SD)
            for name, est in models.items():
                m = truth.merge(est(data, cond), on="group").dropna(subset=["estimate"])
                rows.append(
                    {
                        "model": name,
                        "replicate": r,
                        "condition": cond.label,
                        "c90": ((m.q05 <= m.tau) & (m.tau <= m.q95)).mean(),
                        "c95": ((m.q025 <= m.tau) & (m.tau <= m.q975)).mean(),
                    }
                )
    per_rep = pd.DataFrame(rows).groupby(["model", "replicate"])[["c90", "c95"]].mean()
    agg = per_rep.groupby("model").agg(["mean", "std"])
    for model in ("hierarchical_fe", "hierarchical_pooled"):
        for col, nominal in (("c90", 0.90), ("c95", 0.95)):
            mean, sd = agg.loc[model, (col, "mean")], agg.loc[model, (col, "std")]
            mcse = max(sd / np.sqrt(8), 0.01)
            assert abs(mean - nominal) < 3 * mcse, (model, col, mean, mcse)
    pub, pub_sd = agg.loc["hierarchical", ("c90", "mean")], agg.loc["hierarchical", ("c90", "std")]
    assert pub < 0.9 - 3 * max(pub_sd / np.sqrt(8), 0.01) and pub < 0.8


def test_params_section_validates():
    from pathlib import Path

    import yaml

    from hetfx.paper.params import ParamsError, validate

    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    sens = validate(raw).simulation_sensitivity
    assert sens.replicates == 100 and sens.baseline_sd == S.BASELINE_SD
    assert set(sens.models) == {"ols", "hierarchical", "hierarchical_fe", "hierarchical_pooled"}
    raw["simulation_sensitivity"]["models"] = ["ols", "lasso"]
    with pytest.raises(ParamsError, match="simulation_sensitivity.models"):
        validate(raw)


_XCPU = """
import sys, numpy as np
from hetfx.paper import simulation as S
out = []
for d, i in ((1, 1), (2, 3)):
    cond = S.conditions(d)[i]
    data, _ = S.simulate_condition(12, 5, cond, baseline_sd=0.3)
    for est in (S.hierarchical_fe_estimator, S.hierarchical_pooled_estimator):
        out.append(est(data, cond)[["estimate", "q025", "q05", "q95", "q975"]].to_numpy())
np.save(sys.argv[1], np.concatenate(out))
"""


def test_baseline_estimators_agree_across_emulated_cpus(tmp_path):
    """No SIMD dispatch beyond x86-64-v2 and OpenBLAS's Prescott kernels vs the defaults:
    the exact summaries agree within 1e-9 (measured 4e-12 on all nine conditions)."""
    import os
    import subprocess
    import sys

    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE", "NUMBA_CPU_NAME")
    }
    base["OPENBLAS_NUM_THREADS"] = "1"
    other = {
        **base,
        "NPY_DISABLE_CPU_FEATURES": "AVX512_SPR AVX512_ICL X86_V4 X86_V3",
        "OPENBLAS_CORETYPE": "Prescott",
    }
    res = []
    for name, env in (("a", base), ("b", other)):
        path = tmp_path / f"{name}.npy"
        run = subprocess.run(
            [sys.executable, "-c", _XCPU, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        res.append(np.load(path))
    assert res[0].shape[1] == 5 and res[0].shape[0] >= 2 * (16 + 60)
    assert np.abs(res[0] - res[1]).max() < 1e-9


class _Quadratic:
    """A 3-scale log posterior in closed form (correlated Gaussian) for the flood fill."""

    ndim = 3

    def __init__(self):
        A = np.array([[1.0, 0.4, -0.2], [0.4, 1.0, 0.3], [-0.2, 0.3, 1.0]])
        self.P = np.linalg.inv(A * np.outer([0.05, 0.6, 0.8], [0.05, 0.6, 0.8]))
        self.m = np.array([0.1, -1.0, -1.5])

    def logpost(self, u, chunk=None):
        r = np.atleast_2d(u) - self.m
        return -0.5 * np.einsum("ij,jk,ik->i", r, self.P, r)


def test_flood_fill_keeps_every_node_above_the_prune_level():
    """lattice_grid_nd (sorted integer codes for its bookkeeping) against brute force: every
    lattice node of a wide box whose weight passes the prune level is kept, with the same
    weight, and no other."""
    cm = _Quadratic()
    grid = lattice_grid_nd(cm, [0.0, -0.5, -1.0], resolution=1.0, drop=18.0, prune=1e-9)
    # the lattice of the grid: recover steps and centre from the kept nodes' axes
    from hetfx.models.exact import _lattice_step, _mode_and_sd

    mode, sd = _mode_and_sd(cm, np.array([0.0, -0.5, -1.0]))

    a = np.array([_lattice_step(4.0 * s) for s in sd])
    hv = np.array([_lattice_step(min(s / 1.0, 0.35) / ai) for s, ai in zip(sd, a, strict=True)])
    c = np.round(mode / (a * hv)) * (a * hv)
    idx = np.stack(np.meshgrid(*[np.arange(-40, 41)] * 3, indexing="ij"), -1).reshape(-1, 3)
    v = idx * hv
    lw = cm.logpost(c + a * np.sinh(v)) + np.log(a * np.cosh(v)).sum(axis=1)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    keep = w > 1e-9
    nodes = c + a * np.sinh(v[keep])
    assert len(nodes) == len(grid.nodes) > 100
    np.testing.assert_allclose(nodes, grid.nodes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w[keep] / w[keep].sum(), grid.weights, rtol=1e-9)
    assert grid.edge_mass < 1e-7


@pytest.mark.parametrize("hermite", [3, 5])
def test_hermite_axis_integrates_a_gaussian_exactly(hermite):
    """With Gauss-Hermite nodes on the first axis, the grid's weights reproduce the mean and
    covariance of a Gaussian posterior (exact for polynomials of degree 2 * hermite - 1 in
    that axis); the first axis has exactly `hermite` distinct nodes and no shell."""
    cm = _Quadratic()
    grid = lattice_grid_nd(
        cm, [0.0, -0.5, -1.0], resolution=1.0, drop=30.0, prune=0.0, hermite=hermite
    )
    assert len(np.unique(grid.nodes[:, 0])) == hermite
    w, u = grid.weights, grid.nodes
    mean = w @ u
    cov = (u - mean).T @ (w[:, None] * (u - mean))
    np.testing.assert_allclose(mean, cm.m, rtol=0, atol=1e-9)
    np.testing.assert_allclose(cov, np.linalg.inv(cm.P), rtol=1e-8, atol=1e-12)
    assert grid.edge_mass < 1e-12


def test_pooled_results_do_not_depend_on_chunks():
    cond = S.conditions(1)[2]  # 32 cells
    data, _ = S.simulate_condition(12, 1, cond, baseline_sd=0.3)
    y, treat, X, codes, Z = _lambda_inputs(data, cond)
    model = lambda_block_model(prepare_lambda_data(y, treat, X, codes, Z), "pooled")
    u = np.column_stack([np.linspace(-0.2, 0.2, 60), np.zeros(60) - 1, np.linspace(-5, 0, 60)])
    ref = model.logpost(u, chunk=1000)
    for chunk in (1, 9):
        np.testing.assert_allclose(model.logpost(u, chunk=chunk), ref, rtol=1e-14, atol=0)
    grid = fit_block_model(model, draws=0).grid
    a, b = BlockPosterior(model, grid), BlockPosterior(model, grid)
    for post in (a, b):
        post._cache.clear()  # not the grid's moments: computed again over the kept nodes
    b._chunks = lambda: (slice(i, i + 3) for i in range(0, len(grid.weights), 3))
    for what in ("effects", "coefs", "block0"):
        np.testing.assert_allclose(
            a.summarise(what).to_numpy(), b.summarise(what).to_numpy(), rtol=0, atol=1e-13
        )


def test_pooled_moments_from_the_grid_equal_a_second_pass():
    """lattice_grid_nd(moments=True) keeps the conditional moments of the nodes it factors
    for its weights; the mixture summaries from them equal those of a second pass over the
    kept nodes (BlockPosterior's own), and the grid itself is the same."""
    cond = S.conditions(1)[3]  # 64 cells
    data, _ = S.simulate_condition(12, 2, cond, baseline_sd=0.3)
    y, treat, X, codes, Z = _lambda_inputs(data, cond)
    model = lambda_block_model(prepare_lambda_data(y, treat, X, codes, Z), "pooled")
    ls = float(np.log(np.std(y)))
    kw = GRIDS[3]
    with_m = lattice_grid_nd(model, [ls, ls - 2, ls - 2], moments=True, **kw)
    without = lattice_grid_nd(model, [ls, ls - 2, ls - 2], **kw)
    assert without.means is None and with_m.means.shape == (len(with_m.weights), model.G)
    np.testing.assert_array_equal(with_m.nodes, without.nodes)
    # the two evaluate the nodes in batches of different sizes: equal up to rounding
    np.testing.assert_allclose(with_m.weights, without.weights, rtol=1e-11, atol=0)
    probs = (0.5, 0.025, 0.975)
    a = BlockPosterior(model, with_m).summarise(probs=probs).to_numpy()
    b = BlockPosterior(model, without).summarise(probs=probs).to_numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


class _Counting:
    """A collapsed model that counts its log-density calls and rows."""

    def __init__(self, cm):
        self.cm, self.ndim, self.calls, self.rows = cm, cm.ndim, 0, 0

    def logpost(self, u, chunk=None):
        self.calls += 1
        self.rows += len(np.atleast_2d(u))
        return self.cm.logpost(u, chunk)


@pytest.mark.parametrize("model", ["pooled", "published"])
def test_newton_mode_search_finds_the_mode_in_a_few_batched_calls(model):
    """_mode_and_sd's Newton search (central differences, one batched call per iteration)
    lands on the mode a tight Nelder-Mead search finds, within 1e-5, in at most 12 calls,
    where the simplex search it replaced needed a hundred or more single rows; starting far
    away (3 log units) changes the mode by less than 1e-8."""
    from scipy import optimize

    from hetfx.models.exact import _mode_and_sd

    cond = S.conditions(1)[4] if model == "pooled" else S.conditions(2)[1]
    data, _ = S.simulate_condition(12, 1, cond, baseline_sd=0.3)
    y, treat, X, codes, Z = _lambda_inputs(data, cond)
    d = prepare_lambda_data(y, treat, X, codes, Z)
    ls = float(np.log(np.std(y)))
    if model == "pooled":
        cm, u0 = lambda_block_model(d, "pooled"), np.array([ls, ls - 2, ls - 2])
    else:
        cm, u0 = lambda_block_model(d, "none"), np.array([ls, ls + np.log(0.1)])
    counted = _Counting(cm)
    mode, sd = _mode_and_sd(counted, u0)
    assert counted.calls <= 12
    ref = optimize.minimize(
        lambda u: -cm.logpost(u[None, :])[0],
        mode + 0.05,
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000},
    ).x
    np.testing.assert_allclose(mode, ref, rtol=0, atol=1e-5)
    assert np.all((sd > 0) & (sd < 3))
    far, _ = _mode_and_sd(cm, u0 - 3.0)
    np.testing.assert_allclose(far, mode, rtol=0, atol=1e-8)


def test_single_threaded_blas_limits_every_blas_library_and_restores_them():
    """The cached controller of single_threaded_blas covers numpy's and scipy's BLAS (both
    loaded before it is built) and gives the thread counts back on exit."""
    from threadpoolctl import threadpool_info

    from hetfx.models.gaussian import single_threaded_blas

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert len(before) >= 1
    for _ in range(2):  # the second use reuses the controller
        with single_threaded_blas():
            inside = {
                i["filepath"]: i["num_threads"]
                for i in threadpool_info()
                if i["user_api"] == "blas"
            }
        assert set(inside) == set(before) and set(inside.values()) == {1}
        after = {
            i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
        }
        assert after == before


def test_logpost_and_moments_skips_rows_below_the_floor():
    """Rows whose log density is at or below the floor get NaN moments; the others equal
    the effects' conditional moments, and the log densities equal logpost, whatever the floor."""
    cond = S.conditions(1)[2]
    data, _ = S.simulate_condition(12, 0, cond, baseline_sd=0.3)
    y, treat, X, codes, Z = _lambda_inputs(data, cond)
    cm = lambda_block_model(prepare_lambda_data(y, treat, X, codes, Z), "pooled")
    u = np.column_stack([np.zeros(20), np.linspace(-3, 0, 20), np.linspace(-4, 0, 20)])
    lp_all, mean_all, sd_all = cm.logpost_and_moments(u)
    floor = np.median(lp_all)
    lp, mean, sd = cm.logpost_and_moments(u, floor)
    np.testing.assert_array_equal(lp, lp_all)
    np.testing.assert_allclose(lp, cm.logpost(u), rtol=1e-14, atol=0)
    above = lp > floor
    assert 0 < above.sum() < len(u)
    assert np.isnan(mean[~above]).all() and np.isnan(sd[~above]).all()
    ref_mean, ref_sd = cm.effect_moments(cm.factor(u[above]))
    np.testing.assert_allclose(mean[above], ref_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sd[above], ref_sd, rtol=1e-12, atol=0)
    np.testing.assert_allclose(mean_all[above], ref_mean, rtol=1e-12, atol=1e-14)


def test_mode_search_falls_back_to_the_simplex_where_newton_cannot_start():
    """Where the log density is not finite on Newton's stencil (a support edge right at the
    start), _mode_and_sd falls back to Nelder-Mead and still finds the mode and its SDs."""
    from hetfx.models.exact import _mode_and_sd, _newton_mode

    class _Edged(_Quadratic):
        def logpost(self, u, chunk=None):
            u = np.atleast_2d(u)
            return np.where(u[:, 0] > 0.5, -np.inf, super().logpost(u))

    cm = _Edged()
    assert _newton_mode(cm, np.array([0.5, -0.5, -1.0]), 1e-2) is None
    mode, sd = _mode_and_sd(cm, np.array([0.5, -0.5, -1.0]))
    np.testing.assert_allclose(mode, cm.m, rtol=0, atol=1e-3)
    np.testing.assert_allclose(sd, np.sqrt(np.diag(np.linalg.inv(cm.P))), rtol=1e-3)
