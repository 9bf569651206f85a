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


# ------------------------------------------------- round 2: the fits' own fast paths
def _flood_fill_reference(lat, evaluate, drop):
    """The flood fill as it was: the unique codes of all the candidates, then the known
    ones taken out."""
    from hetfx.models.exact import _member

    idx = lat.box()
    lw = evaluate(idx, -np.inf)
    known = np.sort(lat.encode(idx))
    top = float(lw.max())
    for _ in range(10_000):
        above = idx[lw > top - drop]
        if not len(above):
            break
        cand = (above[:, None, :] + lat.reach[None]).reshape(-1, lat.d)
        cand = cand[lat.inside(cand)]
        code, first = np.unique(lat.encode(cand), return_index=True)
        new = ~_member(code, known)
        if not new.any():
            break
        idx = cand[first[new]]
        lw = evaluate(idx, top)
        top = max(top, float(lw.max()))
        known = np.concatenate([known, code[new]])
        known.sort()
    return known


@pytest.mark.parametrize("d,hermite,layers", [(1, None, 1), (2, None, 1), (3, 3, 1), (3, 3, 2)])
def test_flood_fill_evaluates_the_same_nodes_in_the_same_order(d, hermite, layers):
    """Sorting only the unevaluated candidates evaluates the nodes the unique codes of all
    the candidates gave, batch by batch, in the same order (a skewed, correlated density
    with a floor on the scales, so the fill is stopped by both the drop and the floor)."""
    from hetfx.models.exact import _flood_fill, _Lattice

    rng = np.random.default_rng(d + 10 * layers)
    mode, sd = rng.normal(size=d), 0.3 + rng.random(d)
    C = np.eye(d) + 0.4 * (np.ones((d, d)) - np.eye(d))
    P = np.linalg.inv(C * np.outer(sd, sd))
    min_log = [None] + [float(mode[j] - 2 * sd[j]) for j in range(1, d)]
    lat = _Lattice(mode, sd, sd, 1.5, 4.0, 0.35, min_log, hermite, layers)

    def recorder(batches):
        def evaluate(idx, top):
            batches.append(idx.copy())
            u = lat.to_u(idx)[0] - mode
            return -0.5 * np.einsum("ni,ij,nj->n", u, P, u) + 0.3 * u[:, 0] ** 3 / sd[0] ** 3

        return evaluate

    new, ref = [], []
    known = _flood_fill(lat, recorder(new), 25.0)
    known_ref = _flood_fill_reference(lat, recorder(ref), 25.0)
    assert np.array_equal(known, known_ref)
    assert len(new) == len(ref) > 2
    assert all(np.array_equal(a, b) for a, b in zip(new, ref, strict=True))


def test_shell_from_codes_matches_encoded_neighbours():
    """The nodes with an unevaluated face neighbour, from the codes, are those the encoded
    neighbours give: nodes in and out of the bounds, bounded and unbounded axes, and nodes
    next to the end of the codes' range (where the neighbours are encoded, and raise)."""
    from hetfx.models.exact import _Lattice, _member, _unevaluated_neighbour

    def reference(lat, keys, known):
        nb = (keys[:, None, :] + lat.steps[None]).reshape(-1, lat.d)
        ok = lat.inside(nb)
        missing = np.zeros(len(nb), dtype=bool)
        missing[ok] = ~_member(lat.encode(nb[ok]), known)
        return missing.reshape(len(keys), 2 * lat.d).any(axis=1)

    rng = np.random.default_rng(1)
    for trial in range(300):
        d = int(rng.integers(1, 5))
        lat = _Lattice.__new__(_Lattice)
        lat.d, lat.bits = d, max(1, 62 // d)
        lat.off = 1 << (lat.bits - 1)
        lat.steps = np.vstack([np.eye(d, dtype=int), -np.eye(d, dtype=int)])
        lat.floor = np.where(rng.random(d) < 0.5, np.iinfo(int).min, rng.integers(-5, 0, d))
        lat.ceil = np.where(rng.random(d) < 0.5, np.iinfo(int).max, rng.integers(0, 5, d))
        keys = np.unique(rng.integers(-6, 7, (int(rng.integers(0, 200)), d)), axis=0)
        if trial % 10 == 0 and len(keys):  # next to the end of the range
            keys[-1, -1] = lat.off - 1 if trial % 20 else lat.off - 2
        extra = rng.integers(-7, 8, (50, d))
        known = np.sort(lat.encode(np.unique(np.vstack([keys, extra]), axis=0)))
        codes = lat.encode(keys)
        order = np.argsort(codes)
        keys, codes = keys[order], codes[order]
        try:
            want = reference(lat, keys, known)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="out of range"):
                _unevaluated_neighbour(lat, keys, codes, known)
            continue
        assert np.array_equal(_unevaluated_neighbour(lat, keys, codes, known), want), trial


