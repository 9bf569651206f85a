"""Data-frame front end: fit the two-equation model to your own experiment.

The model (Alley 2026) has an outcome equation and a heterogeneity equation::

    y_i      ~ family(lambda_g[i] T_i + X_i beta)
    lambda_g = Z_g gamma + theta_g,      theta_g ~ N(0, sigma_theta)

:func:`fit` builds everything from a data frame: the *cells* (groups) are the combinations of
the effect modifiers that occur in the data (or a label column you name); ``Z`` has one row per
cell built from the cell's modifier values by a formula (R's treatment coding, R-style names);
``X`` holds an intercept, your controls and the modifiers' main effects (the terms of the
effect formula, as an OLS comparator ``y ~ T * (effect) + controls`` has them).

Each cell also has its own baseline (control-arm mean). By default (``baselines="pooled"``)
the model is::

    y_i      ~ N(alpha_g[i] + lambda_g[i] T_i + X_i beta, sigma)
    alpha_g  ~ N(0, sigma_alpha),   lambda_g = Z_g gamma + theta_g

so a cell's baseline deviation, which in a factorial experiment with interactions is not
additive in the modifiers, is not absorbed into its effect. ``"fixed"`` gives each cell a
free baseline (integrated out by centring within the cells; no dummy columns), ``"additive"``
only the main effects in ``X``, and ``"none"`` one baseline for all cells (the published
model; warns). On simulated factorial data (3 modifiers, 24 cells, n = 3,000, cell baselines
shifted by N(0, .3), 20 data sets) the 90% intervals of the cell effects covered .917 of the
truths with RMSE .118 by default, .706 and .231 with ``"additive"``, and saturated OLS .921
and .173.

With the saturated effect design of a single modifier (one column per cell) the
heterogeneity equation keeps only its intercept and ``X`` no main effects: ``theta_g`` and
``alpha_g`` carry the cells' differences, every cell alike (as ``y ~ treat + (1 + treat |
cell)`` in brms or bambi), where treatment-coded dummies under a common prior would give the
reference cell a prior of its own. Then no cells x cells matrix is ever built, so a million
rows in thousands of cells fit in seconds.

Without ``priors=`` the Gaussian family's priors are scaled to the data
(:meth:`hetfx.Priors.scaled_to`: flat priors on the outcome equation, the rest scaled to the
standard deviations of the outcome and the treatment), so fitting ``a y + b`` gives ``a``
times the effects.

Examples
--------
>>> import numpy as np, pandas as pd
>>> import hetfx
>>> rng = np.random.default_rng(0)
>>> n = 400
>>> df = pd.DataFrame({"regime": rng.choice(["autocracy", "democracy"], n),
...                    "stakes": rng.choice(["low", "high"], n),
...                    "treat": rng.integers(0, 2, n), "age": rng.normal(size=n)})
>>> eff = np.where(df.regime == "democracy", 0.5, 0.2)
>>> df["y"] = eff * df.treat + 0.3 * (df.stakes == "high") + rng.normal(0, 1, n)
>>> res = hetfx.fit(df, outcome="y", treatment="treat", modifiers=["regime", "stakes"],
...                 controls=["age"], chains=2, draws=200, seed=1)
>>> res.group_effects()[["cell", "regime", "stakes", "n_obs"]]
             cell     regime stakes  n_obs
0  autocracy_high  autocracy   high     93
1   autocracy_low  autocracy    low     86
2  democracy_high  democracy   high    113
3   democracy_low  democracy    low    108
>>> res.Z.columns.tolist()
['Intercept', 'regimedemocracy', 'stakeslow']
>>> res.X.columns.tolist()
['Intercept', 'age', 'regimedemocracy', 'stakeslow']
>>> res.design.baselines
'pooled'
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from formulaic import Formula

from hetfx.design import (
    _frame_values,
    aliased_columns,
    aliased_values,
    column_index,
    design_spec,
    labels_as_objects,
    numeric_design,
)
from hetfx.families import FAMILIES as _FAMILIES
from hetfx.families import GAUSSIAN, get_family
from hetfx.priors import FLAT_SD, Priors
from hetfx.validation import (
    Columns,
    DesignError,
    bad_values,
    check_fit,
    check_fit_ols,
    check_fit_varying_slopes,
    first_rows,
    is_formula,
)

__all__ = [
    "Design",
    "DesignError",
    "build_design",
    "fit",
    "fit_ols",
    "fit_varying_slopes",
    "FAMILIES",
]

FAMILIES = tuple(_FAMILIES)


@dataclasses.dataclass
class Design:
    """Everything :func:`fit` derives from the data frame.

    Attributes
    ----------
    y, treat : numpy.ndarray
        Outcome and treatment of the rows used, shape (n,).
    X : pandas.DataFrame
        Outcome-equation design (n x p): intercept, controls, modifiers' main effects.
    codes : numpy.ndarray
        Cell of each row: position of its label in ``cells.index``.
    cells : pandas.DataFrame
        One row per cell, indexed by label, one column per modifier (sorted by the modifiers).
    Z : pandas.DataFrame
        Heterogeneity design, one row per cell (index = label), R-style column names.
    rows : pandas.Index
        Index labels (in ``data``) of the rows used.
    dropped : dict
        Variable -> number of rows with a missing value in it (a row may count for several).
    n_dropped : int
        Rows dropped.
    weights : numpy.ndarray or None
        Observation weights of the rows used, normalised to mean 1 (None: unweighted).
    """

    y: np.ndarray
    treat: np.ndarray
    X: pd.DataFrame
    codes: np.ndarray
    cells: pd.DataFrame
    Z: pd.DataFrame
    rows: pd.Index
    dropped: dict[str, int]
    n_dropped: int
    outcome: str
    treatment: str
    modifiers: list[str]
    group_name: str
    group_column: str | None
    effect_formula: str
    main_formula: str | None
    n_control_columns: int
    weights: np.ndarray | None = None
    z_spec: Any = dataclasses.field(repr=False, default=None)
    main_spec: Any = dataclasses.field(repr=False, default=None)
    levels: dict[str, list] = dataclasses.field(default_factory=dict)
    baselines: str = "additive"
    reduced: str | None = None

    @property
    def n_obs(self) -> np.ndarray:
        """Rows per cell."""
        return np.bincount(self.codes, minlength=len(self.cells))

    @property
    def weight_sums(self) -> np.ndarray:
        """Sum of the (mean-1) weights per cell; the row counts when unweighted."""
        if self.weights is None:
            return self.n_obs.astype(float)
        return np.bincount(self.codes, weights=self.weights, minlength=len(self.cells))

    @property
    def keys(self) -> pd.DataFrame:
        """Cells as columns: label (``group_name``) then the modifiers."""
        k = self.cells.reset_index()
        k.columns = [self.group_name, *self.cells.columns]
        return k

    def z_rows(self, profiles: pd.DataFrame) -> pd.DataFrame:
        """Rows of Z for new modifier profiles (same coding as the fit)."""
        check_levels(profiles, self.levels)
        mm = self.z_spec.get_model_matrix(profiles[self.modifiers])
        return pd.DataFrame(
            np.asarray(mm, dtype=float), columns=self.Z.columns, index=profiles.index
        )

    def match_cells(self, profiles: pd.DataFrame) -> np.ndarray:
        """Position in ``cells`` of each profile's modifier values (-1: no such cell)."""
        check_levels(profiles, self.levels)
        prof = profiles[self.modifiers].copy()
        for m in self.modifiers:
            try:
                prof[m] = prof[m].astype(self.cells[m].dtype)
            except (TypeError, ValueError):
                pass
        return pd.MultiIndex.from_frame(self.cells[self.modifiers]).get_indexer(
            pd.MultiIndex.from_frame(prof)
        )

    def main_rows(self, profiles: pd.DataFrame) -> np.ndarray:
        """Main-effect columns of X for new profiles, shape (m, p - n_control_columns)."""
        if self.main_spec is None:
            return np.zeros((len(profiles), 0))
        check_levels(profiles, self.levels)
        mm = np.asarray(self.main_spec.get_model_matrix(profiles[self.modifiers]), dtype=float)
        return mm[:, 1:]


