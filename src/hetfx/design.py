"""Design matrices and groups from data frames (R-style coding, brms-style names).

These helpers are shared by the data-frame front end (:mod:`hetfx.api`) and the paper's own
study definitions (:mod:`hetfx.paper.studies`).

* :func:`r_name` turns formulaic's ``region[T.Asia]`` into R's ``regionAsia``.
* :func:`design` builds a model matrix with R's default treatment coding (levels sorted, the
  first the reference; a pandas ``Categorical`` keeps its own level order).
* :func:`groups` turns a label column into integer codes that pair with one row of keys per
  group, matched by label.
* :func:`aliased_columns` names the columns of a design that are zero, duplicated, or linear
  combinations of the columns before them.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"regime": ["dem", "aut", "dem"], "stakes": [1, 0, 0]})
>>> design("regime + stakes", df).columns.tolist()
['Intercept', 'regimedem', 'stakes']
>>> r_name("regime[T.dem]:stakes")
'regimedem:stakes'
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from formulaic import model_matrix

__all__ = [
    "aliased_columns",
    "aliased_values",
    "design",
    "design_spec",
    "groups",
    "labels_as_objects",
    "r_name",
]


def r_name(term: str) -> str:
    """Column name of formulaic in R's spelling (``var[T.level]`` -> ``varlevel``).

    Parameters
    ----------
    term : str
        A formulaic column name, components joined by ``:``.

    Returns
    -------
    str

    Examples
    --------
    >>> r_name("region_txt[T.Asia]")
    'region_txtAsia'
    """
    parts = []
    for p in term.split(":"):
        if "[T." in p:
            var, level = p.split("[T.", 1)
            p = var + level.rstrip("]")
        parts.append(p)
    return ":".join(parts)


def labels_as_objects(data: pd.DataFrame) -> pd.DataFrame:
    """pandas' ``string`` columns as object columns: formulaic codes an object column as a
    factor but takes a ``string`` one for numbers."""
    strings = [c for c in data.columns if isinstance(data[c].dtype, pd.StringDtype)]
    if not strings:
        return data
    return data.assign(**{c: data[c].astype(object) for c in strings})


#: formulaic's specs of formulas on plain numeric columns, by formula, column names and
#: dtypes: such a spec holds nothing of the data's values, so one serves every data set of
#: that shape (:func:`design_spec` then builds the matrix with numpy, as formulaic does).
_NUMERIC_SPECS: dict[tuple, object] = {}


def _numeric_key(formula: str, data: pd.DataFrame, dtypes: list | None = None) -> tuple | None:
    """The key of :data:`_NUMERIC_SPECS` (None: a column is not a plain finite number);
    ``dtypes``: ``data``'s, where read already."""
    names = data.columns.tolist()
    if not data.columns.is_unique or not all(isinstance(c, str) for c in names):
        return None
    dtypes = data.dtypes.tolist() if dtypes is None else dtypes
    if not all(t.kind in "iuf" and isinstance(t, np.dtype) for t in dtypes):
        return None  # booleans, categories, labels, extension types: formulaic's coding
    return formula, tuple(names), tuple(t.str for t in dtypes)


def _numeric_matrix(spec, values: Mapping[str, np.ndarray], n: int) -> np.ndarray | None:
    """The matrix of a plain numeric spec as formulaic builds it: the intercept, each
    column, each product of columns (multiplied left to right in the native dtype), as
    floats. None when a column is anything else (a transform, a constant) or a value is
    not finite (formulaic drops rows with missing values)."""
    out = np.empty((n, len(spec.column_names)))
    products: dict[tuple[str, ...], np.ndarray] = {}  # each product's left part, made once
    for j, name in enumerate(spec.column_names):
        if name == "Intercept":
            out[:, j] = 1.0
            continue
        parts = tuple(name.split(":"))
        if any(p not in values for p in parts):
            return None
        col = products.get(parts[:-1]) if len(parts) > 1 else None
        if col is None:
            col = values[parts[0]]
            for p in parts[1:-1]:
                col = np.multiply(col, values[p])
        if len(parts) > 1:
            products[parts[:-1]] = col
            col = np.multiply(col, values[parts[-1]])
        products[parts] = col
        out[:, j] = col
    return out if np.isfinite(out).all() else None


