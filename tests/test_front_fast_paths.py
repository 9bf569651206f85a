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