def check_levels(profiles: pd.DataFrame, levels: Mapping[str, list]) -> None:
    """Raise if a profile names a level of a categorical modifier the fit never saw."""
    missing = [m for m in levels if m not in profiles.columns]
    if missing:
        raise DesignError(f"new data lack the modifier columns {missing}")
    for m, lv in levels.items():
        if not lv:
            continue
        bad = sorted({str(v) for v in profiles[m] if v not in lv})
        if bad:
            raise DesignError(
                f"modifier {m!r}: levels {bad} do not occur in the data the "
                f"model was fitted to (known: {[str(v) for v in lv]})"
            )


# ----------------------------------------------------------------------------- helpers
def _aliased(M: pd.DataFrame | np.ndarray, names: Sequence[str] | None = None) -> dict[str, str]:
    """:func:`hetfx.design.aliased_columns` (of a frame, or of an array whose columns are
    ``names``) with BLAS on one thread: its QR of a few thousand rows took 50-90 ms on two
    busy cores with BLAS threads, 0.1-0.5 ms without (measured; most of a small fit's set-up
    time)."""
    from hetfx.models.gaussian import single_threaded_blas

    with single_threaded_blas():
        if names is None:
            return aliased_columns(M)
        return aliased_values(np.asarray(M, dtype=float), names)


def _names(arg, what: str) -> list[str]:
    if arg is None:
        return []
    if isinstance(arg, str):
        return [arg]
    out = [str(a) for a in arg]
    if len(set(out)) != len(out):
        raise DesignError(f"{what} name a column twice: {out}")
    return out