def _frame_values(data: pd.DataFrame, dtypes: list | None = None) -> dict[str, np.ndarray]:
    """The columns of a frame as arrays (of one array where they share a dtype);
    ``dtypes``: ``data``'s, where read already."""
    names = data.columns.tolist()
    if len(set(data.dtypes if dtypes is None else dtypes)) == 1:
        block = data.to_numpy()
        return {c: block[:, j] for j, c in enumerate(names)}
    return {c: data[c].to_numpy() for c in names}


def numeric_design(formula: str, columns: Mapping[str, np.ndarray]):
    """:func:`design_spec` of plain numeric columns given as arrays, from the spec cached
    for that formula, names and dtypes: ``(matrix, R-style names, spec)``, or None (no
    spec cached, not plain numbers, or :func:`design_spec` would go to formulaic). The
    names (a :class:`pandas.Index`) are shared, as every index."""
    if not columns or not all(isinstance(c, str) for c in columns):
        return None
    dtypes = [v.dtype for v in columns.values()]
    if not all(isinstance(t, np.dtype) and t.kind in "iuf" for t in dtypes):
        return None
    spec = _NUMERIC_SPECS.get((formula, tuple(columns), tuple(t.str for t in dtypes)))
    if spec is None:
        return None
    mat = _numeric_matrix(spec, columns, len(next(iter(columns.values()))))
    if mat is None:
        return None
    return mat, column_index(tuple(_r_names(tuple(spec.column_names)))), spec


def _cached_numeric(formula: str, data: pd.DataFrame):
    """(matrix, spec) from a cached spec of plain numeric columns, or None."""
    # the dtypes read once (a frame's ``dtypes`` is a Series: 18 us each, measured)
    dtypes = data.dtypes.tolist()
    key = _numeric_key(formula, data, dtypes)
    spec = _NUMERIC_SPECS.get(key) if key is not None else None
    if spec is None:
        return None
    mat = _numeric_matrix(spec, _frame_values(data, dtypes), len(data))
    if mat is None:
        return None
    columns = column_index(tuple(_r_names(tuple(spec.column_names))))
    return pd.DataFrame(mat, columns=columns, index=data.index), spec


def column_index(names: tuple[str, ...]) -> pd.Index:
    """``pd.Index(list(names))``, made once per tuple of names (making one of strings costs
    as much as a small frame): a view of the cached index, so that frames share its values
    and its hash engine (built once) but not its ``name``, which a caller may set."""
    return _column_index(names).view()


@functools.lru_cache(maxsize=256)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(names))


@functools.lru_cache(maxsize=256)
def _r_names(columns: tuple[str, ...]) -> list[str]:
    return [r_name(c) for c in columns]


def design_spec(formula: str, data: pd.DataFrame):
    """Model matrix and its formulaic spec (to rebuild the same coding on new rows).

    Returns
    -------
    (pandas.DataFrame, formulaic.ModelSpec)
        The matrix (float, R-style names, index of ``data``) and the spec.
    """
    cached = _cached_numeric(formula, data)
    if cached is not None:
        return cached
    mm = model_matrix(formula, labels_as_objects(data))
    key = _numeric_key(formula, data)
    if key is not None and len(mm) == len(data):
        if len(_NUMERIC_SPECS) >= 256:
            _NUMERIC_SPECS.clear()
        _NUMERIC_SPECS[key] = mm.model_spec
    names = [r_name(c) for c in mm.columns]
    return (
        pd.DataFrame(np.asarray(mm, dtype=float), columns=names, index=data.index),
        mm.model_spec,
    )


def design(formula: str, data: pd.DataFrame) -> pd.DataFrame:
    """Model matrix with R's treatment coding and brms-style column names.

    Parameters
    ----------
    formula : str
        Right-hand side, e.g. ``"1 + age + region"``.
    data : pandas.DataFrame
        Variables of the formula.

    Returns
    -------
    pandas.DataFrame
        Float columns named as R names them, index of ``data``.
    """
    return design_spec(formula, data)[0]


