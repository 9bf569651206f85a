"""The exact ``quadrature`` engine of the varying-slopes models with one grouping factor (A1):
the block model of :mod:`hetfx.models.exact` (one correlated 2 x 2 block per level).

Its grid's error against a finer grid, its agreement with the ``qmc`` engine within the latter's
Monte Carlo error and with brms on A1, and the choice of engine. Every fit here is deterministic
(a grid, fixed seeds for the draws).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hetfx
from conftest import RAW, ROOT, TW_FILE
from hetfx.inference import check_diagnostics
from hetfx.models.varying_slopes import (
    QUADRATURE_GRID,
    fit_varying_slopes,
    resolve_engine,
)
from hetfx.paper import studies
from hetfx.paper.data import tomz_weeks
from hetfx.priors import Prior
from test_varying_slopes import simulate

FIXTURES = ROOT / "tests" / "fixtures" / "brms"
COLS = ["estimate", "q025", "q10", "q90", "q975"]
#: A finer grid than QUADRATURE_GRID: 7 Hermite nodes, twice the lattice nodes per SD, a
#: deeper box, no pruning to speak of.
FINE = {"hermite": 7, "resolution": 2.0, "drop": 20.0, "prune": 1e-9}


def _sim():
    y, treat, X, factors = simulate((12,), n=400, seed=7, sd=(0.4, 0.3))
    kw = dict(contrast=pd.DataFrame({"treat": np.ones(12)}), intercept_prior=Prior.flat(), b_sd=1.0)
    return (y, treat, X, factors), kw


@pytest.fixture(scope="module")
def quad():
    args, kw = _sim()
    return fit_varying_slopes(*args, engine="quadrature", seed=1, **kw)


# ------------------------------------------------------------------ engine choice
def test_engine_choice():
    assert resolve_engine("auto", 1) == "quadrature"
    assert resolve_engine("auto", 2) == "qmc"
    assert resolve_engine("collapsed", 3) == "collapsed"
    with pytest.raises(ValueError, match="engine='qmc'"):
        resolve_engine("quadrature", 4)
    with pytest.raises(ValueError, match="engine must be"):
        resolve_engine("grid", 1)
    y, treat, X, factors = simulate((4, 3), n=120, seed=2)
    with pytest.raises(ValueError, match="13 scale parameters|too many for a grid"):
        fit_varying_slopes(y, treat, X, factors, engine="quadrature")


# ------------------------------------------------------------------ the engine
def test_quadrature_grid_error_against_a_finer_grid(quad):
    """The quadrature error of QUADRATURE_GRID: against FINE (14 times the nodes), effects'
    medians and quantiles and the coefficients' means and quantiles within 1e-3 posterior
    SDs (measured: 1.3e-4), the scales' 2.5-97.5% quantiles within 2e-3 (measured: 5.6e-4,
    sigma's, the normal through its three Hermite nodes; the others 1.6e-4), their means
    within 1e-4 (measured: 3.5e-5)."""
    args, kw = _sim()
    fine = fit_varying_slopes(*args, engine="quadrature", grid=FINE, seed=1, **kw)
    assert fine.exact["weights"].size > 10 * quad.exact["weights"].size
    sd = np.sqrt(fine.idata.posterior["effect"].var(("chain", "draw")).values)
    gap = np.abs(quad.group_effects()[COLS] - fine.group_effects()[COLS]).to_numpy()
    assert (gap / sd[:, None]).max() < 1e-3
    a, b = quad.coefs(), fine.coefs()
    ctl = a["equation"] == "control"
    gap = np.abs(a.loc[ctl, ["mean", "q025", "q975"]] - b.loc[ctl, ["mean", "q025", "q975"]])
    assert (gap.to_numpy() / b.loc[ctl, ["sd"]].to_numpy()).max() < 1e-3
    gap = np.abs(a.loc[~ctl, ["q025", "q975"]] - b.loc[~ctl, ["q025", "q975"]]).to_numpy()
    assert gap.max() < 2e-3
    assert np.abs(a.loc[~ctl, "mean"] - b.loc[~ctl, "mean"]).max() < 1e-4


def test_quadrature_agrees_with_qmc(quad):
    """Within 3 Monte Carlo SEs of the qmc engine (its importance-sampling delta-method
    SEs), for every effect's median and quantiles and every coefficient's mean. The
    quadrature error is 1e-4 posterior SDs, so the gap is qmc's error: measured over the
    scramble seeds 1-30, at most 0.79 SEs (effects) and 0.70 (coefficients)."""
    args, kw = _sim()
    q = fit_varying_slopes(*args, engine="qmc", qmc_m=12, seed=3, **kw)
    se = q.exact["groups_mcse"][COLS].to_numpy()
    gap = np.abs(q.group_effects()[COLS].to_numpy() - quad.group_effects()[COLS].to_numpy())
    assert np.all(gap < 3 * se), (gap / se).max()
    cse = q.exact["coefs_mcse"]["mean"].to_numpy()
    gap = np.abs(q.coefs()["mean"].to_numpy() - quad.coefs()["mean"].to_numpy())[: len(cse)]
    assert np.all(gap < 3 * cse), (gap / cse).max()


def test_quadrature_fit_record_and_draws(quad):
    """Diagnostics name the engine and the grid's edge mass; the independent draws follow
    the exact summaries (medians within 4 MCSEs of a median of independent draws)."""
    d = quad.diagnostics_record
    assert d.sampler == "quadrature" and d.divergences == 0 and d.grid_edge_mass < 1e-4
    check_diagnostics(d)
    assert quad.idata.attrs["grid_points"] == len(quad.exact["weights"]) > 1000
    assert set(quad.exact) >= {"groups", "coefs", "points", "weights", "mode"}
    assert "groups_mcse" not in quad.exact  # nothing random to report
    c = quad.coefs()
    assert c["r_hat"].between(0.99, 1.01).all() and (c["ess_bulk"] > 3000).all()
    g = quad.group_effects()
    eff = quad.idata.posterior["effect"].values.reshape(-1, len(g))
    mcse = 1.25 * eff.std(0) / np.sqrt(len(eff))
    assert np.all(np.abs(np.median(eff, 0) - g["estimate"]) < 4 * mcse)
    sig = quad.idata.posterior["sigma"].values.ravel()
    row = c.set_index("term").loc["sigma"]
    assert abs(sig.mean() - row["mean"]) < 4 * row["sd"] / np.sqrt(len(sig))


def test_front_end_defaults_to_quadrature_with_one_factor():
    """hetfx.fit_varying_slopes: one factor runs the exact engine by default, with the
    pointwise log-likelihood; two factors run qmc."""
    y, treat, X, factors = simulate((6, 3), n=200, seed=4)
    df = pd.DataFrame({"y": y, "t": treat, "x": X["x"], "a": factors["f0"], "b": factors["f1"]})
    res = hetfx.fit_varying_slopes(df, "y", "t", ["a"], ["x"], seed=2)
    assert res.engine == "quadrature" and res.fit.engine == "quadrature"
    assert res.diagnostics_record.sampler == "quadrature"
    assert res.idata.log_likelihood["y"].shape == (4, 1000, 200)
    two = hetfx.fit_varying_slopes(df, "y", "t", ["a", "b"], ["x"], seed=2, qmc_m=11)
    assert two.fit.engine == "qmc"


def test_quadrature_a1_matches_brms():
    """A1 with the brms fixture's priors (tests/fixtures/brms/m3_*): effect medians within
    .02 of brms's (the fixture's bound for an independent correct fit), coefficient means
    within max(.02, .1 posterior SD), the SDs' and correlation's means and 2.5/97.5%
    quantiles within 4 of brms's Monte Carlo SEs (sd / sqrt(ESS) for a mean, 3 times that for
    a tail quantile) plus .005.

    Measured: medians within .0026, coefficient means within .0023 (0.11 of their bound),
    the scales' means and quantiles within 0.16 of theirs."""
    tw = tomz_weeks.clean(RAW / TW_FILE).data
    settings = {
        "b_sd": 1.0,
        "controls": ["white", "male", "hawk", "intl"],
        "sd": {"kind": "half_student_t", "nu": 3, "scale": 2.5},
        "engine": "quadrature",
    }
    fit = studies.fit_tomz_weeks(
        tw, "a1", "published", settings, studies.Sampler(seed=12, chains=4, draws=1000)
    )
    assert fit.engine == "quadrature"
    groups = fit.group_effects().rename(columns={"region_txt": "region"})
    m = groups.merge(pd.read_csv(FIXTURES / "m3_groups.csv"), on="treat_group")
    assert len(m) == 32 and (m["n_obs_x"] == m["n_obs_y"]).all()
    assert (m["estimate"] - m["q50"]).abs().max() < 0.02
    fixef = pd.read_csv(FIXTURES / "m3_fixef.csv")
    ours = fit.coefs().query("equation == 'control'").copy()
    ours["variable"] = ours["term"].str.replace(" ", "")
    m = ours.merge(fixef, on="variable")
    assert len(m) == len(fixef)
    assert ((m["mean"] - m["Estimate"]).abs() < np.maximum(0.02, 0.1 * m["Est.Error"])).all()
    hyper = pd.read_csv(FIXTURES / "m3_hyper.csv").set_index("variable")
    names = {
        "sigma": "sigma",
        "sd_treat_group__Intercept": "sd_treat_group__Intercept",
        "sd_treat_group__treat": "sd_treat_group__alliance",
        "cor_treat_group": "cor_treat_group__Intercept__alliance",
    }
    scales = fit.coefs().set_index("term")
    for ours_name, brms_name in names.items():
        o, r = scales.loc[ours_name], hyper.loc[brms_name]
        mcse = r["sd"] / np.sqrt(r["ess_bulk"])
        assert abs(o["mean"] - r["mean"]) < 4 * mcse + 0.005, ours_name
        for q, col in (("q025", "2.5%"), ("q975", "97.5%")):
            assert abs(o[q] - r[col]) < 12 * mcse + 0.005, (ours_name, q)


