"""The front end's array paths give what the frame paths give, bit for bit.

``hetfx.fit`` reads its columns once, builds cells, X and Z from arrays and screens X and Z
for aliasing through their Gram matrix; each of these has a general (frame, formulaic, QR)
path that it must match exactly. These tests compare the two on the inputs where they could
part: near-collinear columns, integer extremes, labels of several types, saturated products.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hetfx.api as api
import hetfx.design as design
from hetfx.validation import Columns


def _qr_only(monkeypatch, M: pd.DataFrame) -> dict[str, str]:
    with monkeypatch.context() as m:
        m.setattr(design, "_clearly_independent", lambda A, margin=1e-4: False)
        return design.aliased_columns(M)


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1])
def test_aliasing_screen_agrees_with_the_qr(monkeypatch, eps):
    """Columns near the span of the others are reported as the QR alone reports them."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(500, 4))
    M = pd.DataFrame(A, columns=["a", "b", "c", "d"])
    M["e"] = M["a"] + 2 * M["b"] + eps * rng.normal(size=500)
    M["f"] = M["c"] * (1 + eps)
    assert design.aliased_columns(M) == _qr_only(monkeypatch, M)
    if eps <= 1e-9:  # the screen must not hide an aliased column
        assert set(design.aliased_columns(M)) == {"e", "f"}


def test_aliasing_screen_zero_and_duplicate_columns(monkeypatch):
    M = pd.DataFrame({"Intercept": 1.0, "x": np.arange(6.0), "zero": 0.0, "x2": np.arange(6.0)})
    assert design.aliased_columns(M) == _qr_only(monkeypatch, M)
    assert design.aliased_columns(M) == {"zero": "all zero", "x2": "duplicate of x"}


def test_numeric_design_matches_formulaic_bit_for_bit():
    """A saturated product of numeric columns: the cached numeric path (which reuses each
    product's left part) gives formulaic's matrix exactly."""
    rng = np.random.default_rng(0)
    cells = pd.DataFrame(
        {f"x{j}": rng.integers(-3, 4, 40) for j in range(1, 5)} | {"w": rng.normal(size=40)}
    )
    formula = "x1 * x2 * x3 * x4 * w"
    design._NUMERIC_SPECS.clear()
    first, _ = design.design_spec(formula, cells)  # formulaic; caches the spec
    values = {c: cells[c].to_numpy() for c in cells.columns}
    mat, names, _ = design.numeric_design(formula, values)
    assert list(names) == list(first.columns)
    assert np.array_equal(mat, first.to_numpy())
    again, _ = design.design_spec(formula, cells)
    pd.testing.assert_frame_equal(again, first, check_exact=True)


def test_value_codes_count_distinct_values():
    df = pd.DataFrame(
        {
            "i8": np.array([-128, 127, 5, 5, -128], dtype=np.int8),
            "u64": np.array([2**64 - 1, 0, 0, 7, 2**64 - 1], dtype=np.uint64),
            "wide": np.array([0, 10**15, 0, -(10**15), 3]),
            "b": [True, False, True, True, False],
            "s": ["a", "b", "a", "c", "c"],
        }
    )
    cols = Columns(df)
    for c in df.columns:
        codes, n = cols.value_codes(c)
        assert n == df[c].nunique()
        ref = pd.factorize(df[c])[0]  # the same partition of the rows
        assert np.array_equal(pd.factorize(codes)[0], ref)


@pytest.mark.parametrize("label", ["string", "int", "object"])
def test_labelled_cells_equal_the_frames_way(monkeypatch, label):
    """Cells by a label column, from arrays, equal the drop_duplicates/sort way."""
    rng = np.random.default_rng(1)
    n = 300
    df = pd.DataFrame({"x1": rng.integers(0, 3, n), "x2": rng.integers(0, 2, n)})
    key = df["x1"] * 10 + df["x2"] + 7
    df["g"] = {
        "string": key.astype(str).astype("str"),
        "int": key,
        "object": key.astype(str).astype(object),
    }[label]
    df = df.sample(frac=1, random_state=2).reset_index(drop=True)
    fast = api._cells_of(Columns(df), "g", ["x1", "x2"])
    with monkeypatch.context() as m:
        m.setattr(api, "_labelled_cells", lambda *a: None)
        slow = api._cells_of(Columns(df), "g", ["x1", "x2"])
    pd.testing.assert_frame_equal(fast[0], slow[0], check_exact=True)
    assert fast[0].index.dtype == slow[0].index.dtype
    assert np.array_equal(fast[1], slow[1]) and fast[2:] == slow[2:]


def test_labelled_cells_defer_to_the_frames_way_for_the_error():
    df = pd.DataFrame({"g": ["a", "a", "b", "b"], "x1": [0, 1, 0, 0]})
    with pytest.raises(api.DesignError, match=r"not constant within 'g': groups \['a'\]"):
        api._cells_of(Columns(df), "g", ["x1"])


