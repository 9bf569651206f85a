"""Checks at the front door of :func:`hetfx.fit`, :func:`hetfx.fit_ols` and
:func:`hetfx.fit_varying_slopes`.

Each public fitting function calls one ``check_*`` function here on its arguments before any
design is built or any engine runs. A bad input ends in one of the library's documented
errors, whose message names the argument, column or cell (by its modifiers' values, e.g.
``regime=democracy, stakes=low``) and says how to fix it:

* :class:`DesignError` (a ``ValueError``): the data cannot define the model;
* ``ValueError``: an argument is out of range (``chains=0``, ``level=1.5``);
* ``TypeError``: an argument has the wrong type (``chains=2.5``, ``seed="abc"``, an unknown
  engine option);
* ``KeyError``: a named column is missing.

What :func:`hetfx.fit` and :func:`hetfx.fit_ols` refuse, they both refuse (with the same
message):

* an empty frame, a used column name held by several columns;
* a treatment with two values other than 0/1 (e.g. coded 1/2): recode it;
* the treatment among the controls; a modifier among the controls (when the modifiers'
  main effects are in the outcome equation, as by default);
* a modifier that takes a single value (it cannot modify the effect);
* under the default effect formula, a numeric modifier with more than two values (region
  coded 1-4): its cells are its values, but a formula would take it as one linear term;
* an outcome that is constant within every cell and arm (nothing left to estimate the noise);
* too few rows: the unpooled model (a baseline and an effect per cell, plus the controls)
  must leave at least one residual degree of freedom;
* a treatment that does not vary within a cell.

:func:`hetfx.fit_ols` compares treated with control rows and so also needs a 0/1 treatment
(:func:`hetfx.fit`, Gaussian family, accepts a numeric dose with more than two values) and an
effect formula in the modifiers (:func:`hetfx.fit` takes ``effect="1"``, one common mean).
:func:`hetfx.fit` refuses a saturated effect (or main effects) where some combination of
the modifiers never occurs, which :func:`hetfx.fit_ols` fits as one effect per observed cell.

Columns must hold numbers, booleans or labels (strings, categoricals; not dates, not a mix
of strings and numbers), with magnitudes between 1e-100 and 1e100. ``chains >= 1`` (one
chain: R-hat is reported as unavailable), ``draws >= 4``, ``tune >= 1``, a non-negative
integer ``seed``, ``target_accept`` and interval ``level`` in (0, 1).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DesignError",
    "check_fit",
    "check_fit_ols",
    "check_fit_varying_slopes",
    "check_level",
    "cell_name",
]

#: Engine functions whose keyword options each front-end function passes on (for
#: :func:`hetfx.fit`, each family's :meth:`~hetfx.families.Family.engine_function`), and the
#: arguments the front end sets itself (so they are not options a user may pass).
ENGINE_FUNCTIONS = {
    ("fit_varying_slopes", None): "hetfx.models.varying_slopes:fit_varying_slopes",
}
SET_BY_FRONT_END = {
    "group_keys",
    "group_name",
    "engine",
    "gamma_sd",
    "beta_sd",
    "sigma_prior",
    "sigma_theta_prior",
    "chains",
    "draws",
    "tune",
    "target_accept",
    "seed",
    "weights",
    "profiles",
    "contrast",
    "b_sd",
    "intercept_prior",
    "sd_prior",
    "baselines",  # the Gaussian front end sets these from baselines= and priors=
    "sigma_alpha_prior",
}
#: Further arguments a front-end function sets itself (:func:`hetfx.fit` sets the LKJ shape
#: from ``priors.lkj_eta`` and the baselines' regressor from ``weights=``).
SET_BY_CALLER = {"fit": {"lkj_eta", "base"}}
#: The sampler's settings, arguments of the front-end functions themselves (a misspelling
#: of one of them arrives as an unknown engine option).
SAMPLER_ARGUMENTS = {"seed", "chains", "draws", "tune", "target_accept"}
#: Largest seed + 1 (the NUTS engines take an unsigned 64-bit seed; numpy any).
SEED_LIMIT = 2**63
_DEFAULT_EFFECTS = (None, "additive", "saturated")


class DesignError(ValueError):
    """The data or the formulas cannot define the model (the message says what to change)."""


# ------------------------------------------------------------------------ arguments
def _plain(v):
    """A numpy scalar as the Python value it holds (for messages)."""
    return v.item() if isinstance(v, np.generic) else v


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _integer(name: str, v, low: int, why: str = "") -> None:
    if not _is_int(v):
        raise TypeError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    if v < low:
        raise ValueError(f"{name} must be at least {low}{why}, got {v}")


def check_sampler(args: Mapping[str, Any], *, exact: bool = False) -> None:
    """``chains`` >= 1, ``draws`` >= 4 (or 0 where ``exact``: the exact engine's summaries
    need no draws) and ``tune`` >= 1 ints, ``seed`` a non-negative int and
    ``target_accept`` in (0, 1)."""
    _integer("chains", args.get("chains", 1), 1)
    draws = args.get("draws", 4)
    if not (exact and _is_int(draws) and draws == 0):
        why = (
            " (R-hat and ESS need 4 draws per chain; the Gaussian quadrature engine also "
            "takes 0: exact summaries only)"
        )
        _integer("draws", draws, 4, why if exact else " (R-hat and ESS need 4 draws per chain)")
    _integer("tune", args.get("tune", 1), 1, " (NUTS needs a warm-up; exact engines ignore it)")
    seed = args.get("seed", 0)
    if not _is_int(seed):
        raise TypeError(
            f"seed must be a non-negative integer such as 12345, got {seed!r} "
            f"({type(seed).__name__}); a fit is reproduced by its seed"
        )
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must lie in [0, 2**63), got {seed}")
    ta = args.get("target_accept", 0.8)
    if not isinstance(ta, numbers.Real) or isinstance(ta, bool) or not 0 < ta < 1:
        raise ValueError(f"target_accept must be a number in (0, 1), got {ta!r}")


def check_level(level) -> None:
    """``level`` (probability of an interval) must be a number in (0, 1)."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


