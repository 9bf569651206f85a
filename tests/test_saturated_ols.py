"""Tests of hetfx.models.saturated_ols: hand computation, R fixtures, aliasing."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import RAW, TW_FILE
from hetfx.models.saturated_ols import (
    QUANTILE_LEVELS,
    find_aliased_columns,
    fit_saturated_ols,
)
from hetfx.paper.data import tomz_weeks
from hetfx.paper.studies import coding_frame

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "brms"
M1_CONTROLS = "white + male + hawk + intl + dem + rep + age + ed4"
M2_AT = {"regime": 1, "stakes": 1, "costs": 0, "asia": 0, "africa": 0, "europe": 1}

#: A formulaic column name's parts: variable (also inside ``C(...)``) and treatment level.
_CAT_LEVEL = re.compile(r"^(?:C\()?([^\[\(\),]+?)(?:,[^\[]*\))?(?:\))?\[(?:T\.)?(.*)\]$")


def to_r_term(term: str) -> str:
    """Convert a formulaic column name to R's ``model.matrix`` spelling.

    ``Intercept`` becomes ``(Intercept)`` and a treatment-coded level
    ``region_txt[T.Asia]`` becomes ``region_txtAsia``; interaction components
    keep their order and are joined by ``:``.

    Parameters
    ----------
    term : str
        Column name as produced by formulaic.

    Returns
    -------
    str
        The R name.

    Notes
    -----
    R orders the factors inside an interaction by their first appearance in the
    formula, as formulaic does for formulas written the same way; compare terms
    as sets of components when in doubt.
    """
    if term == "Intercept":
        return "(Intercept)"
    parts = []
    for part in term.split(":"):
        m = _CAT_LEVEL.match(part)
        parts.append(f"{m.group(1)}{m.group(2)}" if m else part)
    return ":".join(parts)


@pytest.fixture(scope="module")
def tw() -> pd.DataFrame:
    """The cleaned Tomz-Weeks data with the published Democrat coding."""
    return coding_frame(tomz_weeks.clean(RAW / TW_FILE).data, "published")


def _toy(seed: int = 3, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = pd.DataFrame(
        {
            "a": rng.integers(0, 2, n),
            "r": rng.choice(["east", "north", "west"], n),
            "t": rng.integers(0, 2, n),
            "c1": rng.normal(size=n),
            "c2": rng.integers(0, 3, n).astype(float),
        }
    )
    eff = 0.3 + 0.2 * d["a"] - 0.4 * (d["r"] == "west")
    d["y"] = 0.5 * d["c1"] - 0.2 * d["c2"] + eff * d["t"] + rng.normal(size=n)
    return d


def _key(term: str) -> frozenset[str]:
    return frozenset(term.split(":"))


# ------------------------------------------------------------ (a) hand computation
def test_group_effects_equal_hand_computation():
    d = _toy()
    fit = fit_saturated_ols(d, "y", "t", "a * r", "c1 + c2", reference={"r": "north"})
    ge = fit.group_effects()

    # explicit design: 1, t, a, r_east, r_west, a:r_east, a:r_west, and t times those, c1, c2
    a = d["a"].to_numpy(float)
    e = (d["r"] == "east").to_numpy(float)
    w = (d["r"] == "west").to_numpy(float)
    t = d["t"].to_numpy(float)
    base = np.column_stack([np.ones(len(d)), a, e, w, a * e, a * w])
    X = np.column_stack([base, t[:, None] * base, d["c1"], d["c2"]])
    y = d["y"].to_numpy(float)
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ b
    dfr = len(y) - X.shape[1]
    V = resid @ resid / dfr * np.linalg.inv(X.T @ X)

    assert fit.df_resid == dfr
    assert fit.aliased == []
    for _, row in ge.iterrows():
        aa, rr = float(row["a"]), row["r"]
        east, west = rr == "east", rr == "west"
        prof = np.array([1, aa, east, west, aa * east, aa * west], float)
        dvec = np.concatenate([np.zeros(6), prof, [0.0, 0.0]])
        est = dvec @ b
        se = np.sqrt(dvec @ V @ dvec)
        assert row["estimate"] == pytest.approx(est, abs=1e-8)
        assert row["std_error"] == pytest.approx(se, abs=1e-8)
        for name, p in QUANTILE_LEVELS.items():
            assert row[name] == pytest.approx(est + stats.t.ppf(p, dfr) * se, abs=1e-8)
        mask = (d["a"] == aa) & (d["r"] == rr)
        assert row["n_obs"] == mask.sum()
        assert row["n_treated"] == (mask & (d["t"] == 1)).sum()
        assert row["group"] == f"{int(aa)}_{rr}"
    assert len(ge) == 6 and ge["estimable"].all()

    c = fit.coefs()
    assert list(c.columns) == ["equation", "term", "mean", "sd", "q025", "q975", "aliased"]
    # formulaic orders by degree; compare as sets of components
    hand = dict(
        zip(
            [
                "Intercept", "a", "r[T.east]", "r[T.west]", "a:r[T.east]", "a:r[T.west]",
                "t", "t:a", "t:r[T.east]", "t:r[T.west]", "t:a:r[T.east]", "t:a:r[T.west]",
                "c1", "c2",
            ],
            b,
            strict=True,
        )
    )  # fmt: skip
    got = {_key(tm): v for tm, v in zip(c["term"], c["mean"], strict=True)}
    for tm, v in hand.items():
        assert got[_key(tm)] == pytest.approx(v, abs=1e-8)
    assert set(c.loc[c["equation"] == "effect", "term"].map(_key)) == {
        _key(tm) for tm in hand if "t" in tm.split(":")
    }


def test_reference_level_changes_coding_not_effects():
    d = _toy()
    f1 = fit_saturated_ols(d, "y", "t", "a * r", "c1 + c2", reference={"r": "north"})
    f2 = fit_saturated_ols(d, "y", "t", "a * r", "c1 + c2", reference={"r": "west"})
    assert "r[T.west]" in f1.terms and "r[T.north]" in f2.terms
    g1, g2 = f1.group_effects(), f2.group_effects()
    pd.testing.assert_frame_equal(
        g1.drop(columns="r").reset_index(drop=True), g2.drop(columns="r").reset_index(drop=True)
    )


def test_at_values_and_sequence_pieces():
    d = _toy()
    # c2 interacts with treatment here: its profile value matters and must come from `at`
    with pytest.raises(ValueError, match="vary within groups"):
        fit_saturated_ols(d, "y", "t", ["a", "c2"], "c1", keys=["a"])
    fit = fit_saturated_ols(d, "y", "t", ["a", "c2"], ["c1"], at={"c2": 2.0})
    b = dict(zip(fit.terms, fit.params, strict=True))
    ge = fit.group_effects()
    for _, row in ge.iterrows():
        want = b["t"] + row["a"] * b["t:a"] + 2.0 * b["t:c2"]
        assert row["estimate"] == pytest.approx(want, abs=1e-10)
    assert fit.formula == "y ~ t * (a + c2) + c1"


# --------------------------------------------------------------- (b) R fixtures
def test_m1_ols_matches_r(tw):
    fit = fit_saturated_ols(
        tw,
        "force",
        "alliance",
        "regime*stakes*costs*region_txt",
        M1_CONTROLS,
        group="treat_group",
        reference={"region_txt": "Africa"},
    )
    assert fit.aliased == []
    ref = pd.read_csv(FIXTURES / "m1_ols_groups.csv")
    got = fit.group_effects()
    assert len(got) == len(ref) == 32
    m = ref.merge(got, on="treat_group", suffixes=("_r", ""), validate="one_to_one")
    assert len(m) == 32
    np.testing.assert_allclose(m["estimate"], m["ols_slope"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(m["std_error"], m["ols_se"], rtol=0, atol=1e-8)
    assert (m["n_obs"] == m["n_obs_r"]).all()
    assert (m["n_control"] == m["n_alliance0"]).all() and (m["n_treated"] == m["n_alliance1"]).all()

    rc = pd.read_csv(FIXTURES / "m1_ols_coefs.csv")
    c = fit.coefs()
    assert len(c) == len(rc) == 72
    # same names and, for this formula, even the same order as R
    assert list(c["term"].map(to_r_term)) == list(rc["term"])
    np.testing.assert_allclose(c["mean"], rc["estimate"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(c["sd"], rc["se"], rtol=0, atol=1e-8)


def test_m2_ols_matches_r(tw):
    fit = fit_saturated_ols(
        tw,
        "force",
        "alliance",
        "dem + rep + high_newsint + white + male",
        "regime + stakes + costs + asia + europe + africa",
        group="het_group",
        at=M2_AT,
    )
    ref = pd.read_csv(FIXTURES / "m2_ols_groups.csv")
    got = fit.group_effects()
    m = ref.merge(got, on="het_group", suffixes=("_r", ""), validate="one_to_one")
    assert len(m) == len(ref) == len(got) == 24
    np.testing.assert_allclose(m["estimate"], m["ols_slope"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(m["std_error"], m["ols_se"], rtol=0, atol=1e-8)
    assert (m["n_obs"] == m["n_obs_r"]).all()

    rc = pd.read_csv(FIXTURES / "m2_ols_coefs.csv")
    c = fit.coefs().assign(key=lambda f: f["term"].map(lambda s: _key(to_r_term(s))))
    rc = rc.assign(key=rc["term"].map(_key))
    mc = rc.merge(c, on="key", validate="one_to_one")
    assert len(mc) == len(rc) == len(c) == 18
    np.testing.assert_allclose(mc["mean"], mc["estimate"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(mc["sd"], mc["se"], rtol=0, atol=1e-8)
    # effect equation = the alliance terms
    assert set(c.loc[c["equation"] == "effect", "term"]) == {
        "alliance", "alliance:dem", "alliance:rep", "alliance:high_newsint", "alliance:white",
        "alliance:male",
    }  # fmt: skip


# --------------------------------------------------------------- (c) aliasing
def test_duplicated_modifier_is_reported_and_dropped():
    d = _toy()
    d["a_copy"] = d["a"]
    with pytest.warns(UserWarning, match="aliased"):
        fit = fit_saturated_ols(d, "y", "t", "a + a_copy + r", "c1", keys=["a", "r"])
    assert fit.aliased == ["a_copy", "t:a_copy"]
    c = fit.coefs()
    assert c.loc[c["aliased"], "term"].tolist() == ["a_copy", "t:a_copy"]
    assert c.loc[c["aliased"], "mean"].isna().all()
    ref = fit_saturated_ols(d, "y", "t", "a + r", "c1")
    g, gr = fit.group_effects(), ref.group_effects()
    assert g["estimable"].all()
    cols = ["estimate", "std_error", "q025", "q975"]
    np.testing.assert_allclose(g[cols], gr[cols], rtol=0, atol=1e-10)
    assert fit.df_resid == ref.df_resid


def test_non_estimable_group_is_flagged():
    d = _toy()
    d = d.loc[~((d["a"] == 1) & (d["r"] == "west") & (d["t"] == 1))].reset_index(drop=True)
    with pytest.warns(UserWarning) as rec:
        fit = fit_saturated_ols(d, "y", "t", "a * r", "c1")
    msgs = " ".join(str(w.message) for w in rec)
    assert "aliased" in msgs and "not estimable" in msgs
    assert fit.aliased == ["t:a:r[T.west]"]
    ge = fit.group_effects().set_index("group")
    assert not ge.loc["1_west", "estimable"]
    assert ge.drop(index="1_west")["estimable"].all()
    assert ge.loc["1_west", "n_treated"] == 0


def test_find_aliased_columns_in_order():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    X = np.column_stack([X, X[:, 0] - 2 * X[:, 2], np.zeros(50), X[:, 1]])
    assert find_aliased_columns(X).tolist() == [False] * 4 + [True] * 3


# --------------------------------------------------------------- input checks
def test_input_errors():
    d = _toy()
    with pytest.raises(KeyError, match="nope"):
        fit_saturated_ols(d, "y", "t", "a + nope")
    bad = d.assign(t=d["t"] * 2)
    with pytest.raises(ValueError, match="0/1"):
        fit_saturated_ols(bad, "y", "t", "a")
    with pytest.raises(ValueError, match="reference level"):
        fit_saturated_ols(d, "y", "t", "r", reference={"r": "south"})
    with pytest.raises(ValueError, match="vary within groups"):
        fit_saturated_ols(d, "y", "t", "a + c1", keys=["a"])


def test_missing_rows_are_dropped_and_counted():
    d = _toy()
    d.loc[:4, "c1"] = np.nan
    fit = fit_saturated_ols(d, "y", "t", "a", "c1")
    assert fit.n_dropped == 5 and fit.n_obs == len(d) - 5
    assert fit.group_effects()["n_obs"].sum() == len(d) - 5


def test_to_r_term():
    assert to_r_term("Intercept") == "(Intercept)"
    assert to_r_term("alliance:region_txt[T.Eastern Europe]") == "alliance:region_txtEastern Europe"
    assert to_r_term("regime:stakes") == "regime:stakes"


def test_no_warning_when_full_rank():
    d = _toy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_saturated_ols(d, "y", "t", "a * r", "c1 + c2")