def groups(df: pd.DataFrame, label: str, keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Integer codes (groups sorted by label) and one row of keys per group.

    Parameters
    ----------
    df : pandas.DataFrame
        Observations.
    label : str
        Column holding the group label.
    keys : sequence of str
        Columns constant within a group.

    Returns
    -------
    codes : numpy.ndarray
        ``(n,)`` int64 codes; ``codes[i]`` is the row of ``keys_frame`` of observation ``i``.
    keys_frame : pandas.DataFrame
        Indexed by label (sorted), one column per key.

    Raises
    ------
    ValueError
        If a key is not constant within a group (the groups are named).
    """
    keys = list(keys)
    keys_frame = df[[label, *keys]].drop_duplicates().sort_values(label)
    dup = keys_frame[label].duplicated(keep=False)
    if dup.any():
        bad = sorted(map(str, keys_frame.loc[dup, label].unique()))
        raise ValueError(
            f"keys {keys} are not constant within {label}: groups {bad[:10]}"
            + (" ..." if len(bad) > 10 else "")
        )
    keys_frame = keys_frame.set_index(label)
    codes = pd.Categorical(df[label], categories=keys_frame.index).codes.astype(np.int64)
    return codes, keys_frame


def aliased_columns(M: pd.DataFrame, tol: float = 1e-8) -> dict[str, str]:
    """Columns of a design that add nothing: zero, duplicated, or collinear.

    Columns are examined left to right (a pivoted QR in the given order); a column whose
    residual after projection on the columns kept before it is below ``tol`` times its norm
    is reported, with the reason.

    Parameters
    ----------
    M : pandas.DataFrame
        Design (n x p).
    tol : float
        Relative tolerance.

    Returns
    -------
    dict
        Maps each offending column name to ``"all zero"``, ``"duplicate of <name>"``,
        ``"duplicated name"`` or ``"linear combination of <names>"``.

    Examples
    --------
    >>> import pandas as pd
    >>> M = pd.DataFrame({"Intercept": 1.0, "a": [0, 1, 0, 1.], "b": [1, 0, 1, 0.]})
    >>> aliased_columns(M)
    {'b': 'linear combination of Intercept, a'}
    """
    return aliased_values(M.to_numpy(dtype=float), [str(c) for c in M.columns], tol)


def aliased_values(A: np.ndarray, names: Sequence[str], tol: float = 1e-8) -> dict[str, str]:
    """:func:`aliased_columns` of a matrix ``A`` (n x p) whose columns are ``names``."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for nm in names:
        if nm in seen:
            out[nm] = "duplicated name"
        seen.add(nm)
    if A.shape[1] == 0:
        return out
    if _clearly_independent(A, margin=max(1e-4, 1e4 * tol)):
        return out
    norms = np.linalg.norm(A, axis=0)
    # |R_jj| of an unpivoted QR is the distance of column j from the span of the columns
    # before it, whether or not those are themselves dependent
    R = np.linalg.qr(A, mode="r")
    resid = np.zeros(A.shape[1])
    k = min(R.shape)
    resid[:k] = np.abs(np.diag(R)[:k])
    kept: list[int] = []
    for j in range(A.shape[1]):
        if norms[j] == 0:
            out.setdefault(names[j], "all zero")
            continue
        if resid[j] >= tol * norms[j]:
            kept.append(j)
            continue
        same = [i for i in kept if np.array_equal(A[:, i], A[:, j])]
        if same:
            out.setdefault(names[j], f"duplicate of {names[same[0]]}")
            continue
        coef, *_ = np.linalg.lstsq(A[:, kept], A[:, j], rcond=None)
        used = [names[i] for i, c in zip(kept, coef, strict=True) if abs(c) > 1e-8]
        out.setdefault(names[j], "linear combination of " + ", ".join(used))
    return out


def _clearly_independent(A: np.ndarray, margin: float = 1e-4) -> bool:
    """Whether every column of ``A`` is far from the span of those before it: each
    ``|R_jj|`` (the Cholesky factor of ``A'A``, the R of a QR in exact arithmetic) at least
    ``margin`` times its column's norm. Rounding moves the Gram matrix's ``R_jj**2`` by about
    ``p * eps * norm**2`` (~1e-15 of it), so where this holds the QR's own test (``|R_jj| >=
    tol * norm``, tol 1e-8) passes for every column too; otherwise (or where the Cholesky
    fails) the QR decides. A Gram matrix costs a third of a QR of a few thousand rows."""
    gram = A.T @ A
    norms = np.sqrt(np.diag(gram))
    if not np.all(norms > 0) or not np.all(np.isfinite(gram)):
        return False
    try:
        L = np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.diag(L) >= margin * norms))
