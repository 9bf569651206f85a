"""Two-equation ("lambda") hierarchical model of heterogeneous treatment effects.

Model (Alley 2026, section 2; ``replication-spec.md`` section 3)::

    y_i      ~ N(lambda_g[i] * T_i + X_i beta, sigma)
    lambda_g = Z_g gamma + theta_g,      theta_g ~ N(0, sigma_theta)
    gamma    ~ N(0, gamma_sd),  beta ~ N(0, beta_sd),
    sigma, sigma_theta ~ half-Student-t(3, 0, 2.5)   (brms defaults; configurable)

A group's effect is the posterior of ``lambda_g = Z_g gamma + theta_g``.

Engines (argument ``engine`` of :func:`fit_lambda_model`):

``"quadrature"`` (default)
    Exact collapse of ``(beta, lambda)`` given ``(sigma, sigma_theta)``. The prior of
    ``lambda`` is ``N(0, gamma_sd^2 Z Z' + sigma_theta^2 I)``; rotated by the eigenvectors of
    ``Z Z'`` (one SVD) it is diagonal for every ``sigma_theta``. The posterior of the two
    log-scales is integrated on a deterministic grid placed from the mode and curvature (with
    a long tail toward ``sigma_theta -> 0``); draws pick grid cells by weight, jitter within
    the cell, then draw ``(beta, lambda)`` exactly from the Gaussian conditional and
    ``gamma | lambda`` (Gaussian) exactly. Draws are independent.
``"nutpie"``
    The full model in PyMC (named coords/dims, ``pm.Data`` covariates, non-centred
    ``theta``), sampled by NUTS with nutpie. Compiled models are cached per data shape and
    prior family and reused through ``with_data``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd
from scipy import optimize

from hetfx.inference import (
    Diagnostics,
    compute_diagnostics,
    summarise_coefs,
    summarise_groups,
)
from hetfx.models.gaussian import (
    ScalePrior,
    batched_posterior,
    check_finite,
    draw_conditional,
    single_threaded_blas,
    suff_stats,
)

__all__ = ["LambdaFit", "LambdaData", "fit_lambda_model", "ENGINES"]

ENGINES = ("quadrature", "nutpie")


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
        G rows: column ``group_name`` with the labels, then the key columns.
    group_name : str
        Name of the group label column in tidy outputs.
    """

    y: np.ndarray
    treat: np.ndarray
    X: pd.DataFrame
    group: np.ndarray
    Z: pd.DataFrame
    keys: pd.DataFrame
    group_name: str = "group"

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
    if len(Zf.index.unique()) != G:
        raise ValueError("Z index (group labels) must be unique")
    if group_keys is None:
        keys = pd.DataFrame({group_name: [str(v) for v in Zf.index]})
    else:
        gk = group_keys.copy()
        if len(gk) != G:
            raise ValueError(f"group_keys has {len(gk)} rows, Z has {G}")
        if gk.index.equals(Zf.index) or isinstance(gk.index, pd.RangeIndex):
            gk = gk.reset_index(drop=True)
        else:
            gk = gk.loc[Zf.index].reset_index(drop=True)
        gk = gk.drop(columns=[group_name], errors="ignore")
        keys = pd.concat([pd.DataFrame({group_name: [str(v) for v in Zf.index]}), gk], axis=1)
    return LambdaData(y, treat, Xf, g.astype(np.int64), Zf, keys, group_name)