def test_encode_range_check_at_the_ends():
    from hetfx.models.exact import _Lattice

    lat = _Lattice.__new__(_Lattice)
    lat.d, lat.bits = 2, 31
    lat.off = 1 << 30
    assert len(lat.encode(np.array([[lat.off - 1, -(lat.off - 1)]]))) == 1
    assert len(lat.encode(np.zeros((0, 2), dtype=int))) == 0
    for bad in ([lat.off, 0], [0, -lat.off]):
        with pytest.raises(RuntimeError, match="out of range"):
            lat.encode(np.array([bad]))


def test_without_intercept_matches_positional_selection():
    """The names without the intercept (from the cache where they are plain strings) equal
    ``names[keep]``: dtype, name, order; and the values' columns too."""
    A = np.arange(12.0).reshape(3, 4)
    for names in (
        pd.Index(["Intercept", "z1", "z2", "z3"]),
        pd.Index(["z1", "Intercept", "z2", "z3"], name="term"),
        pd.Index(np.array(["Intercept", "a", "b", "c"], dtype=object), dtype=object),
        pd.Index(["z1", "z2", "z3", "z4"]),
    ):
        keep = [j for j, c in enumerate(names) if c != "Intercept"]
        values, got = api._without_intercept(A, names)
        assert got.equals(names[keep]) and got.dtype == names[keep].dtype
        assert got.name == names.name
        assert np.array_equal(values, A[:, keep])


def test_arm_codes_partition_as_unique():
    from hetfx.validation import _arm_codes

    for t in (
        np.array([0.0, 1.0, 1.0, 0.0]),
        np.array([1.0, 1.0]),
        np.array([-0.0, 0.0, 1.0]),
        np.array([0.0, 0.5, 1.0, 0.5]),
        np.array([2.0, 3.0, 2.0]),
        np.array([0, 1, 1]),
    ):
        ref = np.unique(t, return_inverse=True)[1].reshape(-1)
        got = _arm_codes(t)
        assert np.array_equal(pd.factorize(got)[0], pd.factorize(ref)[0])


def test_label_count_and_number_columns_as_pandas_says():
    from hetfx.models.lambda_model import _n_unique
    from hetfx.validation import _is_number_column

    for ix in (
        pd.Index(["a", "b", "a"]),
        pd.Index(["a", None, None]),
        pd.Index([1.0, np.nan, np.nan]),
        pd.Index([1, True]),
        pd.Index(pd.Categorical(["a", "b", "a"])),
        pd.Index([pd.NA, pd.NA, "a"], dtype="string"),
        pd.MultiIndex.from_tuples([(1, "a"), (1, "a"), (2, "a")]),
        pd.Index(pd.array([1, None, None], dtype="Int64")),
        pd.Index([0.0, -0.0]),
    ):
        assert _n_unique(ix) == len(ix.unique())
    for dt in (np.int8, np.uint64, np.float32, np.complex128, bool, object, "M8[ns]", "m8[ns]"):
        s = pd.Series(np.zeros(2, dtype=np.dtype(dt)))
        ref = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        assert _is_number_column(s) == ref and _is_number_column(s.dtype) == ref
    for s in (pd.Series([1, None], dtype="Int64"), pd.Series(["a"], dtype="string")):
        ref = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        assert _is_number_column(s) == ref


def test_cached_column_names_are_not_shared_by_name():
    """Frames built on the cached column names share their values, not their ``name``: a
    user naming one frame's columns does not name the next frame's."""
    first = design.column_index(("a", "b"))
    first.name = "stat"
    again = design.column_index(("a", "b"))
    assert again.name is None and again.equals(first) and again.dtype == first.dtype


@pytest.mark.parametrize("label", ["string", "int"])
def test_labelled_cells_of_mixed_dtypes_equal_the_frames_way(monkeypatch, label):
    """Modifiers of two dtypes (a frame from a dict of columns, indexed as it is built)."""
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"x1": rng.integers(0, 3, 200), "x2": rng.integers(0, 2, 200) * 0.5})
    key = df["x1"] * 10 + (2 * df["x2"]).astype(int) + 3
    df["g"] = key.astype(str).astype("str") if label == "string" else key
    fast = api._cells_of(Columns(df), "g", ["x1", "x2"])
    with monkeypatch.context() as m:
        m.setattr(api, "_labelled_cells", lambda *a: None)
        slow = api._cells_of(Columns(df), "g", ["x1", "x2"])
    pd.testing.assert_frame_equal(fast[0], slow[0], check_exact=True)
    assert fast[0].index.dtype == slow[0].index.dtype and fast[0].index.name == "g"
    assert np.array_equal(fast[1], slow[1]) and fast[2:] == slow[2:]
