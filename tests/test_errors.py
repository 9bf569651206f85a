"""Every bad input to the front end ends in a result or a documented error whose message
names the argument, column or cell and says how to fix it (``hetfx.validation``).

One test per case found by trying the library as a new user would; ``hetfx.fit`` and
``hetfx.fit_ols`` are given the same inputs and must agree on what they refuse.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hetfx
from hetfx import DesignError
from hetfx.inference import RHAT_UNAVAILABLE, DiagnosticsWarning

FIT = dict(chains=2, draws=50)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(19)
    n = 240
    d = pd.DataFrame(
        {
            "regime": rng.choice(["autocracy", "democracy"], n),
            "stakes": rng.choice(["high", "low"], n),
            "treat": rng.integers(0, 2, n),
            "age": rng.normal(size=n),
        }
    )
    d["y"] = 0.3 * d.treat + rng.normal(0, 1, n)
    return d


MOD = ["regime", "stakes"]


def assert_both_raise(data, exc, match, modifiers=MOD, **kw):
    msgs = []
    for call in (
        lambda: hetfx.fit(data, "y", "treat", modifiers, **kw, **FIT),
        lambda: hetfx.fit_ols(data, "y", "treat", modifiers, **kw),
    ):
        with pytest.raises(exc, match=match) as e:
            call()
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]  # the same message from both
    return msgs[0]


# ------------------------------------------------------------------------ arguments
def test_one_chain_works_and_reports_r_hat_unavailable(df):
    res = hetfx.fit(df, "y", "treat", MOD, chains=1, draws=100)
    dg = res.diagnostics().iloc[0]
    assert np.isnan(dg["max_r_hat"]) and dg["worst_r_hat_param"] == RHAT_UNAVAILABLE
    assert dg["min_ess_bulk"] > 0
    assert f"R-hat {RHAT_UNAVAILABLE}" in str(res.summary())
    vs = hetfx.fit_varying_slopes(df, "y", "treat", ["regime"], chains=1, draws=50, tune=50)
    assert np.isnan(vs.diagnostics_record.max_r_hat)


@pytest.mark.parametrize(
    ("arg", "value", "exc", "match"),
    [
        ("chains", 2.5, TypeError, r"chains must be an integer, got 2\.5"),
        ("chains", 0, ValueError, "chains must be at least 1"),
        ("chains", True, TypeError, "chains must be an integer"),
        ("draws", 2, ValueError, "draws must be at least 4"),
        ("tune", 0, ValueError, "tune must be at least 1"),
        ("seed", "abc", TypeError, "seed must be a non-negative integer"),
        ("seed", None, TypeError, "seed must be a non-negative integer"),
        ("seed", -1, ValueError, r"seed must lie in \[0, 2\*\*63\)"),
        ("target_accept", 1.5, ValueError, r"target_accept must be a number in \(0, 1\)"),
    ],
)
def test_sampler_arguments_are_checked(df, arg, value, exc, match):
    kw = {**FIT, arg: value}
    with pytest.raises(exc, match=match):
        hetfx.fit(df, "y", "treat", MOD, **kw)
    with pytest.raises(exc, match=match):
        hetfx.fit_varying_slopes(df, "y", "treat", ["regime"], **kw)


def test_misspelled_engine_option_names_it_and_the_valid_ones(df):
    with pytest.raises(TypeError, match=r"unknown engine option\(s\) \['n_gird'\]") as e:
        hetfx.fit(df, "y", "treat", MOD, n_gird=3, **FIT)
    assert "'grid'" in str(e.value) and "fit_exact_lambda" not in str(e.value)
    # the exact engine takes exactly the options it uses (grid=, monitor_groups=): the old
    # engine's n_grid, resolution and NUTS's cores are refused, not silently ignored
    for opt in ("n_grid", "resolution", "cores"):
        with pytest.raises(TypeError, match=rf"\['{opt}'\].*\['grid', 'monitor_groups'\]"):
            hetfx.fit(df, "y", "treat", MOD, **{opt: 3}, **FIT)
    with pytest.raises(TypeError, match=r"unknown grid settings \['n_grid'\]"):
        hetfx.fit(df, "y", "treat", MOD, grid={"n_grid": 3}, **FIT)
    with pytest.raises(TypeError, match=r"\['lkj_etta'\].*'lkj_eta'"):
        hetfx.fit_varying_slopes(df, "y", "treat", ["regime"], lkj_etta=2.0, **FIT)
    with pytest.raises(TypeError, match=r"\['gamma_sd'\].*priors="):  # set by the front end
        hetfx.fit(df, "y", "treat", MOD, gamma_sd=2.0, **FIT)


def test_ols_interval_level_is_checked_like_the_bayesian_one(df):
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\), got 1\.5"):
        hetfx.fit_ols(df, "y", "treat", MOD).group_effects(level=1.5)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\), got 1\.5"):
        hetfx.fit(df, "y", "treat", MOD, **FIT).group_effects(level=1.5)


# ----------------------------------------------------------------------------- data
def test_empty_frame_says_data_has_no_rows(df):
    assert_both_raise(df.iloc[:0], DesignError, "^data has no rows$")


def test_duplicated_column_names_are_named(df):
    dup = pd.concat([df, df[["age"]]], axis=1)
    assert_both_raise(dup, DesignError, r"several columns named \['age'\]", controls=["age"])


def test_non_unique_index_is_fitted_alike(df):
    waves = pd.concat([df, df])  # two waves concatenated: every label twice
    ols = hetfx.fit_ols(waves, "y", "treat", MOD).group_effects()
    ref = hetfx.fit_ols(waves.reset_index(drop=True), "y", "treat", MOD).group_effects()
    pd.testing.assert_frame_equal(ols, ref)
    assert ols["n_obs"].sum() == 2 * len(df)
    res = hetfx.fit(waves, "y", "treat", MOD, **FIT).group_effects()
    assert res["n_obs"].sum() == 2 * len(df)


def test_treatment_among_the_controls_is_refused_by_both(df):
    assert_both_raise(
        df, DesignError, "the treatment 'treat' is also among the controls", controls=["treat"]
    )


def test_modifier_among_the_controls_is_refused_by_both(df):
    msg = assert_both_raise(df, DesignError, r"modifiers \['stakes'\]", controls=["stakes"])
    assert "remove them from controls=" in msg


def test_treatment_coded_1_2_is_refused_by_both(df):
    msg = assert_both_raise(
        df.assign(treat=df.treat + 1), DesignError, "takes the values 1 and 2; code it 0"
    )
    assert "(data['treat'] == 2).astype(int)" in msg


def test_ols_refuses_a_dose_that_fit_accepts(df):
    dose = df.assign(treat=np.arange(len(df)) % 3)
    with pytest.raises(DesignError, match="must be coded 0/1; it holds 3 values"):
        hetfx.fit_ols(dose, "y", "treat", MOD)
    assert len(hetfx.fit(dose, "y", "treat", MOD, **FIT).group_effects()) == 4


def test_modifier_with_a_single_value_is_refused_by_both(df):
    assert_both_raise(
        df.assign(stakes="low"), DesignError, r"modifier 'stakes' takes a single value \('low'\)"
    )


def test_numeric_coded_modifier_is_refused_by_both_with_the_conversion(df):
    region = df.assign(region=np.arange(len(df)) % 4 + 1)
    msg = assert_both_raise(
        region,
        DesignError,
        r"modifier 'region' is numeric with 4 values \(1, 2, 3, 4\)",
        modifiers=["region"],
    )
    assert ".astype('category')" in msg
    as_labels = region.assign(region=region.region.astype("category"))
    res = hetfx.fit(as_labels, "y", "treat", ["region"], **FIT)
    # one cell per value, not one linear term; one modifier's design is saturated in its
    # cells, so Z keeps its intercept and theta carries the four cells alike
    assert len(res.group_effects()) == 4 and res.Z.columns.tolist() == ["Intercept"]
    # written as a formula, the linear term is the user's choice
    lin = hetfx.fit(region, "y", "treat", ["region"], effect="region", **FIT)
    assert lin.Z.columns.tolist() == ["Intercept", "region"]


def test_two_rows_per_cell_is_refused_by_both_naming_the_cells():
    two = pd.DataFrame(
        {
            "regime": ["democracy"] * 4 + ["autocracy"] * 4,
            "stakes": ["low", "low", "high", "high"] * 2,
            "treat": [0, 1] * 4,
            "y": np.arange(8.0) ** 1.5,
        }
    )
    msg = assert_both_raise(two, DesignError, "too few rows to estimate the noise")
    assert "regime=democracy, stakes=low" in msg and "(2 rows, 1 treated)" in msg


def test_treatment_without_variation_names_the_cell_by_its_values(df):
    flat = df.copy()
    m = (flat.regime == "democracy") & (flat.stakes == "low")
    flat.loc[m, "treat"] = 1
    msg = assert_both_raise(flat, DesignError, "does not vary within 1 cell")
    assert "cell democracy_low (n=" in msg and "regime=democracy, stakes=low" in msg


def test_single_arm_cells_are_pooled_on_request(df):
    """single_arm_cells='pool' fits a cell whose treatment does not vary (Gaussian), warns
    naming it, and its interval is wider than the cells with a contrast; the default and the
    Bernoulli family refuse, and a bad value is named."""
    flat = df.copy()
    m = (flat.regime == "democracy") & (flat.stakes == "low")
    flat.loc[m, "treat"] = 1
    with pytest.warns(UserWarning, match=r"does not vary within 1 cell\(s\).*democracy_low"):
        res = hetfx.fit(flat, "y", "treat", MOD, single_arm_cells="pool", draws=0)
    ge = res.group_effects(level=0.9).set_index("cell")
    width = ge["upper"] - ge["lower"]
    assert np.isfinite(ge.loc["democracy_low", "estimate"])
    assert width["democracy_low"] > width.drop("democracy_low").max()
    with pytest.raises(DesignError, match="single_arm_cells='pool'"):
        hetfx.fit(flat, "y", "treat", MOD, draws=0)
    with pytest.raises(DesignError, match="Gaussian family only"):
        hetfx.fit(flat, "y", "treat", MOD, family="bernoulli", single_arm_cells="pool")
    with pytest.raises(DesignError, match="single_arm_cells must be 'raise' or 'pool'"):
        hetfx.fit(flat, "y", "treat", MOD, single_arm_cells="yes")


def test_constant_outcome_is_refused_by_both(df):
    assert_both_raise(df.assign(y=2.0), DesignError, "outcome 'y' is constant.*always equals 2")


def test_saturated_effect_with_a_missing_combination(df):
    holes = df[~((df.regime == "democracy") & (df.stakes == "low"))]
    with pytest.raises(DesignError, match="never occur: regime=democracy, stakes=low") as e:
        hetfx.fit(holes, "y", "treat", MOD, effect="saturated", **FIT)
    assert "hetfx.fit_ols" in str(e.value)
    assert len(hetfx.fit_ols(holes, "y", "treat", MOD).group_effects()) == 3


def test_controls_formula_is_accepted_by_both(df):
    ols = hetfx.fit_ols(df, "y", "treat", MOD, controls="age + regime:age")
    res = hetfx.fit(df, "y", "treat", MOD, controls="age + regime:age", **FIT)
    assert len(ols.group_effects()) == len(res.group_effects()) == 4


def test_ols_effect_without_modifiers_is_refused_with_the_alternatives(df):
    with pytest.raises(DesignError, match="effect='1' names no modifier.*'saturated'"):
        hetfx.fit_ols(df, "y", "treat", MOD, effect="1")


def test_unreadable_formula_is_a_design_error(df):
    with pytest.raises(DesignError, match=r"effect formula '\(' cannot be read"):
        hetfx.fit(df, "y", "treat", MOD, effect="(", **FIT)
    with pytest.raises(DesignError, match=r"controls formula 'age \+' cannot be read"):
        hetfx.fit_ols(df, "y", "treat", MOD, controls="age +")


def test_missing_column_is_a_key_error(df):
    with pytest.raises(KeyError, match="nope"):
        hetfx.fit(df, "y", "treat", ["nope"], **FIT)
    with pytest.raises(KeyError, match="nope"):
        hetfx.fit_ols(df, "y", "treat", ["nope"])


def test_messages_name_no_issue_numbers(df):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        hetfx.fit(df, "y", "treat", MOD, main_effects=False, effect="saturated", **FIT)
    texts = [str(w.message) for w in rec]
    assert any("main_effects=False" in t for t in texts)
    assert any("one column per cell" in t for t in texts)
    assert not any("issue" in t for t in texts)


def test_design_error_is_exported_and_a_value_error():
    assert "DesignError" in hetfx.__all__ and issubclass(hetfx.DesignError, ValueError)
    from hetfx.api import DesignError as from_api

    assert from_api is hetfx.DesignError


# ------------------------------------------------------- found by tests/test_fuzz.py
def test_pandas_string_columns_are_labels_as_object_columns_are(df):
    s = df.assign(regime=df.regime.astype("string"))
    a = hetfx.fit(s, "y", "treat", MOD, controls="age + regime:age", **FIT).group_effects()
    b = hetfx.fit(df, "y", "treat", MOD, controls="age + regime:age", **FIT).group_effects()
    np.testing.assert_allclose(a["estimate"], b["estimate"])
    o = hetfx.fit_ols(s, "y", "treat", MOD).group_effects()["estimate"]
    np.testing.assert_allclose(o, hetfx.fit_ols(df, "y", "treat", MOD).group_effects()["estimate"])
    kw = dict(effect="regime", chains=2, draws=50, tune=50)  # the effect's contrast rows
    v = hetfx.fit_varying_slopes(s, "y", "treat", ["regime", "stakes"], **kw).group_effects()
    w = hetfx.fit_varying_slopes(df, "y", "treat", ["regime", "stakes"], **kw).group_effects()
    np.testing.assert_allclose(v["estimate"], w["estimate"])


def test_datetime_and_mixed_type_labels_are_refused(df):
    days = df.assign(regime=pd.to_datetime("2020-01-01") + pd.to_timedelta((df.age > 0) * 1, "D"))
    assert_both_raise(days, DesignError, r"column 'regime' holds datetime64.*astype\(str\)")
    mixed = df.assign(regime=pd.Series(["a" if a > 0 else 1 for a in df.age], dtype=object))
    assert_both_raise(mixed, DesignError, r"column 'regime' mixes values of the types")


def test_outcome_stored_as_object_numbers_is_fitted_as_numbers(df):
    obj = df.assign(y=df.y.astype(object))
    a = hetfx.fit_ols(obj, "y", "treat", MOD).group_effects()["estimate"]
    np.testing.assert_allclose(a, hetfx.fit_ols(df, "y", "treat", MOD).group_effects()["estimate"])


def test_boolean_treatment_in_varying_slopes_is_fitted_as_0_1(df):
    kw = dict(chains=2, draws=50, tune=50)
    a = hetfx.fit_varying_slopes(df.assign(treat=df.treat == 1), "y", "treat", ["regime"], **kw)
    b = hetfx.fit_varying_slopes(df, "y", "treat", ["regime"], **kw)
    np.testing.assert_allclose(a.group_effects()["estimate"], b.group_effects()["estimate"])


def test_a_column_named_twice_is_refused_before_anything_else(df):
    with pytest.raises(DesignError, match=r"modifiers name a column twice: \['regime', 'regime'\]"):
        hetfx.fit(df, "y", "treat", ["regime", "regime"], effect="saturated", **FIT)
    with pytest.raises(DesignError, match="factors name a column twice"):
        hetfx.fit_varying_slopes(df, "y", "treat", ["regime", "regime"], **FIT)


def test_unused_category_of_a_modifier_leaves_no_trace(df):
    cat = df.assign(regime=pd.Categorical(df.regime, ["democracy", "autocracy", "monarchy"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither an aliased-column warning nor a deprecation
        warnings.simplefilter("ignore", DiagnosticsWarning)  # 50 draws: the gate may warn
        ols = hetfx.fit_ols(cat, "y", "treat", MOD).group_effects()
        vs = hetfx.fit_varying_slopes(cat, "y", "treat", ["regime"], chains=2, draws=50, tune=50)
    assert len(ols) == 4 and len(vs.group_effects()) == 2


def test_numbers_too_large_for_double_precision_ask_for_a_rescaling(df):
    msg = assert_both_raise(df.assign(y=df.y * 1e200), DesignError, "column 'y' holds numbers")
    assert "rescale it" in msg
    with pytest.raises(DesignError, match="rescale it"):
        hetfx.fit_varying_slopes(df.assign(y=df.y * 1e200), "y", "treat", ["regime"], **FIT)


def test_ols_refuses_baselines_it_does_not_fit(df):
    """Checked before any design is built, like every other argument."""
    with pytest.raises(DesignError, match="fit_ols takes baselines='fixed' or 'additive'"):
        hetfx.fit_ols(df, "y", "treat", MOD, baselines="pooled")


def test_misspelled_sampler_argument_gets_a_suggestion(df):
    """A typo of fit's own argument reaches the engine-option check: it names the likely
    argument, and options the front end sets itself are neither listed nor accepted."""
    with pytest.raises(TypeError, match=r"did you mean 'chains' for 'chians'\?") as err:
        hetfx.fit(df, "y", "treat", MOD, chians=2)
    assert "'within'" not in str(err.value) and "sigma_alpha_prior" not in str(err.value)
    with pytest.raises(TypeError, match=r"unknown engine option\(s\) \['within'\]"):
        hetfx.fit(df, "y", "treat", MOD, within=True)
    # any of fit's own arguments, not only the sampler's
    with pytest.raises(TypeError, match=r"did you mean 'baselines' for 'baseline'\?"):
        hetfx.fit(df, "y", "treat", MOD, baseline="pooled")
    with pytest.raises(TypeError, match=r"did you mean 'priors' for 'prior'\?"):
        hetfx.fit_varying_slopes(df, "y", "treat", MOD, prior=hetfx.Priors())