# ------------------------------------------------------------------------- fit object
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
    """

    idata: az.InferenceData
    data: LambdaData
    diagnostics_record: Diagnostics
    engine: str

    def group_effects(self) -> pd.DataFrame:
        """Posterior of each group's effect ``Z_g gamma + theta_g``.

        Returns
        -------
        pandas.DataFrame
            Group label, key columns, ``n_obs``, ``estimate`` (posterior median), ``q025``,
            ``q10``, ``q90``, ``q975``.
        """
        lam = self.idata.posterior["lambda"].transpose("chain", "draw", "group").values
        return summarise_groups(lam, self.data.keys, self.data.n_obs)

    def coefs(self) -> pd.DataFrame:
        """Coefficient table: ``effect`` (gamma), ``control`` (beta), ``scale`` (SDs)."""
        return summarise_coefs(
            self.idata,
            {"effect": ["gamma"], "control": ["beta"], "scale": ["sigma", "sigma_theta"]},
        )

    def diagnostics(self) -> pd.DataFrame:
        """One-row frame of :class:`hetfx.inference.Diagnostics`."""
        return self.diagnostics_record.to_frame()


def _idata_from_draws(draws: dict[str, np.ndarray], d: LambdaData, chains: int,
                      sample_stats: dict | None = None) -> az.InferenceData:
    coords = {
        "control": [str(c) for c in d.X.columns],
        "effect": [str(c) for c in d.Z.columns],
        "group": d.labels,
    }
    dims = {"beta": ["control"], "gamma": ["effect"], "theta": ["group"],
            "lambda": ["group"]}
    post = {k: v.reshape(chains, -1, *v.shape[1:]) for k, v in draws.items()}
    return az.from_dict(posterior=post, coords=coords, dims=dims, sample_stats=sample_stats)


# ------------------------------------------------------------------ quadrature engine
class CollapsedLambda:
    """Collapsed lambda model: log posterior of ``(log sigma, log sigma_theta)`` and exact
    conditional draws of ``(beta, gamma, theta, lambda)``.

    Parameters
    ----------
    d : LambdaData
        Inputs.
    gamma_sd : float
        Prior SD of ``gamma``.
    beta_sd : float or array-like
        Prior SD of ``beta`` (scalar or one per column of X).
    sigma_prior, sigma_theta_prior : ScalePrior
        Priors of ``sigma`` and ``sigma_theta``.
    """

    def __init__(self, d: LambdaData, gamma_sd: float, beta_sd, sigma_prior: ScalePrior,
                 sigma_theta_prior: ScalePrior) -> None:
        Z = d.Z.to_numpy(dtype=float)
        G, q = Z.shape
        X = d.X.to_numpy(dtype=float)
        n, p = X.shape
        self.p, self.G, self.q = p, G, q
        self.gamma_sd = float(gamma_sd)
        bsd = np.broadcast_to(np.asarray(beta_sd, dtype=float), (p,)).copy()
        if np.any(bsd <= 0) or self.gamma_sd <= 0:
            raise ValueError("prior SDs must be positive")
        self.beta_prec = 1.0 / bsd**2
        U, s, Vt = np.linalg.svd(Z, full_matrices=True)
        r = len(s)
        self.U, self.s, self.V = U, s, Vt[:r].T  # Z = U[:, :r] diag(s) V'
        self.dvals = np.zeros(G)
        self.dvals[:r] = s**2
        W = np.zeros((n, G))
        W[np.arange(n), d.group] = d.treat
        self.ss = suff_stats(np.hstack([X, W @ U]), d.y)
        self.Z = Z
        self.sigma_prior, self.sigma_theta_prior = sigma_prior, sigma_theta_prior

    def _prec(self, st: np.ndarray):
        pe = 1.0 / (self.gamma_sd**2 * self.dvals[None, :] + st[:, None] ** 2)
        prec = np.hstack([np.broadcast_to(self.beta_prec, (len(st), self.p)), pe])
        return prec, np.log(prec).sum(axis=1)

    def logpost(self, u: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Log posterior density (up to a constant) of ``u = (log sigma, log sigma_theta)``.

        ``u`` has shape (k, 2); evaluation is batched in chunks.
        """
        u = np.atleast_2d(np.asarray(u, dtype=float))
        out = np.empty(len(u))
        for i in range(0, len(u), chunk):
            uu = u[i : i + chunk]
            sg, st = np.exp(uu[:, 0]), np.exp(uu[:, 1])
            prec, ld = self._prec(st)
            lml, _ = batched_posterior(self.ss, sg, prec, ld)
            out[i : i + chunk] = (lml + self.sigma_prior.logpdf_log(uu[:, 0])[0]
                                  + self.sigma_theta_prior.logpdf_log(uu[:, 1])[0])
        return out

    def draw_coefficients(self, sigma: np.ndarray, sigma_theta: np.ndarray,
                          rng: np.random.Generator, chunk: int = 500) -> dict[str, np.ndarray]:
        """Exact draws of ``beta, gamma, theta, lambda`` given hyperparameter draws."""
        k = len(sigma)
        p, G = self.p, self.G
        beta = np.empty((k, p))
        lam = np.empty((k, G))
        for i in range(0, k, chunk):
            sg, st = sigma[i : i + chunk], sigma_theta[i : i + chunk]
            prec, ld = self._prec(st)
            _, mean, L = batched_posterior(self.ss, sg, prec, ld, want_chol=True)
            c = draw_conditional(mean, L, rng)
            beta[i : i + chunk] = c[:, :p]
            lam[i : i + chunk] = c[:, p:] @ self.U.T
        # gamma | lambda (Gaussian; see module docstring)
        g2 = self.gamma_sd**2
        s = self.s
        st2 = sigma_theta[:, None] ** 2
        denom = g2 * s[None, :] ** 2 + st2
        proj = lam @ self.U[:, : len(s)]  # U_r' lambda
        coef = g2 * s[None, :] / denom * proj + np.sqrt(g2 * st2 / denom) * rng.standard_normal(
            proj.shape)
        gamma = coef @ self.V.T
        # component of gamma in the null space of Z: prior only
        z2 = rng.standard_normal((k, self.q))
        z2 = z2 - (z2 @ self.V) @ self.V.T
        gamma = gamma + self.gamma_sd * z2
        theta = lam - gamma @ self.Z.T
        return {"beta": beta, "gamma": gamma, "theta": theta, "lambda": lam}


