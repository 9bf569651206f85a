"""Saturated (fully interacted) OLS estimates of group treatment effects.

The comparison estimator of the paper: regress the outcome on the treatment
interacted with the effect modifiers, plus additive controls,

``y ~ T * (modifiers) + controls``

and report the treatment effect in each group as a linear contrast of the
coefficients: the difference between the design rows of the group's profile at
``T = 1`` and at ``T = 0`` (R's ``ols_slopes`` in the brms reference scripts).
Its standard error is ``sqrt(d' V d)`` with ``V`` the usual OLS coefficient
covariance, and intervals are t-based on the residual degrees of freedom.

Design matrices are built with :mod:`formulaic` (R-like term ordering and
reduced-rank coding of categorical factors); the fit itself is a
:class:`statsmodels.regression.linear_model.OLS`. Columns that are linearly
dependent on earlier columns (*aliased*, R's ``NA`` coefficients) are detected
in column order, exactly as R's ``lm`` does, dropped from the fit and from every
contrast, and listed in :attr:`SaturatedOLSFit.aliased`. Each group effect also
says whether its contrast is *estimable* (unaffected by the aliasing); when it
is not, the number reported is R's (the contrast with aliased coefficients set
to zero) and a warning is raised.

Representation of the two result frames (shared with the Bayesian models):

* :meth:`SaturatedOLSFit.group_effects` -- one row per group: ``group``, the
  group's key columns, ``n_obs``, ``n_treated``, ``n_control``, ``estimate``
  (the OLS contrast), ``std_error``, quantiles ``q025, q05, q10, q90, q95,
  q975`` of the t sampling distribution (so ``[q025, q975]`` is the 95%
  confidence interval and ``[q05, q95]`` the 90% one), ``estimable``.
* :meth:`SaturatedOLSFit.coefs` -- the ``coefs.csv`` layout of the design
  (``equation``, ``term``, ``mean``, ``sd``, ``q025``, ``q975``) where, for
  OLS, ``mean`` is the point estimate and ``sd`` its standard error; plus
  ``aliased``. ``equation`` is ``effect`` for terms that contain the treatment
  and ``control`` for all others (intercept included). Term names are
  formulaic's (``region_txt[T.Asia]``, ``alliance:regime``);
  :func:`hetfx.design.r_name` converts them to R's spelling.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from formulaic import Formula, model_matrix

__all__ = [
    "SaturatedOLSFit",
    "fit_saturated_ols",
    "find_aliased_columns",
    "QUANTILE_LEVELS",
]

#: Quantile levels reported for every group effect (column ``q025`` is 0.025, ...).
QUANTILE_LEVELS: dict[str, float] = {
    "q025": 0.025,
    "q05": 0.05,
    "q10": 0.10,
    "q90": 0.90,
    "q95": 0.95,
    "q975": 0.975,
}

#: Relative tolerance of the aliasing check (R's ``lm.fit`` default ``tol = 1e-7``).
ALIAS_TOL = 1e-7


def find_aliased_columns(X: np.ndarray, tol: float = ALIAS_TOL) -> np.ndarray:
    """Flag columns that are linear combinations of the columns before them.

    Columns are examined left to right; a column is *aliased* when the norm of
    its residual after projection on the previously kept columns is below
    ``tol`` times its own norm (as in R's ``lm``, whose LINPACK ``dqrdc2`` moves
    such columns to the end and reports their coefficients as ``NA``). The
    projection uses classical Gram--Schmidt with one re-orthogonalisation.

    Parameters
    ----------
    X : numpy.ndarray
        Design matrix, shape ``(n, p)``.
    tol : float, default 1e-7
        Relative tolerance.

    Returns
    -------
    numpy.ndarray
        Boolean array of length ``p``; ``True`` marks an aliased column. A
        column of zeros is always aliased.
    """
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    Q = np.empty((n, min(n, p)))
    k = 0
    aliased = np.zeros(p, dtype=bool)
    for j in range(p):
        v = X[:, j].copy()
        norm0 = np.linalg.norm(v)
        if norm0 == 0.0:
            aliased[j] = True
            continue
        for _ in range(2):
            if k:
                v -= Q[:, :k] @ (Q[:, :k].T @ v)
        r = np.linalg.norm(v)
        if r < tol * norm0 or k >= n:
            aliased[j] = True
        else:
            Q[:, k] = v / r
            k += 1
    return aliased


def _as_piece(piece: str | Sequence[str] | None) -> str | None:
    """Return a formula piece; a sequence of names is joined additively."""
    if piece is None:
        return None
    if isinstance(piece, str):
        piece = piece.strip()
        return piece or None
    items = [str(p).strip() for p in piece if str(p).strip()]
    return " + ".join(items) if items else None


def _ordered_variables(piece: str) -> list[str]:
    """Variables a formula piece needs, in order of first appearance."""
    names = Formula(piece).required_variables
    return sorted(names, key=lambda v: (re.search(rf"\b{re.escape(v)}\b", piece).start(), v))


@dataclass(frozen=True)
class SaturatedOLSFit:
    """A fitted saturated OLS model of group treatment effects.

    Build it with :func:`fit_saturated_ols`; the attributes are read-only.

    Attributes
    ----------
    formula : str
        The model formula.
    outcome, treatment, group : str
        Column names (``group`` is the name used for the group label column).
    keys : list of str
        Columns that identify a group's profile.
    at : dict
        Values held fixed in every group's profile.
    terms : list of str
        All design-matrix columns (formulaic names), aliased ones included.
    params : numpy.ndarray
        Coefficients aligned with ``terms``; ``nan`` for aliased columns.
    bse : numpy.ndarray
        Standard errors aligned with ``terms``; ``nan`` for aliased columns.
    cov : numpy.ndarray
        Covariance of the non-aliased coefficients (``kept`` order).
    kept : numpy.ndarray
        Boolean mask over ``terms`` of the estimated (non-aliased) columns.
    aliased : list of str
        Names of the aliased columns, dropped from the fit and the contrasts.
    df_resid : float
        Residual degrees of freedom.
    sigma : float
        Residual standard deviation.
    n_obs : int
        Observations used (rows with a missing value in a model variable are
        dropped, as R's ``na.omit`` does; see ``n_dropped``).
    n_dropped : int
        Rows dropped for missing values.
    results : statsmodels.regression.linear_model.RegressionResultsWrapper
        The statsmodels fit on the non-aliased columns.
    profiles : pandas.DataFrame
        One row per group (sorted by group label): the label, key columns,
        ``n_obs``, ``n_treated``, ``n_control``.
    contrasts : numpy.ndarray
        Contrast vectors ``d_g`` (rows, aligned with ``terms``).
    """

    formula: str
    outcome: str
    treatment: str
    group: str
    keys: list[str]
    at: dict[str, Any]
    terms: list[str]
    params: np.ndarray
    bse: np.ndarray
    cov: np.ndarray
    kept: np.ndarray
    aliased: list[str]
    df_resid: float
    sigma: float
    n_obs: int
    n_dropped: int
    results: Any = field(repr=False)
    profiles: pd.DataFrame = field(repr=False)
    contrasts: np.ndarray = field(repr=False)
    estimable: np.ndarray = field(repr=False)

    def group_effects(self) -> pd.DataFrame:
        """Treatment effect in each group.

        Returns
        -------
        pandas.DataFrame
            One row per group with columns ``group``, the key columns,
            ``n_obs``, ``n_treated``, ``n_control``, ``estimate``,
            ``std_error``, ``q025``, ``q05``, ``q10``, ``q90``, ``q95``,
            ``q975`` (t quantiles with ``df_resid`` degrees of freedom) and
            ``estimable`` (``False`` when the contrast loads on an aliased
            column, in which case ``estimate`` is R's value with the aliased
            coefficients set to zero).
        """
        D = self.contrasts[:, self.kept]
        b = self.params[self.kept]
        est = D @ b
        se = np.sqrt(np.einsum("ij,jk,ik->i", D, self.cov, D))
        out = self.profiles.copy()
        out["estimate"] = est
        out["std_error"] = se
        from scipy import stats  # imported where used: scipy.stats takes a second to import

        for name, p in QUANTILE_LEVELS.items():
            out[name] = est + stats.t.ppf(p, self.df_resid) * se
        out["estimable"] = self.estimable
        return out.reset_index(drop=True)

    def coefs(self) -> pd.DataFrame:
        """All coefficients in the ``coefs.csv`` layout.

        Returns
        -------
        pandas.DataFrame
            Columns ``equation`` (``effect`` if the term contains the
            treatment, else ``control``), ``term`` (formulaic name), ``mean``
            (OLS estimate), ``sd`` (standard error), ``q025``, ``q975`` (95%
            t interval) and ``aliased``. Aliased terms are kept with ``nan``
            values, as R prints ``NA``.
        """
        from scipy import stats

        tq = stats.t.ppf(0.975, self.df_resid)
        eq = ["effect" if self.treatment in t.split(":") else "control" for t in self.terms]
        return pd.DataFrame(
            {
                "equation": eq,
                "term": self.terms,
                "mean": self.params,
                "sd": self.bse,
                "q025": self.params - tq * self.bse,
                "q975": self.params + tq * self.bse,
                "aliased": ~self.kept,
            }
        )


def fit_saturated_ols(
    data: pd.DataFrame,
    outcome: str,
    treatment: str,
    modifiers: str | Sequence[str],
    controls: str | Sequence[str] | None = None,
    *,
    group: str | None = None,
    keys: Sequence[str] | None = None,
    at: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
    alias_tol: float = ALIAS_TOL,
) -> SaturatedOLSFit:
    """Fit ``outcome ~ treatment * (modifiers) + controls`` and set up group contrasts.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per observation.
    outcome : str
        Outcome column.
    treatment : str
        Binary (0/1) treatment column.
    modifiers : str or sequence of str
        Formula piece of the effect modifiers, e.g. ``"regime*stakes*costs*region_txt"``
        (saturated) or ``"dem + rep + white"`` (additive). A sequence of names is
        joined additively (``a + b``); write ``"a*b"`` for the full factorial.
    controls : str or sequence of str, optional
        Formula piece of the additive controls (not interacted with treatment).
    group : str, optional
        Column holding the group label. When omitted, the label is the key
        values joined with ``"_"`` (R's ``paste(..., sep = "_")``) and the
        output column is called ``group``.
    keys : sequence of str, optional
        Columns that define a group's profile. Default: the variables of
        ``modifiers`` not fixed in ``at``. Every key must be constant within
        a group.
    at : mapping, optional
        Values of other variables in the profiles (e.g. ``{"regime": 1}``).
        Variables of the formula that are neither keys nor in ``at`` take the
        value of the group's first observation; this is harmless for controls
        (they cancel in the contrast) and is checked for modifiers.
    reference : mapping, optional
        Reference (omitted) level of categorical variables, e.g.
        ``{"region_txt": "Africa"}``. The column is made a categorical whose
        first level is the reference and whose other levels follow in sorted
        order (R's ``factor`` default). String columns without a reference use
        sorted levels, as R does.
    alias_tol : float, default 1e-7
        Relative tolerance of the aliasing check (see :func:`find_aliased_columns`).

    Returns
    -------
    SaturatedOLSFit
        The fit; see :meth:`SaturatedOLSFit.group_effects` and
        :meth:`SaturatedOLSFit.coefs`.

    Raises
    ------
    KeyError
        If a named column is missing from ``data``.
    ValueError
        If the treatment is not 0/1, a key varies within a group, a modifier is
        neither a key nor fixed in ``at``, or no observation is left.

    Warns
    -----
    UserWarning
        When columns are aliased, listing them, and when a group's contrast is
        not estimable.

    Examples
    --------
    >>> fit = fit_saturated_ols(tw, "force", "alliance",  # doctest: +SKIP
    ...     "regime*stakes*costs*region_txt",
    ...     "white + male + hawk + intl + dem + rep + age + ed4",
    ...     group="treat_group", reference={"region_txt": "Africa"})
    >>> fit.group_effects()  # doctest: +SKIP
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    mod_piece = _as_piece(modifiers)
    if mod_piece is None:
        raise ValueError("modifiers must name at least one effect modifier")
    ctl_piece = _as_piece(controls)
    at = dict(at or {})
    formula = f"{outcome} ~ {treatment} * ({mod_piece})"
    if ctl_piece:
        formula += f" + {ctl_piece}"

    rhs_vars = Formula(
        f"{treatment} * ({mod_piece})" + (f" + {ctl_piece}" if ctl_piece else "")
    ).required_variables
    mod_vars = _ordered_variables(mod_piece)
    if keys is None:
        keys = [v for v in mod_vars if v not in at]
    keys = list(keys)
    needed = {outcome, *rhs_vars, *keys} | ({group} if group else set())
    missing = sorted(v for v in needed if v not in data.columns)
    if missing:
        raise KeyError(f"columns not in data: {missing}")

    df, n_dropped = _complete_rows(data, sorted({outcome, *rhs_vars}))
    _set_levels(df, reference or {}, rhs_vars)
    tvals = pd.unique(df[treatment])
    if not set(np.asarray(tvals, dtype=float)) <= {0.0, 1.0}:
        raise ValueError(f"treatment {treatment!r} must be coded 0/1, found {sorted(tvals)}")

    y_mm, X_mm = model_matrix(formula, df, na_action="raise")
    terms = list(X_mm.columns)
    X = np.asarray(X_mm, dtype=float)
    y = np.asarray(y_mm, dtype=float).ravel()
    ols = _fit_unaliased(X, y, terms, alias_tol)

    label_col = group or "group"
    _label_groups(df, group, keys, [m for m in mod_vars if m not in at])
    firsts, D = _group_contrasts(df, X_mm.model_spec, treatment, at)
    estimable = _estimability(X, ols, D, firsts["_label"])
    return SaturatedOLSFit(
        formula=formula,
        outcome=outcome,
        treatment=treatment,
        group=label_col,
        keys=keys,
        at=at,
        terms=terms,
        params=ols.params,
        bse=ols.bse,
        cov=ols.cov,
        kept=ols.kept,
        aliased=ols.aliased,
        df_resid=float(ols.results.df_resid),
        sigma=float(np.sqrt(ols.results.scale)),
        n_obs=len(y),
        n_dropped=n_dropped,
        results=ols.results,
        profiles=_profiles(df, firsts, keys, label_col, treatment),
        contrasts=D,
        estimable=estimable,
    )


def _complete_rows(data: pd.DataFrame, model_vars: list[str]) -> tuple[pd.DataFrame, int]:
    """A copy of the rows without a missing model variable, and how many were dropped."""
    df = data.copy()
    complete = df[model_vars].notna().all(axis=1)
    n_dropped = int((~complete).sum())
    df = df.loc[complete].reset_index(drop=True)
    if df.empty:
        raise ValueError("no complete observations for the model variables")
    return df, n_dropped


def _set_levels(df: pd.DataFrame, reference: Mapping[str, Any], rhs_vars) -> None:
    """Make the reference level first; string columns categorical with sorted levels."""
    for var, ref in reference.items():
        if var not in df.columns:
            raise KeyError(f"reference given for {var!r}, which is not in data")
        values = df[var]
        levels = (
            list(values.cat.categories)
            if isinstance(values.dtype, pd.CategoricalDtype)
            else sorted(values.unique())
        )
        if ref not in levels:
            raise ValueError(f"reference level {ref!r} of {var!r} not among {levels}")
        order = [ref] + sorted(lv for lv in levels if lv != ref)
        df[var] = pd.Categorical(values, categories=order)
    for var in rhs_vars:
        if (
            var in df.columns
            and not isinstance(df[var].dtype, pd.CategoricalDtype)
            and (df[var].dtype == object or pd.api.types.is_string_dtype(df[var]))
        ):
            df[var] = pd.Categorical(df[var], categories=sorted(df[var].unique()))


@dataclass(frozen=True)
class _UnaliasedFit:
    """The OLS fit on the non-aliased columns, with coefficients aligned with every term."""

    results: Any
    params: np.ndarray
    bse: np.ndarray
    cov: np.ndarray
    kept: np.ndarray
    aliased: list[str]


def _fit_unaliased(X: np.ndarray, y: np.ndarray, terms: list[str], tol: float) -> _UnaliasedFit:
    """Drop the aliased columns (warning about them) and fit OLS on the others."""
    alias_mask = find_aliased_columns(X, tol=tol)
    kept = ~alias_mask
    aliased = [t for t, a in zip(terms, alias_mask, strict=True) if a]
    if aliased:
        warnings.warn(
            f"{len(aliased)} aliased column(s) dropped from the fit (R reports them as NA): "
            f"{aliased}",
            UserWarning,
            stacklevel=3,
        )
    # statsmodels' regression module only: statsmodels.api takes seconds to import
    from statsmodels.regression.linear_model import OLS

    results = OLS(y, X[:, kept]).fit(method="qr")
    params = np.full(len(terms), np.nan)
    params[kept] = results.params
    bse = np.full(len(terms), np.nan)
    bse[kept] = results.bse
    cov = np.asarray(results.cov_params())
    return _UnaliasedFit(results, params, bse, cov, kept, aliased)


def _label_groups(df: pd.DataFrame, group: str | None, keys: list[str], free_mods) -> None:
    """Add the group label column ``_label``; check that keys and modifiers are constant."""
    if group:
        labels = df[group].astype(str)
    else:
        labels = (
            df[keys].astype(str).agg("_".join, axis=1) if keys else pd.Series("all", index=df.index)
        )
    df["_label"] = labels.to_numpy()
    check = list(dict.fromkeys([*keys, *free_mods]))
    if check:
        varying = df.groupby("_label", observed=True)[check].nunique(dropna=False).max()
        bad = sorted(varying.index[varying > 1])
        if bad:
            unkeyed = [v for v in bad if v not in keys]
            hint = (
                f"; modifiers {unkeyed} are neither group keys nor fixed with `at`"
                if unkeyed
                else ""
            )
            raise ValueError(f"variables {bad} vary within groups{hint}")


def _group_contrasts(
    df: pd.DataFrame, spec, treatment: str, at: Mapping[str, Any]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Each group's first row (sorted by label) and its contrast: design at T = 1 minus T = 0."""
    firsts = df.groupby("_label", sort=True).head(1).sort_values("_label", kind="stable")
    prof = firsts.copy()
    for var, val in at.items():
        prof[var] = val
    p1 = prof.copy()
    p1[treatment] = 1
    p0 = prof.copy()
    p0[treatment] = 0
    X1 = np.asarray(spec.get_model_matrix(p1, na_action="raise"), dtype=float)
    X0 = np.asarray(spec.get_model_matrix(p0, na_action="raise"), dtype=float)
    return firsts, X1 - X0


def _estimability(X: np.ndarray, ols: _UnaliasedFit, D: np.ndarray, labels) -> np.ndarray:
    """Whether each contrast is estimable: ``d'v = 0`` for every null vector of the aliasing."""
    estimable = np.ones(len(D), dtype=bool)
    if not ols.aliased:
        return estimable
    kept, alias_mask = ols.kept, ~ols.kept
    C, *_ = np.linalg.lstsq(X[:, kept], X[:, alias_mask], rcond=None)
    gap = D[:, alias_mask] - D[:, kept] @ C
    scale = np.maximum(1.0, np.abs(D).max(axis=1, keepdims=True))
    estimable = (np.abs(gap) <= 1e-6 * scale).all(axis=1)
    if not estimable.all():
        warnings.warn(
            f"the treatment effect is not estimable in {int((~estimable).sum())} group(s) "
            f"{list(labels[~estimable])}; their estimates set the aliased "
            "coefficients to zero (as R's predict.lm does) and are flagged estimable=False",
            UserWarning,
            stacklevel=3,
        )
    return estimable


def _profiles(
    df: pd.DataFrame, firsts: pd.DataFrame, keys: list[str], label_col: str, treatment: str
) -> pd.DataFrame:
    """One row per group: its label, key columns and counts of observations by arm."""
    counts = df.groupby("_label", sort=True)[treatment].agg(["size", "sum"])
    profiles = pd.DataFrame({label_col: firsts["_label"].to_numpy()})
    for k in keys:
        if k != label_col:
            profiles[k] = firsts[k].to_numpy()
    profiles["n_obs"] = counts["size"].to_numpy().astype(int)
    profiles["n_treated"] = counts["sum"].to_numpy().astype(int)
    profiles["n_control"] = profiles["n_obs"] - profiles["n_treated"]
    return profiles