def engine_option_names(
    caller: str, family: str | None, engine: str | None = None
) -> list[str] | None:
    """Options a user may pass on to the engine of ``caller`` (None: not checkable)."""
    if caller == "fit":
        from hetfx.families import get_family

        target = get_family(family).engine_function(engine)
    else:
        target = ENGINE_FUNCTIONS.get((caller, family))
    if target is None:
        return None
    module, name = target.split(":")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [
        n
        for n, p in params.items()
        if p.default is not inspect.Parameter.empty
        and n not in SET_BY_FRONT_END
        and n not in SET_BY_CALLER.get(caller, ())
    ]


def _own_arguments(caller: str) -> list[str]:
    """The named arguments of ``hetfx.<caller>`` (a misspelling of one of them, e.g.
    ``baseline=``, arrives as an unknown engine option)."""
    function = getattr(importlib.import_module("hetfx.api"), caller, None)
    if function is None:
        return []
    params = inspect.signature(function).parameters.values()
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]


def check_engine_options(
    caller: str, family: str | None, options: Mapping[str, Any], engine: str | None = None
) -> None:
    """Raise ``TypeError`` naming an engine option the engine does not take."""
    if not options:
        return
    valid = engine_option_names(caller, family, engine)
    if valid is None:
        return
    unknown = [k for k in options if k not in valid]
    if unknown:
        where = f"hetfx.{caller}" + (f"(family={family!r})" if family else "")
        known = [*valid, *sorted(SAMPLER_ARGUMENTS), *_own_arguments(caller)]
        close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"did you mean {m[0]!r} for {k!r}?" for k, m in close.items() if m)
        raise TypeError(
            f"{where} got unknown engine option(s) {unknown}"
            + (f" ({hint})" if hint else "")
            + "; the engine options are "
            f"{valid} (priors go in priors=hetfx.Priors(...), the sampler's settings in "
            "seed=, chains=, draws=, tune=, target_accept=)"
        )


# ---------------------------------------------------------------------------- names
def _column_name(name: str, v) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a column name (str), got {v!r}")
    return v


