"""hetfx.fit_varying_slopes: the data-frame front end of the varying-slopes engine.

The front end must hand the engine exactly the inputs a careful user would build by hand
(design, profiles, contrasts, priors), and refuse or report bad inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hetfx
from hetfx.api import DesignError
from hetfx.models.gaussian import ScalePrior
from hetfx.models.varying_slopes import fit_varying_slopes as engine
from hetfx.priors import Prior

QMC = dict(engine="qmc", qmc_m=10, seed=3)


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    """Six sites nested in two regions (string labels), a control, a 0/1 treatment."""
    rng = np.random.default_rng(11)
    n = 900
    site = rng.integers(0, 6, n)
    region = np.where(site < 3, "north", "south")
    treat = rng.integers(0, 2, n)
    u1 = rng.normal(0, 0.3, 6)
    age = rng.normal(size=n)
    y = 0.2 * age + (0.5 + 0.4 * (region == "south") + u1[site]) * treat + rng.normal(0, 1, n)
    return pd.DataFrame(
        {"y": y, "treat": treat, "site": [f"s{k}" for k in site], "region": region, "age": age}
    )


def test_front_end_equals_the_engine_on_hand_built_inputs(sim):
    res = hetfx.fit_varying_slopes(sim, "y", "treat", ["site"], ["age"], effect="region", **QMC)
    # by hand: X = 1 + age + treat*region, one profile per site, x(T=1) - x(T=0)
    X = pd.DataFrame(
        {
            "Intercept": 1.0,
            "age": sim["age"],
            "treat": sim["treat"].astype(float),
            "regionsouth": (sim["region"] == "south").astype(float),
            "treat:regionsouth": sim["treat"] * (sim["region"] == "south"),
        }
    )
    profiles = sim[["site", "region"]].drop_duplicates().sort_values("site").reset_index(drop=True)
    contrast = pd.DataFrame(
        {"treat": 1.0, "treat:regionsouth": (profiles["region"] == "south").astype(float)}
    )
    ref = engine(
        sim["y"],
        sim["treat"],
        X,
        sim[["site"]],
        profiles=profiles,
        contrast=contrast,
        b_sd=1.0,
        intercept_prior=Prior.normal(1.0),
        sd_prior=ScalePrior("half_student_t", 2.5, 3.0),
        sigma_prior=ScalePrior("half_student_t", 2.5, 3.0),
        **QMC,
    )
    a, b = res.group_effects(), ref.group_effects()
    assert a.columns.tolist() == [
        "site",
        "region",
        "n_obs",
        "estimate",
        "lower",
        "upper",
        "q025",
        "q10",
        "q90",
        "q975",
    ]
    pd.testing.assert_frame_equal(a.drop(columns=["lower", "upper"]), b)
    # level 0.95: the interval is the stored exact quantiles
    assert a["lower"].equals(a["q025"]) and a["upper"].equals(a["q975"])
    pd.testing.assert_frame_equal(res.coefs(), ref.coefs())
    assert res.diagnostics_record.sampler == "qmc"
    # the sites' effects: south well above north, as simulated (0.4 apart on average)
    gap = a.groupby("region")["estimate"].mean()
    assert 0.15 < gap["south"] - gap["north"] < 0.7


def test_no_population_slope_and_several_factors(sim):
    """effect=False: the effect is the sum of the factors' varying slopes (Bush-Prather);
    several factors: profiles are their observed combinations, labelled by joining them."""
    res = hetfx.fit_varying_slopes(sim, "y", "treat", ["region", "site"], effect=False, **QMC)
    g = res.group_effects()
    assert g.columns[:3].tolist() == ["profile", "region", "site"]
    assert g["profile"].tolist() == [
        f"{r}_{s}" for r, s in zip(g["region"], g["site"], strict=True)
    ]
    assert len(g) == 6 and g["n_obs"].sum() == len(sim)
    assert "treat" not in res.coefs()["term"].tolist()  # no population-level slope


def test_priors_reach_the_engine(sim):
    priors = hetfx.Priors(
        effect=hetfx.Prior.normal(0.2),
        control=hetfx.Prior.normal(2.0),
        intercept=hetfx.Prior.flat(),
        sigma_theta=hetfx.Prior.half_normal(0.5),
    )
    res = hetfx.fit_varying_slopes(sim, "y", "treat", ["site"], ["age"], priors=priors, **QMC)
    X = pd.DataFrame({"Intercept": 1.0, "age": sim["age"], "treat": sim["treat"].astype(float)})
    profiles = sim[["site"]].drop_duplicates().sort_values("site").reset_index(drop=True)
    ref = engine(
        sim["y"],
        sim["treat"],
        X,
        sim[["site"]],
        profiles=profiles,
        contrast=pd.DataFrame({"treat": np.ones(len(profiles))}),
        b_sd=[2.0, 2.0, 0.2],
        intercept_prior=Prior.flat(),
        sd_prior=ScalePrior("half_normal", 0.5),
        **QMC,
    )
    pd.testing.assert_frame_equal(
        res.group_effects().drop(columns=["lower", "upper"]), ref.group_effects()
    )


def test_bad_inputs_are_named(sim):
    with pytest.raises(KeyError, match="nosuch"):
        hetfx.fit_varying_slopes(sim, "y", "treat", ["nosuch"], **QMC)
    # a modifier that varies within a profile cannot be read at the profile
    with pytest.raises(DesignError, match="not constant within the profiles"):
        hetfx.fit_varying_slopes(sim, "y", "treat", ["region"], effect="site", **QMC)
    with pytest.raises(DesignError, match="cannot be factors"):
        hetfx.fit_varying_slopes(sim, "y", "treat", ["treat"], **QMC)
    dup = sim.assign(age2=2 * sim["age"])
    with pytest.raises(DesignError, match="age2: linear combination of .*age"):
        hetfx.fit_varying_slopes(dup, "y", "treat", ["site"], ["age", "age2"], **QMC)


def test_missing_values_are_dropped_with_a_report_or_refused(sim):
    holes = sim.copy()
    holes.loc[[3, 7], "age"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 2 of 900 rows .*'age': 2"):
        res = hetfx.fit_varying_slopes(holes, "y", "treat", ["site"], ["age"], **QMC)
    assert res.group_effects()["n_obs"].sum() == 898
    with pytest.raises(DesignError, match="2 rows have missing values"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hetfx.fit_varying_slopes(holes, "y", "treat", ["site"], ["age"], missing="raise", **QMC)


def test_pointwise_log_likelihood_and_loo(sim):
    """``idata`` adds the pointwise log-likelihood: at a draw it is the normal density of each
    row given b, that row's site intercept and slope and sigma (by hand from the frame, two
    factors), and ``arviz.loo`` runs on it."""
    import arviz as az
    from scipy import stats

    res = hetfx.fit_varying_slopes(sim, "y", "treat", ["region", "site"], ["age"], **QMC)
    post, ll = res.idata.posterior, res.idata.log_likelihood["y"]
    assert ll.shape == (post.sizes["chain"], post.sizes["draw"], len(sim))
    assert "log_likelihood" not in res.draws.groups()  # the draws stay cheap to keep
    c, d = 0, 17
    b = post["b"].values[c, d]
    mu = b[0] + b[1] * sim["age"] + b[2] * sim["treat"]  # Intercept, age, treat
    for f in ("region", "site"):
        u = post[f"u_{f}"].sel(chain=c, draw=d).to_pandas()  # level x (intercept, slope)
        mu = (
            mu
            + u.iloc[:, 0].loc[sim[f]].to_numpy()
            + u.iloc[:, 1].loc[sim[f]].to_numpy() * sim["treat"].to_numpy()
        )
    assert list(post["b"].coords["control"].values) == ["Intercept", "age", "treat"]
    hand = stats.norm.logpdf(sim["y"], mu, float(post["sigma"].values[c, d]))
    np.testing.assert_allclose(ll.values[c, d], hand, rtol=1e-12)
    np.testing.assert_array_equal(res.idata.observed_data["y"].values, sim["y"].to_numpy())
    loo = az.loo(res.idata)
    assert np.isfinite(loo.elpd_loo) and loo.pareto_k.values.max() < 0.7
