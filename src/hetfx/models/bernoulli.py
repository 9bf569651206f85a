"""Two-equation (lambda) model with a Bernoulli (logit) outcome.

Model::

    y_i      ~ Bernoulli(logit^-1(X_i beta + lambda_g[i] T_i))
    lambda_g = Z_g gamma + theta_g,      theta_g = sigma_theta * z_g,  z_g ~ N(0, 1)
    gamma    ~ N(0, gamma_sd),  beta ~ N(0, beta_sd),
    sigma_theta ~ half-Student-t(3, 0, 2.5)   (brms default; configurable)

``lambda_g`` is the group's effect on the log-odds scale. A group's effect on the probability
scale is its average marginal effect (AME): for each posterior draw, the mean over the group's
observations of ``p_i(T = 1) - p_i(T = 0)`` with ``p_i(t) = logit^-1(X_i beta + lambda_g t)``;
the posterior of the AME is summarised from those per-draw means (:func:`group_ame`).

Engines: ``"qmc"`` (default; :mod:`hetfx.models.logit_qmc`) integrates sigma_theta on a fixed
grid and the rest by quasi-Monte Carlo importance sampling from the conditional Laplace
approximation, with summaries continuous in the arithmetic (the same numbers on any CPU to
rounding) and their Monte Carlo SEs; ``"nutpie"`` samples the PyMC model by NUTS. The PyMC
model uses named coords/dims, ``pm.Data`` covariates and a non-centred theta; compiled models
are cached per data shape and prior and reused through nutpie's ``with_data``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit

from hetfx.inference import (
    GROUP_QUANTILES,
    Diagnostics,
    compute_diagnostics,
    sample_nutpie,
    summarise_coefs,
    summarise_groups,
)
from hetfx.models.gaussian import ScalePrior, check_finite
from hetfx.models.lambda_model import LambdaData, pymc_two_equations

__all__ = [
    "BernoulliData",
    "BernoulliLambdaFit",
    "ENGINES",
    "build_pymc_model",
    "fit_bernoulli_lambda",
    "distinct_rows",
    "group_ame",
    "pointwise_loglik",
]


class BernoulliData(LambdaData):
    """Validated inputs, as :class:`hetfx.models.lambda_model.LambdaData`, with a 0/1 ``y``
    and ``treat``."""


def _binary(name: str, a) -> np.ndarray:
    arr = check_finite(name, np.asarray(a, dtype=float).ravel())
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must be 0/1 for the Bernoulli family; "
            f"{int(bad.sum())} values are not (e.g. {arr[bad][0]!r})"
        )
    return arr


def prepare_bernoulli_data(
    y,
    treat,
    X: pd.DataFrame,
    group,
    Z: pd.DataFrame,
    group_keys: pd.DataFrame | None = None,
    group_name: str = "group",
) -> BernoulliData:
    """Validate and bundle the inputs (see :func:`fit_bernoulli_lambda`)."""
    y = _binary("y", y)
    n = len(y)
    treat = _binary("treat", treat)
    if len(treat) != n:
        raise ValueError(f"treat has length {len(treat)}, y has {n}")
    if not isinstance(X, pd.DataFrame) or not isinstance(Z, pd.DataFrame):
        raise TypeError("X and Z must be pandas DataFrames (column names are the terms)")
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows, expected {n}")
    check_finite("X", X.to_numpy(dtype=float))
    check_finite("Z", Z.to_numpy(dtype=float))
    g = np.asarray(group)
    G = len(Z)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"group must be {n} integer codes 0..{G - 1}")
    if g.min() < 0 or g.max() >= G:
        raise ValueError(f"group codes must lie in 0..{G - 1} (Z has {G} rows)")
    if not Z.index.is_unique:
        raise ValueError("Z index (group labels) must be unique")
    lab = pd.DataFrame({group_name: [str(v) for v in Z.index]})
    if group_keys is None:
        keys = lab
    else:
        gk = group_keys.loc[Z.index].reset_index(drop=True)
        keys = pd.concat([lab, gk.drop(columns=[group_name], errors="ignore")], axis=1)
    return BernoulliData(y, treat, X.copy(), g.astype(np.int64), Z.copy(), keys, group_name)


# --------------------------------------------------------------------------- draws
def distinct_rows(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of the columns side by side (sorted) and every row's index among them.

    A likelihood or a group average that depends on a row only through these columns is a
    sum over the distinct rows with counts: with a few discrete covariates (cells, their
    main effects, a binary treatment) thousands of rows collapse to a few dozen.

    Returns
    -------
    rows : numpy.ndarray
        ``(k, m)`` distinct rows of ``numpy.column_stack(columns)``.
    inverse : numpy.ndarray
        ``(n,)`` index of each input row in ``rows``.
    """
    key = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    rows, inverse = np.unique(key, axis=0, return_inverse=True)
    return rows, inverse.ravel()


