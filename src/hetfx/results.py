"""Results of :func:`hetfx.fit`: one interface for every family and engine.

:class:`Results` holds the posterior and the design and answers the questions asked after a
fit: ``group_effects``, ``coefs``, ``summary``, ``diagnostics``, ``predict`` (new modifier
profiles), ``ame`` (average effects by a grouping variable), ``contrast`` (two groups, with the
posterior probability that one is larger) and plots. ``idata`` carries ``log_likelihood``,
``posterior_predictive`` and ``observed_data`` groups, so ``arviz.loo``, ``arviz.compare`` and
``arviz.plot_ppc`` work. Every result type (:class:`Results`, :class:`OLSResults`,
:class:`VaryingSlopesResults`) derives from :class:`BaseResults`: ``group_effects(level)``,
``coefs``, ``summary`` and ``diagnostics`` everywhere.

A group's *effect* is ``lambda_g`` for the Gaussian family and, for the Bernoulli family, its
average marginal effect on the probability scale (mean over the group's rows of
``p(T=1) - p(T=0)``, per draw). Every summary is computed from the draws of these effects.

Examples
--------
>>> import numpy as np, pandas as pd, hetfx
>>> rng = np.random.default_rng(3)
>>> df = pd.DataFrame({"party": rng.choice(["Dem", "Rep", "Ind"], 600),
...                    "treat": rng.integers(0, 2, 600)})
>>> df["y"] = 0.4 * df.treat * (df.party == "Rep") + rng.normal(0, 1, 600)
>>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=250, seed=2)
>>> res.X.columns.tolist()   # effect="1": partial pooling toward one mean
['Intercept']
>>> res.design.baselines     # each party's baseline: alpha_g ~ N(0, sigma_alpha)
'pooled'
>>> res.group_effects(level=0.9).columns.tolist()[:6]
['cell', 'party', 'n_obs', 'estimate', 'lower', 'upper']
>>> c = res.contrast("Rep", "Dem")
>>> bool(0 <= c["p_greater"] <= 1)
True
>>> res.ame(by="party")[["party", "n_groups", "n_obs"]]
  party  n_groups  n_obs
0   Dem         1    197
1   Ind         1    188
2   Rep         1    215
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import expit

from hetfx.api import Design, DesignError
from hetfx.design import column_index
from hetfx.inference import quantile_name
from hetfx.priors import Priors
from hetfx.validation import check_level

if TYPE_CHECKING:  # imported where used: an OLS fit needs neither
    import arviz as az
    import xarray as xr

__all__ = [
    "BaseResults",
    "Results",
    "GaussianResults",
    "BernoulliResults",
    "OLSResults",
    "VaryingSlopesResults",
    "Summary",
    "summarise",
]

# arviz 0.23's compare() (made for these results' idata) sorts with the inplace keyword that
# pandas 3.1 deprecates: a warning about arviz's code that the user cannot act on
warnings.filterwarnings(
    "ignore",
    message="The inplace keyword in DataFrame.sort_values is deprecated",
    module=r"arviz\.",
)

_BASELINES_TEXT = {
    "pooled": "pooled, alpha_g ~ N(0, sigma_alpha) per cell",
    "correlated": "correlated, (alpha_g, theta_g) ~ N(0, Sigma) per cell, LKJ prior on rho",
    "fixed": "fixed, one free baseline per cell (within-cell centring)",
    "additive": "additive, the modifiers' main effects only",
    "none": "none, one baseline for all cells (the published model)",
}

QUANTILES = {"q025": 0.025, "q10": 0.10, "q90": 0.90, "q975": 0.975}
#: Quantile columns of :meth:`OLSResults.group_effects` (those of ``QUANTILES`` plus the 90%
#: interval's ends).
OLS_QUANTILES = ("q025", "q05", "q10", "q90", "q95", "q975")


def summarise(
    draws: np.ndarray, level: float = 0.95, quantiles: Sequence[float] | None = None
) -> pd.DataFrame:
    """Summaries of the columns of ``draws`` (S x k).

    Parameters
    ----------
    draws : numpy.ndarray
        ``(S, k)`` draws.
    level : float, default 0.95
        Probability of the equal-tailed interval ``lower``/``upper``.
    quantiles : sequence of float, optional
        Probabilities of the quantile columns, each named by
        :func:`hetfx.inference.quantile_name` (0.05 -> ``q05``); default 0.025, 0.10, 0.90
        and 0.975.

    Returns
    -------
    pandas.DataFrame
        ``estimate`` (median), ``mean``, ``sd``, ``lower``/``upper`` (equal-tailed interval
        of probability ``level``), then the quantile columns (by default ``q025``, ``q10``,
        ``q90``, ``q975``).

    Examples
    --------
    >>> import numpy as np
    >>> s = summarise(np.arange(101.0)[:, None], level=0.9)
    >>> s[["estimate", "lower", "upper"]].round(6).to_numpy().tolist()
    [[50.0, 5.0, 95.0]]
    """
    check_level(level)
    d = np.asarray(draws, dtype=float)
    d = d.reshape(d.shape[0], -1)
    a = (1 - level) / 2
    probs = _quantile_probs(quantiles)
    q = np.quantile(d, [0.5, a, 1 - a, *probs], axis=0)
    out = pd.DataFrame(
        {
            "estimate": q[0],
            "mean": d.mean(axis=0),
            "sd": d.std(axis=0, ddof=1) if len(d) > 1 else np.nan,
            "lower": q[1],
            "upper": q[2],
        }
    )
    for i, p in enumerate(probs):
        out[quantile_name(p)] = q[3 + i]
    return out


def _quantile_probs(quantiles: Sequence[float] | None) -> list[float]:
    """The probabilities of the quantile columns (default: those of ``QUANTILES``),
    checked."""
    if quantiles is None:
        return list(QUANTILES.values())
    probs = [float(p) for p in np.atleast_1d(np.asarray(quantiles, dtype=float))]
    if not all(0 < p < 1 for p in probs):
        raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
    if len({quantile_name(p) for p in probs}) < len(probs):
        raise ValueError(f"quantiles must be distinct, got {list(quantiles)}")
    return probs


def diagnostics_text(dg: Mapping) -> str:
    """What the engine measured, in words, and the verdict of the diagnostics gate
    (:func:`hetfx.inference.diagnostic_problems`): R-hat, ESS and divergences of a sampler,
    the Pareto k-hat and weight ESS of an importance sample (``qmc``), the grid-edge mass of
    the quadrature engine."""
    import dataclasses

    from hetfx.inference import (
        EXACT_ENGINES,
        GATE,
        RHAT_UNAVAILABLE,
        Diagnostics,
        diagnostic_problems,
    )

    fields = {f.name for f in dataclasses.fields(Diagnostics)}
    record = Diagnostics(**{k: v for k, v in dict(dg).items() if k in fields})
    if record.draws == 0:
        what = "no draws (draws=0; every summary is exact)"
    elif np.isfinite(record.pareto_k):
        what = (
            f"Pareto k-hat {record.pareto_k:.2f} (gate {GATE['max_pareto_k']}), weight ESS "
            f"{record.min_ess_bulk:.0f} of {record.draws} importance-sampling points"
        )
    else:
        rhat = (
            f"R-hat {RHAT_UNAVAILABLE}"
            if record.worst_r_hat_param == RHAT_UNAVAILABLE
            else f"max R-hat {record.max_r_hat:.3f} ({record.worst_r_hat_param})"
        )
        what = (
            f"{rhat}, min bulk ESS {record.min_ess_bulk:.0f} ({record.worst_ess_bulk_param}), "
            f"divergences {record.divergences} in {record.chains} chain"
            f"{'s' if record.chains != 1 else ''} x {record.draws} draws"
        )
    if np.isfinite(record.grid_edge_mass):
        what += f", grid-edge mass {record.grid_edge_mass:.1g}"
    problems = diagnostic_problems(record, draws_checked=record.sampler not in EXACT_ENGINES)
    verdict = "gate FAILED: " + "; ".join(problems) if problems else "gate passed"
    return f"Diagnostics: {what}; {record.sampler}, {record.wall_seconds:.1f} s; {verdict}"


def _gate_advice(engine: str) -> str:
    """What to change when a fit of ``engine`` fails the diagnostics gate."""
    return {
        "qmc": "Advice: more points (qmc_m=) or engine='nutpie'",
        "quadrature": "Advice: a deeper or finer grid (grid={'drop': 24, 'resolution': 3})",
    }.get(engine, "Advice: raise target_accept (e.g. 0.95) or draw more (draws=, tune=, chains=)")


def _frame_columns(frame: pd.DataFrame) -> dict:
    """Copies of a frame's columns (its extension arrays where it has them), by name: from
    one array where they are numbers or booleans of one numpy dtype (5 columns read one
    by one took 90 us, the frame's array 2 us, measured)."""
    dtypes = set(frame.dtypes)
    one = next(iter(dtypes)) if len(dtypes) == 1 else None
    if isinstance(one, np.dtype) and one.kind in "iufb" and frame.columns.is_unique:
        values = frame.to_numpy(copy=True)
        return {m: values[:, j] for j, m in enumerate(frame.columns)}
    return {m: frame[m].array.copy() for m in frame.columns}


def _run_gate(fit, engine: str) -> None:
    """The diagnostics gate of a result being built: warns naming every failed check."""
    from hetfx.inference import warn_diagnostics

    record = getattr(fit, "diagnostics_record", None)
    if record is not None:  # attributed to the user's line (the first outside hetfx)
        warn_diagnostics(record, _gate_advice(engine))


class Summary:
    """Printable summary of a fit (``print(res.summary())`` or ``.to_string()``)."""

    def __init__(
        self,
        header: list[str],
        coefs: pd.DataFrame,
        groups: pd.DataFrame,
        diagnostics: pd.DataFrame | None,
    ) -> None:
        self.header, self.coefs, self.groups, self.diagnostics = header, coefs, groups, diagnostics

    def to_string(self, max_groups: int = 20) -> str:
        """The summary as text (at most ``max_groups`` group rows)."""
        fmt = {"float_format": lambda v: f"{v:.3f}"}
        parts = [
            "\n".join(self.header),
            "",
            "Coefficients:",
            self.coefs.to_string(index=False, **fmt),
            "",
            f"Group effects ({len(self.groups)} groups):",
            self.groups.head(max_groups).to_string(index=False, **fmt),
        ]
        if len(self.groups) > max_groups:
            parts.append(f"... {len(self.groups) - max_groups} more (res.group_effects())")
        if self.diagnostics is not None:
            parts += ["", diagnostics_text(self.diagnostics.iloc[0])]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return self.to_string()

    __str__ = __repr__


class BaseResults(abc.ABC):
    """Interface of every result of :mod:`hetfx` (:func:`hetfx.fit`, :func:`hetfx.fit_ols`,
    :func:`hetfx.fit_varying_slopes`).

    Every result answers :meth:`group_effects` (with an interval of probability ``level`` in
    ``lower``/``upper``), :meth:`coefs`, :meth:`summary` and :meth:`diagnostics`; a Bayesian
    result also has ``idata`` (an ``arviz.InferenceData`` with a ``log_likelihood`` group).
    """

    #: Likelihood (``gaussian``, ``bernoulli``) or ``ols``.
    family: str

    @abc.abstractmethod
    def group_effects(self, level: float = 0.95) -> pd.DataFrame:
        """One row per group: keys, ``n_obs``, ``estimate``, ``lower``, ``upper``, quantiles."""

    @abc.abstractmethod
    def coefs(self) -> pd.DataFrame:
        """Coefficients, one row per term (``equation``, ``term``, ...)."""

    @abc.abstractmethod
    def summary(self, level: float = 0.95) -> Summary:
        """Printable summary (``print(res.summary())``)."""

    @abc.abstractmethod
    def diagnostics(self) -> pd.DataFrame:
        """One-row frame describing how the fit went (engine, draws, R-hat or its stand-in)."""


class Results(BaseResults):
    """Base class of every Bayesian fit made by :func:`hetfx.fit`.

    Attributes
    ----------
    fit : object
        The engine's fit (``LambdaFit`` or ``BernoulliLambdaFit``).
    design : hetfx.api.Design
        Cells, Z, X and the rows used.
    priors : hetfx.Priors
        Priors used.
    family, engine : str
        Likelihood and engine.
    dropped : dict
        Variable -> rows with a missing value in it (dropped before fitting).
    """

    family = "gaussian"
    #: Parts of :class:`hetfx.Priors` the family's model does not have (left out of summaries).
    _unused_priors: tuple[str, ...] = ()

    def __init__(self, fit, design: Design, priors: Priors, *, engine: str, seed: int = 0) -> None:
        self.fit = fit
        self.design = design
        self.priors = priors
        self.engine = engine
        self.seed = seed
        self._idata: az.InferenceData | None = None
        _run_gate(fit, engine)

    # ------------------------------------------------------------------ basics
    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped for missing values, by variable."""
        return dict(self.design.dropped)

    @property
    def n_dropped(self) -> int:
        """Number of rows dropped for missing values."""
        return self.design.n_dropped

    @property
    def X(self) -> pd.DataFrame:
        """Outcome-equation design used (n x p)."""
        return self.design.X

    @property
    def Z(self) -> pd.DataFrame:
        """Heterogeneity design (one row per group)."""
        return self.design.Z

    @property
    def group_name(self) -> str:
        """Name of the group label column."""
        return self.design.group_name

    @property
    def posterior(self) -> xr.Dataset:
        """Posterior draws of the engine (a fit with ``draws=0`` has none: ``ValueError``)."""
        if self.fit.idata is None:
            raise ValueError(
                "this fit has no posterior draws (draws=0): group_effects(), coefs(), "
                "summary() and diagnostics() are exact without them; refit with draws > 0 "
                "(e.g. draws=1000) for ame(), contrast(), predict(), idata and plots"
            )
        return self.fit.idata.posterior

    @property
    def n_obs(self) -> np.ndarray:
        """Rows per group."""
        return self.design.n_obs

    def _flat(self, var: str) -> np.ndarray:
        """Draws (S, ...) of a posterior variable, its labelled dimension put in the order of
        the design (groups as ``cells``, ``control`` as X, ``effect`` as Z), by label."""
        da = self.posterior[var]
        order = {
            "group": [str(v) for v in self.design.cells.index],
            "control": [str(c) for c in self.design.X.columns],
            "effect": [str(c) for c in self.design.Z.columns],
        }
        for dim, labels in order.items():
            if dim in da.dims:
                have = [str(v) for v in da[dim].values]
                if have != labels:
                    if sorted(have) != sorted(labels):
                        raise ValueError(
                            f"posterior {var}[{dim}] labels do not match the "
                            f"design: {have[:5]} vs {labels[:5]}"
                        )
                    da = da.isel({dim: [have.index(v) for v in labels]})
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        a = da.transpose("chain", "draw", *extra).values
        return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])

    def effect_draws(self) -> np.ndarray:
        """Draws of the group effects, shape (S, G), groups in the order of
        :meth:`group_effects`."""
        return self._flat("lambda")

    # ------------------------------------------------------------------ tables
    def _keys(self) -> pd.DataFrame:
        k = self.design.keys
        k["n_obs"] = self.n_obs
        return k

    def _keyed(self, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """``pd.concat([self._keys(), pd.DataFrame(columns)], axis=1)``, built from arrays
        in one step (the cells' label and modifiers copied, so the frame owns them)."""
        d = self.design
        names = [d.group_name, *d.cells.columns, "n_obs", *columns]
        if len(set(names)) < len(names) or not all(isinstance(c, str) for c in names):
            return pd.concat([self._keys(), pd.DataFrame(columns)], axis=1)
        keys = {d.group_name: d.cells.index.array.copy()}
        keys.update(_frame_columns(d.cells))
        frame = pd.DataFrame({**keys, "n_obs": self.n_obs, **columns}, copy=False)
        # the same names from a cache, whose hash engine is built once: each column read
        # by name from a new index of strings took 53 us, from the cached one 33 us (measured)
        frame.columns = column_index(tuple(names))
        return frame

    def group_effects(
        self, level: float = 0.95, quantiles: Sequence[float] | None = None
    ) -> pd.DataFrame:
        """Posterior of each group's effect.

        Parameters
        ----------
        level : float
            Probability of the equal-tailed interval ``lower``/``upper``.
        quantiles : sequence of float, optional
            Probabilities of the quantile columns, each named by
            :func:`hetfx.inference.quantile_name` (0.05 -> ``q05``); default 0.025, 0.10,
            0.90 and 0.975. Ask for only those you use: the exact engine (``quadrature``)
            solves each quantile of each group from its mixture (``quantiles=()`` leaves
            only the median and the interval's ends).

        Returns
        -------
        pandas.DataFrame
            Group label, modifiers, ``n_obs``, ``estimate`` (median), ``lower``, ``upper``,
            ``mean``, ``sd``, then the quantile columns (by default ``q025``, ``q10``,
            ``q90``, ``q975``).

        Examples
        --------
        >>> import numpy as np, pandas as pd, hetfx
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
        ...                    "treat": rng.integers(0, 2, 600)})
        >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
        >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
        >>> res.group_effects(level=0.9)[["party", "n_obs", "estimate", "lower", "upper"]].round(2)
          party  n_obs  estimate  lower  upper
        0   Dem    188     -0.07  -0.28   0.16
        1   Ind    189     -0.09  -0.30   0.11
        2   Rep    223      0.55   0.34   0.76
        """
        s = summarise(self.effect_draws(), level, quantiles)
        cols = ["estimate", "lower", "upper", "mean", "sd"]
        cols += [quantile_name(p) for p in _quantile_probs(quantiles)]
        return pd.concat([self._keys(), s[cols]], axis=1)

    def coefs(self) -> pd.DataFrame:
        """Coefficients: ``effect`` (gamma), ``control`` (beta), ``scale`` (SDs)."""
        return self.fit.coefs()

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame: R-hat, ESS, divergences, timings of the fit."""
        return self.fit.diagnostics()

    @property
    def diagnostics_record(self):
        """The fit's :class:`hetfx.inference.Diagnostics` (what
        :func:`hetfx.inference.check_diagnostics` gates; :meth:`diagnostics` as a record)."""
        return self.fit.diagnostics_record

    @property
    def draws(self) -> az.InferenceData:
        """The engine's draws: ``posterior`` (and ``sample_stats`` where the engine has them),
        without the pointwise groups that :attr:`idata` adds, so cheap to keep or save."""
        return self.fit.idata

    @property
    def data(self):
        """The rows as the engine received them (``y``, ``treat``, ``X``, integer ``group``
        codes, ``Z``; :class:`hetfx.models.lambda_model.LambdaData`)."""
        return self.fit.data

    def check(
        self,
        max_r_hat: float = 1.01,
        min_ess_bulk: float = 400,
        allow_divergences: int = 0,
        **kwargs,
    ) -> Results:
        """Raise :class:`hetfx.inference.SamplerDiagnosticsError` if the fit fails the
        convergence gate (R-hat, bulk ESS, divergences, quadrature grid edge); return self.

        The same gate as the warning every fit runs: an exact engine's
        (:data:`hetfx.inference.EXACT_ENGINES`) summaries do not come from its draws, so
        R-hat and ESS are not checked there (its grid edge is). Keyword arguments
        (``advice``, ``min_ess_tail``, ``max_grid_edge_mass``, ``max_pareto_k``) as
        :func:`hetfx.inference.check_diagnostics`.
        """
        import dataclasses

        from hetfx.inference import (
            EXACT_ENGINES,
            Diagnostics,
            SamplerDiagnosticsError,
            diagnostic_problems,
        )

        advice = kwargs.pop("advice", _gate_advice(self.engine).removeprefix("Advice: "))
        row = self.diagnostics().iloc[0].to_dict()
        fields = {f.name for f in dataclasses.fields(Diagnostics)}
        record = Diagnostics(**{k: v for k, v in row.items() if k in fields})
        problems = diagnostic_problems(
            record,
            max_r_hat,
            min_ess_bulk,
            allow_divergences,
            draws_checked=record.sampler not in EXACT_ENGINES,
            **kwargs,
        )
        if problems:
            raise SamplerDiagnosticsError(
                f"{record.sampler} fit failed diagnostics ({record.chains} chains x "
                f"{record.draws} draws): " + "; ".join(problems) + f". Advice: {advice}."
            )
        return self

    def summary(self, level: float = 0.95) -> Summary:
        """Printable summary: model, priors, coefficients, group effects, diagnostics."""
        d = self.design
        header = [
            f"hetfx fit: family={self.family}, engine={self.engine}",
            f"outcome {d.outcome!r}, treatment {d.treatment!r}; {len(d.y)} rows "
            f"({d.n_dropped} dropped), {len(d.cells)} groups",
            f"effect equation (Z): {d.effect_formula}"
            + (f" (reduced to its intercept: {d.reduced})" if d.reduced else ""),
            f"cell baselines: {_BASELINES_TEXT.get(d.baselines, d.baselines)}",
            f"main effects in X: {d.main_formula or 'none'}",
            "priors"
            + (f" ({self.priors.origin})" if self.priors.origin else "")
            + ": "
            + ", ".join(f"{k} {v}" for k, v in self._prior_parts().items()),
        ]
        g = self.group_effects(level)
        g = g[[d.group_name, "n_obs", "estimate", "lower", "upper"]]
        c = self.coefs()[["equation", "term", "mean", "sd", "q025", "q975"]]
        return Summary(header, c, g, self.diagnostics())

    def _prior_parts(self) -> dict[str, str]:
        parts = {k: v for k, v in self.priors.describe().items() if k not in self._unused_priors}
        if self.design.baselines in ("pooled", "correlated"):
            parts["sigma_alpha"] = repr(self.priors.sigma_alpha)
        if self.design.baselines == "correlated":
            parts["lkj_eta"] = f"LKJ({self.priors.lkj_eta:g})"
        return parts

    def __repr__(self) -> str:
        d = self.design
        return (
            f"<{type(self).__name__}: {d.outcome} ~ {d.treatment} x ({d.effect_formula}); "
            f"{len(d.y)} rows, {len(d.cells)} groups, engine {self.engine}>"
        )

    # ------------------------------------------------------------------ idata
    def _pointwise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def idata(self) -> az.InferenceData:
        """Posterior with ``log_likelihood``, ``posterior_predictive`` and ``observed_data``
        (variable named after the outcome), built on first access (memory: two
        draws x rows arrays); None for a fit with ``draws=0`` (exact summaries only)."""
        if self.fit.idata is None:  # draws=0: nothing to build on
            return None
        if self._idata is None:
            import arviz as az
            import xarray as xr

            post = self.posterior
            C, D = post.sizes["chain"], post.sizes["draw"]
            ll, yrep = self._pointwise(np.random.default_rng(self.seed + 7919))
            n = len(self.design.y)
            name = self.design.outcome
            coords = {
                "chain": post["chain"].values,
                "draw": post["draw"].values,
                "obs": np.arange(n),
            }
            dims = ("chain", "draw", "obs")
            groups = {
                "posterior": post,
                "log_likelihood": xr.Dataset({name: (dims, ll.reshape(C, D, n))}, coords=coords),
                "posterior_predictive": xr.Dataset(
                    {name: (dims, yrep.reshape(C, D, n))}, coords=coords
                ),
                "observed_data": xr.Dataset(
                    {name: (("obs",), self.design.y)}, coords={"obs": np.arange(n)}
                ),
            }
            if hasattr(self.fit.idata, "sample_stats"):
                groups["sample_stats"] = self.fit.idata.sample_stats
            self._idata = az.InferenceData(**groups)
        return self._idata

    # ------------------------------------------------------------------ post-estimation
    def _select(self, which) -> np.ndarray:
        """Indices of the groups named by a label or selected by a {modifier: value} dict."""
        cells = self.design.cells
        if isinstance(which, Mapping):
            mask = np.ones(len(cells), dtype=bool)
            for k, v in which.items():
                if k not in cells.columns:
                    raise KeyError(f"{k!r} is not a modifier ({list(cells.columns)})")
                mask &= (cells[k] == v).to_numpy()
            idx = np.where(mask)[0]
            if not len(idx):
                raise KeyError(f"no group has {dict(which)}")
            return idx
        lab = str(which)
        if lab not in cells.index:
            raise KeyError(f"no group labelled {lab!r} (e.g. {list(cells.index[:5])})")
        return np.array([cells.index.get_loc(lab)])

    def _weights(self, weights) -> np.ndarray:
        G = len(self.design.cells)
        if weights is None:
            return self.design.weight_sums
        if isinstance(weights, str) and weights == "equal":
            return np.ones(G)
        if isinstance(weights, Mapping | pd.Series):
            w = pd.Series(weights, dtype=float)
            w.index = w.index.map(str)
            unknown = sorted(set(w.index) - set(self.design.cells.index))
            if unknown:
                raise KeyError(f"weights name unknown groups {unknown[:5]}")
            w = w.reindex(self.design.cells.index)
            if w.isna().any():
                raise ValueError(f"weights lack groups {list(w.index[w.isna()][:5])}")
            w = w.to_numpy()
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != (G,):
                raise ValueError(f"weights need one value per group ({G})")
        if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative, not all zero")
        return w

    def ame(
        self, by: str | Sequence[str] | None = None, weights=None, level: float = 0.95
    ) -> pd.DataFrame:
        """Average effect over the groups, overall or by modifier values.

        Parameters
        ----------
        by : str or sequence of str, optional
            Modifier(s) to average within (default: one overall average).
        weights : None, "equal", mapping or array
            Group weights: ``None`` the groups' row counts (the average over rows; with
            observation weights, their sums), ``"equal"`` every group alike, or a mapping
            label -> weight (e.g. population shares).
        level : float
            Interval probability.

        Returns
        -------
        pandas.DataFrame
            One row per level of ``by``: its values, ``n_groups``, ``n_obs``, and the
            summaries of :func:`summarise`.

        Examples
        --------
        >>> import numpy as np, pandas as pd, hetfx
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
        ...                    "treat": rng.integers(0, 2, 600)})
        >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
        >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
        >>> res.ame(level=0.9)[["n_groups", "n_obs"]]      # the average over all rows
           n_groups  n_obs
        0         3    600
        >>> res.ame(by="party", weights="equal")[["party", "n_groups"]]
          party  n_groups
        0   Dem         1
        1   Ind         1
        2   Rep         1
        """
        E = self.effect_draws()
        w = self._weights(weights)
        cells = self.design.cells
        by = [by] if isinstance(by, str) else list(by or [])
        bad = [b for b in by if b not in cells.columns]
        if bad:
            raise KeyError(f"by names non-modifiers {bad}; choose from {list(cells.columns)}")
        if by:
            gid = cells.groupby(by, sort=True, observed=True).ngroup().to_numpy()
            lev = (
                cells[by]
                .drop_duplicates()
                .assign(_g=lambda f: gid[f.index.map(cells.index.get_loc)])
                .sort_values("_g")
                .drop(columns="_g")
            )
        else:
            gid = np.zeros(len(cells), dtype=int)
            lev = pd.DataFrame(index=[0])
        K = gid.max() + 1
        rows, draws = [], []
        for k in range(K):
            m = gid == k
            wk = w * m
            if wk.sum() == 0:
                raise ValueError(f"weights are zero for every group of level {k}")
            draws.append(E @ wk / wk.sum())
            rows.append((int(m.sum()), int(self.n_obs[m].sum())))
        out = lev.reset_index(drop=True)
        out["n_groups"] = [r[0] for r in rows]
        out["n_obs"] = [r[1] for r in rows]
        return pd.concat([out, summarise(np.column_stack(draws), level)], axis=1)

    def contrast(self, a, b, level: float = 0.95) -> pd.Series:
        """Difference of two groups' effects, ``a - b``, with ``P(a > b)``.

        ``a`` and ``b`` are group labels or ``{modifier: value}`` selections (several groups
        are averaged with row-count weights, or sums of observation weights).

        Returns
        -------
        pandas.Series
            ``a``, ``b``, ``estimate`` (median), ``mean``, ``sd``, ``lower``, ``upper``,
            ``p_greater`` (posterior probability that ``a``'s effect exceeds ``b``'s).

        Examples
        --------
        >>> import numpy as np, pandas as pd, hetfx
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
        ...                    "treat": rng.integers(0, 2, 600)})
        >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
        >>> res = hetfx.fit(df, "y", "treat", ["party"], effect="1", chains=2, draws=200, seed=1)
        >>> c = res.contrast("Rep", "Dem", level=0.9)
        >>> round(float(c["estimate"]), 1), bool(c["p_greater"] > 0.99)
        (0.6, True)
        >>> c = res.contrast({"party": "Rep"}, {"party": "Dem"})   # selections by modifier
        >>> round(float(c["estimate"]), 1)
        0.6
        """
        E = self.effect_draws()
        n = self.design.weight_sums

        def avg(sel):
            idx = self._select(sel)
            return E[:, idx] @ n[idx] / n[idx].sum()

        diff = avg(a) - avg(b)
        s = summarise(diff[:, None], level).iloc[0]
        out = pd.Series(
            {"a": a, "b": b, **{k: s[k] for k in ("estimate", "mean", "sd", "lower", "upper")}}
        )
        out["p_greater"] = float(np.mean(diff > 0))
        return out

    def _new_effects(
        self, Zn: np.ndarray, profiles: pd.DataFrame, rng: np.random.Generator
    ) -> np.ndarray:
        gamma = self._flat("gamma")
        st = self._flat("sigma_theta")
        theta = rng.standard_normal((len(st), Zn.shape[0])) * st[:, None]
        return gamma @ Zn.T + theta

    def predict(
        self, new_data: pd.DataFrame, level: float = 0.95, seed: int = 0, return_draws: bool = False
    ):
        """Effects for modifier profiles, seen or unseen.

        A profile that matches a fitted group gets that group's effect draws; an unseen one
        gets ``Z_new gamma + theta_new`` with ``theta_new ~ N(0, sigma_theta)`` drawn anew per
        posterior draw (for the Bernoulli family turned into an average marginal effect over
        the fitted rows, their main effects set to the profile's). With pooled baselines an
        unseen cell would also draw its baseline ``alpha_new ~ N(0, sigma_alpha)``, which
        shifts its outcomes in both arms alike and so leaves the Gaussian effect unchanged:
        the effect's draws need only ``theta_new``.

        Parameters
        ----------
        new_data : pandas.DataFrame
            One row per profile, with every modifier column (and, where the fit used
            ``group=``, optionally that label column).
        level : float
            Interval probability.
        seed : int
            Seed of the new theta draws.
        return_draws : bool
            Also return the (S x m) draws.

        Returns
        -------
        pandas.DataFrame or (pandas.DataFrame, numpy.ndarray)
            The profiles' modifier columns, ``group`` (label of the matched group or NaN),
            ``seen``, and the summaries of :func:`summarise`.

        Examples
        --------
        Young independents never occur in the data, so their effect is predicted from the
        heterogeneity equation with a new deviation theta (a wider interval):

        >>> import numpy as np, pandas as pd, hetfx
        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"party": rng.choice(["Dem", "Ind", "Rep"], 600),
        ...                    "treat": rng.integers(0, 2, 600)})
        >>> df["y"] = np.where(df.party == "Rep", 0.8, 0.0) * df.treat + rng.normal(0, 1, 600)
        >>> df["young"] = rng.choice(["no", "yes"], 600)
        >>> seen = df[~((df.party == "Ind") & (df.young == "yes"))]
        >>> res = hetfx.fit(seen, "y", "treat", ["party", "young"], chains=2, draws=200, seed=1)
        >>> new = pd.DataFrame({"party": ["Rep", "Ind"], "young": ["no", "yes"]})
        >>> p = res.predict(new, level=0.9)
        >>> p[["party", "young", "cell", "seen"]]
          party young    cell   seen
        0   Rep    no  Rep_no   True
        1   Ind   yes     NaN  False
        >>> width = p["upper"] - p["lower"]
        >>> bool(width[1] > width[0])
        True
        """
        d = self.design
        if not isinstance(new_data, pd.DataFrame):
            raise TypeError("new_data must be a pandas DataFrame")
        prof = new_data.reset_index(drop=True)
        missing = [m for m in d.modifiers if m not in prof.columns]
        if missing:
            raise DesignError(f"new_data lacks the modifier columns {missing}")
        E = self.effect_draws()
        if d.group_column is not None and d.group_column in prof.columns:
            pos = pd.Index(d.cells.index).get_indexer(prof[d.group_column].astype(str))
        elif d.group_column is None:  # match by the modifier values themselves
            pos = d.match_cells(prof)
        else:
            pos = np.full(len(prof), -1)
        seen = pos >= 0
        lab = pd.Series(np.where(seen, np.asarray(d.cells.index)[np.maximum(pos, 0)], None))
        out = np.empty((E.shape[0], len(prof)))
        if seen.any():
            out[:, seen] = E[:, pos[seen]]
        if (~seen).any():
            new = prof.loc[~seen]
            Zn = d.z_rows(new).to_numpy()
            out[:, ~seen] = self._new_effects(Zn, new, np.random.default_rng(seed))
        res = prof[d.modifiers].copy()
        res[d.group_name] = lab
        res["seen"] = seen
        res = pd.concat([res, summarise(out, level)], axis=1)
        return (res, out) if return_draws else res

    # ------------------------------------------------------------------ plots
    def plot_group_effects(self, **kwargs):
        """Group effects with intervals (see :func:`hetfx.plots.plot_group_effects`)."""
        from hetfx.plots import plot_group_effects

        return plot_group_effects(self, **kwargs)

    def plot_coefs(self, **kwargs):
        """Coefficients with intervals (see :func:`hetfx.plots.plot_coefs`)."""
        from hetfx.plots import plot_coefs

        return plot_coefs(self, **kwargs)

    def plot_shrinkage(self, ols, **kwargs):
        """Hierarchical against OLS estimates (see :func:`hetfx.plots.plot_shrinkage`)."""
        from hetfx.plots import plot_shrinkage

        return plot_shrinkage(self, ols, **kwargs)


class GaussianResults(Results):
    """Results of the Gaussian family (effects ``lambda_g`` on the outcome's scale).

    With the quadrature engine, :meth:`group_effects` and :meth:`coefs` are the exact
    posterior summaries of the fit (normal mixtures over the quadrature grid), not summaries
    of the stored draws, so they are the same on any computer.
    """

    family = "gaussian"

    def group_effects(
        self, level: float = 0.95, quantiles: Sequence[float] | None = None
    ) -> pd.DataFrame:
        columns = self._effect_columns(level, quantiles)
        if columns is None:
            return super().group_effects(level, quantiles)
        return self._keyed(columns)

    group_effects.__doc__ = Results.group_effects.__doc__

    def _effect_columns(
        self, level: float, quantiles: Sequence[float] | None = None
    ) -> dict[str, np.ndarray] | None:
        """The exact summary columns of :meth:`group_effects` (``estimate`` ... the
        quantiles) as arrays, cells in the design's order; None without an exact posterior
        (NUTS)."""
        if getattr(self.fit, "posterior", None) is None:
            return None
        check_level(level)
        extra = _quantile_probs(quantiles)
        lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
        # the median, the quantile columns, then the interval's ends unless within 1e-12 of
        # one of them (each solved once)
        probs = [0.5, *extra]
        for p in (lo, hi):
            if not any(abs(p - q) < 1e-12 for q in probs):
                probs.append(p)
        lo, hi = (next(q for q in probs if abs(q - p) < 1e-12) for p in (lo, hi))
        if self.fit.data.Z.index.equals(self.design.cells.index):  # the design's order
            s = self.fit.posterior.summarise_lambda(None, probs=probs)
        else:
            s = self.fit.summarise_lambda(quantiles=probs)
            s = s.loc[[str(v) for v in self.design.cells.index]]  # by label
        names = ["q50", quantile_name(lo), quantile_name(hi), "mean", "sd"]
        names += [quantile_name(p) for p in extra]
        position = {c: j for j, c in enumerate(s.columns)}  # (no hash engine of the columns)
        values = s.to_numpy()[:, [position[c] for c in names]]  # one writable copy
        out = ["estimate", "lower", "upper", "mean", "sd", *names[5:]]
        return {c: values[:, j] for j, c in enumerate(out)}

    def _pointwise(self, rng):
        from hetfx.models.baselines import demean_within
        from hetfx.models.lambda_model import pointwise_loglik

        d = self.design
        y, treat, X = d.y, d.treat, d.X.to_numpy(dtype=float)
        if d.baselines == "fixed":  # the free baselines' likelihood: within the cells
            G = len(d.cells)
            y, treat = demean_within(y, d.codes, G), demean_within(treat, d.codes, G)
            X = demean_within(X, d.codes, G) if X.shape[1] else X
        return pointwise_loglik(
            self._flat("beta"),
            self._flat("lambda"),
            self._flat("sigma"),
            X,
            treat,
            d.codes,
            y,
            rng,
            weights=d.weights,
            alpha=self._flat("alpha") if "alpha" in self.posterior else None,
        )


class BernoulliResults(Results):
    """Results of the Bernoulli (logit) family.

    Group effects, ``ame``, ``contrast`` and ``predict`` are on the probability scale
    (average marginal effects); :meth:`group_effects` with ``scale="logit"`` gives
    ``lambda_g`` on the log-odds scale.
    """

    family = "bernoulli"
    _unused_priors = ("sigma",)  # a logit has no residual SD

    def effect_draws(self, scale: str = "probability") -> np.ndarray:
        """Draws (S, G) of the group AMEs (``"probability"``) or of ``lambda`` (``"logit"``)."""
        if scale not in ("probability", "logit"):
            raise ValueError("scale must be 'probability' or 'logit'")
        return self._flat("ame" if scale == "probability" else "lambda")

    def group_effects(self, level: float = 0.95, scale: str = "probability") -> pd.DataFrame:
        """Group effects (see :meth:`Results.group_effects`); ``scale="logit"`` for lambda.

        With the ``qmc`` engine every summary is computed from the weighted importance sample
        (quantiles interpolated on its weighted CDF, so they move continuously with the weights
        and agree across CPUs), not from the resampled draws.
        """
        exact = getattr(self.fit, "exact", None)
        if exact is not None and "weighted" in exact:
            return pd.concat([self._keys(), self._weighted_summary(exact, scale, level)], axis=1)
        s = summarise(self.effect_draws(scale), level)
        cols = ["estimate", "lower", "upper", "mean", "sd", *QUANTILES]
        return pd.concat([self._keys(), s[cols]], axis=1)

    @staticmethod
    def _weighted_summary(exact: dict, scale: str, level: float) -> pd.DataFrame:
        from hetfx.models.logit_qmc import _summaries

        if scale not in ("probability", "logit"):
            raise ValueError("scale must be 'probability' or 'logit'")
        check_level(level)
        var = "ame" if scale == "probability" else "lambda"
        x, w = exact["weighted"][var], exact["weighted"]["w"]
        tail = round((1 - level) / 2, 12)  # 0.95 gives exactly 0.025, the q025 column's
        probs = [0.5, tail, 1 - tail, *QUANTILES.values()]
        qs, _ = _summaries(x, w, probs)
        s = exact["summaries"][var]
        out = {"estimate": qs[0], "lower": qs[1], "upper": qs[2], "mean": s["mean"], "sd": s["sd"]}
        out |= {name: qs[3 + i] for i, name in enumerate(QUANTILES)}
        return pd.DataFrame(out)

    def _pointwise(self, rng):
        from hetfx.models.bernoulli import pointwise_loglik

        d = self.design
        ll, yrep = pointwise_loglik(
            self._flat("beta"),
            self._flat("lambda"),
            d.X.to_numpy(dtype=float),
            d.treat,
            d.codes,
            d.y,
            rng,
            weights=d.weights,
        )
        return ll, yrep.astype(np.int64)

    def _new_effects(self, Zn, profiles, rng, chunk: int = 256):
        d = self.design
        lam = super()._new_effects(Zn, profiles, rng)
        beta = self._flat("beta")
        X = d.X.to_numpy(dtype=float)
        k = d.n_control_columns
        mains = d.main_rows(profiles)
        out = np.empty_like(lam)
        for j in range(len(Zn)):
            Xj = X.copy()
            Xj[:, k:] = mains[j]
            for i in range(0, len(beta), chunk):
                eta0 = beta[i : i + chunk] @ Xj.T
                diff = expit(eta0 + lam[i : i + chunk, j : j + 1]) - expit(eta0)
                out[i : i + chunk, j] = (
                    diff.mean(axis=1) if d.weights is None else diff @ d.weights / d.weights.sum()
                )
        return out


class OLSResults(BaseResults):
    """OLS comparator fitted through the same front end (:func:`hetfx.fit_ols`).

    ``group_effects(level)`` has the columns of :meth:`Results.group_effects` (estimate,
    t interval ``lower``/``upper``, ``q025``..``q975``), in the same group order, plus the
    arms' sizes ``n_treated``/``n_control``, ``std_error``, ``q05``/``q95`` and ``estimable``.
    """

    family = "ols"

    def __init__(self, fit, design: Design, wall_seconds: float = float("nan")) -> None:
        self.fit = fit
        self.design = design
        self.wall_seconds = wall_seconds

    @property
    def group_name(self) -> str:
        """Name of the group label column."""
        return self.design.group_name

    def group_effects(self, level: float = 0.95) -> pd.DataFrame:
        """Per-group OLS effect with a t interval of probability ``level``."""
        from scipy import stats

        check_level(level)

        g = self.fit.group_effects().set_index(self.fit.group).loc[self.design.cells.index]
        est, se = g["estimate"].to_numpy(), g["std_error"].to_numpy()
        k = self.design.keys
        k["n_obs"] = self.design.n_obs
        k["n_treated"] = g["n_treated"].to_numpy()
        k["n_control"] = g["n_control"].to_numpy()
        k["estimate"] = est
        t = stats.t.ppf(0.5 + level / 2, self.fit.df_resid)
        k["lower"], k["upper"] = est - t * se, est + t * se
        k["std_error"] = se
        for name in OLS_QUANTILES:  # the engine's t quantiles, as computed there
            k[name] = g[name].to_numpy()
        k["estimable"] = g["estimable"].to_numpy()
        return k

    def coefs(self) -> pd.DataFrame:
        """OLS coefficients (``hetfx.models.saturated_ols`` layout)."""
        return self.fit.coefs()

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame in the layout of the Bayesian fits' (``sampler`` is ``ols``, no
        draws, R-hat and ESS missing), with the run time of :func:`hetfx.fit_ols` and the
        aliased columns (``n_aliased``, ``aliased`` joined by ``;``)."""
        c = self.coefs()
        aliased = c.loc[c["aliased"], "term"].tolist()
        row = {
            "sampler": "ols",
            "chains": 0,
            "draws": 0,
            "max_r_hat": float("nan"),
            "min_ess_bulk": float("nan"),
            "min_ess_tail": float("nan"),
            "divergences": 0,
            "wall_seconds": self.wall_seconds,
            "n_aliased": len(aliased),
            "aliased": ";".join(aliased),
        }
        return pd.DataFrame([row])

    def summary(self, level: float = 0.95) -> Summary:
        """Printable summary: model, coefficients (aliased ones left out), group effects."""
        d = self.design
        aliased = self.diagnostics().at[0, "aliased"]
        header = [
            f"hetfx OLS fit: baselines={d.baselines}",
            f"outcome {d.outcome!r}, treatment {d.treatment!r}; {len(d.y)} rows "
            f"({d.n_dropped} dropped), {len(d.cells)} groups",
            f"effect equation: {d.effect_formula}",
            f"aliased columns: {aliased.replace(';', ', ') or 'none'}",
        ]
        c = self.coefs()
        c = c.loc[~c["aliased"], ["equation", "term", "mean", "sd", "q025", "q975"]]
        g = self.group_effects(level)[[d.group_name, "n_obs", "estimate", "lower", "upper"]]
        return Summary(header, c, g, None)

    def __repr__(self) -> str:
        d = self.design
        return (
            f"<OLSResults: {d.outcome} ~ {d.treatment} * ({d.effect_formula}); "
            f"{len(d.y)} rows, {len(d.cells)} groups>"
        )


class VaryingSlopesResults(BaseResults):
    """Results of :func:`hetfx.fit_varying_slopes` (correlated varying intercepts and slopes).

    ``group_effects()`` gives the effect per profile (label, factors, modifiers, ``n_obs``,
    ``estimate`` = posterior median, ``q025``, ``q10``, ``q90``, ``q975``); ``coefs()`` the
    population-level coefficients (``control``) and the scales, SDs and correlations
    (``scale``). Exact mixture summaries with the ``qmc`` engine, from the draws otherwise.
    """

    family = "gaussian"

    def __init__(self, fit, priors: Priors, *, engine: str, factors: Sequence[str]) -> None:
        self.fit = fit
        self.priors = priors
        self.engine = engine
        self.factors = list(factors)
        self._idata = None
        _run_gate(fit, engine)

    @property
    def exact(self) -> dict | None:
        """The ``qmc`` engine's exact mixture summaries and their Monte Carlo standard errors
        (``groups_mcse``); None for the NUTS engines."""
        return getattr(self.fit, "exact", None)

    def group_effects(self, level: float = 0.95) -> pd.DataFrame:
        """Effect of the treatment per profile, with an interval of probability ``level``
        (``lower``, ``upper``) after ``estimate``.

        The interval's ends are the stored quantiles where ``level`` is 0.95 or 0.8 (exact
        mixture quantiles with the ``qmc`` engine); other levels take them from the posterior
        draws of ``effect`` (resampled draws with ``qmc``).
        """
        check_level(level)
        g = self.fit.group_effects()
        tail = round((1 - level) / 2, 12)
        stored = {0.025: ("q025", "q975"), 0.1: ("q10", "q90")}
        if tail in stored:
            lower, upper = (g[c].to_numpy() for c in stored[tail])
        else:
            eff = self.fit.idata.posterior["effect"].transpose("chain", "draw", "profile")
            lower, upper = np.quantile(eff.values.reshape(-1, len(g)), [tail, 1 - tail], axis=0)
        at = g.columns.get_loc("estimate") + 1
        g.insert(at, "upper", upper)
        g.insert(at, "lower", lower)
        return g

    def coefs(self) -> pd.DataFrame:
        """Population-level coefficients and the scales."""
        return self.fit.coefs()

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame: R-hat (NUTS) or Pareto k-hat (qmc), ESS, divergences, timings."""
        return self.fit.diagnostics()

    @property
    def diagnostics_record(self):
        """The fit's :class:`hetfx.inference.Diagnostics`."""
        return self.fit.diagnostics_record

    def summary(self, level: float = 0.95) -> Summary:
        """Printable summary: model, priors, coefficients, profile effects, diagnostics."""
        data = self.fit.data
        header = [
            f"hetfx varying-slopes fit: family={self.family}, engine={self.engine}",
            f"{len(data.y)} rows, {len(data.profiles)} profiles of {self.factors}",
            "priors: " + ", ".join(f"{k} {v}" for k, v in self.priors.describe().items()),
        ]
        g = self.group_effects(level)
        g = g[[g.columns[0], "n_obs", "estimate", "lower", "upper"]]
        c = self.coefs()[["equation", "term", "mean", "sd", "q025", "q975"]]
        return Summary(header, c, g, self.diagnostics())

    @property
    def draws(self) -> az.InferenceData:
        """Posterior draws (``b``, ``sigma``, ``sd``, ``cor``, varying effects, ``effect``)."""
        return self.fit.idata

    @property
    def idata(self) -> az.InferenceData:
        """:attr:`draws` with ``log_likelihood`` and ``observed_data`` groups (variable ``y``,
        dimension ``obs``), so that ``arviz.loo`` works; built on first access (memory: one
        draws x rows array)."""
        if self.fit.idata is None:  # draws=0: nothing to build on
            return None
        if self._idata is None:
            import arviz as az
            import xarray as xr

            post = self.fit.idata.posterior
            n = len(self.fit.data.y)
            obs = {"obs": np.arange(n)}
            ll = varying_slopes_loglik(post, self.fit.data)
            coords = {"chain": post["chain"].values, "draw": post["draw"].values, **obs}
            groups = {g: self.fit.idata[g] for g in self.fit.idata.groups()}
            groups["log_likelihood"] = xr.Dataset(
                {"y": (("chain", "draw", "obs"), ll)}, coords=coords
            )
            groups["observed_data"] = xr.Dataset({"y": (("obs",), self.fit.data.y)}, coords=obs)
            self._idata = az.InferenceData(**groups)
        return self._idata

    def __repr__(self) -> str:
        n = len(self.fit.data.y)
        return (
            f"<VaryingSlopesResults: {len(self.fit.data.profiles)} profiles of "
            f"{self.factors}, {n} rows, engine {self.engine}>"
        )


def varying_slopes_loglik(posterior: xr.Dataset, data) -> np.ndarray:
    """Pointwise Gaussian log-likelihood (chain x draw x row) of a varying-slopes posterior.

    Parameters
    ----------
    posterior : xarray.Dataset
        Draws of ``b`` (``control``), ``sigma`` and ``u_<factor>`` (level x (intercept,
        slope)) per grouping factor, as :func:`hetfx.models.varying_slopes.fit_varying_slopes`
        returns them.
    data : hetfx.models.varying_slopes.VaryingSlopesData
        The rows the model was fitted to (``y``, ``treat``, ``X``, level ``codes``).

    Returns
    -------
    numpy.ndarray
        ``log N(y_i | X_i b + sum_k (u0_k[g] + u1_k[g] T_i), sigma)`` per draw and row.
    """
    from scipy import stats

    C, D = posterior.sizes["chain"], posterior.sizes["draw"]
    b = posterior["b"].transpose("chain", "draw", "control").values.reshape(C * D, -1)
    mu = b @ data.X.to_numpy(dtype=float).T
    treat = np.asarray(data.treat, dtype=float)
    for f, codes in data.codes.items():
        u = posterior[f"u_{f}"].transpose("chain", "draw", ...).values.reshape(C * D, -1, 2)
        mu += u[:, codes, 0] + u[:, codes, 1] * treat
    sigma = posterior["sigma"].values.reshape(C * D, 1)
    return stats.norm.logpdf(np.asarray(data.y, dtype=float), mu, sigma).reshape(C, D, -1)