def _mode_and_scale(cm: CollapsedLambda, u0: np.ndarray):
    res = optimize.minimize(lambda u: -cm.logpost(u[None, :])[0], u0, method="Nelder-Mead",
                            options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400})
    mode = res.x
    h = 1e-2
    offs = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h], [h, h], [-h, -h],
                     [h, -h], [-h, h]])
    f = cm.logpost(mode[None, :] + offs)
    H = np.empty((2, 2))
    H[0, 0] = (f[1] - 2 * f[0] + f[2]) / h**2
    H[1, 1] = (f[3] - 2 * f[0] + f[4]) / h**2
    H[0, 1] = H[1, 0] = (f[5] + f[6] - f[7] - f[8]) / (4 * h**2)
    try:
        cov = np.linalg.inv(-H)
        sd = np.sqrt(np.diag(cov))
        if not np.all(np.isfinite(sd)) or np.any(np.diag(cov) <= 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        sd = np.array([0.1, 1.0])
    return mode, f[0], sd


def _quadrature_grid(cm: CollapsedLambda, y_sd: float, n_grid: tuple[int, int],
                     drop: float, min_log_st: float):
    """Place the integration grid; return axes, log-density on the grid and edge mass."""
    mode, lp_mode, sd = _mode_and_scale(cm, np.array([np.log(y_sd), np.log(0.1 * y_sd)]))
    # coarse exploration of a wide box
    lo_s, hi_s = mode[0] - 10 * sd[0], mode[0] + 10 * sd[0]
    lo_t = max(mode[1] - max(30.0, 10 * sd[1]), min_log_st)
    hi_t = mode[1] + max(10 * sd[1], 4.0)
    cs = np.linspace(lo_s, hi_s, 25)
    ct = np.linspace(lo_t, hi_t, 61)
    U1, U2 = np.meshgrid(cs, ct, indexing="ij")
    lpc = cm.logpost(np.column_stack([U1.ravel(), U2.ravel()])).reshape(U1.shape)
    top = max(lpc.max(), lp_mode)
    keep = lpc > top - drop
    i_s = np.where(keep.any(axis=1))[0]
    i_t = np.where(keep.any(axis=0))[0]
    ds, dt = cs[1] - cs[0], ct[1] - ct[0]
    fs = np.linspace(max(cs[i_s[0]] - ds, lo_s), min(cs[i_s[-1]] + ds, hi_s), n_grid[0])
    ft = np.linspace(max(ct[i_t[0]] - dt, lo_t), min(ct[i_t[-1]] + dt, hi_t), n_grid[1])
    F1, F2 = np.meshgrid(fs, ft, indexing="ij")
    lp = cm.logpost(np.column_stack([F1.ravel(), F2.ravel()])).reshape(F1.shape)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    edge = w[0, :].sum() + w[-1, :].sum() + w[1:-1, 0].sum() + w[1:-1, -1].sum()
    return fs, ft, lp, w, float(edge), mode


def _fit_quadrature(d: LambdaData, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior,
                    chains: int, draws: int, seed: int, n_grid: tuple[int, int]):
    t0 = time.perf_counter()
    cm = CollapsedLambda(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior)
    t1 = time.perf_counter()
    fs, ft, lp, w, edge, _ = _quadrature_grid(cm, float(np.std(d.y)) or 1.0, n_grid,
                                              drop=20.0, min_log_st=np.log(1e-10))
    rng = np.random.default_rng(seed)
    k = chains * draws
    idx = rng.choice(w.size, size=k, p=w.ravel())
    i_s, i_t = np.unravel_index(idx, w.shape)
    hs, ht = fs[1] - fs[0], ft[1] - ft[0]
    us = fs[i_s] + hs * (rng.random(k) - 0.5)
    ut = ft[i_t] + ht * (rng.random(k) - 0.5)
    sigma, sigma_theta = np.exp(us), np.exp(ut)
    coefs = cm.draw_coefficients(sigma, sigma_theta, rng)
    t2 = time.perf_counter()
    draws_d = {**coefs, "sigma": sigma, "sigma_theta": sigma_theta}
    idata = _idata_from_draws(draws_d, d, chains)
    idata.attrs = {"engine": "quadrature", "grid_edge_mass": edge,
                   "grid_points": int(w.size)}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1, "edge": edge}