def group_ame(
    beta: np.ndarray,
    lam: np.ndarray,
    X: np.ndarray,
    group: np.ndarray,
    chunk: int = 4096,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per-draw average marginal effect of each group on the probability scale.

    Rows sharing their covariates and group enter once, with their count (or sum of
    weights), so the cost grows with the number of distinct ``(X_i, g_i)``, not of rows.

    Parameters
    ----------
    beta : numpy.ndarray
        ``(S, p)`` draws of the outcome-equation coefficients.
    lam : numpy.ndarray
        ``(S, G)`` draws of the group effects on the log-odds scale.
    X : numpy.ndarray
        ``(n, p)`` outcome-equation design.
    group : numpy.ndarray
        ``(n,)`` group codes 0..G-1 (every group must have an observation).
    chunk : int
        Draws processed at once (memory ``chunk * k`` floats, ``k`` distinct rows).
    weights : numpy.ndarray, optional
        Observation weights: the mean over a group's rows is then weighted.

    Returns
    -------
    numpy.ndarray
        ``(S, G)``: ``mean_{i in g} [expit(X_i beta + lambda_g) - expit(X_i beta)]``.
    """
    S, G = lam.shape
    X = np.asarray(X, dtype=float)
    group = np.asarray(group)
    rows, inv = distinct_rows(X, group)
    wt = np.ones(len(group)) if weights is None else np.asarray(weights, dtype=float)
    Xu, gu = rows[:, :-1], rows[:, -1].astype(np.int64)
    share = np.bincount(inv, weights=wt, minlength=len(rows))
    share /= np.bincount(gu, weights=share, minlength=G)[gu]
    W = sparse.csr_matrix((share, (gu, np.arange(len(rows)))), shape=(G, len(rows)))
    chunk = max(1, min(chunk, 2**22 // max(len(rows), 1)))
    out = np.empty((S, G))
    lam = np.ascontiguousarray(lam, dtype=float)
    for i in range(0, S, chunk):
        eta0 = beta[i : i + chunk] @ Xu.T
        if _ame_kernel is not None:
            _ame_kernel(eta0, lam[i : i + chunk], gu, share, out[i : i + chunk])
        else:
            diff = expit(eta0 + lam[i : i + chunk][:, gu]) - expit(eta0)
            out[i : i + chunk] = (W @ diff.T).T
    return out


def _ame_kernel_py(eta0, lam, gu, share, out):  # pragma: no cover - compiled by numba
    """``out[s, g] = sum_{k in g} share_k (expit(eta0[s, k] + lam[s, g]) - expit(eta0[s, k]))``
    (one pass over the distinct rows, no temporaries)."""
    S, K = eta0.shape
    for s in range(S):
        for g in range(out.shape[1]):
            out[s, g] = 0.0
        for k in range(K):
            g = gu[k]
            e = eta0[s, k]
            out[s, g] += share[k] * (
                1.0 / (1.0 + math.exp(-(e + lam[s, g]))) - 1.0 / (1.0 + math.exp(-e))
            )


try:  # numba ships with pytensor; without it group_ame uses numpy (about 5 times slower)
    import numba

    #: compiled once per machine (cached beside this module), reused by every fit
    _ame_kernel = numba.njit(cache=True)(_ame_kernel_py)
except ImportError:  # pragma: no cover
    _ame_kernel = None


def pointwise_loglik(
    beta: np.ndarray,
    lam: np.ndarray,
    X: np.ndarray,
    treat: np.ndarray,
    group: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator | None = None,
    chunk: int = 256,
    weights: np.ndarray | None = None,
):
    """Pointwise log-likelihood (and, with ``rng``, posterior predictive draws).

    With ``weights`` the pointwise terms are ``w_i log p(y_i | draw)`` (the weighted
    likelihood the posterior was conditioned on).

    Returns
    -------
    loglik : numpy.ndarray
        ``(S, n)`` ``log p(y_i | draw)``.
    y_rep : numpy.ndarray or None
        ``(S, n)`` replicated outcomes (int8) when ``rng`` is given.
    """
    S = beta.shape[0]
    n = len(y)
    ll = np.empty((S, n))
    yrep = np.empty((S, n), dtype=np.int8) if rng is not None else None
    sign = np.where(y > 0.5, 1.0, -1.0)
    for i in range(0, S, chunk):
        eta = beta[i : i + chunk] @ X.T + lam[i : i + chunk][:, group] * treat
        ll[i : i + chunk] = -np.logaddexp(0.0, -sign * eta)
        if weights is not None:
            ll[i : i + chunk] *= weights
        if rng is not None:
            yrep[i : i + chunk] = rng.random(eta.shape) < expit(eta)
    return ll, yrep


# --------------------------------------------------------------------------- model
def build_pymc_model(
    d: BernoulliData,
    gamma_sd: float = 1.0,
    beta_sd=1.0,
    sigma_theta_prior: ScalePrior | None = None,
    weights: np.ndarray | None = None,
):
    """The logit lambda model in PyMC (non-centred theta; covariates as ``pm.Data``).

    With ``weights`` the likelihood is ``sum_i w_i log p(y_i)`` (a ``pm.Potential``).

    Returns
    -------
    pymc.Model
    """
    import pymc as pm

    with pymc_two_equations(d, gamma_sd, beta_sd, sigma_theta_prior) as (model, v):
        eta = pm.math.dot(v.X, v.beta) + v.lam[v.g] * v.T
        if weights is None:
            pm.Bernoulli("y_obs", logit_p=eta, observed=v.y, dims="obs")
        else:
            w = pm.Data("w", np.asarray(weights, dtype=float), dims="obs")
            logp = pm.logp(pm.Bernoulli.dist(logit_p=eta), v.y)
            pm.Potential("y_obs", (w * logp).sum())
    return model


_CACHE: dict = {}
#: Posterior engines of :func:`fit_bernoulli_lambda`.
ENGINES = ("qmc", "nutpie")


@dataclasses.dataclass
class BernoulliLambdaFit:
    """Fitted logit lambda model.

    Attributes
    ----------
    idata : arviz.InferenceData
        Posterior with ``beta[control]``, ``gamma[effect]``, ``sigma_theta``,
        ``theta[group]``, ``lambda[group]`` (log-odds) and ``ame[group]`` (probability scale).
    data : BernoulliData
        The validated inputs.
    diagnostics_record : Diagnostics
        Convergence and timing record.
    engine : str
        ``"qmc"`` or ``"nutpie"``.
    exact : dict or None
        ``qmc`` engine: the summaries computed from the weighted points (``summaries``:
        per variable the quantiles ``[0.5, 0.025, 0.1, 0.9, 0.975]``, means, SDs and their
        Monte Carlo SEs) and the quadrature record (``info``: sigma_theta nodes, their
        posterior masses and Pareto k-hats). :meth:`group_effects`, :meth:`coefs` and
        :meth:`mcse` read them.
    """

    idata: az.InferenceData
    data: BernoulliData
    diagnostics_record: Diagnostics
    engine: str = "nutpie"
    exact: dict | None = None

    def group_effects(self, scale: str = "probability") -> pd.DataFrame:
        """Group effects: AME on the probability scale (default) or lambda on ``"logit"``.

        Returns
        -------
        pandas.DataFrame
            Group label, keys, ``n_obs``, ``estimate`` (median), ``q025``, ``q10``, ``q90``,
            ``q975``.
        """
        var = {"probability": "ame", "logit": "lambda"}[scale]
        if self.exact is not None:
            return self._exact_groups(var, "quantiles")
        draws = self.idata.posterior[var].transpose("chain", "draw", "group").values
        return summarise_groups(draws, self.data.keys, self.data.n_obs)

    def _exact_groups(self, var: str, field: str) -> pd.DataFrame:
        qs = self.exact["summaries"][var][field]
        res = self.data.keys.reset_index(drop=True).copy()
        res["n_obs"] = np.asarray(self.data.n_obs, dtype=int)
        res["estimate"] = qs[0]
        for i, name in enumerate(GROUP_QUANTILES):
            res[name] = qs[i + 1]
        return res

    def mcse(self, scale: str = "probability") -> pd.DataFrame:
        """Monte Carlo standard errors of :meth:`group_effects` (same layout); ``qmc`` engine
        only (delta method for self-normalised importance sampling)."""
        if self.exact is None:
            raise ValueError(f"the {self.engine} engine stores no Monte Carlo SEs")
        return self._exact_groups({"probability": "ame", "logit": "lambda"}[scale], "quantiles_se")

    def coefs(self) -> pd.DataFrame:
        """Coefficient table: ``effect`` (gamma), ``control`` (beta), ``scale`` (sigma_theta);
        log-odds scale."""
        eqs = {"effect": ["gamma"], "control": ["beta"], "scale": ["sigma_theta"]}
        if self.exact is None:
            return summarise_coefs(self.idata, eqs)
        terms = {
            "gamma": [str(c) for c in self.data.Z.columns],
            "beta": [str(c) for c in self.data.X.columns],
            "sigma_theta": ["sigma_theta"],
        }
        rows = []
        for eq, (var,) in eqs.items():
            s = self.exact["summaries"][var]
            rows.append(
                pd.DataFrame(
                    {
                        "equation": eq,
                        "term": terms[var],
                        "mean": s["mean"],
                        "sd": s["sd"],
                        "q025": s["quantiles"][1],
                        "q975": s["quantiles"][4],
                    }
                )
            )
        out = pd.concat(rows, ignore_index=True)
        # no chains: R-hat is undefined; the effective sample size is that of the weights
        out["r_hat"] = np.nan
        out["ess_bulk"] = self.exact["info"]["ess"]
        return out

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame of :class:`hetfx.inference.Diagnostics`."""
        return self.diagnostics_record.to_frame()


def fit_bernoulli_lambda(
    y,
    treat,
    X: pd.DataFrame,
    group,
    Z: pd.DataFrame,
    *,
    group_keys: pd.DataFrame | None = None,
    group_name: str = "group",
    gamma_sd: float = 1.0,
    beta_sd: float | Sequence[float] = 1.0,
    sigma_theta_prior: ScalePrior | None = None,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    seed: int = 0,
    cores: int | None = None,
    weights=None,
    engine: str = "qmc",
    qmc_m: int | None = None,
    n_nodes: int | None = None,
    max_pareto_k: float = 0.7,
) -> BernoulliLambdaFit:
    """Fit the logit lambda model (quadrature + quasi-Monte Carlo importance sampling, or
    NUTS).

    Parameters
    ----------
    y, treat : array-like of 0/1, shape (n,)
        Outcome and treatment.
    X : pandas.DataFrame, shape (n, p)
        Outcome-equation design (with ``Intercept``).
    group : array-like of int, shape (n,)
        Group codes 0..G-1 (row ``g`` of ``Z``).
    Z : pandas.DataFrame, shape (G, q)
        Heterogeneity design, index = group labels.
    group_keys : pandas.DataFrame, optional
        Key columns per group, indexed by the labels of ``Z``.
    group_name : str
        Name of the label column in tidy outputs.
    gamma_sd, beta_sd : float
        Prior SDs (``beta_sd`` may be one per column of X).
    sigma_theta_prior : ScalePrior, optional
        Prior of sigma_theta (default half-Student-t(3, 0, 2.5)).
    chains, draws, tune, target_accept, seed, cores
        NUTS settings (``cores`` default min(chains, 2)). The ``qmc`` engine returns
        ``chains x draws`` resampled draws and uses ``seed`` as the Sobol scramble seed.
    weights : array-like, optional
        Positive observation weights (used as given): the likelihood of row i is raised to
        ``w_i`` and the group AMEs average over rows with these weights.
    engine : {"qmc", "nutpie"}
        ``"qmc"`` (default): deterministic quadrature over sigma_theta and importance
        sampling from the conditional Laplace approximation on a fixed scrambled Sobol set
        (:mod:`hetfx.models.logit_qmc`); summaries are continuous in the arithmetic and carry
        Monte Carlo SEs (:meth:`BernoulliLambdaFit.mcse`). ``"nutpie"``: NUTS.
    qmc_m, n_nodes : int, optional
        ``qmc`` engine: ``2**qmc_m`` Sobol points at each of ``n_nodes`` sigma_theta nodes
        (defaults :data:`~hetfx.models.logit_qmc.QMC_M`,
        :data:`~hetfx.models.logit_qmc.QMC_NODES`).
    max_pareto_k : float
        ``qmc`` engine: the fit fails (:class:`~hetfx.inference.SamplerDiagnosticsError`)
        when the Pareto k-hat of a node's importance weights exceeds this.

    Returns
    -------
    BernoulliLambdaFit
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if chains < 1 or draws < 1:
        raise ValueError("chains and draws must be positive")
    sigma_theta_prior = sigma_theta_prior or ScalePrior.brms_default()
    t0 = time.perf_counter()
    d = prepare_bernoulli_data(y, treat, X, group, Z, group_keys, group_name)
    p = d.X.shape[1]
    bsd = np.broadcast_to(np.asarray(beta_sd, float), (p,)).copy()
    if np.any(bsd <= 0) or not gamma_sd > 0:
        raise ValueError("prior SDs must be positive")
    if weights is not None:
        weights = check_finite("weights", np.asarray(weights, dtype=float).ravel())
        if weights.shape != (len(d.y),) or np.any(weights <= 0):
            raise ValueError(f"weights must be {len(d.y)} positive values")
    if engine == "qmc":
        return _fit_qmc(
            d,
            bsd,
            gamma_sd,
            sigma_theta_prior,
            weights,
            chains,
            draws,
            seed,
            qmc_m,
            n_nodes,
            max_pareto_k,
            t0,
        )
    return _fit_nutpie(
        d,
        bsd,
        gamma_sd,
        sigma_theta_prior,
        weights,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        cores=cores,
        target_accept=target_accept,
        t0=t0,
    )


def _fit_nutpie(
    d, bsd, gamma_sd, prior, weights, *, chains, draws, tune, seed, cores, target_accept, t0
) -> BernoulliLambdaFit:
    """The ``nutpie`` engine: NUTS on the compiled PyMC model, group AMEs from its draws."""
    key = (len(d.y), bsd.size, d.Z.shape[1], d.Z.shape[0], prior, weights is None)
    data = {
        "X": d.X.to_numpy(dtype=float),
        "Z": d.Z.to_numpy(dtype=float),
        "treat": d.treat,
        "group_idx": d.group,
        "y": d.y,
        "beta_sd": bsd,
        "gamma_sd": np.asarray(float(gamma_sd)),
    }
    if weights is not None:
        data["w"] = weights
    tr, t1, t2 = sample_nutpie(
        _CACHE,
        key,
        lambda: build_pymc_model(d, gamma_sd, bsd, prior, weights),
        data,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        cores=cores,
    )
    post = tr.posterior
    flat = {}
    for v in ("beta", "gamma", "sigma_theta", "theta", "lambda"):
        a = post[v].values
        flat[v] = a.reshape(-1, *a.shape[2:])
    flat["ame"] = group_ame(flat["beta"], flat["lambda"], data["X"], d.group, weights=weights)
    coords, dims = _posterior_coords(d)
    idata = az.from_dict(
        posterior={k: v.reshape(chains, -1, *v.shape[1:]) for k, v in flat.items()},
        coords=coords,
        dims=dims,
        sample_stats={"diverging": tr.sample_stats["diverging"].values},
    )
    idata.attrs = {"engine": "nutpie", "family": "bernoulli", "target_accept": target_accept}
    diag = compute_diagnostics(
        idata,
        "nutpie",
        var_names=["beta", "gamma", "sigma_theta", "lambda", "ame"],
        wall_seconds=time.perf_counter() - t0,
        compile_seconds=t1 - t0,
        sampling_seconds=t2 - t1,
    )
    return BernoulliLambdaFit(idata=idata, data=d, diagnostics_record=diag)


def _posterior_coords(d) -> tuple[dict, dict]:
    """Coordinates and dimensions of the posterior variables (both engines)."""
    coords = {
        "control": [str(c) for c in d.X.columns],
        "effect": [str(c) for c in d.Z.columns],
        "group": d.labels,
    }
    dims = {
        "beta": ["control"],
        "gamma": ["effect"],
        "theta": ["group"],
        "lambda": ["group"],
        "ame": ["group"],
    }
    return coords, dims


def _fit_qmc(
    d, bsd, gamma_sd, prior, weights, chains, draws, seed, qmc_m, n_nodes, max_pareto_k, t0
):
    from hetfx.models import logit_qmc
    from hetfx.models.gaussian import single_threaded_blas

    X = d.X.to_numpy(dtype=float)
    opts = {}
    if qmc_m is not None:
        opts["qmc_m"] = int(qmc_m)
    if n_nodes is not None:
        opts["n_nodes"] = int(n_nodes)
    with single_threaded_blas():
        res = logit_qmc.fit_qmc(
            X,
            d.treat,
            d.group,
            d.Z.to_numpy(dtype=float),
            d.y,
            bsd,
            float(gamma_sd),
            prior,
            weights,
            n_draws=chains * draws,
            seed=seed,
            max_pareto_k=max_pareto_k,
            **opts,
        )
    info = res["info"]
    coords, dims = _posterior_coords(d)
    idata = az.from_dict(
        posterior={k: v.reshape(chains, draws, *v.shape[1:]) for k, v in res["draws"].items()},
        coords=coords,
        dims=dims,
    )
    idata.attrs = {
        "engine": "qmc",
        "family": "bernoulli",
        "qmc_points": info["points"],
        "pareto_k": info["pareto_k"],
        "weight_ess": info["ess"],
        "sigma_theta_nodes": len(info["nodes"]),
    }
    diag = Diagnostics.importance_sampling(
        info["points"],
        info["ess"],
        info["pareto_k"],
        wall_seconds=time.perf_counter() - t0,
        compile_seconds=info["setup_seconds"],
        sampling_seconds=info["importance_seconds"] + info["summary_seconds"],
        grid_edge_mass=info["edge_mass"],
    )
    exact = {"summaries": res["summaries"], "weighted": res["weighted"], "info": info}
    return BernoulliLambdaFit(idata, d, diag, engine="qmc", exact=exact)
