"""Every results type shares one interface (:class:`hetfx.BaseResults`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hetfx


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 600
    party = rng.choice(["Dem", "Rep", "Ind"], n)
    treat = rng.integers(0, 2, n)
    y = 0.4 * treat * (party == "Rep") + rng.normal(0, 1, n)
    yb = (rng.random(n) < 0.3 + 0.2 * treat * (party == "Rep")).astype(int)
    return pd.DataFrame({"party": party, "treat": treat, "y": y, "yb": yb})


FITS = {
    "gaussian": lambda d: hetfx.fit(d, "y", "treat", ["party"], effect="1", seed=1),
    "bernoulli": lambda d: hetfx.fit(
        d, "yb", "treat", ["party"], effect="1", family="bernoulli", seed=1
    ),
    "ols": lambda d: hetfx.fit_ols(d, "y", "treat", ["party"]),
    "varying slopes": lambda d: hetfx.fit_varying_slopes(
        d, "y", "treat", ["party"], engine="qmc", qmc_m=10, seed=3
    ),
}
TYPES = {
    "gaussian": hetfx.GaussianResults,
    "bernoulli": hetfx.BernoulliResults,
    "ols": hetfx.OLSResults,
    "varying slopes": hetfx.VaryingSlopesResults,
}


@pytest.mark.parametrize("kind", list(FITS))
def test_every_result_answers_the_base_interface(df, kind):
    res = FITS[kind](df)
    assert isinstance(res, hetfx.BaseResults) and isinstance(res, TYPES[kind])
    g = res.group_effects(level=0.8)
    assert len(g) == 3 and g["n_obs"].sum() == len(df)
    assert (g["lower"] < g["estimate"]).all() and (g["estimate"] < g["upper"]).all()
    # the 80% interval lies inside the 95% one, and its ends are the 10% and 90% quantiles
    wide = res.group_effects(level=0.95)
    assert (wide["lower"] < g["lower"]).all() and (g["upper"] < wide["upper"]).all()
    np.testing.assert_allclose(g["lower"], g["q10"], rtol=1e-9)
    np.testing.assert_allclose(g["upper"], g["q90"], rtol=1e-9)
    assert {"equation", "term"} <= set(res.coefs().columns)
    text = str(res.summary(level=0.8))
    assert isinstance(text, str) and "nan" not in text.lower()
    dg = res.diagnostics()
    assert isinstance(dg, pd.DataFrame) and len(dg) == 1 and "sampler" in dg
    with pytest.raises(ValueError, match="level"):
        res.group_effects(level=80)
    if kind != "ols":  # Bayesian: idata with a log-likelihood for arviz.loo
        assert "log_likelihood" in res.idata.groups()


def test_varying_slopes_other_levels_come_from_the_draws(df):
    res = FITS["varying slopes"](df)
    g = res.group_effects(level=0.5)
    eff = res.draws.posterior["effect"].values.reshape(-1, 3)
    np.testing.assert_allclose(g["lower"], np.quantile(eff, 0.25, axis=0))
    np.testing.assert_allclose(g["upper"], np.quantile(eff, 0.75, axis=0))


def test_ols_diagnostics_row():
    rng = np.random.default_rng(2)
    d = pd.DataFrame({"g": rng.choice(["a", "b"], 200), "treat": rng.integers(0, 2, 200)})
    d["y"] = rng.normal(size=200)
    row = hetfx.fit_ols(d, "y", "treat", ["g"]).diagnostics().iloc[0]
    assert row["sampler"] == "ols" and row["chains"] == 0 and row["n_aliased"] == 0
    assert row["aliased"] == "" and row["wall_seconds"] > 0


def test_group_effects_solve_only_the_quantiles_asked_for(df):
    """``quantiles=`` picks the quantile columns: the exact engine's values are the same
    bits as those of the default columns (each quantile is solved on its own), those from
    draws the draws' quantiles."""
    res = FITS["gaussian"](df)
    full = res.group_effects(level=0.9)
    few = res.group_effects(level=0.9, quantiles=(0.025, 0.975))
    assert list(few.columns) == [*full.columns[: list(full.columns).index("q025")], "q025", "q975"]
    exact = res.fit.posterior is not None
    for col in ("estimate", "lower", "upper", "mean", "sd", "q025", "q975"):
        if exact:
            assert np.array_equal(few[col], full[col]), col
        else:
            np.testing.assert_allclose(few[col], full[col], rtol=1e-12)
    assert list(res.group_effects(level=0.9, quantiles=[0.05]).columns)[-1] == "q05"
    assert "q025" not in res.group_effects(level=0.9, quantiles=())
    draws = res.effect_draws()
    s = hetfx.results.summarise(draws, level=0.5, quantiles=[0.2])
    np.testing.assert_allclose(s["q20"], np.quantile(draws, 0.2, axis=0))
    for bad in ([0.0], [1.5], [0.1, 0.1]):
        with pytest.raises(ValueError, match="quantiles"):
            res.group_effects(quantiles=bad)
