"""Specification and robustness checks (hetfx.paper.robustness, hetfx.paper.verdict).

* With baseline shifts across cells, the lambda model recovers group effects and gamma at
  nominal coverage only when the outcome equation has the cells' main effects.
* PSIS-LOO is finite with Pareto k-hat reported; the predictive check counts cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix

from hetfx.models.pooled import fit_exact_lambda
from hetfx.paper import robustness as R


def fit_published(*args, **kw):
    """The published lambda model (one baseline for all cells) by the exact engine."""
    return fit_exact_lambda(*args, baselines="none", **kw)


K = 4  # binary modifiers -> 16 cells
GAMMA = np.array([0.2, 0.15, -0.1, 0.1, 0.05])  # intercept + one per modifier


def _factorial(rng: np.random.Generator, n: int, shift_sd: float):
    """Factorial experiment whose control-arm mean differs by cell (``shift_sd``)."""
    x = rng.integers(0, 2, size=(n, K))
    cells = pd.DataFrame(x, columns=[f"x{j}" for j in range(K)])
    label = cells.astype(str).agg("".join, axis=1)
    keys = cells.assign(cell=label).drop_duplicates("cell").sort_values("cell")
    keys = keys.set_index("cell")
    Z = pd.DataFrame(
        np.asarray(model_matrix("1 + " + " + ".join(keys.columns), keys)),
        index=keys.index,
        columns=["Intercept", *keys.columns],
    )
    theta = rng.normal(0, 0.1, len(keys))
    lam = Z.to_numpy() @ GAMMA + theta
    base = rng.normal(0, shift_sd, len(keys))
    code = pd.Categorical(label, categories=keys.index).codes
    treat = rng.integers(0, 2, n).astype(float)
    z1 = rng.normal(size=n)
    y = 0.3 * z1 + base[code] + lam[code] * treat + rng.normal(0, 0.5, n)
    return y, treat, z1, code, Z, cells, lam


def _coverage(main_effects: bool, reps: int, seed: int = 3):
    """Per replicate, the share of 90% intervals covering the true group effects and gamma."""
    rng = np.random.default_rng(seed)
    hits_l, hits_g = [], []
    for _ in range(reps):
        y, t, z1, code, Z, cells, lam = _factorial(rng, 3000, 0.3)
        X = pd.DataFrame({"Intercept": 1.0, "z1": z1})
        if main_effects:  # the cells' main effects: every non-intercept column of x0*x1*..
            full = model_matrix("*".join(cells.columns), cells)
            X = pd.concat([X, pd.DataFrame(np.asarray(full)[:, 1:])], axis=1)
            X.columns = [f"c{j}" for j in range(X.shape[1])]
        fit = fit_published(y, t, X, code, Z, draws=500, seed=1)
        g = fit.group_effects()
        q05 = np.quantile(fit.idata.posterior["lambda"].values.reshape(-1, len(lam)), 0.05, axis=0)
        q95 = np.quantile(fit.idata.posterior["lambda"].values.reshape(-1, len(lam)), 0.95, axis=0)
        hits_l.append(np.mean((q05 <= lam) & (lam <= q95)))
        gam = fit.idata.posterior["gamma"].values.reshape(-1, len(GAMMA))
        lo, hi = np.quantile(gam, [0.05, 0.95], axis=0)
        hits_g.append(np.mean((lo <= GAMMA) & (GAMMA <= hi)))
        assert len(g) == len(lam)
    return np.array(hits_l), np.array(hits_g)


def _mean_mcse(per_replicate: np.ndarray) -> tuple[float, float]:
    """Mean coverage and its Monte Carlo SE over replicates (groups within a replicate are
    correlated through gamma and the scales, so the binomial SE would be too small)."""
    return float(per_replicate.mean()), float(
        per_replicate.std(ddof=1) / np.sqrt(len(per_replicate))
    )


def test_main_effects_recover_group_effects_and_gamma_under_baseline_shifts() -> None:
    """Deterministic (exact engine, its draws made at a fixed seed): the same
    coverage on any CPU (tests/test_cross_cpu.py)."""
    cov_l, cov_g = (_mean_mcse(a) for a in _coverage(main_effects=True, reps=24))
    for cov, mcse in (cov_l, cov_g):
        assert mcse < 0.04
        assert abs(cov - 0.9) < 3 * mcse, (cov, mcse)  # nominal 90% within 3 MCSE
    bad_l, bad_g = (a.mean() for a in _coverage(main_effects=False, reps=6))
    # without the main effects (the published outcome equation) the intervals miss
    assert bad_l < cov_l[0] - 0.3 and bad_g < cov_g[0] - 0.1, (bad_l, bad_g)


@pytest.fixture(scope="module")
def small_fits():
    rng = np.random.default_rng(5)
    y, t, z1, code, Z, cells, lam = _factorial(rng, 800, 0.0)  # no baseline shifts
    X = pd.DataFrame({"Intercept": 1.0, "z1": z1})
    fit = fit_published(y, t, X, code, Z, draws=250, seed=2)
    return fit, pd.Series(code)


def test_loo_is_finite_and_reports_pareto_k(small_fits) -> None:
    fit, _ = small_fits
    idata = R.with_log_likelihood(fit)
    ll = idata.log_likelihood["y"].values
    assert ll.shape == (4, 250, len(fit.data.y)) and np.all(np.isfinite(ll))
    table = R.loo_table({"a": idata, "b": idata}, {"a": "A", "b": "B"})
    assert np.all(np.isfinite(table[["elpd_loo", "se", "p_loo", "max_k"]].to_numpy()))
    assert table["elpd_diff"].abs().max() < 1e-9  # the same model twice
    assert (table["max_k"] < 0.7).all()


def test_log_likelihood_matches_a_direct_computation(small_fits) -> None:
    fit, _ = small_fits
    post = fit.idata.posterior
    c, d, i = 2, 17, 5
    mu = (
        fit.data.X.iloc[i].to_numpy() @ post["beta"].values[c, d]
        + post["lambda"].values[c, d, fit.data.group[i]] * fit.data.treat[i]
    )
    s = post["sigma"].values[c, d]
    direct = -0.5 * np.log(2 * np.pi * s**2) - 0.5 * ((fit.data.y[i] - mu) / s) ** 2
    assert R.gaussian_log_likelihood(fit)[c, d, i] == pytest.approx(direct, rel=1e-12)


def test_predictive_check_covers_a_well_specified_model(small_fits) -> None:
    fit, code = small_fits
    ppc = R.predictive_check(fit, code, seed=1)
    assert len(ppc) == 2 * code.nunique()
    assert ppc["n"].sum() == len(code)
    assert ppc["inside"].mean() >= 0.8
    # baseline shifts the outcome equation ignores: the check flags the control arms
    rng = np.random.default_rng(5)
    y, t, z1, code2, Z, _, _ = _factorial(rng, 800, 0.5)
    bad = fit_published(
        y, t, pd.DataFrame({"Intercept": 1.0, "z1": z1}), code2, Z, draws=250, seed=2
    )
    flagged = R.predictive_check(bad, pd.Series(code2), seed=1)
    assert flagged["inside"].mean() < ppc["inside"].mean() - 0.2


def test_spread_and_signs_on_a_small_table() -> None:
    effects = pd.DataFrame(
        {
            "variant": ["ols_saturated"] * 3 + ["m1_published"] * 3,
            "label": ["OLS"] * 3 + ["M1"] * 3,
            "treat_group": ["a", "b", "c"] * 2,
            "estimate": [-0.2, 0.3, 0.4, 0.1, 0.3, 0.35],
        }
    )
    spread = R.spread_table(effects, n_negative=2)
    ols = spread.set_index("variant").loc["ols_saturated"]
    assert ols["min"] == -0.2 and ols["range"] == pytest.approx(0.6)
    assert spread.attrs["neg_conditions"] == ["a", "b"]
    assert spread.set_index("variant").loc["m1_published", "neg1"] == 0.1
    signs = R.sign_disagreements(effects)
    assert signs["opposite_signs"].tolist() == [1]


def test_prior_sensitivity_reports_the_largest_change() -> None:
    base = pd.DataFrame({"g": ["a", "b"], "estimate": [0.1, 0.2]})
    other = pd.DataFrame({"g": ["b", "a"], "estimate": [0.25, 0.1]})  # reordered rows
    out = R.prior_sensitivity({"default": base, "other": other}, "default")
    assert out.set_index("prior").loc["other", "max_abs_change"] == pytest.approx(0.05)


# The verdict on the paper's claims is the claims register: tests/test_claims.py.
