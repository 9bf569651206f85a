"""Two-equation ("lambda") hierarchical model of heterogeneous treatment effects.

Model (Alley 2026, section 2; ``replication-spec.md`` section 3)::

    y_i      ~ N(lambda_g[i] * T_i + X_i beta, sigma)
    lambda_g = Z_g gamma + theta_g,      theta_g ~ N(0, sigma_theta)
    gamma    ~ N(0, gamma_sd),  beta ~ N(0, beta_sd),
    sigma, sigma_theta ~ half-Student-t(3, 0, 2.5)   (brms defaults; configurable)

A group's effect is the posterior of ``lambda_g = Z_g gamma + theta_g``.

Engines: :func:`fit_lambda_model` samples the full model by NUTS (``engine="nutpie"``): the
model in PyMC (named coords/dims, ``pm.Data`` covariates, non-centred ``theta``), sampled
with nutpie; compiled models are cached per data shape and prior family and reused through
``with_data``. The exact engine of every Gaussian model (the default of :func:`hetfx.fit`,
``engine="quadrature"``) is :func:`hetfx.models.pooled.fit_exact_lambda` on
:mod:`hetfx.models.exact`; its fits are :class:`LambdaFit` objects too, with an exact
:attr:`LambdaFit.posterior`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hetfx.inference import (
    GROUP_QUANTILES,
    Diagnostics,
    compute_diagnostics,
    quantile_name,
    sample_nutpie,
    summarise_coefs,
    summarise_groups,
)
from hetfx.models.gaussian import (
    ScalePrior,
    check_finite,
)

if TYPE_CHECKING:  # imported where used: arviz alone takes seconds to import
    import arviz as az

    from hetfx.models.pooled import LambdaPosterior

__all__ = [
    "ENGINES",
    "LambdaData",
    "LambdaFit",
    "fit_lambda_model",
]

#: The engines of :func:`fit_lambda_model` (the exact engine is
#: :func:`hetfx.models.pooled.fit_exact_lambda`).
ENGINES = ("nutpie",)
_LOG2PI = float(np.log(2 * np.pi))


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class LambdaData:
    """Validated inputs of the lambda model.

    Attributes
    ----------
    y, treat : numpy.ndarray
        Outcome and treatment, shape (n,).
    X : pandas.DataFrame
        Control design (n x p), column names are the ``control`` terms.
    group : numpy.ndarray
        Integer group codes 0..G-1, shape (n,).
    Z : pandas.DataFrame
        Effect design per group (G x q), index = group labels, columns = ``effect`` terms.
    keys : pandas.DataFrame
        G rows: column ``group_name`` with the labels, then the key columns of
        ``group_keys`` (built on first use: only the tidy summaries read it, and building
        it was 1% of a small fit's time, measured).
    group_name : str
        Name of the group label column in tidy outputs.
    group_keys : pandas.DataFrame, optional
        One row per group (in the order of ``Z``'s rows, or indexed by its labels): the
        columns that ``keys`` adds to the labels.
    """

    y: np.ndarray
    treat: np.ndarray
    X: pd.DataFrame
    group: np.ndarray
    Z: pd.DataFrame
    _keys: pd.DataFrame | None = dataclasses.field(default=None, repr=False)
    group_name: str = "group"
    group_keys: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

    @property
    def keys(self) -> pd.DataFrame:
        """G rows: column ``group_name`` with the labels, then the key columns (given, or
        built from ``group_keys`` when first read)."""
        if self._keys is None:
            if self.group_keys is None:
                self._keys = pd.DataFrame({self.group_name: [str(v) for v in self.Z.index]})
            else:
                self._keys = _keys_frame(self.group_keys, self.Z.index, self.group_name)
        return self._keys

    @property
    def n_obs(self) -> np.ndarray:
        """Observations per group, shape (G,)."""
        return np.bincount(self.group, minlength=self.Z.shape[0])

    @property
    def labels(self) -> list[str]:
        """Group labels as strings."""
        return [str(v) for v in self.Z.index]


def _as_frame(name: str, a, n_rows: int | None = None) -> pd.DataFrame:
    if isinstance(a, pd.DataFrame):
        df = a.copy()
    else:
        arr = np.asarray(a, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be two-dimensional")
        df = pd.DataFrame(arr, columns=[f"{name}{j}" for j in range(arr.shape[1])])
    if n_rows is not None and len(df) != n_rows:
        raise ValueError(f"{name} has {len(df)} rows, expected {n_rows}")
    check_finite(name, df.to_numpy(dtype=float))
    if len(set(map(str, df.columns))) != df.shape[1]:
        raise ValueError(f"{name} has duplicate column names")
    return df


def prepare_lambda_data(
    y,
    treat,
    X,
    group,
    Z,
    group_keys: pd.DataFrame | None = None,
    group_name: str = "group",
) -> LambdaData:
    """Validate and bundle the inputs (see :func:`fit_lambda_model`)."""
    y = check_finite("y", np.asarray(y, dtype=float).ravel())
    n = len(y)
    treat = check_finite("treat", np.asarray(treat, dtype=float).ravel())
    if len(treat) != n:
        raise ValueError(f"treat has length {len(treat)}, y has {n}")
    Xf = _as_frame("X", X, n)
    Zf = _as_frame("Z", Z)
    G = len(Zf)
    g = np.asarray(group)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"group must be a vector of length {n}")
    if not np.issubdtype(g.dtype, np.integer):
        whole = np.issubdtype(g.dtype, np.floating) and np.all(np.isfinite(g))
        if whole and np.all(g == np.round(g)):
            g = g.astype(int)
        else:
            raise ValueError("group must hold integer codes 0..G-1 (use pandas.factorize)")
    if g.min() < 0 or g.max() >= G:
        raise ValueError(f"group codes must lie in 0..{G - 1} (Z has {G} rows)")
    if _n_unique(Zf.index) != G:
        raise ValueError("Z index (group labels) must be unique")
    if group_keys is not None and len(group_keys) != G:
        raise ValueError(f"group_keys has {len(group_keys)} rows, Z has {G}")
    d = LambdaData(y, treat, Xf, g.astype(np.int64), Zf, None, group_name, group_keys)
    in_order = group_keys is None or isinstance(group_keys.index, pd.RangeIndex)
    if not (in_order or group_keys.index.equals(Zf.index)):
        _ = d.keys  # rows matched by label now: a label that group_keys lacks raises here
    return d


def _n_unique(index: pd.Index) -> int:
    """``len(index.unique())``, from the index's array where it has one: ``Index.unique``
    first builds the index's hash engine (``is_unique``), which for 8 labels of pandas'
    string dtype took 60 us of the 80 us (measured); the array's own ``unique`` counts
    the same distinct values (missing ones as one)."""
    if isinstance(index, pd.MultiIndex):
        return len(index.unique())
    return len(index.array.unique())


#: The dtype of a column made from a list of Python strings.
_STRINGS = pd.Index(np.array(["a"], dtype=object)).dtype


def _keys_frame(group_keys: pd.DataFrame, index: pd.Index, group_name: str):
    """The labels (``index`` as strings), then the key columns of ``group_keys`` (rows
    matched to ``index``) but the label's own, as ``pd.concat`` of the label frame and the
    keys builds it: by ``reset_index`` where ``group_keys`` is indexed by these very labels
    (strings), from the columns' arrays where its rows are in order, else by that concat."""
    gk = group_keys
    same = gk.index.equals(index)
    in_order = same or isinstance(gk.index, pd.RangeIndex)
    # an index of strings holds the labels as str(v) makes them
    labels_as_index = same and gk.index.dtype == _STRINGS and not gk.index.hasnans
    if labels_as_index and gk.columns.is_unique:
        names = {group_name, gk.index.name}
        if gk.index.name is not None and not any(c in names for c in gk.columns):
            keys = gk.reset_index()
            keys.columns = pd.Index([group_name]).append(gk.columns)
            return keys
    labels = [str(v) for v in index]
    if in_order and gk.columns.is_unique:
        kept = pd.Index([c for c in gk.columns if c != group_name], dtype=gk.columns.dtype)
        keys = pd.DataFrame(
            {group_name: labels, **{c: gk[c].array.copy() for c in kept}}, copy=False
        )
        keys.columns = pd.Index([group_name]).append(kept)
        return keys
    gk = gk.reset_index(drop=True) if in_order else gk.loc[index].reset_index(drop=True)
    gk = gk.drop(columns=[group_name], errors="ignore")
    return pd.concat([pd.DataFrame({group_name: labels}), gk], axis=1)


# ------------------------------------------------------------------------- fit object
def _probs(level: float | Sequence[float] | None) -> list[float]:
    """Probabilities of ``groups.csv`` plus the ends of the central intervals ``level``."""
    probs = [0.5, *GROUP_QUANTILES.values()]
    levels = [] if level is None else np.atleast_1d(np.asarray(level, dtype=float)).tolist()
    for lv in levels:
        if not 0 < lv < 1:
            raise ValueError(f"level must lie in (0, 1), got {lv}")
        for p in ((1 - lv) / 2, (1 + lv) / 2):
            if not any(abs(p - q) < 1e-12 for q in probs):
                probs.append(p)
    return probs


@dataclasses.dataclass
class LambdaFit:
    """Fitted lambda model (the estimand API shared with the saturated OLS).

    Attributes
    ----------
    idata : arviz.InferenceData
        Posterior with variables ``beta[control]``, ``gamma[effect]``, ``sigma``,
        ``sigma_theta``, ``theta[group]``, ``lambda[group]``.
    data : LambdaData
        The validated inputs.
    diagnostics_record : Diagnostics
        Convergence and timing record.
    engine : str
        Engine used.
    posterior : LambdaPosterior, optional
        The exact engine's posterior (:class:`hetfx.models.pooled.LambdaPosterior`, a
        mixture of Gaussians over its grid); ``None`` for NUTS. When present, every summary
        is computed from it rather than from the draws, so it is free of Monte Carlo error
        and reproducible across machines.
    """

    idata: az.InferenceData
    data: LambdaData
    diagnostics_record: Diagnostics
    engine: str
    posterior: LambdaPosterior | None = None

    def _lambda_draws(self) -> np.ndarray:
        lam = self.idata.posterior["lambda"].transpose("chain", "draw", "group").values
        return lam.reshape(-1, lam.shape[-1])

    def summarise_lambda(
        self, weights=None, quantiles: Sequence[float] = (0.5, 0.025, 0.975)
    ) -> pd.DataFrame:
        """Posterior of linear combinations ``sum_g w_g lambda_g`` of the group effects.

        Parameters
        ----------
        weights : array-like or pandas.DataFrame, optional
            ``(m, G)`` weights (one row per combination; a 1-D array is one combination),
            in the group order of :meth:`group_effects`. A DataFrame keeps its index as the
            combination labels and may name its columns by group label. Default: every
            ``lambda_g``.
        quantiles : sequence of float
            Probabilities to report.

        Returns
        -------
        pandas.DataFrame
            One row per combination: ``mean``, ``sd`` and one column per quantile
            (``q50``, ``q025``, ...; :func:`hetfx.inference.quantile_name`). Exact (mixture
            of Gaussians) for the quadrature engine, from the draws otherwise.

        Examples
        --------
        Difference between the first two groups and the mean of all groups::

            W = np.zeros((2, G)); W[0, :2] = [1, -1]; W[1] = 1 / G
            fit.summarise_lambda(W, quantiles=[0.05, 0.5, 0.95])
        """
        index = None
        labels = self.data.labels
        if weights is None:
            W = None
            index = pd.Index(labels, name=self.data.group_name)
        elif isinstance(weights, pd.DataFrame):
            cols = [str(c) for c in weights.columns]
            if set(cols) == set(labels):
                W = weights.set_axis(cols, axis=1)[labels].to_numpy(dtype=float)
            else:
                W = weights.to_numpy(dtype=float)
            index = weights.index
        else:
            W = np.atleast_2d(np.asarray(weights, dtype=float))
        if W is not None and W.shape[1] != len(labels):
            raise ValueError(
                f"weights have {W.shape[1]} columns, the model has {len(labels)} groups"
            )
        if self.posterior is not None:
            out = self.posterior.summarise_lambda(W, probs=quantiles)
        else:
            lam = self._lambda_draws()
            comb = lam if W is None else lam @ W.T
            out = pd.DataFrame({"mean": comb.mean(axis=0), "sd": comb.std(axis=0, ddof=1)})
            for p, q in zip(quantiles, np.quantile(comb, list(quantiles), axis=0), strict=True):
                out[quantile_name(p)] = q
        if index is not None:
            out.index = index
        return out

    def group_effects(self, level: float | Sequence[float] | None = None) -> pd.DataFrame:
        """Posterior of each group's effect ``Z_g gamma + theta_g``.

        Parameters
        ----------
        level : float or sequence of float, optional
            Extra central interval(s), e.g. ``0.9`` adds ``q05`` and ``q95``.

        Returns
        -------
        pandas.DataFrame
            Group label, key columns, ``n_obs``, ``estimate`` (posterior median), ``q025``,
            ``q10``, ``q90``, ``q975`` (and the ends of ``level``). Exact for the quadrature
            engine (see :attr:`posterior`), from the draws otherwise.
        """
        probs = _probs(level)
        if self.posterior is None:
            lam = self._lambda_draws()
            res = summarise_groups(lam, self.data.keys, self.data.n_obs)
            for p in probs[5:]:
                res[quantile_name(p)] = np.quantile(lam, p, axis=0)
            return res
        s = self.posterior.summarise_lambda(probs=probs)
        res = self.data.keys.reset_index(drop=True).copy()
        res["n_obs"] = np.asarray(self.data.n_obs, dtype=int)
        res["estimate"] = s["q50"].to_numpy()
        for p in probs[1:]:
            res[quantile_name(p)] = s[quantile_name(p)].to_numpy()
        return res

    def coefs(self) -> pd.DataFrame:
        """Coefficient table: ``effect`` (gamma), ``control`` (beta), ``scale`` (SDs).

        Columns ``equation``, ``term``, ``mean``, ``sd``, ``q025``, ``q975``, ``r_hat``,
        ``ess_bulk``, from the draws (the exact engine's fits,
        :class:`hetfx.models.pooled.ExactLambdaFit`, report exact summaries instead).
        """
        return summarise_coefs(
            self.idata,
            {"effect": ["gamma"], "control": ["beta"], "scale": ["sigma", "sigma_theta"]},
        )

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame of :class:`hetfx.inference.Diagnostics`."""
        return self.diagnostics_record.to_frame()


def _idata_from_draws(
    draws: dict[str, np.ndarray], d: LambdaData, chains: int, sample_stats: dict | None = None
) -> az.InferenceData:
    import arviz as az

    coords = {
        "control": [str(c) for c in d.X.columns],
        "effect": [str(c) for c in d.Z.columns],
        "group": d.labels,
    }
    dims = {"beta": ["control"], "gamma": ["effect"], "theta": ["group"], "lambda": ["group"]}
    if "alpha" in draws:
        dims["alpha"] = ["group"]
    post = {k: v.reshape(chains, len(v) // chains, *v.shape[1:]) for k, v in draws.items()}
    return az.from_dict(posterior=post, coords=coords, dims=dims, sample_stats=sample_stats)


#: Probabilities summarised for every coefficient and group effect by default.
_SUMMARY_PROBS = (0.5, 0.025, 0.10, 0.90, 0.975)


class ScaledPosterior:
    """An exact posterior of a fit to ``(y - loc) / scale``, reported on the scale of ``y``.

    Wraps :class:`hetfx.models.pooled.LambdaPosterior` (or anything with ``summarise_lambda``,
    ``summarise_coefs`` and ``summarise_scales``): effects, coefficients and scales are
    multiplied by ``scale`` and the intercept moved by ``loc`` (``shift`` holds ``loc`` at the
    intercept's position among the controls and 0 elsewhere).
    """

    def __init__(self, inner, scale: float, shift: np.ndarray) -> None:
        self.inner, self.scale, self.shift = inner, float(scale), np.asarray(shift, dtype=float)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _scaled(self, out: pd.DataFrame, shift: np.ndarray | None = None) -> pd.DataFrame:
        out = out * self.scale
        if shift is not None:
            for c in out.columns:
                if c != "sd":
                    out[c] = out[c] + shift
        return out

    def summarise_lambda(self, W=None, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """As the wrapped posterior's, on the outcome's scale."""
        return self._scaled(self.inner.summarise_lambda(W, probs=probs))

    def summarise_coefs(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """As the wrapped posterior's (``beta`` then ``gamma``), on the outcome's scale."""
        out = self.inner.summarise_coefs(probs=probs)
        shift = np.zeros(len(out))
        shift[: len(self.shift)] = self.shift
        return self._scaled(out, shift)

    def summarise_scales(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """As the wrapped posterior's, on the outcome's scale (a correlation unchanged)."""
        out = self.inner.summarise_scales(probs=probs)
        scaled = self._scaled(out)
        names = list(getattr(self.inner, "scale_names", []))
        if "rho" in names:
            scaled.iloc[names.index("rho")] = out.iloc[names.index("rho")]
        return scaled

    def summarise_alpha(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """As the wrapped posterior's, on the outcome's scale."""
        return self._scaled(self.inner.summarise_alpha(probs=probs))


def pointwise_loglik(
    beta: np.ndarray,
    lam: np.ndarray,
    sigma: np.ndarray,
    X: np.ndarray,
    treat: np.ndarray,
    group: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator | None = None,
    chunk: int = 256,
    weights: np.ndarray | None = None,
    alpha: np.ndarray | None = None,
):
    """Pointwise log-likelihood ``log N(y_i | lambda_g[i] T_i + X_i beta, sigma)`` at every
    draw (and, with ``rng``, posterior predictive draws); the Gaussian twin of
    :func:`hetfx.models.bernoulli.pointwise_loglik`.

    ``beta`` (S, p), ``lam`` (S, G) and ``sigma`` (S,) are flattened draws. With ``weights``
    the terms are ``w_i log p(y_i | draw)`` and the replicated errors have SD
    ``sigma / sqrt(w_i)`` (the weighted likelihood the posterior was conditioned on).
    ``alpha`` (S, G), where given, adds each row's cell baseline to the mean.

    Returns
    -------
    loglik : numpy.ndarray
        ``(S, n)``.
    y_rep : numpy.ndarray or None
        ``(S, n)`` replicated outcomes when ``rng`` is given.
    """
    S, n = len(sigma), len(y)
    ll = np.empty((S, n))
    yrep = np.empty((S, n)) if rng is not None else None
    for i in range(0, S, chunk):
        sl = slice(i, i + chunk)
        mu = beta[sl] @ X.T + lam[sl][:, group] * treat
        if alpha is not None:  # the cells' baselines (pooled-baselines model)
            mu += alpha[sl][:, group]
        s = sigma[sl][:, None]
        z = (y - mu) / s
        ll[sl] = -0.5 * z**2 - np.log(s) - 0.5 * np.log(2 * np.pi)
        if rng is not None:
            sd = s if weights is None else s / np.sqrt(weights)
            yrep[sl] = mu + sd * rng.standard_normal(mu.shape)
    if weights is not None:
        ll *= weights
    return ll, yrep


# ----------------------------------------------------------------------- nutpie engine
_NUTPIE_CACHE: dict = {}


def build_pymc_model(
    d: LambdaData,
    gamma_sd: float = 1.0,
    beta_sd=1.0,
    sigma_prior: ScalePrior | None = None,
    sigma_theta_prior: ScalePrior | None = None,
    sigma_alpha_prior: ScalePrior | None = None,
):
    """Full lambda model in PyMC (non-centred ``theta``; covariates and prior SDs as data).

    Parameters
    ----------
    d : LambdaData
        Inputs (see :func:`prepare_lambda_data`).
    gamma_sd, beta_sd : float or array-like
        Prior SDs of ``gamma`` and ``beta``.
    sigma_prior, sigma_theta_prior : ScalePrior, optional
        Priors of the SDs (brms default half-Student-t(3, 0, 2.5)).
    sigma_alpha_prior : ScalePrior, optional
        Given: pooled baselines ``alpha_g ~ N(0, sigma_alpha)`` (non-centred) in the mean.

    Returns
    -------
    pymc.Model
    """
    import pymc as pm

    sigma_prior = sigma_prior or ScalePrior.brms_default()
    with pymc_two_equations(d, gamma_sd, beta_sd, sigma_theta_prior) as (model, v):
        sigma = sigma_prior.to_pymc("sigma")
        mu = v.lam[v.g] * v.T + pm.math.dot(v.X, v.beta)
        if sigma_alpha_prior is not None:  # pooled baselines, non-centred
            sigma_alpha = sigma_alpha_prior.to_pymc("sigma_alpha")
            alpha_raw = pm.Normal("alpha_raw", 0.0, 1.0, dims="group")
            alpha = pm.Deterministic("alpha", alpha_raw * sigma_alpha, dims="group")
            mu = mu + alpha[v.g]
        pm.Normal("y_obs", mu=mu, sigma=sigma, observed=v.y, dims="obs")
    return model


@contextlib.contextmanager
def pymc_two_equations(d: LambdaData, gamma_sd: float, beta_sd, sigma_theta_prior):
    """The two equations in PyMC, shared by every family: a model with named coords, the
    covariates as ``pm.Data``, ``beta``, ``gamma``, non-centred ``theta`` and ``lambda``.

    Yields ``(model, v)`` inside the model's context, ``v`` holding the data and variables
    (``X``, ``Z``, ``T``, ``g``, ``y``, ``beta``, ``gamma``, ``lam``); the caller adds the
    likelihood.
    """
    import pymc as pm

    sigma_theta_prior = sigma_theta_prior or ScalePrior.brms_default()
    p = d.X.shape[1]
    coords = {
        "control": [str(c) for c in d.X.columns],
        "effect": [str(c) for c in d.Z.columns],
        "group": d.labels,
        "obs": np.arange(len(d.y)),
    }
    with pm.Model(coords=coords) as model:
        X = pm.Data("X", d.X.to_numpy(dtype=float), dims=("obs", "control"))
        Z = pm.Data("Z", d.Z.to_numpy(dtype=float), dims=("group", "effect"))
        T = pm.Data("treat", d.treat, dims="obs")
        g = pm.Data("group_idx", d.group, dims="obs")
        y = pm.Data("y", d.y, dims="obs")
        bsd = pm.Data(
            "beta_sd", np.broadcast_to(np.asarray(beta_sd, float), (p,)).copy(), dims="control"
        )
        gsd = pm.Data("gamma_sd", float(gamma_sd))
        beta = pm.Normal("beta", 0.0, bsd, dims="control")
        gamma = pm.Normal("gamma", 0.0, gsd, dims="effect")
        sigma_theta = sigma_theta_prior.to_pymc("sigma_theta")
        theta_raw = pm.Normal("theta_raw", 0.0, 1.0, dims="group")
        theta = pm.Deterministic("theta", theta_raw * sigma_theta, dims="group")
        lam = pm.Deterministic("lambda", pm.math.dot(Z, gamma) + theta, dims="group")
        yield model, types.SimpleNamespace(X=X, Z=Z, T=T, g=g, y=y, beta=beta, gamma=gamma, lam=lam)


def _fit_nutpie(
    d: LambdaData,
    gamma_sd,
    beta_sd,
    sigma_prior,
    sigma_theta_prior,
    chains: int,
    draws: int,
    tune: int,
    seed: int,
    target_accept: float,
    cores: int | None,
    sigma_alpha_prior: ScalePrior | None = None,
):
    p = d.X.shape[1]
    key = (
        len(d.y),
        p,
        d.Z.shape[1],
        d.Z.shape[0],
        sigma_prior,
        sigma_theta_prior,
        sigma_alpha_prior,
    )
    t0 = time.perf_counter()
    data = {
        "X": d.X.to_numpy(dtype=float),
        "Z": d.Z.to_numpy(dtype=float),
        "treat": d.treat,
        "group_idx": d.group,
        "y": d.y,
        "beta_sd": np.broadcast_to(np.asarray(beta_sd, float), (p,)).copy(),
        "gamma_sd": np.asarray(float(gamma_sd)),
    }
    tr, t1, t2 = sample_nutpie(
        _NUTPIE_CACHE,
        key,
        lambda: build_pymc_model(
            d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior, sigma_alpha_prior
        ),
        data,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        cores=cores,
    )
    post = tr.posterior
    draws_d = {}
    names = ["beta", "gamma", "sigma", "sigma_theta", "theta", "lambda"]
    if sigma_alpha_prior is not None:
        names += ["alpha", "sigma_alpha"]
    for v in names:
        a = post[v].values
        draws_d[v] = a.reshape(-1, *a.shape[2:])
    ss = {"diverging": tr.sample_stats["diverging"].values}
    idata = _idata_from_draws(draws_d, d, chains, sample_stats=ss)
    idata.attrs = {"engine": "nutpie", "target_accept": target_accept}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1, "edge": float("nan")}


# ----------------------------------------------------------------------------- public
def fit_lambda_model(
    y,
    treat,
    X,
    group,
    Z,
    *,
    group_keys: pd.DataFrame | None = None,
    group_name: str = "group",
    engine: str = "nutpie",
    gamma_sd: float = 1.0,
    beta_sd: float | Sequence[float] = 1.0,
    sigma_prior: ScalePrior | None = None,
    sigma_theta_prior: ScalePrior | None = None,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    seed: int = 0,
    cores: int | None = None,
    sigma_alpha_prior: ScalePrior | None = None,
) -> LambdaFit:
    """Fit the two-equation (lambda) model by NUTS.

    The exact engine (:func:`hetfx.fit`'s default) is
    :func:`hetfx.models.pooled.fit_exact_lambda`.

    Parameters
    ----------
    y : array-like, shape (n,)
        Outcome.
    treat : array-like, shape (n,)
        Treatment indicator (or dose) ``T``.
    X : pandas.DataFrame, shape (n, p)
        Control design including an ``Intercept`` column; column names are the
        ``control`` terms.
    group : array-like of int, shape (n,)
        Group codes 0..G-1 (row ``g`` of ``Z``).
    Z : pandas.DataFrame, shape (G, q)
        Effect design per group including ``Intercept``; index = group labels, column
        names are the ``effect`` terms.
    group_keys : pandas.DataFrame, optional
        G rows of key columns (e.g. regime, stakes, costs, region), in the order of ``Z``
        (or indexed by the labels of ``Z``); copied into :meth:`LambdaFit.group_effects`.
    group_name : str, default "group"
        Name of the label column in :meth:`LambdaFit.group_effects`.
    engine : {"nutpie"}
        Posterior engine (:data:`ENGINES`; see the module docstring).
    gamma_sd, beta_sd : float
        Prior SDs of ``gamma`` and ``beta`` (``beta_sd`` may be one per column).
    sigma_prior, sigma_theta_prior : ScalePrior, optional
        Default half-Student-t(3, 0, 2.5), as brms.
    chains, draws : int
        Posterior layout.
    tune : int
        Warm-up iterations per chain.
    target_accept : float
        NUTS target acceptance; the original used .95 for M1.
    seed : int
        Random seed.
    cores : int, optional
        Threads for nutpie (default min(chains, 2)).
    sigma_alpha_prior : ScalePrior, optional
        Pooled baselines ``alpha_g ~ N(0, sigma_alpha)`` with this prior (a
        :class:`hetfx.models.pooled.PooledFit`).

    Returns
    -------
    LambdaFit

    Examples
    --------
    >>> fit = fit_lambda_model(y, t, X, codes, Z, group_keys=keys)  # doctest: +SKIP
    >>> fit.group_effects().head()                                  # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if chains < 1 or draws < 1:
        raise ValueError("chains and draws must be positive")
    sigma_prior = sigma_prior or ScalePrior.brms_default()
    sigma_theta_prior = sigma_theta_prior or ScalePrior.brms_default()
    t0 = time.perf_counter()
    d = prepare_lambda_data(y, treat, X, group, Z, group_keys, group_name)
    idata, tm = _fit_nutpie(
        d,
        gamma_sd,
        beta_sd,
        sigma_prior,
        sigma_theta_prior,
        chains,
        draws,
        tune,
        seed,
        target_accept,
        cores,
        sigma_alpha_prior=sigma_alpha_prior,
    )
    wall = time.perf_counter() - t0
    pooled = sigma_alpha_prior is not None
    diag = compute_diagnostics(
        idata,
        engine,
        var_names=["beta", "gamma", "sigma", "sigma_theta", *(["sigma_alpha"] if pooled else [])]
        + ["lambda"],
        wall_seconds=wall,
        compile_seconds=tm["compile"],
        sampling_seconds=tm["sampling"],
        grid_edge_mass=tm["edge"],
    )
    if pooled:
        from hetfx.models.pooled import PooledFit

        return PooledFit(idata=idata, data=d, diagnostics_record=diag, engine=engine)
    return LambdaFit(idata=idata, data=d, diagnostics_record=diag, engine=engine)
