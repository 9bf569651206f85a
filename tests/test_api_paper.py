"""The paper's pipeline is a user of the public front end.

``hetfx.paper.studies`` fits M1, M2 (and their variants) through :func:`hetfx.fit`, the OLS
comparators through :func:`hetfx.fit_ols` and the appendix models through
:func:`hetfx.fit_varying_slopes`. These tests spell the front-end calls out from the paper's
specification (not through ``studies``) and compare them with the committed pipeline outputs
``results/<study>/<model>_published/{groups,coefs}.csv`` to 1e-9, so a change of the front
end that changes a published number fails here, and a stale results file too.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hetfx
from conftest import BP_FILE, RAW, ROOT, TW_FILE
from hetfx.paper import studies
from hetfx.paper.data import bush_prather, tomz_weeks
from hetfx.paper.precision import tolerance_for
from hetfx.results import GaussianResults, OLSResults, VaryingSlopesResults

RESULTS = ROOT / "results"
CONDITIONS = ["regime", "stakes", "costs", "region_txt"]
DEMOGRAPHICS = ["dem", "rep", "high_newsint", "white", "male"]
M1_CONTROLS = ["white", "male", "hawk", "intl", "dem", "rep", "age", "ed4"]
M2_CONTROLS = ["regime", "stakes", "costs", "africa", "europe", "asia", "age", "ed4"]
#: params.yaml models.m1 / models.m2 priors (brms's half-t(3, 2.5) scales are the default)
M1_PRIORS = hetfx.Priors(effect=hetfx.Prior.normal(1.0), control=hetfx.Prior.normal(1.0))
M2_PRIORS = hetfx.Priors(effect=hetfx.Prior.normal(1.0), control=hetfx.Prior.normal(0.5))
SAMPLER = dict(seed=12, chains=4, draws=1000)


@pytest.fixture(scope="module")
def tw() -> pd.DataFrame:
    return studies.coding_frame(tomz_weeks.clean(RAW / TW_FILE).data, "published")


def _front(tw, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # main_effects=False and a saturated Z, as published
        return hetfx.fit(tw, "force", "alliance", **SAMPLER, **kw)


def _committed(name: str, study: str = "tomz_weeks") -> tuple[pd.DataFrame, pd.DataFrame]:
    d = RESULTS / study / f"{name}_published"
    return pd.read_csv(d / "groups.csv"), pd.read_csv(d / "coefs.csv")


def _same_as_committed(
    res, name: str, quantiles=("q025", "q10", "q90", "q975"), study: str = "tomz_weeks"
) -> None:
    groups, coefs = _committed(name, study)
    # the committed CSVs hold their numbers at the precision of their stated tolerance
    tol = tolerance_for(f"results/{study}/{name}_published/groups.csv", "*").tol
    g = res.group_effects().rename(columns={"region_txt": "region"})
    label = groups.columns[0]
    assert g[label].astype(str).tolist() == groups[label].astype(str).tolist()
    keys = list(groups.columns[1 : list(groups.columns).index("n_obs")])
    assert [k for k in keys if k not in g] == []
    for k in keys:
        assert g[k].astype(str).tolist() == groups[k].astype(str).tolist(), k
    assert g["n_obs"].tolist() == groups["n_obs"].tolist()
    for col in ("estimate", *quantiles):
        np.testing.assert_allclose(
            g[col].to_numpy(float), groups[col].to_numpy(float), rtol=tol, atol=tol, err_msg=col
        )
    c = res.coefs()
    assert c["equation"].tolist() == coefs["equation"].tolist()
    assert c["term"].tolist() == coefs["term"].tolist()
    for col in ("mean", "sd", "q025", "q975"):
        np.testing.assert_allclose(
            c[col].to_numpy(float), coefs[col].to_numpy(float), rtol=tol, atol=tol, err_msg=col
        )


def test_m1_published_is_the_front_end(tw):
    res = _front(
        tw,
        modifiers=CONDITIONS,
        controls=M1_CONTROLS,
        effect="saturated",
        group="treat_group",
        main_effects=False,
        priors=M1_PRIORS,
    )
    _same_as_committed(res, "m1")


def test_m1_with_main_effects_is_the_front_end(tw):
    """``baselines="additive"`` (main effects = the terms of the effect formula)."""
    res = _front(
        tw,
        modifiers=CONDITIONS,
        controls=M1_CONTROLS,
        effect="saturated",
        group="treat_group",
        priors=M1_PRIORS,
        baselines="additive",
    )
    _same_as_committed(res, "m1_main_effects")


def test_m2_published_is_the_front_end(tw):
    res = _front(
        tw,
        modifiers=[*DEMOGRAPHICS, "party"],  # party labels the groups; no equation uses it
        controls=M2_CONTROLS,
        effect=" + ".join(DEMOGRAPHICS),
        group="het_group",
        main_effects=False,
        priors=M2_PRIORS,
    )
    _same_as_committed(res, "m2")


@pytest.mark.parametrize("name", ["m1_ols", "m2_ols"])
def test_ols_comparators_are_the_front_end(tw, name):
    m1 = name == "m1_ols"
    res = hetfx.fit_ols(
        tw,
        "force",
        "alliance",
        CONDITIONS if m1 else DEMOGRAPHICS,
        M1_CONTROLS if m1 else ["regime", "stakes", "costs", "asia", "europe", "africa"],
        effect="saturated" if m1 else "additive",
        group="treat_group" if m1 else "het_group",
        baselines="fixed" if m1 else "additive",
    )
    _same_as_committed(res, name, quantiles=("q025", "q05", "q10", "q90", "q95", "q975"))
    groups, _ = _committed(name)
    g = res.group_effects()
    for col in ("n_treated", "n_control", "estimable"):
        assert g[col].astype(str).tolist() == groups[col].astype(str).tolist(), col
    np.testing.assert_allclose(g["std_error"], groups["std_error"], rtol=1e-9, atol=1e-9)


def test_appendix_models_are_the_front_end(tw):
    """A1 (params.yaml models.a1) and Bush-Prather (models.bp) through fit_varying_slopes."""
    priors = hetfx.Priors(
        effect=hetfx.Prior.normal(0.5),
        control=hetfx.Prior.normal(0.5),
        intercept=hetfx.Prior.flat(),
        sigma_theta=hetfx.Prior.half_normal(1.0),
    )
    common = dict(priors=priors, target_accept=0.8, **SAMPLER)
    a1 = hetfx.fit_varying_slopes(
        tw,
        "force",
        "alliance",
        ["treat_group"],
        ["white", "male", "hawk", "intl", "natl_sup"],
        effect="regime + stakes + costs + region_txt",
        engine="quadrature",
        **common,
    )
    _same_as_committed(a1, "a1")
    bp = bush_prather.clean(RAW / BP_FILE).data
    res = hetfx.fit_varying_slopes(
        bp,
        "ipe_support",
        "treat_germrus",
        ["w2_vote_hill", "woman", "pol_engage", "invest_cond"],
        ["college_educ", "employ_dum"],
        effect=False,
        engine="qmc",
        qmc_m=15,
        **common,
    )
    _same_as_committed(res, "bp", study="bush_prather")


def test_the_pipeline_fits_through_the_front_end(tw):
    """studies returns the front end's Results, and the stage's layout of them."""
    settings = {"gamma_sd": 1.0, "beta_sd": 1.0}
    sampler = studies.Sampler(seed=12, chains=2, draws=100)
    res = studies.fit_tomz_weeks(tw, "m1", "published", settings, sampler)
    assert isinstance(res, GaussianResults)
    assert res.design.main_formula is None and res.design.group_name == "treat_group"
    assert res.draws is res.fit.idata and "log_likelihood" not in res.draws.groups()
    assert res.diagnostics_record.draws == 100
    # the robustness stage's LOO and predictive check take the front end's Results
    from hetfx.paper import robustness as R

    ll = R.gaussian_log_likelihood(res)
    assert ll.shape == (2, 100, len(tw))
    np.testing.assert_allclose(ll, res.idata.log_likelihood["force"].values, rtol=1e-12)
    ppc = R.predictive_check(res, tw["treat_group"], seed=1)
    assert ppc["n"].sum() == len(tw) and len(ppc) == 64
    me = studies.fit_tomz_weeks(tw, "m2_main_effects", "published", settings, sampler)
    assert me.design.main_formula == " + ".join(DEMOGRAPHICS)
    assert me.X.columns[-5:].tolist() == DEMOGRAPHICS
    assert isinstance(studies.fit_tomz_weeks(tw, "m2_ols", "published"), OLSResults)
    a1 = studies.fit_tomz_weeks(tw, "a1", "published", {"engine": "qmc", "qmc_points_log2": 10})
    assert isinstance(a1, VaryingSlopesResults) and a1.draws is a1.fit.idata


def test_specification_numbers_through_the_front_end(tw):
    """The specification measurements, refitted with one argument changed each: M1 with the 31
    condition main effects (SD .180, range [-.15, .61], r = .21 with published M1 and .995
    with saturated OLS); additive Z with them (SD .122, [.04, .52]) and without (SD .064,
    [.21, .47])."""
    mods = CONDITIONS

    def est(**kw):
        return (
            _front(
                tw,
                modifiers=mods,
                group="treat_group",
                controls=M1_CONTROLS,
                priors=hetfx.Priors(),  # the paper's priors, as measured
                **kw,
            )
            .group_effects()["estimate"]
            .to_numpy()
        )

    pub = est(effect="saturated", main_effects=False)
    me = est(effect="saturated", baselines="additive")
    add = est(effect="additive", main_effects="saturated")
    add0 = est(effect="additive", main_effects=False)
    ols = (
        hetfx.fit_ols(tw, "force", "alliance", mods, M1_CONTROLS, group="treat_group")
        .group_effects()["estimate"]
        .to_numpy()
    )

    def check(e, sd, lo, hi):
        assert e.std(ddof=1) == pytest.approx(sd, abs=0.005)
        assert e.min() == pytest.approx(lo, abs=0.01) and e.max() == pytest.approx(hi, abs=0.01)

    check(me, 0.180, -0.15, 0.61)
    assert np.corrcoef(me, pub)[0, 1] == pytest.approx(0.21, abs=0.02)
    assert np.corrcoef(me, ols)[0, 1] == pytest.approx(0.995, abs=0.003)
    check(pub, 0.102, 0.16, 0.52)
    check(add, 0.122, 0.04, 0.52)
    check(add0, 0.064, 0.21, 0.47)