def test_grid_settings_are_named():
    assert set(QUADRATURE_GRID) == {"hermite", "resolution", "drop", "prune"}


def test_centring_does_not_matter_with_a_flat_intercept(quad):
    """brms centres the predictors and puts the intercept prior on the centred intercept;
    with a flat intercept prior that is a change of variables of unit Jacobian, so the
    posterior of the slopes, effects and scales is the same (measured on A1: 5.7e-13)."""
    args, kw = _sim()
    raw = fit_varying_slopes(*args, engine="quadrature", center=False, seed=1, **kw)
    gap = np.abs(raw.group_effects()[COLS].to_numpy() - quad.group_effects()[COLS].to_numpy())
    assert gap.max() < 1e-9
    num = ["mean", "sd", "q025", "q975"]
    assert np.abs(raw.coefs()[num].to_numpy() - quad.coefs()[num].to_numpy()).max() < 1e-9


def test_profiles_may_share_a_level(quad):
    """Effects are reported per profile, not per level: two profiles of one level with
    different contrasts (the treatment's full effect, and its varying slope alone) get their
    own mixtures; the first equals the level's row of the default profiles exactly, the second
    agrees with the qmc engine within 3 of its Monte Carlo SEs."""
    (y, treat, X, factors), kw = _sim()
    profiles = pd.DataFrame({"f0": [3, 3, 5]})
    kw = {**kw, "profiles": profiles, "contrast": pd.DataFrame({"treat": [1.0, 0.0, 1.0]})}
    q = fit_varying_slopes(y, treat, X, factors, engine="quadrature", **kw)
    g = q.group_effects()
    ref = quad.group_effects().set_index("f0")
    np.testing.assert_allclose(g.loc[[0, 2], COLS].to_numpy(), ref.loc[[3, 5], COLS].to_numpy())
    m = fit_varying_slopes(y, treat, X, factors, engine="qmc", qmc_m=12, seed=3, **kw)
    se = m.exact["groups_mcse"][COLS].to_numpy()
    assert np.all(np.abs(m.group_effects()[COLS].to_numpy() - g[COLS].to_numpy()) < 3 * se)