# ------------------------------------------------------------ per-fit overheads
def test_lambda_data_keys_built_on_first_use_as_before():
    """``LambdaData.keys`` is built when first read, equal to the frame built at once; group
    keys matched by label are matched at once, so that a label they lack still raises."""
    from hetfx.models.lambda_model import _keys_frame, prepare_lambda_data

    labels = pd.Index(["a", "b", "c"], name="cell")
    cells = pd.DataFrame({"x1": [0, 1, 1], "x2": [1, 0, 1]}, index=labels)
    Z = pd.DataFrame({"Intercept": 1.0}, index=labels)
    y, t, X, g = np.arange(6.0), np.tile([0.0, 1.0], 3), np.ones((6, 1)), np.repeat([0, 1, 2], 2)
    d = prepare_lambda_data(y, t, X, g, Z, cells, "cell")
    assert d._keys is None  # not built yet
    pd.testing.assert_frame_equal(d.keys, _keys_frame(cells, Z.index, "cell"))
    assert d.keys.columns.tolist() == ["cell", "x1", "x2"] and d.keys["cell"].tolist() == list(
        "abc"
    )
    no_keys = prepare_lambda_data(y, t, X, g, Z, None, "cell")
    assert no_keys.keys["cell"].tolist() == list("abc")
    with pytest.raises(KeyError):
        prepare_lambda_data(y, t, X, g, Z, cells.set_axis(["a", "b", "z"]), "cell")


@pytest.mark.parametrize("kind", ["half_student_t", "half_normal"])
def test_scale_prior_value_is_the_log_density_of_logpdf_log(kind):
    """The log prior without its derivative is the same array; the cached constant is the
    half-Student-t's normalising constant as written out."""
    from scipy.special import gammaln

    from hetfx.models.gaussian import ScalePrior

    p = ScalePrior(kind, 1.7, 4.0)
    u = np.linspace(-30.0, 8.0, 77)
    assert np.array_equal(p.logpdf_log(u)[0], p.logpdf_log_value(u))
    if kind == "half_student_t":
        nu, s = 4.0, 1.7
        c = (
            np.log(2)
            + gammaln((nu + 1) / 2)
            - gammaln(nu / 2)
            - 0.5 * np.log(nu * np.pi)
            - np.log(s)
        )
        x = np.exp(u)
        assert np.array_equal(p.logpdf(x), c - (nu + 1) / 2 * np.log1p((x / s) ** 2 / nu))


@pytest.mark.parametrize(
    "probs", [(), (0.5,), (0.5, 0.05, 0.95, 0.025), (0.5, 0.5), (0.1, 0.9, 0.1)]
)
def test_mixture_frame_equals_the_frame_of_its_columns(probs):
    """The summary frame built from one stacked array is the frame of the dict of columns
    (a probability asked for twice: one column)."""
    from hetfx.inference import mixture_moments, mixture_quantiles, quantile_name
    from hetfx.models.exact import mixture_frame

    rng = np.random.default_rng(5)
    w = rng.random(20)
    w /= w.sum()
    m, s = rng.normal(size=(20, 6)), rng.random((20, 6)) + 0.1
    mean, sd = mixture_moments(w, m, s)
    columns = {"mean": mean, "sd": sd}
    if probs:
        for p, q in zip(probs, mixture_quantiles(w, m, s, probs), strict=True):
            columns[quantile_name(p)] = q
    got = mixture_frame(w, m, s, probs)
    pd.testing.assert_frame_equal(got, pd.DataFrame(columns), check_exact=True)
    assert got.columns.dtype == pd.DataFrame(columns).columns.dtype


@pytest.mark.parametrize(
    "cells",
    [
        pd.DataFrame({"x1": [0, 1], "x2": [1, 1]}),
        pd.DataFrame({"x1": [0.5, 1.0], "x2": [1.0, 2.0]}),
        pd.DataFrame({"x1": [0, 1], "x2": [True, False]}),
        pd.DataFrame({"x1": ["a", "b"], "x2": [1, 2]}),
        pd.DataFrame({"x1": pd.Categorical(["a", "b"]), "x2": pd.Categorical(["c", "c"])}),
        pd.DataFrame({"x1": np.array(["a", "b"], dtype=object)}, dtype=object),
    ],
)
def test_group_effect_keys_copy_the_cells_columns(cells):
    """The cells' columns in the group-effects frame: the same frame as from copies of each
    column, not sharing memory with the cells."""
    from hetfx.results import _frame_columns

    got = _frame_columns(cells)
    assert list(got) == list(cells.columns)
    ref = {m: cells[m].array.copy() for m in cells.columns}
    pd.testing.assert_frame_equal(pd.DataFrame(got), pd.DataFrame(ref), check_exact=True)
    for m, v in got.items():
        assert not np.shares_memory(np.asarray(v), np.asarray(cells[m].array))


@pytest.mark.parametrize(
    "s",
    [
        pd.Series(["a", None, "b"]),
        pd.Series(["a", np.nan, "b"], dtype=object),
        pd.Series(pd.Categorical(["a", None, "a"])),
        pd.Series([1, None, 3], dtype="Int64"),
        pd.Series([1.0, np.inf, None], dtype="Float64"),
        pd.Series([True, None, False], dtype="boolean"),
        pd.Series([1.0, -np.inf, np.nan]),
    ],
)
def test_bad_values_are_the_missing_and_infinite_rows(s):
    from hetfx.validation import bad_values

    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    ref = s.isna().to_numpy()
    if numeric:
        ref = ref | ~np.isfinite(s.to_numpy(dtype=float, na_value=np.nan))
    assert np.array_equal(bad_values(s), ref)


def test_single_threaded_blas_inside_a_one_thread_limit():
    """Where BLAS already runs one thread the context sets nothing, and the counts stay 1
    inside it and after it; the outer limit restores them as before."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from hetfx.models.gaussian import single_threaded_blas

    def counts():
        return {
            i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
        }

    before = counts()
    with threadpool_limits(limits=1, user_api="blas"):
        with single_threaded_blas():
            assert set(counts().values()) == {1}
        assert set(counts().values()) == {1}
    assert counts() == before