# ----------------------------------------------------------------------- nutpie engine
_NUTPIE_CACHE: dict = {}


def build_pymc_model(d: LambdaData, gamma_sd: float = 1.0, beta_sd=1.0,
                     sigma_prior: ScalePrior | None = None,
                     sigma_theta_prior: ScalePrior | None = None):
    """Full lambda model in PyMC (non-centred ``theta``; covariates and prior SDs as data).

    Parameters
    ----------
    d : LambdaData
        Inputs (see :func:`prepare_lambda_data`).
    gamma_sd, beta_sd : float or array-like
        Prior SDs of ``gamma`` and ``beta``.
    sigma_prior, sigma_theta_prior : ScalePrior, optional
        Priors of the SDs (brms default half-Student-t(3, 0, 2.5)).

    Returns
    -------
    pymc.Model
    """
    import pymc as pm

    sigma_prior = sigma_prior or ScalePrior.brms_default()
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
        bsd = pm.Data("beta_sd", np.broadcast_to(np.asarray(beta_sd, float), (p,)).copy(),
                      dims="control")
        gsd = pm.Data("gamma_sd", float(gamma_sd))
        beta = pm.Normal("beta", 0.0, bsd, dims="control")
        gamma = pm.Normal("gamma", 0.0, gsd, dims="effect")
        sigma_theta = sigma_theta_prior.to_pymc("sigma_theta")
        theta_raw = pm.Normal("theta_raw", 0.0, 1.0, dims="group")
        theta = pm.Deterministic("theta", theta_raw * sigma_theta, dims="group")
        lam = pm.Deterministic("lambda", pm.math.dot(Z, gamma) + theta, dims="group")
        sigma = sigma_prior.to_pymc("sigma")
        mu = lam[g] * T + pm.math.dot(X, beta)
        pm.Normal("y_obs", mu=mu, sigma=sigma, observed=y, dims="obs")
    return model