def _without_unused_categories(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns without the levels no row holds (they would enter a design as
    all-zero columns)."""
    cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    return df.assign(**{c: df[c].cat.remove_unused_categories() for c in cats}) if cats else df


def _formula_vars(formula: str) -> list[str]:
    if not isinstance(formula, str):
        return sorted(Formula(formula).required_variables)
    return list(_required_variables(formula))


@functools.lru_cache(maxsize=256)
def _required_variables(formula: str) -> tuple[str, ...]:
    """The variables of a formula, sorted (parsed once per formula)."""
    return tuple(sorted(Formula(formula).required_variables))


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _is_plain_number(s: pd.Series) -> bool:
    """A numeric column that formulaic takes as one column (not boolean, not a category)."""
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _numeric(name: str, s: pd.Series, role: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=float)
    if s.dtype == object and all(
        isinstance(v, bool | int | float | np.bool_ | np.number) for v in s
    ):  # e.g. booleans that held a missing value
        return s.to_numpy(dtype=float)
    if not pd.api.types.is_numeric_dtype(s):
        lv = sorted(map(str, pd.unique(s)))[:5]
        raise DesignError(
            f"{role} {name!r} must be numeric or boolean (code it 0/1); it "
            f"holds labels such as {lv}"
        )
    return s.to_numpy(dtype=float)


def _effect_formula(effect: str | None, modifiers: list[str]) -> str:
    if effect is None or effect == "additive":
        return " + ".join(modifiers)
    if effect == "saturated":
        return " * ".join(modifiers)
    return effect


def _label_cells(cells: pd.DataFrame) -> pd.Index:
    cols = [cells[c].astype(str) for c in cells.columns]
    return pd.Index(cols[0].str.cat(cols[1:], sep="_") if len(cols) > 1 else cols[0])


BASELINES = ("pooled", "correlated", "fixed", "additive", "none")
#: Baselines with one parameter per cell in the model (pooled, correlated or free).
CELL_BASELINES = ("pooled", "correlated", "fixed")
#: Baselines pooled across cells, ``alpha_g ~ N(0, sigma_alpha)`` (with ``theta_g``).
POOLED_BASELINES = ("pooled", "correlated")


def _resolve_baselines(baselines: str | None, main_effects) -> str:
    """The baselines of a design: given, or from the older ``main_effects=`` spelling."""
    if baselines is not None and baselines not in BASELINES:
        raise DesignError(f"baselines must be one of {BASELINES}, got {baselines!r}")
    if main_effects is None:
        return baselines or "additive"
    implied = "none" if main_effects is False else "additive"
    if baselines is not None and baselines != implied:
        raise DesignError(
            f"main_effects={main_effects!r} means baselines={implied!r}; pass only "
            f"baselines= (got baselines={baselines!r})"
        )
    return implied


def _main_formula(eff, eff_vars, modifiers, main_effects, baselines) -> str | None:
    """The modifiers' terms in the outcome equation (None: none)."""
    if baselines in ("none", "fixed"):
        return None
    if main_effects is None or main_effects is True:
        # the effect formula's terms, plus any modifier it leaves out
        left_out = [m for m in modifiers if m not in eff_vars]
        return " + ".join([eff, *left_out]) if left_out else eff
    main = _effect_formula(str(main_effects), modifiers)
    stray = [v for v in _formula_vars(main) if v not in modifiers]
    if stray:
        raise DesignError(
            f"main_effects formula {main!r} uses {stray}, which are not "
            "modifiers; put other variables in controls="
        )
    return main


def _check_within(X: pd.DataFrame, codes: np.ndarray, G: int) -> None:
    """Raise if a control is constant within every cell (the fixed baselines absorb it)."""
    from hetfx.models.baselines import demean_within

    Xa = X.to_numpy(dtype=float)
    within = np.sqrt((demean_within(Xa, codes, G) ** 2).sum(axis=0))
    scale = np.sqrt((Xa**2).sum(axis=0))
    flat = [c for c, w, t in zip(X.columns, within, scale, strict=True) if w <= 1e-10 * (t or 1)]
    if flat:
        raise DesignError(
            f"controls {flat} are constant within every cell: with baselines='fixed' each "
            "cell's own baseline absorbs them; drop them from controls="
        )


def _n_levels(s: pd.Series) -> int | None:
    """A label column's number of levels (None: a column of numbers or booleans)."""
    return s.nunique() if _is_categorical(s) else None


def _n_columns(eff: str, cells: pd.DataFrame) -> int:
    """Columns of the effect design: counted from the levels for the additive and the
    saturated formula of the modifiers, else from a sparse model matrix."""
    mods = list(cells.columns)
    kinds = [t.kind if isinstance(t, np.dtype) else None for t in cells.dtypes]
    # numpy numbers and booleans are one column each, without a look at their values
    n_lev = [
        None if k is not None and k in "iufcb" else _n_levels(cells[m])
        for m, k in zip(mods, kinds, strict=True)
    ]
    eff = eff.removeprefix("1 + ")
    if eff == " + ".join(mods):
        return 1 + sum(1 if k is None else k - 1 for k in n_lev)
    if eff == " * ".join(mods) and None not in n_lev:
        return int(np.prod(n_lev))
    plain = [
        k in "iufc" if k is not None else _is_plain_number(cells[m])
        for m, k in zip(mods, kinds, strict=True)
    ]
    if eff == " * ".join(mods) and all(plain):
        return 2 ** len(mods)  # one column per term of the full factorial
    from formulaic import model_matrix

    return model_matrix(eff, cells, output="sparse").shape[1]


def _effect_design(eff: str, cells: pd.DataFrame, baselines: str):
    """Z, its spec, and the note of a reduced design (None when not reduced).

    With cell baselines (``"pooled"`` or ``"fixed"``) an effect design with one column per
    cell (saturated in the cells: e.g. one modifier's additive design) keeps only its
    intercept: ``theta_g`` then carries the cells' differences, every cell alike, as the
    baselines ``alpha_g`` carry the main effects (brms's and bambi's ``y ~ treat + (1 +
    treat | cell)``). Treatment-coded dummies under a common prior would instead treat the
    reference cell differently from the others. The column count is read from a sparse
    model matrix, so thousands of cells never build a dense cells x cells matrix.
    """
    G = len(cells)
    if baselines in CELL_BASELINES and G > 1:
        q = _n_columns(eff, cells)
        if q >= G:
            Z, spec = design_spec("1", cells)
            note = (
                f"the effect formula {eff!r} has {q} columns for {G} cells (saturated): the "
                "heterogeneity equation keeps its intercept and theta carries the cells' "
                "differences, every cell alike"
            )
            return Z, spec, note
    Z, spec = design_spec(eff, cells)
    return Z, spec, None


_DESIGN_DEFAULTS = dict(
    effect=None,
    group=None,
    main_effects=None,
    missing="drop",
    family="gaussian",
    weights=None,
    baselines=None,
    single_arm_cells="raise",
)


def build_design(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    modifiers: Sequence[str],
    controls: Sequence[str] | str | None = None,
    *,
    effect: str | None = None,
    group: str | None = None,
    main_effects: bool | str | None = None,
    missing: str = "drop",
    family: str = "gaussian",
    weights: str | None = None,
    baselines: str | None = None,
    single_arm_cells: str = "raise",
) -> Design:
    """Build cells, Z and X from a data frame (the first half of :func:`fit`).

    See :func:`fit` for the parameters (here ``baselines`` defaults to ``"additive"``, the
    design of the OLS comparator and of the paper's fits). Raises :class:`DesignError` (a
    ``ValueError``) on any input the model cannot use; warns (``UserWarning``) on dropped
    rows, a missing intercept, the treatment among the controls, and ``baselines="none"``.
    """
    return _build_design(
        data,
        outcome,
        treatment,
        modifiers,
        controls,
        effect=effect,
        group=group,
        main_effects=main_effects,
        missing=missing,
        family=family,
        weights=weights,
        baselines=baselines,
        single_arm_cells=single_arm_cells,
    )


def _build_design(
    data, outcome, treatment, modifiers, controls=None, *, columns: Columns | None = None, **kw
) -> Design:
    """:func:`build_design` (its warnings point at the caller of this function's caller),
    reading ``data``'s columns through ``columns`` (those :func:`hetfx.validation.check_fit`
    read) where they are ``data``'s."""
    kw = {**_DESIGN_DEFAULTS, **kw}
    effect, group, main_effects = kw["effect"], kw["group"], kw["main_effects"]
    missing, family, weights = kw["missing"], kw["family"], kw["weights"]
    baselines, single_arm_cells = kw["baselines"], kw["single_arm_cells"]
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    fam = get_family(family)
    if missing not in ("drop", "raise"):
        raise DesignError(f"missing must be 'drop' or 'raise', got {missing!r}")
    r = _design_roles(
        outcome, treatment, modifiers, controls, effect, main_effects, baselines, weights
    )
    modifiers, baselines = r["modifiers"], r["baselines"]
    needed = list(
        dict.fromkeys(
            [outcome, treatment, *modifiers, *r["control_vars"]]
            + ([group] if group else [])
            + ([weights] if weights else [])
        )
    )
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise KeyError(f"data has no columns {absent}")
    r["needed"] = needed
    if columns is None or columns.frame is not data:
        columns = Columns(data)
    df, counts, n_dropped = _complete_rows(columns, needed, missing)
    cols = columns if df is data else Columns(df)
    y, treat, w = _outcome_arrays(cols, outcome, treatment, weights, fam)
    cells, codes, group_name, levels = _cells_of(cols, group, modifiers)
    _check_single_arm(cells, codes, treat, single_arm_cells)
    Z, z_spec, reduced, main = _z_design(r["effect"], cells, baselines, r["main"], modifiers)
    X, n_ctrl, main_spec = _x_design(cols, r, main, cells, codes, treat)
    return Design(
        y=y,
        treat=treat,
        X=X,
        codes=codes,
        cells=cells,
        Z=Z,
        rows=df.index,
        dropped=counts,
        n_dropped=n_dropped,
        outcome=outcome,
        treatment=treatment,
        modifiers=modifiers,
        group_name=group_name,
        group_column=group,
        effect_formula=r["effect"],
        main_formula=main,
        n_control_columns=n_ctrl,
        z_spec=z_spec,
        main_spec=main_spec,
        levels=levels,
        weights=w,
        baselines=baselines,
        reduced=reduced,
    )


def _design_roles(
    outcome, treatment, modifiers, controls, effect, main_effects, baselines, weights
) -> dict:
    """The variables' roles and formulas: modifiers, the controls' formula and variables, the
    effect formula, the baselines and the main effects' formula (checked, no data read)."""
    modifiers = _names(modifiers, "modifiers")
    if not modifiers:
        raise DesignError("name at least one effect modifier (modifiers=[...])")
    if (
        isinstance(controls, str)
        and any(ch in controls for ch in "+*:()~")
        or (isinstance(controls, str) and controls.strip() in ("0", "-1"))
    ):
        controls_formula = controls
    else:
        cl = _names(controls, "controls")
        controls_formula = " + ".join(["1", *cl])
    control_vars = _formula_vars(controls_formula)
    eff = _effect_formula(effect, modifiers)
    eff_vars = _formula_vars(eff)
    stray = [v for v in eff_vars if v not in modifiers]
    if stray:
        raise DesignError(
            f"effect formula {eff!r} uses {stray}, which are not modifiers; add "
            "them to modifiers= (Z is built from each cell's modifier values)"
        )
    baselines = _resolve_baselines(baselines, main_effects)
    main = _main_formula(eff, eff_vars, modifiers, main_effects, baselines)
    if treatment in modifiers:
        raise DesignError(f"treatment {treatment!r} cannot also be a modifier")
    if outcome in (treatment, *modifiers, *control_vars):
        raise DesignError(
            f"outcome {outcome!r} also appears among the treatment, modifiers or controls"
        )
    if treatment in control_vars:
        warnings.warn(
            f"the treatment {treatment!r} is among the controls: the outcome "
            "equation then holds it twice: its coefficient and the effects' common "
            "mean are told apart only by their priors, and lambda is no longer the "
            "group's effect",
            UserWarning,
            stacklevel=4,
        )
    if weights is not None and not isinstance(weights, str):
        raise DesignError("weights must name a column of data")
    if weights is not None and weights in (outcome, treatment, *modifiers, *control_vars):
        raise DesignError(f"weights column {weights!r} is also used in the model")
    return {
        "modifiers": modifiers,
        "controls_formula": controls_formula,
        "control_vars": control_vars,
        "effect": eff,
        "baselines": baselines,
        "main": main,
    }


def _complete_rows(columns: Columns, needed: list[str], missing: str):
    """The rows without missing or infinite values in a used column: ``(frame, counts by
    variable, rows dropped)``; warns (``missing="drop"``) or raises (``"raise"``)."""
    data = columns.frame
    columns = {c: columns[c] for c in needed}
    bad = {c: bad_values(s) for c, s in columns.items()}
    bad = {c: b for c, b in bad.items() if b is not None}
    counts = {c: int(b.sum()) for c, b in bad.items()}
    categorical = any(isinstance(s.dtype, pd.CategoricalDtype) for s in columns.values())
    if not bad and not categorical and len(data):  # nothing to drop or change: ``data``
        return data, counts, 0  # itself (its columns are read by name)
    df = data[needed].copy()
    drop = np.logical_or.reduce(list(bad.values())) if bad else np.zeros(len(df), dtype=bool)
    n_dropped = int(drop.sum())
    if n_dropped:
        listing = ", ".join(f"{c} {k}" for c, k in counts.items())
        if missing == "raise":
            raise DesignError(
                f"{n_dropped} of {len(df)} rows have missing or infinite "
                f"values ({listing}); drop them or pass missing='drop'"
            )
        warnings.warn(
            f"dropped {n_dropped} of {len(df)} rows with missing or infinite "
            f"values (by variable: {listing}); see result.dropped",
            UserWarning,
            stacklevel=4,
        )
        df = df.loc[~drop]
    if len(df) == 0:
        raise DesignError("no rows left after dropping missing values")
    for c, dtype in df.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            df[c] = df[c].cat.remove_unused_categories()
    return df, counts, n_dropped


def _outcome_arrays(df: pd.DataFrame, outcome, treatment, weights, family):
    """The outcome, the treatment and the weights (normalised to mean 1, or None) as
    arrays, checked for the family."""
    w = None
    if weights is not None:
        w = _numeric(weights, df[weights], "weights")
        if np.any(w <= 0):
            raise DesignError(
                f"weights {weights!r} must be positive; {int((w <= 0).sum())} "
                "rows are not (drop them from data)"
            )
        w = w / w.mean()
    y = _numeric(outcome, df[outcome], "outcome")
    treat = _numeric(treatment, df[treatment], "treatment")
    family.check_values(outcome, y, treatment, treat)
    return y, treat, w


def _labelled_cells(df: Columns, group: str, modifiers: list[str]):
    """:func:`_cells_of` by a label column of strings or integers and modifiers of numpy
    dtypes, read from arrays: ``(cells, codes, the modifiers' dtypes)``, or None where that
    does not apply (other dtypes, or modifiers that vary within a label: the frames' way
    names the groups)."""
    s = df[group]
    numbers = isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu"
    if not (numbers or isinstance(s.dtype, pd.StringDtype)):
        return None
    mods = {m: df[m].to_numpy() for m in modifiers}
    if not all(isinstance(v.dtype, np.dtype) and v.dtype.kind in "iufbO" for v in mods.values()):
        return None
    seen, uniq = df.factorized(group)  # (no missing label: the rows are complete)
    first = first_rows(seen, len(uniq))
    if not all(np.array_equal(v, v[first][seen]) for v in mods.values()):
        return None
    order = np.asarray(uniq.argsort())  # by the label (unique), as the frames' sort
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rows = first[order]
    labels = uniq.take(order)
    if labels.dtype != _LABELS_DTYPE:  # numbers: as strings
        labels = pd.Index(labels.astype(str).to_numpy())
    index = labels.rename(group)  # (given to the frame: setting it after took 40 us more)
    dtypes = {v.dtype for v in mods.values()}
    if len(dtypes) == 1:  # one block
        values = np.column_stack([v[rows] for v in mods.values()]).astype(dtypes.pop())
        cells = pd.DataFrame(values, columns=column_index(tuple(modifiers)), index=index)
    else:
        cells = pd.DataFrame({m: v[rows] for m, v in mods.items()}, columns=modifiers, index=index)
    return cells, rank[seen].astype(np.int64), {m: v.dtype for m, v in mods.items()}


#: The dtype of an index of labels made from Python strings.
_LABELS_DTYPE = pd.Index(np.array(["a"], dtype=object)).dtype


def _cells_of(cols: Columns, group: str | None, modifiers: list[str]):
    """The cells (one row per cell, its modifier values, indexed by its label), each row's
    cell code, the label column's name and each modifier's levels."""
    fast = _labelled_cells(cols, group, modifiers) if group else None
    if fast is not None:
        cells, codes, dtypes = fast
        return cells, codes, group, _levels(cells, modifiers, dtypes)
    df = cols.frame
    cells_cols = [group, *modifiers] if group else modifiers
    # cells in a fixed order whatever the row order: by the label column when there is one
    # (as the paper's own fits), else by the modifiers
    cells = df[cells_cols].drop_duplicates().sort_values([group] if group else modifiers)
    if group:
        labels = cells[group].astype(str)
        dup = labels.duplicated(keep=False)
        if dup.any():
            raise DesignError(
                f"modifiers {modifiers} are not constant within {group!r}: "
                f"groups {sorted(set(labels[dup]))[:10]}"
            )
        cells = cells.drop(columns=[group])
        group_name = group
        codes = pd.Index(labels.to_numpy()).get_indexer(df[group].astype(str))  # unique labels
    else:
        labels = _label_cells(cells)
        group_name = "cell_label" if "cell" in modifiers else "cell"
        # match rows to cells by their modifier values (vectorised; no per-row strings)
        codes = pd.MultiIndex.from_frame(cells[modifiers]).get_indexer(
            pd.MultiIndex.from_frame(df[modifiers])
        )
    codes = np.asarray(codes, dtype=np.int64)
    assert (codes >= 0).all()
    cells.index = pd.Index(labels.to_numpy(), name=group_name)
    if not cells.index.is_unique:
        raise DesignError("two cells print to the same label; rename the modifier levels")
    return cells, codes, group_name, _levels(cells, modifiers)


def _levels(cells: pd.DataFrame, modifiers: list[str], dtypes=None) -> dict[str, list]:
    """Each modifier's levels (its categories, its sorted labels; none for numbers)."""
    levels = {}
    dtypes = cells.dtypes if dtypes is None else dtypes
    for m in modifiers:
        if isinstance(dtypes[m], np.dtype) and dtypes[m].kind in "iufcb":
            levels[m] = []  # numbers and booleans have no levels
            continue
        s = cells[m]
        levels[m] = (
            list(s.cat.categories)
            if isinstance(s.dtype, pd.CategoricalDtype)
            else sorted(pd.unique(s))
            if _is_categorical(s)
            else []
        )
    return levels


def _check_single_arm(cells: pd.DataFrame, codes, treat, single_arm_cells: str) -> None:
    """Cells whose treatment does not vary: refused, or (``"pool"``) named in a warning."""
    n_g = np.bincount(codes, minlength=len(cells))
    tmin = np.full(len(cells), np.inf)
    tmax = np.full(len(cells), -np.inf)
    np.minimum.at(tmin, codes, treat)
    np.maximum.at(tmax, codes, treat)
    flat = np.where(tmin == tmax)[0]
    if not len(flat):
        return
    desc = [f"{cells.index[g]} (n={n_g[g]}, treatment always {tmin[g]:g})" for g in flat]
    listing = f"{desc[:10]}" + (" ..." if len(desc) > 10 else "")
    if single_arm_cells != "pool":
        raise DesignError(
            f"the treatment does not vary within {len(flat)} cell(s), whose effects "
            f"have no contrast of their own: {listing}; drop these cells or coarsen "
            "the modifiers"
        )
    warnings.warn(
        f"the treatment does not vary within {len(flat)} cell(s): {listing}; their "
        "effects rest on the pooling alone (the effect equation and sigma_theta)",
        UserWarning,
        stacklevel=4,
    )


def _z_design(eff: str, cells: pd.DataFrame, baselines: str, main, modifiers):
    """Z, its spec, the note of a reduced design, and the main effects' formula (None where
    the cells' baselines carry them)."""
    Z, z_spec, reduced = _effect_design(eff, cells, baselines)
    if main is not None and baselines in POOLED_BASELINES and len(cells) > 1:
        mods = cells if list(cells.columns) == list(modifiers) else cells[modifiers]
        if reduced or _n_columns(main, mods) >= len(cells):
            main = None  # one column per cell: the cells' baselines carry them, all alike
    if list(Z.columns[:1]) != ["Intercept"]:
        warnings.warn(
            f"effect formula {eff!r} has no intercept: every cell's expected "
            "effect is then pulled toward 0 instead of toward a common mean",
            UserWarning,
            stacklevel=4,
        )
    if Z.shape[1] == len(Z) and len(Z) > 1:
        warnings.warn(
            f"Z has one column per cell ({len(Z)}): the effect formula is "
            "saturated, so gamma and theta are not told apart by the data and the "
            "pooling rests on the prior of gamma; an additive effect "
            "formula pools toward a model of the cells",
            UserWarning,
            stacklevel=4,
        )
    bad_z = _aliased(Z)
    if bad_z:
        raise DesignError(
            f"Z (effect formula {eff!r}, {len(Z)} cells) has columns that are "
            "not identified by the cells that occur: "
            + "; ".join(f"{k}: {v}" for k, v in bad_z.items())
        )
    return Z, z_spec, reduced, main


_NONE_WARNING = (
    "main_effects=False (baselines='none', the published model): the outcome "
    "equation has one baseline for all cells, so each group effect also absorbs "
    "its cell's baseline (control-arm) deviation. On simulated data with baseline "
    "shifts this cut the 90% coverage of the group effects from 0.91 to 0.48 and "
    "of gamma from 0.90 to 0.34; baselines='pooled' (the default) gives each "
    "cell its own baseline."
)


def _controls_matrix(cols: Columns, r: dict) -> tuple[np.ndarray, pd.Index]:
    """The controls' design (the intercept, the controls' columns) and its column names."""
    formula, variables = r["controls_formula"], r["control_vars"]
    got = numeric_design(formula, {c: cols[c].to_numpy() for c in variables})
    if got is not None:
        return got[0], got[1]
    # only the controls' own columns (the rest of df would keep the matrix off the numeric
    # path of design_spec)
    Xc, _ = design_spec(formula, cols.frame[variables or r["needed"]])
    return Xc.to_numpy(), Xc.columns


def _main_matrix(main: str, cells: pd.DataFrame):
    """The main effects' design on the cells, without its intercept: (matrix, names, spec)."""
    got = numeric_design(main, _frame_values(cells))
    if got is None:
        M, spec = design_spec(main, cells)
        got = M.to_numpy(), M.columns, spec
    values, names, spec = got
    values, names = _without_intercept(values, names)
    return values, names, spec


def _without_intercept(values: np.ndarray, names: pd.Index) -> tuple[np.ndarray, pd.Index]:
    """``values`` and ``names`` without the ``"Intercept"`` column: the names as
    ``names[keep]``, from the cache of :func:`hetfx.design.column_index` where they are
    strings without a name (``names[keep]`` of 4 strings took 145 us, the cached index
    1 us, measured)."""
    listed = names.tolist()
    keep = [j for j, c in enumerate(listed) if c != "Intercept"]
    if len(keep) == len(listed):  # (an index is immutable: the same names)
        return values[:, keep], names
    if names.dtype == _LABELS_DTYPE and names.name is None:
        kept = tuple(listed[j] for j in keep)
        if all(isinstance(c, str) for c in kept):
            return values[:, keep], column_index(kept)
    return values[:, keep], names[keep]


def _x_design(cols: Columns, r: dict, main, cells, codes, treat):
    """X (intercept, controls, the modifiers' main effects), the number of its control
    columns and the main effects' spec, checked for aliasing."""
    baselines, controls_formula = r["baselines"], r["controls_formula"]
    xc, names = _controls_matrix(cols, r)
    if baselines == "fixed":  # the cells' free baselines replace the intercept
        xc, names = _without_intercept(xc, names)
    elif "Intercept" not in names:
        warnings.warn(
            f"the outcome equation has no intercept (controls {controls_formula!r})"
            ": the baseline is then forced through 0",
            UserWarning,
            stacklevel=4,
        )
    main_spec, n_ctrl = None, len(names)
    if main is None:
        if baselines == "none":
            warnings.warn(_NONE_WARNING, UserWarning, stacklevel=4)
        values = xc
    else:
        m, m_names, main_spec = _main_matrix(main, cells)
        values = np.hstack([xc, m[codes]])  # each row's cell's main effects
        if len(names) and names.dtype == m_names.dtype:  # names.append(m_names), made once
            names = column_index((*names, *m_names))
        else:
            names = names.append(m_names)
    X = pd.DataFrame(values, columns=names, index=cols.frame.index)
    bad_x = _aliased(values, names)
    if bad_x:
        raise DesignError(
            "X (intercept, controls, main effects) has columns that are not "
            "identified: "
            + "; ".join(f"{k}: {v}" for k, v in bad_x.items())
            + ". Remove the named controls (a modifier's main effect is "
            "already in X by default)."
        )
    if baselines == "fixed" and X.shape[1]:
        _check_within(X, codes, len(cells))
    for j, c in enumerate(names):
        if np.array_equal(values[:, j], treat):
            warnings.warn(f"column {c!r} of X equals the treatment", UserWarning, stacklevel=4)
    return X, n_ctrl, main_spec


# ----------------------------------------------------------------------------- fit
def fit(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    modifiers: Sequence[str],
    controls: Sequence[str] | str | None = None,
    *,
    effect: str | None = None,
    group: str | None = None,
    priors: Priors | None = None,
    family: str = "gaussian",
    engine: str = "auto",
    baselines: str | None = None,
    main_effects: bool | str | None = None,
    missing: str = "drop",
    weights: str | None = None,
    single_arm_cells: str = "raise",
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    **engine_options,
):
    """Fit the hierarchical two-equation model of heterogeneous effects to a data frame.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation (respondent x task). Labels may be strings, categoricals,
        booleans or numbers.
    outcome : str
        Outcome column (numeric or boolean; 0/1 for ``family="bernoulli"``).
    treatment : str
        Treatment column (0/1 or boolean; a numeric dose is allowed for the Gaussian family).
    modifiers : sequence of str
        Effect modifiers: columns constant within a cell. The cells are the combinations of
        their values that occur (unless ``group`` names a label column).
    controls : sequence of str or str, optional
        Covariates of the outcome equation (names, or a formulaic right-hand side such as
        ``"age + C(educ)"``; ``"0 + ..."`` drops the intercept, with a warning).
    effect : str, optional
        Heterogeneity equation (right-hand side of Z, in the modifiers): default additive
        (``"regime + stakes + ..."``), ``"saturated"`` for all interactions, or any formula
        such as ``"regime * stakes + region"``.
    group : str, optional
        Column holding the group label; the modifiers must be constant within it.
    priors : hetfx.Priors, optional
        Priors. Default for the Gaussian family: scaled to the data
        (:meth:`hetfx.Priors.scaled_to`; flat on the outcome equation's coefficients, the
        rest scaled to the outcome's and the treatment's SDs; recorded in ``res.priors`` and
        printed by ``summary()``); for the Bernoulli family the paper's (brms's) defaults on
        the logit scale (see :mod:`hetfx.priors`).
    family : {"gaussian", "bernoulli"} or hetfx.families.Family
        Likelihood (a name, or :data:`hetfx.families.GAUSSIAN` /
        :data:`~hetfx.families.BERNOULLI`). Bernoulli uses a logit link and reports effects
        on the probability scale (average marginal effects).
    engine : {"auto", "quadrature", "qmc", "nutpie"}
        Posterior engine: ``"auto"`` is the exact quadrature engine for the Gaussian family
        and, for the Bernoulli family, ``"qmc"`` (quadrature over sigma_theta and
        quasi-Monte Carlo importance sampling, deterministic; see
        :func:`hetfx.models.bernoulli.fit_bernoulli_lambda`); ``"nutpie"`` is NUTS.
    baselines : {"pooled", "correlated", "fixed", "additive", "none"}, optional
        The cells' baselines (control-arm means; see the module docstring): ``"pooled"``
        (the Gaussian default) one per cell, ``alpha_g ~ N(0, sigma_alpha)``, plus the
        modifiers' main effects in ``X``; ``"correlated"`` the same with each cell's
        baseline and effect correlated (``rho``, with an LKJ prior of shape
        ``priors.lkj_eta``: brms's ``(1 + treat | cell)``; the quadrature engine only);
        ``"fixed"`` one free baseline per cell (within-cell centring, the quadrature engine
        only); ``"additive"`` (the Bernoulli default) the main effects only; ``"none"`` one
        baseline for all cells (warns).
    main_effects : bool or str, optional
        The older spelling: ``True`` is ``baselines="additive"``, ``False`` is
        ``baselines="none"``, and a formula (or ``"saturated"``) ``"additive"`` with those
        terms in ``X``.
    missing : {"drop", "raise"}
        Rows with missing or infinite values in a used column: dropped with a warning that
        counts them by variable (also in ``result.dropped``), or an error.
    weights : str, optional
        Column of positive observation (e.g. survey) weights. They are normalised to mean 1
        and each row's likelihood is raised to its weight (brms's ``weights()``; for the
        Gaussian family the same as ``lm(weights=)``, residual SD ``sigma / sqrt(w_i)``).
        Bernoulli group effects then average over a cell's rows with these weights, and
        :meth:`~hetfx.results.Results.ame` weights cells by their sums of weights.
    single_arm_cells : {"raise", "pool"}
        Cells whose treatment does not vary (all treated or all controls) have no contrast
        of their own: ``"raise"`` (default) refuses them, as :func:`fit_ols` does;
        ``"pool"`` (Gaussian family) fits them with a warning that names them, their effects
        resting on the pooling alone (``Z_g gamma`` and the prior of ``theta_g``), as brms
        would.
    seed, chains, draws, tune, target_accept
        Posterior layout and NUTS settings: a non-negative integer seed, ``chains >= 1``
        (with one chain R-hat is reported as unavailable), ``draws >= 4``, ``tune >= 1``.
    **engine_options
        Passed to the engine: for the Gaussian quadrature engine ``grid`` (overrides of the
        integration grid's settings, :data:`hetfx.models.exact.GRIDS`) and
        ``monitor_groups``; for NUTS e.g. ``cores``. ``draws=0`` is allowed for the Gaussian
        quadrature engine: exact summaries only (``group_effects``, ``coefs``, ``summary``,
        ``diagnostics``), no draws (``res.idata`` is None; ``ame``, ``contrast``,
        ``predict`` and plots raise).

    Returns
    -------
    hetfx.results.Results
        ``GaussianResults`` or ``BernoulliResults``.

    Raises
    ------
    KeyError
        A named column is missing.
    TypeError
        An argument of the wrong type (``chains=2.5``, ``seed="abc"``), or an engine option
        the engine does not take (the message lists those it takes).
    ValueError
        An argument out of range (``chains=0``, ``target_accept=1.5``), or
        (:class:`DesignError`) data the model cannot use, checked before any engine runs
        (:mod:`hetfx.validation` lists the cases): the treatment does not vary within a
        cell or too few rows leave no residual degree of freedom (cells named by their
        modifiers' values), a treatment coded 1/2, a modifier with one value, columns of X
        or Z duplicated or collinear (named), a label that is not numeric where it must be,
        missing values with ``missing="raise"`` (counted by variable).

    Examples
    --------
    A treatment that works only among Republicans; the three parties' effects are pooled
    toward one common mean (``effect="1"``):

    >>> import numpy as np, pandas as pd, hetfx
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
    ...                    "treat": rng.integers(0, 2, 600)})
    >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
    >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
    >>> res
    <GaussianResults: y ~ treat x (1); 600 rows, 3 groups, engine quadrature>
    >>> res.group_effects(level=0.9)[["party", "n_obs", "estimate", "lower", "upper"]].round(2)
      party  n_obs  estimate  lower  upper
    0   Dem    188     -0.07  -0.28   0.16
    1   Ind    189     -0.09  -0.30   0.11
    2   Rep    223      0.55   0.34   0.76

    ``docs/worked-examples.qmd`` fits a real survey experiment (with a binary outcome too,
    ``family="bernoulli"``) and a simulated conjoint.
    """
    columns = check_fit(locals())
    fam = get_family(family)
    if priors is not None and not isinstance(priors, Priors):
        raise TypeError("priors must be a hetfx.Priors bundle")
    if baselines is None and main_effects is None:
        baselines = fam.default_baselines
    d = _build_design(
        data,
        outcome,
        treatment,
        modifiers,
        controls,
        columns=columns,
        effect=effect,
        group=group,
        main_effects=main_effects,
        missing=missing,
        family=fam.name,
        weights=weights,
        baselines=baselines,
        single_arm_cells=single_arm_cells,
    )
    engine = fam.resolve_engine(engine)
    fam.check_baselines(d.baselines)
    common = dict(
        group_keys=d.cells,
        group_name=d.group_name,
        chains=chains,
        draws=draws,
        tune=tune,
        target_accept=target_accept,
        seed=seed,
        **engine_options,
    )
    if fam is GAUSSIAN:
        return _fit_gaussian(d, priors, engine, common)
    return _fit_bernoulli(d, priors, engine, common)


def _fit_bernoulli(d: Design, priors: Priors | None, engine: str, common: dict):
    """The Bernoulli family's engines (logit link; no residual SD, so ``priors.sigma`` is
    not used); default priors: the paper's (brms's) on the logit scale."""
    from hetfx.models.bernoulli import fit_bernoulli_lambda
    from hetfx.results import BernoulliResults

    priors = priors if priors is not None else Priors()
    kw = priors.lambda_kwargs(list(d.X.columns))
    kw.pop("sigma_prior")
    if priors.sigma != Priors().sigma:
        warnings.warn(
            "priors.sigma is not used: a logit model has no residual SD", UserWarning, stacklevel=3
        )
    f = fit_bernoulli_lambda(
        d.y, d.treat, d.X, d.codes, d.Z, weights=d.weights, engine=engine, **kw, **common
    )
    return BernoulliResults(f, d, priors, engine=engine, seed=common["seed"])


def _outcome_scale(d: Design, priors: Priors, defaulted: bool) -> tuple[float, float]:
    """Location and scale the Gaussian engines fit the outcome on: ``(y - loc) / scale``.

    With the default (scale-aware) priors always the outcome's mean and SD, so a fit of
    ``a y + b`` is that of ``y`` to rounding; with given priors only where the outcome is
    far from the unit scale (SD outside [1e-3, 1e3] or mean beyond 100 SDs), where the
    engines' sums would lose precision (the paper's 0/1 outcomes are fitted as given). The
    location is taken out only where the intercept's prior is flat (or the cells' baselines
    are fixed), so that the shift is absorbed exactly.
    """
    sy = float(np.std(d.y)) or 1.0
    my = float(np.mean(d.y))
    if not defaulted and 1e-3 <= sy <= 1e3 and abs(my) <= 100 * sy:
        return 0.0, 1.0
    intercept = priors.intercept if priors.intercept is not None else priors.control
    absorbs = d.baselines == "fixed" or ("Intercept" in d.X.columns and intercept.family == "flat")
    return (my if absorbs else 0.0), sy


def _fit_gaussian(d: Design, priors: Priors | None, engine: str, common: dict):
    """The Gaussian family: every ``baselines`` through the exact engine
    (:func:`hetfx.models.pooled.fit_exact_lambda`), or NUTS (``engine="nutpie"``)."""
    from hetfx.models.lambda_model import fit_lambda_model
    from hetfx.models.pooled import fit_exact_lambda
    from hetfx.results import GaussianResults

    defaulted = priors is None
    if defaulted:
        priors = Priors.scaled_to(d.y, d.treat)
    if d.baselines in ("fixed", "correlated") and engine != "quadrature":
        raise DesignError(f"baselines={d.baselines!r} is fitted by engine='quadrature' only")
    if d.baselines == "pooled" and engine != "quadrature" and d.weights is not None:
        raise DesignError("weights= with pooled baselines need engine='quadrature'")
    if d.weights is not None and d.baselines == "fixed":
        raise DesignError("weights= needs baselines='pooled', 'additive' or 'none'")
    loc, scale = _outcome_scale(d, priors, defaulted)
    ps = priors if scale == 1.0 else priors.rescaled(1.0 / scale)  # (x * 1.0 is x)
    exact = engine == "quadrature"
    kw = ps.lambda_kwargs(list(d.X.columns), flat=np.inf if exact else FLAT_SD)
    y, treat, X = (d.y - loc) / scale, d.treat, d.X
    r = None
    if d.weights is not None:  # N(y | mu, sigma / sqrt(w)) = rows scaled by sqrt(w)
        r = np.sqrt(d.weights)
        y, treat, X = y * r, treat * r, X.mul(r, axis=0)
    if d.baselines in POOLED_BASELINES:
        kw["sigma_alpha_prior"] = ps.sigma_alpha.to_scale_prior()
    if exact:
        common = {k: v for k, v in common.items() if k not in ("tune", "target_accept")}
        if d.baselines == "correlated":
            kw["lkj_eta"] = ps.lkj_eta
        f = fit_exact_lambda(
            y, treat, X, d.codes, d.Z, baselines=d.baselines, base=r, **kw, **common
        )
    else:
        f = fit_lambda_model(y, treat, X, d.codes, d.Z, engine=engine, **kw, **common)
    if (loc, scale) != (0.0, 1.0):
        _rescale_fit(f, loc, scale)
    return GaussianResults(f, d, priors, engine=engine, seed=common["seed"])


def _rescale_fit(f, loc: float, scale: float) -> None:
    """Put a fit of ``(y - loc) / scale`` back on the outcome's scale, in place."""
    from hetfx.models.lambda_model import ScaledPosterior

    if f.idata is not None:
        post = f.idata.posterior
        for v in post.data_vars:
            if v != "rho":  # a correlation has no scale
                post[v].values *= scale  # in place: the draws can be large
        controls = [str(c) for c in post["beta"].coords["control"].values]
        if "Intercept" in controls:
            post["beta"].values[..., controls.index("Intercept")] += loc
    if f.posterior is not None:
        names = [str(c) for c in f.data.X.columns]
        shift = np.array([loc if c == "Intercept" else 0.0 for c in names])
        f.posterior = ScaledPosterior(f.posterior, scale, shift)


def fit_ols(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    modifiers: Sequence[str],
    controls: Sequence[str] | str | None = None,
    *,
    effect: str | None = "saturated",
    group: str | None = None,
    missing: str = "drop",
    baselines: str = "fixed",
):
    """OLS comparator through the same front end: ``y ~ T * (effect) + controls``.

    The cells, missing-value handling, controls (names or a formula) and checks are those of
    :func:`fit`, which refuses what this refuses; it also needs a 0/1 treatment (no dose) and
    an effect formula in the modifiers (not ``"1"``). Each cell's effect is the OLS contrast
    (``hetfx.models.saturated_ols``). With the default saturated ``effect`` every cell has its
    own unpooled effect, also where some combinations of the modifiers never occur (a
    restricted conjoint design): the cells then enter as one factor, which spans the same
    columns as the full factorial where every combination occurs.

    ``baselines="fixed"`` (the default) gives every cell its own baseline: the saturated
    design has them already (its terms without the treatment), and any other ``effect`` gets
    the cells as a factor among the controls (the effect's main effects are then aliased and
    dropped, as R's ``lm`` does). ``"additive"`` keeps only the main effects of ``effect``.

    Returns
    -------
    hetfx.results.OLSResults

    Examples
    --------
    >>> import numpy as np, pandas as pd, hetfx
    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
    ...                    "treat": rng.integers(0, 2, 600)})
    >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
    >>> ols = hetfx.fit_ols(df, "y", "treat", ["party"])
    >>> ols
    <OLSResults: y ~ treat * (party); 600 rows, 3 groups>
    >>> ols.group_effects(level=0.9)[["party", "estimate", "lower", "upper"]].round(2)
      party  estimate  lower  upper
    0   Dem     -0.04  -0.27   0.19
    1   Ind     -0.11  -0.35   0.12
    2   Rep      0.55   0.34   0.76
    """
    check_fit_ols(locals())
    start = time.perf_counter()
    from hetfx.models.saturated_ols import fit_saturated_ols
    from hetfx.results import OLSResults

    data = data.reset_index(drop=True)  # rows by position: the index may repeat labels

    formula = is_formula(controls)  # a right-hand side such as "age + C(educ)", as in fit
    cl = _formula_vars(controls) if formula else _names(controls, "controls")
    label = "__cell__"
    saturated = effect == "saturated"
    with warnings.catch_warnings():  # no pooling in OLS: a saturated Z is its point
        warnings.filterwarnings("ignore", message="Z has one column per cell")
        warnings.filterwarnings("ignore", message="main_effects=False")
        d = _build_design(
            data,
            outcome,
            treatment,
            modifiers,
            controls if formula else cl,
            effect="1" if saturated else effect,  # saturated: Z and X are not used by OLS,
            main_effects=not saturated,  # and a factorial Z fails where cells are missing
            group=group,
            missing=missing,
        )
    keys, piece = d.modifiers, d.effect_formula
    if saturated:
        piece = d.effect_formula = " * ".join(d.modifiers)
        full = np.prod([d.cells[m].nunique() for m in d.modifiers]) == len(d.cells)
        if not full:  # some combinations never occur: one effect per cell, by its label
            keys, piece = [label], label
    df = data.loc[d.rows, list(dict.fromkeys([outcome, treatment, *d.modifiers, *cl]))]
    df = _without_unused_categories(df).copy()
    df[label] = np.asarray(d.cells.index)[d.codes]
    df[treatment] = d.treat
    df[outcome] = d.y  # as numbers (an object column of numbers would be read as labels)
    ctl = controls if formula else (cl or None)
    if baselines == "fixed" and not saturated:  # one baseline per cell, as a factor
        ctl = f"{ctl} + C({label})" if formula else [*(cl or []), f"C({label})"]
    d.baselines = "fixed" if saturated else baselines
    with warnings.catch_warnings():  # the cells' factor aliases the main effects: expected
        if not saturated and baselines == "fixed":
            warnings.filterwarnings("ignore", message=rf".*aliased.*\['C\({label}\)")
        f = fit_saturated_ols(df, outcome, treatment, piece, ctl, group=label, keys=keys)
    return OLSResults(f, d, wall_seconds=time.perf_counter() - start)


# ------------------------------------------------------------------ varying slopes
def fit_varying_slopes(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    factors: Sequence[str],
    controls: Sequence[str] | None = None,
    *,
    effect: str | bool = "1",
    keys: Sequence[str] | None = None,
    priors: Priors | None = None,
    engine: str = "auto",
    missing: str = "drop",
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    **engine_options,
):
    """Correlated varying intercepts and treatment slopes: the lme4/brms alternative.

    ``outcome ~ controls + treatment * (effect) + sum_k (1 + treatment | factor_k)``: each
    grouping factor gets a correlated (intercept, slope) pair per level, and the effect of the
    treatment in a *profile* (an observed combination of the factors' levels) is the
    population-level contrast plus the profile's varying slopes
    (:func:`hetfx.models.varying_slopes.fit_varying_slopes`).

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation.
    outcome, treatment : str
        Outcome and (numeric, e.g. 0/1) treatment columns.
    factors : sequence of str
        Grouping factors (each a column; labels may be strings or numbers).
    controls : sequence of str, optional
        Additive covariates of the population-level part (an ``Intercept`` is always added).
    effect : str or False, default "1"
        Population-level modifiers of the treatment, as a formula (``"regime + stakes"``
        adds ``treatment * (regime + stakes)``); ``"1"`` a single population-level slope;
        ``False`` none (the effect is then the sum of the varying slopes alone). Its
        variables must be constant within each profile.
    keys : sequence of str, optional
        Further columns, constant within a profile, to report with its effect.
    priors : hetfx.Priors, optional
        ``effect`` for the treatment terms, ``control`` for the other coefficients,
        ``intercept`` (``Prior.flat()`` or a normal; default the ``control`` prior),
        ``sigma`` for the residual SD and ``sigma_theta`` for the SDs of the varying
        intercepts and slopes (default brms's half-Student-t(3, 2.5) for both).
    engine : {"auto", "quadrature", "qmc", "collapsed", "nutpie"}
        Posterior engine (see :mod:`hetfx.models.varying_slopes`). ``"auto"``: the exact
        ``"quadrature"`` engine with one grouping factor (its 4 scale parameters on a grid),
        ``"qmc"`` (quasi-Monte Carlo importance sampling) with more, whose 1 + 3K scale
        parameters are too many for a grid (``"quadrature"`` refuses them).
    missing : {"drop", "raise"}
        Rows with a missing value in a used column: dropped with a warning, or an error.
    seed, chains, draws, tune, target_accept
        Posterior layout and NUTS settings: a non-negative integer seed, ``chains >= 1``
        (with one chain R-hat is reported as unavailable), ``draws >= 4``, ``tune >= 1``.
    **engine_options
        Passed to the engine (``lkj_eta``, ``grid``, ``qmc_m``, ``maxdepth``, ``cores``, ...).

    Returns
    -------
    hetfx.results.VaryingSlopesResults
        Effects per profile: label (the factor itself with one factor, else ``profile``, the
        levels joined by ``_``), the factors, ``keys`` and the effect's modifiers,
        ``n_obs``, ``estimate`` and quantiles.
    """
    check_fit_varying_slopes(locals())
    from hetfx.models.varying_slopes import fit_varying_slopes as _engine
    from hetfx.results import VaryingSlopesResults

    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if missing not in ("drop", "raise"):
        raise DesignError(f"missing must be 'drop' or 'raise', got {missing!r}")
    priors = priors if priors is not None else Priors()
    if not isinstance(priors, Priors):
        raise TypeError("priors must be a hetfx.Priors bundle")
    factors = _names(factors, "factors")
    if not factors:
        raise DesignError("name at least one grouping factor (factors=[...])")
    controls = _names(controls, "controls")
    modifiers, rhs = _slopes_formula(treatment, controls, effect)
    if treatment in (*factors, *controls, *modifiers) or outcome in (*factors, *controls):
        raise DesignError("the outcome and the treatment cannot be factors, controls or modifiers")
    reported = list(dict.fromkeys([*_names(keys, "keys"), *modifiers]))
    needed = list(dict.fromkeys([outcome, treatment, *factors, *controls, *reported]))
    absent = [c for c in needed if c not in data.columns]
    if absent:
        raise KeyError(f"data has no columns {absent}")
    df, y, treat, X, spec = _slopes_rows(data[needed], outcome, treatment, rhs, missing)
    profiles = _slopes_profiles(df, factors, reported)
    contrast = None
    if effect is not False and effect is not None:
        contrast = _slopes_contrast(profiles, df, factors, spec, treatment, X)
    is_t = np.array([treatment in c.split(":") for c in X.columns])
    b_sd = (
        float(priors.control.sd)
        if priors.effect.sd == priors.control.sd
        else np.where(is_t, priors.effect.sd, priors.control.sd)
    )
    intercept = priors.intercept if priors.intercept is not None else priors.control
    f = _engine(
        y,
        treat,
        X,
        df[factors].reset_index(drop=True),
        profiles=profiles,
        contrast=contrast,
        engine=engine,
        b_sd=b_sd,
        intercept_prior=intercept,
        sd_prior=priors.sigma_theta.to_scale_prior(),
        sigma_prior=priors.sigma.to_scale_prior(),
        chains=chains,
        draws=draws,
        tune=tune,
        target_accept=target_accept,
        seed=seed,
        **engine_options,
    )
    return VaryingSlopesResults(f, priors, engine=f.engine, factors=factors)


def _slopes_formula(treatment: str, controls: list[str], effect) -> tuple[list[str], str]:
    """The modifiers of the treatment's slope (in the effect formula's order) and the
    population-level right-hand side."""
    if effect is False or effect is None:
        return [], " + ".join(["1", *controls])
    found = [v for v in _formula_vars(str(effect)) if v != treatment]
    modifiers = sorted(found, key=lambda v: re.search(rf"\b{re.escape(v)}\b", effect).start())
    slope = treatment if str(effect).strip() == "1" else f"{treatment} * ({effect})"
    return modifiers, " + ".join(["1", *controls, slope])


def _slopes_rows(df: pd.DataFrame, outcome: str, treatment: str, rhs: str, missing: str):
    """Complete rows, the outcome and treatment as numbers, and the population-level design
    (checked for aliasing) with its spec."""
    from hetfx.design import design_spec

    bad = df.isna().any(axis=1).to_numpy()
    if bad.any():
        counts = {c: int(n) for c, n in df.isna().sum().items() if n}
        if missing == "raise":
            raise DesignError(f"{int(bad.sum())} rows have missing values ({counts})")
        warnings.warn(
            f"dropped {int(bad.sum())} of {len(df)} rows with missing values ({counts})",
            UserWarning,
            stacklevel=3,
        )
        df = df.loc[~bad]
    y = _numeric(outcome, df[outcome], "outcome")
    treat = _numeric(treatment, df[treatment], "treatment")
    df = df.assign(**{treatment: treat})  # as numbers: formulaic codes a boolean as a factor
    df = _without_unused_categories(df)
    X, spec = design_spec(rhs, df)
    bad_x = _aliased(X)
    if bad_x:
        raise DesignError(
            "the population-level design has columns that are not identified: "
            + "; ".join(f"{k}: {v}" for k, v in bad_x.items())
        )
    return df, y, treat, X, spec


def _slopes_profiles(df: pd.DataFrame, factors: list[str], reported: list[str]) -> pd.DataFrame:
    """Observed combinations of the factors, sorted by them, with the reported columns (and
    a ``profile`` label for more than one factor)."""
    profiles = df[[*factors, *[c for c in reported if c not in factors]]].drop_duplicates()
    profiles = profiles.sort_values(factors).reset_index(drop=True)
    if profiles[factors].duplicated().any():
        varying = [c for c in reported if c not in factors]
        raise DesignError(f"columns {varying} are not constant within the profiles of {factors}")
    if len(factors) > 1:
        profiles.insert(0, "profile", profiles[factors].astype(str).agg("_".join, axis=1))
    return profiles


def _slopes_contrast(profiles, df, factors, spec, treatment: str, X) -> pd.DataFrame:
    """``x(T=1) - x(T=0)`` of each profile from the design's own coding, over the columns
    that hold the treatment (the controls, set to a row of the profile, cancel exactly)."""
    rows = profiles[factors].merge(df.drop_duplicates(factors), on=factors, how="left")
    mm = [
        np.asarray(
            spec.get_model_matrix(labels_as_objects(rows.assign(**{treatment: t}))), dtype=float
        )
        for t in (1.0, 0.0)
    ]
    contrast = pd.DataFrame(mm[0] - mm[1], columns=X.columns)
    return contrast.loc[:, [c for c in X.columns if treatment in c.split(":")]]
