"""The family objects of hetfx.fit: what each likelihood takes, checked before any work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hetfx
import hetfx.api
from hetfx.families import BERNOULLI, FAMILIES, GAUSSIAN, Family, get_family
from hetfx.validation import DesignError, engine_option_names


def _binary(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"m": rng.choice(["a", "b", "c"], n), "treat": np.tile([0, 1], n // 2)})
    df["y"] = (rng.random(n) < 0.3 + 0.2 * df.treat * (df.m == "c")).astype(int)
    return df


def test_names_and_objects_give_the_same_family():
    assert get_family("gaussian") is GAUSSIAN and get_family("bernoulli") is BERNOULLI
    assert get_family(BERNOULLI) is BERNOULLI
    assert set(FAMILIES) == {"gaussian", "bernoulli"}
    assert all(isinstance(f, Family) for f in FAMILIES.values())
    for bad in ("poisson", None, 3):
        with pytest.raises(DesignError, match=r"family must be one of \('gaussian', 'bernoulli'\)"):
            get_family(bad)


def test_engines_and_baselines_of_each_family():
    assert GAUSSIAN.resolve_engine("auto") == "quadrature"
    assert BERNOULLI.resolve_engine("auto") == "qmc"
    assert BERNOULLI.resolve_engine("nutpie") == "nutpie"
    with pytest.raises(DesignError, match="family='bernoulli' is fitted by engine='qmc' or"):
        BERNOULLI.resolve_engine("quadrature")
    with pytest.raises(DesignError, match="family='gaussian' is fitted by engine='quadrature'"):
        GAUSSIAN.resolve_engine("qmc")
    for b in ("pooled", "fixed", "additive", "none"):
        GAUSSIAN.check_baselines(b)  # every baseline has a Gaussian engine
    with pytest.raises(
        DesignError,
        match=r"'fixed' is fitted for the Gaussian family only; the Bernoulli family takes "
        r"baselines='additive' \(its default\) or 'none'",
    ):
        BERNOULLI.check_baselines("fixed")
    assert (GAUSSIAN.default_baselines, BERNOULLI.default_baselines) == ("pooled", "additive")


def test_values_each_family_takes():
    y01, t01 = np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0, 1.0])
    BERNOULLI.check_values("y", y01, "t", t01)
    GAUSSIAN.check_values("y", y01 * 7.5, "t", t01 * 3)  # any outcome, a dose
    with pytest.raises(DesignError, match=r"needs a 0/1 't'; it holds \[0.0, 2.0\]"):
        BERNOULLI.check_values("y", y01 + 0.5, "t", t01 * 2)  # the treatment first
    with pytest.raises(DesignError, match="needs a 0/1 'y'"):
        BERNOULLI.check_values("y", y01 + 0.5, "t", t01)


def test_engine_options_are_those_of_the_family_engine():
    gauss, bern = engine_option_names("fit", "gaussian"), engine_option_names("fit", "bernoulli")
    nuts = engine_option_names("fit", "gaussian", "nutpie")
    assert "grid" in gauss and "grid" not in bern and "grid" not in nuts
    assert "qmc_m" in bern and "qmc_m" not in gauss
    assert "cores" in nuts and "cores" not in gauss


def test_fit_takes_a_family_object_and_checks_it_before_any_work(monkeypatch):
    df = _binary()
    by_name = hetfx.fit(
        df, "y", "treat", ["m"], effect="1", family="bernoulli", chains=2, draws=100
    )
    by_object = hetfx.fit(
        df, "y", "treat", ["m"], effect="1", family=BERNOULLI, chains=2, draws=100
    )
    pd.testing.assert_frame_equal(by_name.group_effects(), by_object.group_effects())
    assert by_object.engine == "qmc"

    def no_design(*args, **kwargs):  # the checks must fail before the design is built
        raise AssertionError("build_design ran")

    monkeypatch.setattr(hetfx.api, "build_design", no_design)
    with pytest.raises(DesignError, match="family='gaussian' is fitted by engine="):
        hetfx.fit(df, "y", "treat", ["m"], engine="qmc")
    with pytest.raises(DesignError, match="needs a 0/1 'y'"):
        hetfx.fit(df.assign(y=df.y * 2.0), "y", "treat", ["m"], family=BERNOULLI)
