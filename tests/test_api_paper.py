"""The paper's lambda models through the public front end give the pipeline's numbers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hetfx
from conftest import RAW, TW_FILE
from hetfx.paper import studies
from hetfx.paper.data import tomz_weeks

SAMPLER = studies.Sampler(seed=12, chains=4, draws=1000)


@pytest.fixture(scope="module")
def tw() -> pd.DataFrame:
    return studies.coding_frame(tomz_weeks.clean(RAW / TW_FILE).data, "published")


def _front(tw, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # main_effects=False and a saturated Z, as published
        return hetfx.fit(
            tw,
            "force",
            "alliance",
            main_effects=False,
            seed=SAMPLER.seed,
            chains=SAMPLER.chains,
            draws=SAMPLER.draws,
            **kw,
        )


def _same(front, paper, key):
    a = front.group_effects()
    b = paper.group_effects()
    assert a[key].astype(str).tolist() == b[key].astype(str).tolist()
    for col in ("n_obs", "estimate", "q025", "q10", "q90", "q975"):
        np.testing.assert_allclose(
            a[col].to_numpy(dtype=float),
            b[col].to_numpy(dtype=float),
            rtol=1e-9,
            atol=1e-12,
            err_msg=col,
        )
    ca, cb = front.coefs(), paper.coefs()
    np.testing.assert_allclose(ca["mean"], cb["mean"], rtol=1e-9, atol=1e-12)
    assert ca["term"].tolist() == cb["term"].tolist()


def test_m1_published_through_the_front_end(tw):
    paper = studies.fit_tomz_weeks(tw, "m1", "published", {"gamma_sd": 1, "beta_sd": 1}, SAMPLER)
    front = _front(
        tw,
        modifiers=["regime", "stakes", "costs", "region_txt"],
        effect="saturated",
        group="treat_group",
        controls=studies.M1_CONTROLS,
    )
    _same(front, paper, "treat_group")


def test_m2_published_through_the_front_end(tw):
    paper = studies.fit_tomz_weeks(tw, "m2", "published", {"gamma_sd": 1, "beta_sd": 0.5}, SAMPLER)
    front = _front(
        tw,
        modifiers=studies.DEMOGRAPHIC_KEYS,
        group="het_group",
        controls=studies.M2_CONTROLS,
        priors=hetfx.Priors(control=hetfx.Prior.normal(0.5)),
    )
    _same(front, paper, "het_group")


def test_issue9_specification_numbers_through_the_front_end(tw):
    """Issue 9's measurements, refitted with one argument changed each: M1 with the 31
    condition main effects (SD .180, range [-.15, .61], r = .21 with published M1 and .995
    with saturated OLS); additive Z with them (SD .122, [.04, .52]) and without (SD .064,
    [.21, .47])."""
    mods = ["regime", "stakes", "costs", "region_txt"]

    def est(**kw):
        return (
            _front(tw, modifiers=mods, group="treat_group", controls=studies.M1_CONTROLS, **kw)
            .group_effects()["estimate"]
            .to_numpy()
        )

    pub = est(effect="saturated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        me = (
            hetfx.fit(
                tw,
                "force",
                "alliance",
                mods,
                studies.M1_CONTROLS,
                effect="saturated",
                group="treat_group",
                seed=12,
            )
            .group_effects()["estimate"]
            .to_numpy()
        )
        add = (
            hetfx.fit(
                tw,
                "force",
                "alliance",
                mods,
                studies.M1_CONTROLS,
                effect="additive",
                main_effects="saturated",
                group="treat_group",
                seed=12,
            )
            .group_effects()["estimate"]
            .to_numpy()
        )
    add0 = est(effect="additive")
    ols = (
        hetfx.fit_ols(tw, "force", "alliance", mods, studies.M1_CONTROLS, group="treat_group")
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