def _name_list(name: str, v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, Sequence | pd.Index | np.ndarray):
        raise TypeError(f"{name} must be a column name or a list of them, got {v!r}")
    bad = [x for x in v if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{name} must be column names (str), got {bad[:3]}")
    if len(set(v)) != len(v):
        raise DesignError(f"{name} name a column twice: {list(v)}")
    return list(v)


def formula_variables(what: str, formula) -> list[str]:
    """Variables of a right-hand side (``DesignError`` if formulaic cannot read it)."""
    from formulaic import Formula

    if not isinstance(formula, str):
        raise TypeError(f"{what} must be a formula string, got {formula!r}")
    try:
        return sorted(Formula(formula).required_variables)
    except Exception as e:  # formulaic's errors are not ValueErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DesignError(f"{what} {formula!r} cannot be read as a formula: {first}") from e


def is_formula(controls) -> bool:
    """Whether ``controls`` is a formula (as :func:`hetfx.api.build_design` reads it)."""
    return isinstance(controls, str) and (
        any(ch in controls for ch in "+*:()~") or controls.strip() in ("0", "-1")
    )


def _frame(data) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if len(data) == 0:
        raise DesignError("data has no rows")
    return data


def _columns_present(data: pd.DataFrame, needed: Sequence[str]) -> None:
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise KeyError(f"data has no columns {absent}")
    if data.columns.is_unique:
        return
    counts = pd.Series(data.columns).value_counts()
    dup = [c for c in needed if counts.get(c, 0) > 1]
    if dup:
        raise DesignError(
            f"data has several columns named {dup}; rename or drop the copies "
            "(e.g. data.loc[:, ~data.columns.duplicated()])"
        )


def cell_name(values: Mapping[str, Any]) -> str:
    """A cell named by its modifiers' values: ``"regime=democracy, stakes=low"``."""
    return ", ".join(f"{k}={_plain(v)}" for k, v in values.items())


# ----------------------------------------------------------------------------- data
def numbers_of(name: str, s: pd.Series, role: str) -> np.ndarray:
    """A numeric or boolean column as floats (``DesignError`` if it holds labels)."""
    numpy = isinstance(s.dtype, np.dtype)
    if (numpy and s.dtype.kind in "iufcb") or (
        not numpy and (pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s))
    ):
        return s.to_numpy(dtype=float, na_value=np.nan)
    if s.dtype == object and all(
        isinstance(v, bool | int | float | np.bool_ | np.number) for v in s
    ):  # e.g. booleans that held a missing value
        return s.to_numpy(dtype=float)
    lv = sorted(map(str, pd.unique(s.astype(str))))[:5]
    raise DesignError(
        f"{role} {name!r} must be numeric or boolean (code it 0/1); it holds labels such as {lv}"
    )


def bad_values(s: pd.Series) -> np.ndarray | None:
    """Rows of a column holding a missing or (a number column) infinite value; None where
    there are none. Read from the column's numpy values where it has a numpy dtype (a
    float column's are its non-finite values, an integer or boolean column has none)."""
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return None
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        bad = ~np.isfinite(s.to_numpy())
    else:
        # (the array's own mask: ``s.isna()`` builds a Series, 30 of the 32 us it took on
        # a column of 2,000 strings, measured)
        bad = np.asarray(s.array.isna(), dtype=bool)
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            bad = bad | ~np.isfinite(s.to_numpy(dtype=float, na_value=np.nan))
    return bad if bad.any() else None


def _complete(data: pd.DataFrame | Columns, used: Sequence[str]) -> pd.DataFrame:
    """The rows :func:`hetfx.api.build_design` keeps: no missing or infinite value (``data``
    itself where every row is complete; its columns are then read by name)."""
    cols = columns_of(data)
    data = cols.frame
    keep = None
    for c in used:
        bad = bad_values(cols[c])
        if bad is not None:
            keep = ~bad if keep is None else keep & ~bad
    return data if keep is None else data[list(used)].loc[keep]