def _fit_nutpie(d: LambdaData, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior,
                chains: int, draws: int, tune: int, seed: int, target_accept: float,
                cores: int | None):
    import nutpie

    p = d.X.shape[1]
    key = (len(d.y), p, d.Z.shape[1], d.Z.shape[0], sigma_prior, sigma_theta_prior)
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
    if key in _NUTPIE_CACHE:
        compiled = _NUTPIE_CACHE[key].with_data(**data)
    else:
        model = build_pymc_model(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior)
        compiled = nutpie.compile_pymc_model(model, freeze_model=False)
        _NUTPIE_CACHE[key] = compiled
    t1 = time.perf_counter()
    tr = nutpie.sample(compiled, chains=chains, draws=draws, tune=tune, seed=seed,
                       target_accept=target_accept, progress_bar=False,
                       cores=cores or min(chains, 2))
    t2 = time.perf_counter()
    post = tr.posterior
    draws_d = {}
    for v in ("beta", "gamma", "sigma", "sigma_theta", "theta", "lambda"):
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
    engine: str = "quadrature",
    gamma_sd: float = 1.0,
    beta_sd: float | Sequence[float] = 1.0,
    sigma_prior: ScalePrior | None = None,
    sigma_theta_prior: ScalePrior | None = None,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    seed: int = 0,
    n_grid: tuple[int, int] = (32, 96),
    cores: int | None = None,
) -> LambdaFit:
    """Fit the two-equation (lambda) model.

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
    engine : {"quadrature", "nutpie"}
        Posterior engine (see module docstring).
    gamma_sd, beta_sd : float
        Prior SDs of ``gamma`` and ``beta`` (``beta_sd`` may be one per column).
    sigma_prior, sigma_theta_prior : ScalePrior, optional
        Default half-Student-t(3, 0, 2.5), as brms.
    chains, draws : int
        Posterior layout (independent draws for the quadrature engine).
    tune : int
        Warm-up iterations per chain (nutpie).
    target_accept : float
        NUTS target acceptance (nutpie); the original used .95 for M1.
    seed : int
        Random seed.
    n_grid : (int, int)
        Quadrature points on ``log sigma`` and ``log sigma_theta``.
    cores : int, optional
        Threads for nutpie (default min(chains, 2)).

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
    if engine == "quadrature":
        with single_threaded_blas():
            idata, tm = _fit_quadrature(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior,
                                        chains, draws, seed, n_grid)
    else:
        idata, tm = _fit_nutpie(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior,
                                chains, draws, tune, seed, target_accept, cores)
    wall = time.perf_counter() - t0
    diag = compute_diagnostics(
        idata, engine, var_names=["beta", "gamma", "sigma", "sigma_theta", "lambda"],
        wall_seconds=wall, compile_seconds=tm["compile"], sampling_seconds=tm["sampling"],
        grid_edge_mass=tm["edge"],
    )
    return LambdaFit(idata=idata, data=d, diagnostics_record=diag, engine=engine)


def design_from_factorial(keys: pd.DataFrame,
                          formula_terms: Sequence[Sequence[str]]) -> pd.DataFrame:
    """Build an effect design from products of key columns.

    Parameters
    ----------
    keys : pandas.DataFrame
        One row per group with numeric (0/1) key columns.
    formula_terms : sequence of sequences of str
        Each inner sequence names the columns whose product forms one term; the empty
        sequence is the intercept.

    Returns
    -------
    pandas.DataFrame
        Columns named ``a:b`` (``Intercept`` for the empty term), index as ``keys``.
    """
    out = {}
    for term in formula_terms:
        name = ":".join(term) if term else "Intercept"
        col = np.ones(len(keys))
        for c in term:
            col = col * keys[c].to_numpy(dtype=float)
        out[name] = col
    return pd.DataFrame(out, index=keys.index)