class Columns(dict):
    """The columns of a frame, each read once (``frame[name]`` is pandas' slowest common
    step): ``Columns(frame)[name]`` is ``frame[name]``, kept; ``.frame`` is the frame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        super().__init__()
        self.frame = frame
        self._factorized: dict[str, tuple] = {}
        self._value_codes: dict[str, tuple] = {}

    def __missing__(self, name: str) -> pd.Series:
        self[name] = s = self.frame[name]
        return s

    def factorized(self, name: str) -> tuple[np.ndarray, Any]:
        """``pd.factorize(self[name], use_na_sentinel=False)`` (codes in order of
        appearance, uniques), computed once."""
        if name not in self._factorized:
            self._factorized[name] = pd.factorize(self[name], use_na_sentinel=False)
        return self._factorized[name]

    def value_codes(self, name: str) -> tuple[np.ndarray, int]:
        """Codes of the column's distinct values (numbered in some order) and their number:
        for numpy integers or booleans of a small range read from a table of that range
        (in the values' order), else :meth:`factorized`."""
        if name not in self._value_codes:
            s = self[name]
            kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else None
            v = s.to_numpy()
            if kind is not None and kind in "iub" and len(v):
                if not (kind == "u" and v.dtype.itemsize == 8):  # (no overflow of v - lo)
                    v = v.astype(np.int64, copy=False)
                lo, hi = v.min(), v.max()
                if int(hi) - int(lo) <= 4 * len(v) + 1024:
                    present = np.zeros(int(hi) - int(lo) + 1, dtype=bool)
                    present[v - lo] = True
                    rank = np.cumsum(present) - 1
                    self._value_codes[name] = rank[v - lo], int(rank[-1]) + 1
                    return self._value_codes[name]
            codes, uniques = self.factorized(name)
            self._value_codes[name] = codes, len(uniques)
        return self._value_codes[name]


def columns_of(df) -> Columns:
    """``df``'s :class:`Columns` (``df`` itself where it is one)."""
    return df if isinstance(df, Columns) else Columns(df)


def _is_number_column(s) -> bool:
    """A column (or its dtype) of numbers, not booleans (a numpy dtype read from its kind:
    pandas' two tests took 20 us a column, measured)."""
    dtype = getattr(s, "dtype", s)
    if isinstance(dtype, np.dtype):  # integers, floats, complex (not bool, not times)
        return dtype.kind in "iufc"
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def check_value_types(df: pd.DataFrame, columns: Sequence[str], labels: Sequence[str]) -> None:
    """Columns must hold numbers, booleans or labels; ``labels`` (modifiers, factors) must
    not mix types (``"a"`` and ``1``), which cannot be sorted into levels."""
    # the columns are present and named once (_columns_present); a dict, as looking each
    # up in the Series of dtypes took 2.5 us (measured)
    dtypes = dict(zip(df.columns, df.dtypes, strict=True))
    for c in columns:
        dtype = dtypes[c]
        kind = getattr(dtype, "kind", "O")
        if kind in "mMc" or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
            raise DesignError(
                f"column {c!r} holds {dtype} values, which the model cannot use; convert it "
                f"to labels (data[{c!r}] = data[{c!r}].astype(str)) or to numbers"
            )
        if c in labels and pd.api.types.is_object_dtype(dtype):
            s = df[c]
            if pd.api.types.infer_dtype(s, skipna=True) not in ("mixed", "mixed-integer"):
                continue  # one type (or numbers of several: ints and floats)
            types = sorted({t.__name__ for t in s.dropna().map(type).unique()})
            if len(types) > 1:
                raise DesignError(
                    f"column {c!r} mixes values of the types {types}; convert it to labels "
                    f"(data[{c!r}] = data[{c!r}].astype(str)) or to numbers"
                )


#: Largest magnitude of a number the model takes (its squares and sums stay finite in
#: double precision), and the smallest non-zero one.
MAX_MAGNITUDE, MIN_MAGNITUDE = 1e100, 1e-100


def check_magnitudes(df: pd.DataFrame | Columns, columns: Sequence[str]) -> None:
    """Numbers whose squares overflow or underflow double precision: ask for a rescaling."""
    cols = columns_of(df)
    for c in columns:
        s = cols[c]
        numpy = isinstance(s.dtype, np.dtype)
        if (numpy and s.dtype.kind not in "fc") or not (numpy or _is_number_column(s.dtype)):
            # numpy integers: below 2**64 and, but for 0, at least 1 in magnitude; numpy
            # booleans and objects: not numbers
            continue
        a = np.abs(s.to_numpy(dtype=float, na_value=np.nan))
        a = a[np.isfinite(a) & (a > 0)]
        if len(a) and (a.max() > MAX_MAGNITUDE or a.min() < MIN_MAGNITUDE):
            raise DesignError(
                f"column {c!r} holds numbers from {a.min():.3g} to {a.max():.3g} in absolute "
                "value, beyond what the model can square and sum in double precision; "
                f"rescale it (e.g. data[{c!r}] / {a.max():.0e})"
            )


def _check_treatment_coding(t: np.ndarray, treatment: str, *, dose_ok: bool) -> None:
    vals = np.unique(t)
    if len(vals) == 2 and set(vals) != {0.0, 1.0}:
        a, b = vals
        raise DesignError(
            f"treatment {treatment!r} takes the values {a:g} and {b:g}; code it 0 (control) "
            f"and 1 (treated), e.g. data[{treatment!r}] = "
            f"(data[{treatment!r}] == {b:g}).astype(int)"
        )
    if len(vals) > 2 and not dose_ok:
        shown = ", ".join(f"{v:g}" for v in vals[:5]) + (", ..." if len(vals) > 5 else "")
        raise DesignError(
            f"hetfx.fit_ols compares treated with control rows, so treatment {treatment!r} "
            f"must be coded 0/1; it holds {len(vals)} values ({shown}); a numeric dose is "
            "fitted by hetfx.fit"
        )


def _check_modifiers(df, modifiers: Sequence[str], default_effect: bool) -> None:
    cols = columns_of(df)
    for m in modifiers:
        n_values = cols.value_codes(m)[1]
        if n_values == 1 or (default_effect and _is_number_column(cols[m]) and n_values > 2):
            _modifier_error(m, pd.unique(cols[m]), cols[m], default_effect)


def _modifier_error(m: str, vals, s: pd.Series, default_effect: bool) -> None:
    """Raise for a modifier with one value, or (default effect) numeric with more than two."""
    if len(vals) == 1:
        raise DesignError(
            f"modifier {m!r} takes a single value ({_plain(vals[0])!r}) in the rows "
            "used, so it cannot modify the effect; remove it from modifiers="
        )
    if default_effect and _is_number_column(s) and len(vals) > 2:
        shown = ", ".join(f"{v:g}" for v in sorted(vals)[:5]) + (", ..." if len(vals) > 5 else "")
        raise DesignError(
            f"modifier {m!r} is numeric with {len(vals)} values ({shown}): its cells are "
            "its values, but the effect formula would take it as one linear term. "
            f"Convert it to labels for one effect per value (data[{m!r}] = "
            f"data[{m!r}].astype('category')), or write the effect formula yourself "
            f"(effect='{m} + ...') to keep the linear term"
        )


def _cells(df, by: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cell code of each row (cells: the combinations of ``by``, numbered in order of
    appearance) and each cell's first row."""
    cols = columns_of(df)
    if len(by) == 1:  # numbered in order of appearance, as the groupby's
        codes = cols.factorized(by[0])[0]
    else:
        codes = cols.frame.groupby(list(by), sort=False, observed=True, dropna=False).ngroup()
        codes = codes.to_numpy()
    return codes, first_rows(codes, int(codes.max()) + 1 if len(codes) else 0)


def first_rows(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """The first row holding each code ``0..n_codes-1`` (``len(codes)`` for an absent one)."""
    first = np.full(n_codes, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return first


def _listing(cells: pd.DataFrame, labels: pd.Series, idx, detail) -> str:
    """``cell <label> (<detail>): m1=v1, m2=v2; ...`` for the cells ``idx`` (10 at most)."""
    shown = [
        f"cell {labels.iloc[g]} ({detail(g)}): {cell_name(cells.iloc[g].to_dict())}"
        for g in idx[:10]
    ]
    return "; ".join(shown) + (" ..." if len(idx) > 10 else "")


def _check_cells(
    df, r: Mapping[str, Any], t: np.ndarray, *, gaussian: bool, single_arm: str = "raise"
) -> None:
    """Treatment variation (unless ``single_arm="pool"``), rows enough for the noise, an
    outcome not fitted exactly."""
    group, modifiers = r.get("group"), list(r["modifiers"])
    by = [group] if group else modifiers
    cols = columns_of(df)
    df = cols.frame
    codes, first = _cells(cols, by)
    G = len(first)

    def listing(idx, detail) -> str:  # the cells named in a message (built only to raise)
        cells = df[modifiers].iloc[first].reset_index(drop=True)
        # the labels of group_effects' cell column: the group's, or the values joined by "_"
        labels = df[by].iloc[first].astype(str).agg("_".join, axis=1).reset_index(drop=True)
        return _listing(cells, labels, idx, detail)

    n_g = np.bincount(codes, minlength=G)
    n_t = np.bincount(codes, weights=(t != 0).astype(float), minlength=G)
    tmin, tmax = np.full(G, np.inf), np.full(G, -np.inf)
    np.minimum.at(tmin, codes, t)
    np.maximum.at(tmax, codes, t)
    flat = np.flatnonzero(tmin == tmax)
    if len(flat) and single_arm != "pool":
        raise DesignError(
            f"the treatment does not vary within {len(flat)} cell(s), whose effects have no "
            "contrast of their own: "
            + listing(flat, lambda g: f"n={n_g[g]}, treatment always {tmin[g]:g}")
            + "; drop these cells, coarsen the modifiers, or (Gaussian family) pass "
            "single_arm_cells='pool' to estimate them from the pooling alone"
        )
    k = 0
    for c in r["control_vars"]:
        k += (
            1
            if _is_number_column(cols[c]) or pd.api.types.is_bool_dtype(cols[c])
            else max(cols[c].nunique() - 1, 0)
        )
    if len(df) - 2 * G - k < 1:
        small = np.flatnonzero(n_g < 3)
        raise DesignError(
            f"too few rows to estimate the noise: {len(df)} rows in {G} cells leave no "
            f"residual degree of freedom once each cell's baseline and effect"
            + (f" and the {k} control column(s)" if k else "")
            + " are fitted"
            + (
                "; cells with only a treated and a control row: "
                + listing(small, lambda g: f"{n_g[g]} rows, {int(n_t[g])} treated")
                if len(small)
                else ""
            )
            + ". Add rows, or merge cells (fewer or coarser modifiers)"
        )
    if gaussian:
        y = numbers_of(r["outcome"], cols[r["outcome"]], "outcome")
        # each cell and arm: every value its first (rows complete: no missing value); any
        # numbering of t's distinct values will do, 0/1 their own (np.unique's sort took
        # 60 us of 2,000 rows, measured)
        arm = _arm_codes(t)
        key = codes * (arm.max() + 1) + arm
        if np.array_equal(y, y[first_rows(key, int(key.max()) + 1)[key]]):
            raise DesignError(
                f"outcome {r['outcome']!r} is constant within every cell and arm (treated, "
                "control)"
                + (f": it always equals {y[0]:g}" if np.ptp(y) == 0 else "")
                + ", so nothing is left to estimate the noise; check the outcome column"
            )


def _arm_codes(t: np.ndarray) -> np.ndarray:
    """Codes ``0..k`` of the distinct values of ``t`` (one code per value): a 0/1 treatment
    as itself, else ``np.unique``'s inverse."""
    if t.dtype.kind == "f" and ((t == 0.0) | (t == 1.0)).all():
        return (t == 1.0).astype(np.int64)
    return np.unique(t, return_inverse=True)[1].reshape(-1)


# ------------------------------------------------------------------------ front ends
def _roles(args: Mapping[str, Any], *, formula_controls: bool) -> dict[str, Any]:
    outcome = _column_name("outcome", args["outcome"])
    treatment = _column_name("treatment", args["treatment"])
    modifiers = _name_list("modifiers", args["modifiers"])
    if not modifiers:
        raise DesignError("name at least one effect modifier (modifiers=[...])")
    controls = args.get("controls")
    as_formula = formula_controls and is_formula(controls)
    control_vars = (
        formula_variables("controls formula", controls)
        if as_formula
        else _name_list("controls", controls)
    )
    group = args.get("group")
    if group is not None:
        _column_name("group", group)
    weights = args.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise DesignError("weights must name a column of data")
    return dict(
        outcome=outcome,
        treatment=treatment,
        modifiers=modifiers,
        control_vars=control_vars,
        controls_formula=as_formula,
        group=group,
        weights=weights,
    )


def _check_roles(r: Mapping[str, Any], *, main_effects_in_x: bool) -> None:
    """The treatment among the controls; with ``main_effects_in_x``, a modifier among the
    controls named as columns (a controls formula may interact a modifier with a control)."""
    t = r["treatment"]
    if t in r["control_vars"]:
        raise DesignError(
            f"the treatment {t!r} is also among the controls; remove it from controls= "
            "(the model holds the treatment already, through each cell's effect)"
        )
    if main_effects_in_x and not r["controls_formula"]:
        both = [m for m in r["modifiers"] if m in r["control_vars"]]
        if both:
            dup = ", ".join(f"{m}: duplicate of its main effect" for m in both)
            raise DesignError(
                f"modifiers {both} are also among the controls, but the outcome equation "
                f"holds the modifiers' main effects already ({dup}); remove them from controls="
            )


def _check_combinations(df: pd.DataFrame, modifiers: Sequence[str]) -> None:
    """A saturated formula needs every combination of the modifiers' values."""
    if len(modifiers) < 2:
        return
    cols = columns_of(df)
    df = cols.frame
    factors = [cols.value_codes(m) for m in modifiers]
    sizes = [n for _, n in factors]
    if np.prod(sizes, dtype=float) < 2.0**62:
        key = np.zeros(len(df), dtype=np.int64)
        for (c, _), n in zip(factors, sizes, strict=True):
            key = key * n + c
        if len(np.unique(key)) == np.prod(sizes):
            return  # distinct combinations as many as the product: every one occurs
    seen = df[list(modifiers)].drop_duplicates()
    uniques = [pd.unique(seen[m]) for m in modifiers]
    full = pd.MultiIndex.from_product(uniques, names=modifiers)
    lacking = full.difference(pd.MultiIndex.from_frame(seen))
    if len(lacking):
        shown = "; ".join(cell_name(dict(zip(modifiers, v, strict=True))) for v in lacking[:10])
        raise DesignError(
            f"a saturated formula needs every combination of the modifiers' values, and "
            f"{len(lacking)} never occur: {shown}{' ...' if len(lacking) > 10 else ''}. Use "
            "an additive effect (the default) or a formula without the interactions the "
            "design lacks; hetfx.fit_ols fits one unpooled effect per observed cell"
        )


def _check_data(
    data,
    r,
    *,
    default_effect: bool,
    coding: bool,
    dose_ok: bool,
    gaussian: bool,
    saturated: bool = False,
    family=None,
    single_arm: str = "raise",
):
    needed = [r["outcome"], r["treatment"], *r["modifiers"], *r["control_vars"]]
    needed += [c for c in (r.get("group"), r.get("weights")) if c]
    needed = list(dict.fromkeys(needed))
    _columns_present(data, needed)
    check_value_types(data, needed, [*r["modifiers"], *([r["group"]] if r.get("group") else [])])
    cols = Columns(data)  # each column read once
    df = _complete(cols, needed)
    if df.empty:
        return None  # build_design counts the missing values by variable
    if df is not data:  # rows dropped
        cols = Columns(df)
    check_magnitudes(cols, needed)
    t = numbers_of(r["treatment"], cols[r["treatment"]], "treatment")
    if family is not None:  # hetfx.fit: what the family's likelihood takes
        y = numbers_of(r["outcome"], cols[r["outcome"]], "outcome")
        family.check_values(r["outcome"], y, r["treatment"], t)
    if coding:
        _check_treatment_coding(t, r["treatment"], dose_ok=dose_ok)
    _check_modifiers(cols, r["modifiers"], default_effect)
    if saturated:
        _check_combinations(cols, r["modifiers"])
    _check_cells(cols, r, t, gaussian=gaussian, single_arm=single_arm)
    return cols


def _check_formulas(effect, main_effects) -> None:
    if effect is not None and not isinstance(effect, str):
        raise TypeError(
            f"effect must be a formula string, 'additive' or 'saturated', got {effect!r}"
        )
    if effect not in _DEFAULT_EFFECTS:
        formula_variables("effect formula", effect)
    if not isinstance(main_effects, bool | str) and main_effects is not None:
        raise TypeError(f"main_effects must be True, False or a formula, got {main_effects!r}")
    if isinstance(main_effects, str) and main_effects not in _DEFAULT_EFFECTS:
        formula_variables("main_effects formula", main_effects)


def _check_priors(priors) -> None:
    from hetfx.priors import Priors

    if priors is not None and not isinstance(priors, Priors):
        raise TypeError("priors must be a hetfx.Priors bundle")


def _single_arm(value, family) -> str:
    """``single_arm_cells=`` of :func:`hetfx.fit`: ``"raise"`` or (Gaussian) ``"pool"``."""
    if value not in ("raise", "pool"):
        raise DesignError(f"single_arm_cells must be 'raise' or 'pool', got {value!r}")
    if value == "pool" and not family.has_sigma:
        raise DesignError(
            f"single_arm_cells='pool' is fitted for the Gaussian family only, got "
            f"family={family.name!r}"
        )
    return value


def check_fit(args: Mapping[str, Any]) -> Columns | None:
    """Check the arguments of :func:`hetfx.fit` (its ``locals()``) before any work.

    Returns the :class:`Columns` of the rows checked (``data``'s own where none has a
    missing value), for the design to read again without a second lookup."""
    _check_priors(args.get("priors"))
    data = _frame(args["data"])
    from hetfx.families import get_family

    family = get_family(args.get("family", "gaussian"))
    engine = family.resolve_engine(args.get("engine", "auto"))
    check_sampler(args, exact=family.exact_engine == engine)
    check_engine_options("fit", family.name, args.get("engine_options") or {}, engine)
    r = _roles(args, formula_controls=True)
    main_effects = args.get("main_effects", True)
    in_x = main_effects is True or (
        main_effects is None and args.get("baselines") in (None, "pooled", "correlated", "additive")
    )  # the modifiers' main effects go into X
    _check_roles(r, main_effects_in_x=in_x)
    _check_formulas(args.get("effect"), main_effects)
    return _check_data(
        data,
        r,
        default_effect=args.get("effect") in _DEFAULT_EFFECTS,
        coding=not family.binary_treatment,  # a 0/1 treatment is checked by the family
        dose_ok=True,
        gaussian=family.has_sigma,
        saturated="saturated" in (args.get("effect"), main_effects),
        family=family,
        single_arm=_single_arm(args.get("single_arm_cells", "raise"), family),
    )


def check_fit_ols(args: Mapping[str, Any]) -> None:
    """Check the arguments of :func:`hetfx.fit_ols` (its ``locals()``) before any work."""
    baselines = args.get("baselines", "fixed")
    if baselines not in ("fixed", "additive"):
        raise DesignError(f"fit_ols takes baselines='fixed' or 'additive', got {baselines!r}")
    data = _frame(args["data"])
    r = _roles(args, formula_controls=True)
    _check_roles(r, main_effects_in_x=True)
    effect = args.get("effect")
    _check_formulas(effect, True)
    if effect not in _DEFAULT_EFFECTS and not formula_variables("effect formula", effect):
        raise DesignError(
            f"hetfx.fit_ols: effect={effect!r} names no modifier, but the OLS comparator "
            "estimates each cell's effect from the modifiers' terms; use "
            "effect='saturated' (one effect per cell), 'additive' or a formula in the "
            "modifiers (hetfx.fit takes effect='1': one common mean, partial pooling)"
        )
    _check_data(
        data,
        r,
        default_effect=args.get("effect") in _DEFAULT_EFFECTS,
        coding=True,
        dose_ok=False,
        gaussian=True,
    )


def check_fit_varying_slopes(args: Mapping[str, Any]) -> None:
    """Check the arguments of :func:`hetfx.fit_varying_slopes` (its ``locals()``)."""
    _check_priors(args.get("priors"))
    data = _frame(args["data"])
    check_sampler(args)
    check_engine_options("fit_varying_slopes", None, args.get("engine_options") or {})
    outcome = _column_name("outcome", args["outcome"])
    treatment = _column_name("treatment", args["treatment"])
    factors = _name_list("factors", args["factors"])
    controls = _name_list("controls", args.get("controls"))
    keys = _name_list("keys", args.get("keys"))
    effect = args.get("effect", "1")
    if effect is True or not (effect is False or effect is None or isinstance(effect, str)):
        raise TypeError(f"effect must be a formula string or False, got {effect!r}")
    modifiers = formula_variables("effect formula", effect) if isinstance(effect, str) else []
    needed = list(dict.fromkeys([outcome, treatment, *factors, *controls, *keys, *modifiers]))
    _columns_present(data, needed)
    check_value_types(data, needed, [*factors, *keys])
    df = _complete(data, needed)
    check_magnitudes(df, needed)
    if len(df):
        t = numbers_of(treatment, df[treatment], "treatment")
        _check_treatment_coding(t, treatment, dose_ok=True)
