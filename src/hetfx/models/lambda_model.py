"""Two-equation ("lambda") hierarchical model of heterogeneous treatment effects.

Model (Alley 2026, section 2; ``replication-spec.md`` section 3)::

    y_i      ~ N(lambda_g[i] * T_i + X_i beta, sigma)
    lambda_g = Z_g gamma + theta_g,      theta_g ~ N(0, sigma_theta)
    gamma    ~ N(0, gamma_sd),  beta ~ N(0, beta_sd),
    sigma, sigma_theta ~ half-Student-t(3, 0, 2.5)   (brms defaults; configurable)

A group's effect is the posterior of ``lambda_g = Z_g gamma + theta_g``.

Engines (argument ``engine`` of :func:`fit_lambda_model`):

``"quadrature"`` (default)
    Exact collapse of the coefficients given ``(sigma, sigma_theta)`` in the
    ``(beta, gamma, theta)`` parameterisation, whose posterior precision is arrow-shaped
    (:class:`ArrowLambda`: a Schur complement over the diagonal ``theta`` block; sufficient
    statistics from one pass over the data; cost per grid point linear in the number of
    groups). The two log-scales are integrated on a lattice-aligned grid
    (:func:`lattice_grid`) whose trapezoid rule converges exponentially. Summaries are
    exact (:class:`QuadraturePosterior`): given the scales every coefficient, group effect and
    linear combination of them is Gaussian, so its posterior is a mixture of normals whose
    mean and SD are closed-form and whose quantiles solve the mixture CDF; nothing is Monte
    Carlo, and results agree across CPUs to about 1e-11 (tests/test_cross_cpu.py). Draws
    (kept for arviz, ``posterior.nc`` and the R-hat/ESS diagnostics) pick grid cells by the
    inverse CDF of the weights from random numbers drawn up front, jitter within the cell and
    draw the coefficients exactly; they are independent.
``"nutpie"``
    The full model in PyMC (named coords/dims, ``pm.Data`` covariates, non-centred
    ``theta``), sampled by NUTS with nutpie. Compiled models are cached per data shape and
    prior family and reused through ``with_data``.
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
from scipy import optimize
from scipy.linalg import lapack

from hetfx.inference import (
    GROUP_QUANTILES,
    Diagnostics,
    compute_diagnostics,
    mixture_moments,
    mixture_quantiles,
    quantile_name,
    sample_nutpie,
    sinc_quantiles,
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

if TYPE_CHECKING:  # imported where used: arviz alone takes seconds to import
    import arviz as az

__all__ = [
    "ENGINES",
    "ArrowLambda",
    "LambdaData",
    "LambdaFit",
    "QuadratureGrid",
    "QuadraturePosterior",
    "fit_lambda_model",
    "lattice_grid",
]

ENGINES = ("quadrature", "nutpie")
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
    posterior : QuadraturePosterior, optional
        The quadrature engine's exact posterior (a mixture of Gaussians over its grid);
        ``None`` for NUTS. When present, every summary is computed from it rather than from
        the draws, so it is free of Monte Carlo error and reproducible across machines.
    """

    idata: az.InferenceData
    data: LambdaData
    diagnostics_record: Diagnostics
    engine: str
    posterior: QuadraturePosterior | None = None

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
        ``ess_bulk``. For the quadrature engine ``mean`` to ``q975`` are exact (see
        :attr:`posterior`); ``r_hat`` and ``ess_bulk`` always come from the draws (they
        diagnose the draws stored in :attr:`idata`).
        """
        out = summarise_coefs(
            self.idata,
            {"effect": ["gamma"], "control": ["beta"], "scale": ["sigma", "sigma_theta"]},
        )
        if self.posterior is None:
            return out
        probs = (0.025, 0.975)
        co = self.posterior.summarise_coefs(probs=probs)
        p = self.data.X.shape[1]
        exact = pd.concat(
            [co.iloc[p:], co.iloc[:p], self.posterior.summarise_scales(probs)], ignore_index=True
        )
        for col in ("mean", "sd", "q025", "q975"):
            out[col] = exact[col].to_numpy()
        return out

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


# ------------------------------------------------------------------ quadrature engine
class CollapsedLambda:
    """Dense reference collapse (the engine before :class:`ArrowLambda`): log posterior of
    ``(log sigma, log sigma_theta)`` and exact conditional draws of ``(beta, gamma, theta,
    lambda)`` with one ``(p + G)``-square Cholesky per point. Kept as the reference the
    arrow-structured collapse is tested against.

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

    def __init__(
        self,
        d: LambdaData,
        gamma_sd: float,
        beta_sd,
        sigma_prior: ScalePrior,
        sigma_theta_prior: ScalePrior,
    ) -> None:
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
            out[i : i + chunk] = (
                lml
                + self.sigma_prior.logpdf_log(uu[:, 0])[0]
                + self.sigma_theta_prior.logpdf_log(uu[:, 1])[0]
            )
        return out

    def draw_coefficients(
        self, sigma: np.ndarray, sigma_theta: np.ndarray, rng: np.random.Generator, chunk: int = 500
    ) -> dict[str, np.ndarray]:
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
            proj.shape
        )
        gamma = coef @ self.V.T
        # component of gamma in the null space of Z: prior only
        z2 = rng.standard_normal((k, self.q))
        z2 = z2 - (z2 @ self.V) @ self.V.T
        gamma = gamma + self.gamma_sd * z2
        theta = lam - gamma @ self.Z.T
        return {"beta": beta, "gamma": gamma, "theta": theta, "lambda": lam}


def _mode_and_scale(cm: CollapsedLambda, u0: np.ndarray):
    res = optimize.minimize(
        lambda u: -cm.logpost(u[None, :])[0],
        u0,
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 400},
    )
    mode = res.x
    h = 1e-2
    offs = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h], [h, h], [-h, -h], [h, -h], [-h, h]])
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


# ------------------------------------------------------------- arrow-structured engine
def _batched_cholesky(B: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of symmetric positive definite matrices.

    Small matrices go through numpy's batched routine; from 24 rows on, one LAPACK call per
    matrix (on Fortran-ordered views, so nothing is copied) is several times faster. The
    result is a view whose matrices are Fortran-contiguous.
    """
    if B.shape[-1] < 24:
        return np.linalg.cholesky(B)
    outT = np.empty_like(B)
    for i, b in enumerate(B):
        c, info = lapack.dpotrf(b.T, lower=1, clean=1, overwrite_a=1)  # b is symmetric
        if info != 0:
            raise np.linalg.LinAlgError("matrix is not positive definite")
        outT[i] = c.T
    return outT.transpose(0, 2, 1)


def _batched_tri_inv(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices (see :func:`_batched_cholesky`)."""
    if L.shape[-1] < 24:
        return np.linalg.inv(L)
    outT = np.empty(L.shape)
    for i, m in enumerate(L):
        inv, _ = lapack.dtrtri(m, lower=1)
        outT[i] = inv.T
    return outT.transpose(0, 2, 1)


class ArrowLambda:
    """Collapsed lambda model in the ``(beta, gamma, theta)`` parameterisation.

    Given ``(sigma, sigma_theta)`` the coefficients are Gaussian and their posterior
    precision is arrow-shaped: ``theta_g`` touches only its own group's treated rows, so the
    ``theta`` block is diagonal. A Schur complement over that block leaves a dense
    ``k x k`` system for ``a = (beta, gamma)``, ``k = p + q``, and every grid point costs
    ``O(G k^2 + k^3)``. With ``c_g = 1 / (sigma^2 + tt_g sigma_theta^2)`` (``tt_g`` the
    group's sum of squared treatments) the Schur complement and reduced right-hand side are

    ``S = R / sigma^2 + P_a + sum_g c_g b_g b_g' / tt_g``,
    ``r = r_0 / sigma^2 + sum_g c_g b_g ty_g / tt_g``,

    where ``b_g = (sum_g T x, tt_g Z_g)``, ``R`` and ``r_0`` are the within-group residual
    cross-products of the controls (computed once) and ``P_a`` the prior precision of ``a``;
    every term is positive semi-definite, so nothing cancels. The log marginal likelihood is

    ``-n/2 log(2 pi sigma^2) + 1/2 (log|P_a| - sum_g log(1 + tt_g sigma_theta^2 / sigma^2)
    - log|S|) - 1/2 (E_0 / sigma^2 + sum_g c_g ty_g^2 / tt_g - r' S^-1 r)``

    and, given ``a``, ``lambda_g = sigma^2 c_g Z_g gamma + sigma_theta^2 c_g (ty_g - tX_g
    beta) + e_g`` with ``Var(e_g) = sigma^2 sigma_theta^2 c_g``. The sufficient statistics
    (per-group sums of ``T^2``, ``T x``, ``T y`` and ``X'X``, ``X'y``, ``y'y``) take one
    ``O(n k)`` pass over the data.

    ``Z`` may be rank-deficient or saturated: the proper prior of ``gamma`` keeps ``S``
    positive definite. A square invertible ``Z`` (saturated, ``q = G``, as in M1) is handled
    in the coordinates ``alpha = Z gamma`` (prior precision ``(Z Z')^-1 / gamma_sd^2``,
    constant), where the ``gamma`` block of the sum above is diagonal, so a grid point costs
    ``O(k^2)`` to assemble instead of ``O(G k^2)``; the model and every result are the same.

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
    saturated : bool, optional
        Use the ``alpha = Z gamma`` coordinates (default: when ``Z`` is square and well
        conditioned).
    """

    def __init__(
        self,
        d: LambdaData,
        gamma_sd: float,
        beta_sd,
        sigma_prior: ScalePrior,
        sigma_theta_prior: ScalePrior,
        saturated: bool | None = None,
    ) -> None:
        X = d.X.to_numpy(dtype=float)
        Z = d.Z.to_numpy(dtype=float)
        n, p = X.shape
        G, q = Z.shape
        k = p + q
        self.n, self.p, self.q, self.G, self.k = n, p, q, G, k
        gsd = float(gamma_sd)
        bsd = np.broadcast_to(np.asarray(beta_sd, dtype=float), (p,)).copy()
        if np.any(bsd <= 0) or gsd <= 0:
            raise ValueError("prior SDs must be positive")
        self.gamma_sd = gsd
        self.beta_prec = 1.0 / bsd**2
        if saturated is None:
            saturated = q == G and np.linalg.cond(Z) < 1e8
        self.saturated = bool(saturated)
        if self.saturated:
            self.Zinv = np.linalg.inv(Z)
            self.P_e = self.Zinv.T @ self.Zinv / gsd**2
            logdet_e = -2 * np.linalg.slogdet(Z)[1] - G * np.log(gsd**2)
            self.E = None  # identity
        else:
            self.P_e = None  # 1 / gsd^2 on the diagonal
            logdet_e = -q * np.log(gsd**2)
            self.E = Z
        # an infinite SD is a flat prior: zero precision and no term in log|P_a|
        self.logdet_prior = float(np.log(self.beta_prec[self.beta_prec > 0]).sum() + logdet_e)
        y, t, g = d.y, d.treat, d.group
        tt = np.bincount(g, weights=t * t, minlength=G)
        ty = np.bincount(g, weights=t * y, minlength=G)
        tX = np.empty((G, p))
        for j in range(p):
            tX[:, j] = np.bincount(g, weights=t * X[:, j], minlength=G)
        inv_tt = np.divide(1.0, tt, out=np.zeros(G), where=tt > 0)
        self.tt, self.ty, self.tX, self.Z = tt, ty, tX, Z
        self.R = X.T @ X - (tX * inv_tt[:, None]).T @ tX
        self.r0 = X.T @ y - tX.T @ (ty * inv_tt)
        self.E0 = float(y @ y - ty @ (ty * inv_tt))
        self.e = ty * ty * inv_tt
        if self.saturated:
            self.Qbb = (tX[:, :, None] * (tX * inv_tt[:, None])[:, None, :]).reshape(G, p * p)
            self.Bty_b = tX * (ty * inv_tt)[:, None]
        else:
            b = np.hstack([tX, tt[:, None] * Z])
            self.Q = (b[:, :, None] * (b * inv_tt[:, None])[:, None, :]).reshape(G, k * k)
            self.Bty = b * (ty * inv_tt)[:, None]
        self.sigma_prior, self.sigma_theta_prior = sigma_prior, sigma_theta_prior

    # -- one batch of scale values ----------------------------------------------------
    def _factor(self, us: np.ndarray, ut: np.ndarray):
        """Bordered Cholesky factor of ``[[S, r], [r', quad0]]`` and the pieces around it."""
        us, ut = np.atleast_1d(us).astype(float), np.atleast_1d(ut).astype(float)
        s2, st2 = np.exp(2 * us), np.exp(2 * ut)
        k, p, m = self.k, self.p, len(us)
        C = 1.0 / (s2[:, None] + st2[:, None] * self.tt[None, :])
        B = np.empty((m, k + 1, k + 1))
        if self.saturated:
            B[:, :p, :p] = (C @ self.Qbb).reshape(m, p, p) + self.R[None] / s2[:, None, None]
            B[:, :p, p:k] = self.tX.T[None, :, :] * C[:, None, :]
            B[:, p:k, :p] = np.swapaxes(B[:, :p, p:k], 1, 2)
            B[:, p:k, p:k] = self.P_e[None]
            idx = np.arange(p, k)
            B[:, idx, idx] += C * self.tt[None, :]
            idx = np.arange(p)
            B[:, idx, idx] += self.beta_prec
            r = np.empty((m, k))
            r[:, :p] = C @ self.Bty_b + self.r0[None, :] / s2[:, None]
            r[:, p:] = C * self.ty[None, :]
        else:
            B[:, :k, :k] = (C @ self.Q).reshape(m, k, k)
            B[:, :p, :p] += self.R[None] / s2[:, None, None]
            idx = np.arange(k)
            B[:, idx, idx] += np.concatenate([self.beta_prec, np.full(self.q, self.gamma_sd**-2)])
            r = C @ self.Bty
            r[:, :p] += self.r0[None, :] / s2[:, None]
        B[:, :k, k] = r
        B[:, k, :k] = r
        B[:, k, k] = C @ self.e + self.E0 / s2
        return _batched_cholesky(B), s2, st2, C

    def _effect(self, alpha: np.ndarray) -> np.ndarray:
        """``Z gamma`` per row of the effect coefficients (``alpha`` itself if saturated)."""
        return alpha if self.saturated else alpha @ self.Z.T

    def to_gamma(self, alpha: np.ndarray) -> np.ndarray:
        """``gamma`` from the effect coefficients of :meth:`conditional` and draws."""
        return alpha @ self.Zinv.T if self.saturated else alpha

    def log_marginal_likelihood(self, us: np.ndarray, ut: np.ndarray) -> np.ndarray:
        """``log p(y | sigma = exp(us), sigma_theta = exp(ut))`` for a batch of values."""
        us, ut = np.atleast_1d(us).astype(float), np.atleast_1d(ut).astype(float)
        L, s2, st2, _ = self._factor(us, ut)
        k = self.k
        piv = np.diagonal(L, axis1=1, axis2=2)
        ld_theta = np.log1p(self.tt[None, :] * (st2 / s2)[:, None]).sum(axis=1)
        return (
            -0.5 * self.n * (_LOG2PI + 2 * us)
            + 0.5 * (self.logdet_prior - ld_theta)
            - np.log(piv[:, :k]).sum(axis=1)
            - 0.5 * piv[:, k] ** 2
        )

    def logpost(self, u: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Log posterior density (up to a constant) of ``u = (log sigma, log sigma_theta)``.

        ``u`` has shape (m, 2); evaluation is batched in chunks of about 32 MB, or of about
        1.6 MB when there are more than 48 coefficients (their factors stay in cache: measured
        1.5x faster with 64 or 128 saturated groups; with fewer, e.g. M1, larger batches are
        faster).
        """
        u = np.atleast_2d(np.asarray(u, dtype=float))
        if chunk is None:
            size = self.G + self.k * self.k
            chunk = max(8, int((2e5 if self.k > 48 else 4e6) // max(size, 1)))
        out = np.empty(len(u))
        for i in range(0, len(u), chunk):
            uu = u[i : i + chunk]
            out[i : i + chunk] = (
                self.log_marginal_likelihood(uu[:, 0], uu[:, 1])
                + self.sigma_prior.logpdf_log(uu[:, 0])[0]
                + self.sigma_theta_prior.logpdf_log(uu[:, 1])[0]
            )
        return out

    def conditional(self, us: np.ndarray, ut: np.ndarray) -> dict[str, np.ndarray]:
        """Gaussian posterior of ``a = (beta, effect coefficients)`` for a batch of scales.

        The effect coefficients are ``gamma`` (``alpha = Z gamma`` when saturated; see
        :meth:`to_gamma`).

        Returns
        -------
        dict
            ``mean`` (m, k), ``Linv`` (m, k, k) with ``Cov(a) = Linv' Linv``, ``s2``,
            ``st2`` (m,), ``C`` (m, G).
        """
        L, s2, st2, C = self._factor(us, ut)
        k = self.k
        Linv = np.ascontiguousarray(_batched_tri_inv(L[:, :k, :k]))
        mean = np.einsum("jmi,jm->ji", Linv, L[:, k, :k])
        return {"mean": mean, "Linv": Linv, "s2": s2, "st2": st2, "C": C}

    def coef_moments(self, cond: dict) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs of ``(beta, gamma)`` per scale value, ``(J, p + q)``."""
        p = self.p
        a, Linv = cond["mean"], cond["Linv"]
        if not self.saturated:
            return a, np.sqrt(np.einsum("jmi,jmi->ji", Linv, Linv))
        Lg = Linv[:, :, p:] @ self.Zinv.T
        mean = np.hstack([a[:, :p], self.to_gamma(a[:, p:])])
        sd = np.hstack(
            [
                np.sqrt(np.einsum("jmi,jmi->ji", Linv[:, :, :p], Linv[:, :, :p])),
                np.sqrt(np.einsum("jmi,jmi->ji", Lg, Lg)),
            ]
        )
        return mean, sd

    def lambda_moments(self, cond: dict, W: np.ndarray | None = None):
        """Conditional means and SDs of ``lambda`` (or of ``W @ lambda``) per scale value.

        Parameters
        ----------
        cond : dict
            From :meth:`conditional`.
        W : numpy.ndarray, optional
            ``(m, G)`` weights of linear combinations of ``lambda`` (default: identity).

        Returns
        -------
        mean, sd : numpy.ndarray
            ``(J, G)`` (or ``(J, m)``).
        """
        p = self.p
        a, Linv, s2, st2, C = (cond[x] for x in ("mean", "Linv", "s2", "st2", "C"))
        base = C * (
            st2[:, None] * (self.ty[None, :] - a[:, :p] @ self.tX.T)
            + s2[:, None] * self._effect(a[:, p:])
        )
        if W is None:
            Le = Linv[:, :, p:] if self.saturated else Linv[:, :, p:] @ self.Z.T
            V = -st2[:, None, None] * (Linv[:, :, :p] @ self.tX.T) + s2[:, None, None] * Le
            var = C**2 * np.einsum("jmg,jmg->jg", V, V) + (s2 * st2)[:, None] * C
            return base, np.sqrt(var)
        W = np.atleast_2d(np.asarray(W, dtype=float))
        CW = C[:, :, None] * W.T[None, :, :]  # (J, G, m)
        tXW = np.einsum("gp,jgm->jpm", self.tX, CW)
        ZW = CW if self.saturated else np.einsum("gq,jgm->jqm", self.Z, CW)
        V = -st2[:, None, None] * (Linv[:, :, :p] @ tXW) + s2[:, None, None] * (Linv[:, :, p:] @ ZW)
        var = np.einsum("jkm,jkm->jm", V, V) + (s2 * st2)[:, None] * (C @ (W * W).T)
        return base @ W.T, np.sqrt(var)

    def draw(
        self, us: np.ndarray, ut: np.ndarray, z_a: np.ndarray, z_theta: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Exact draws of ``beta, gamma, theta, lambda`` given scale values and standard
        normals ``z_a`` (m, k) and ``z_theta`` (m, G) supplied by the caller."""
        L, s2, st2, C = self._factor(us, ut)
        k, p = self.k, self.p
        Lk = L[:, :k, :k]
        a = np.linalg.solve(np.swapaxes(Lk, 1, 2), (L[:, k, :k] + z_a)[:, :, None])[:, :, 0]
        beta = a[:, :p]
        zg = self._effect(a[:, p:])
        resid = self.ty[None, :] - beta @ self.tX.T - self.tt[None, :] * zg
        theta = st2[:, None] * C * resid + np.sqrt((s2 * st2)[:, None] * C) * z_theta
        return {
            "beta": beta,
            "gamma": self.to_gamma(a[:, p:]),
            "theta": theta,
            "lambda": zg + theta,
        }


@dataclasses.dataclass
class QuadratureGrid:
    """Integration grid of ``(log sigma, log sigma_theta)``.

    Each log scale is mapped from a uniform variable, ``u = c + a sinh(v)``, and ``v`` takes
    the nodes of a fixed lattice ``v = h * i`` (integer ``i``). The map keeps the node
    spacing ``a h`` near the mode and widens it geometrically in the tails (the long tail of
    ``log sigma_theta`` toward zero, in particular), and the trapezoid rule in ``v`` converges
    exponentially. ``a`` and ``h`` are powers of ``2^(1/4)`` and ``c`` a multiple of ``a h``,
    all chosen from the mode and posterior SDs: small differences in the mode search (another
    CPU) leave the nodes unchanged, and where they do change them the exponential
    convergence keeps every integral within its (measured) quadrature error. The box grows
    until every edge is ``drop`` log units below the highest node.

    Attributes
    ----------
    vs, vt : numpy.ndarray
        Uniform nodes on each axis (steps ``hv``).
    centre, scale : numpy.ndarray
        ``c`` and ``a`` of each axis.
    lp : numpy.ndarray
        Log posterior density of ``(log sigma, log sigma_theta)`` at the nodes.
    w : numpy.ndarray
        Normalised quadrature weights (density times the map's Jacobian), same shape.
    edge_mass : float
        Posterior mass on the boundary nodes.
    mode : numpy.ndarray
        Mode found by the optimiser.
    """

    vs: np.ndarray
    vt: np.ndarray
    hv: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    lp: np.ndarray
    w: np.ndarray
    edge_mass: float
    mode: np.ndarray

    def to_log(self, axis: int, v: np.ndarray) -> np.ndarray:
        """Map uniform coordinates ``v`` of an axis to the log scale."""
        return self.centre[axis] + self.scale[axis] * np.sinh(v)

    @property
    def us(self) -> np.ndarray:
        """Nodes of ``log sigma``."""
        return self.to_log(0, self.vs)

    @property
    def ut(self) -> np.ndarray:
        """Nodes of ``log sigma_theta``."""
        return self.to_log(1, self.vt)


def _lattice_step(x: float) -> float:
    """Largest ``2^(m/4) <= x`` (integer ``m``): a step that last-bit changes of ``x``
    leave unchanged (except when ``x`` sits on a boundary)."""
    return float(2.0 ** (np.floor(4 * np.log2(x)) / 4))


def lattice_grid(
    cm,
    y_sd: float,
    *,
    resolution: float | tuple[float, float] = 3.0,
    drop: float = 32.0,
    max_step: float = 0.18,
    min_points: tuple[int, int] | None = None,
    min_log_st: float = float(np.log(1e-14)),
    stretch: float = 4.0,
    max_points: int = 400_000,
) -> QuadratureGrid:
    """Place the quadrature grid (see :class:`QuadratureGrid`).

    Parameters
    ----------
    cm : ArrowLambda or CollapsedLambda
        Anything with ``logpost(u)``.
    y_sd : float
        Outcome SD (start of the mode search).
    resolution : float or (float, float), default 3
        Nodes per posterior SD at the mode (per axis); the step there is at most
        ``max_step``.
    drop : float, default 32
        The box grows until every edge node is this many log units below the top
        (``e^-32 ~ 1e-14``).
    max_step : float, default 0.18
        Largest node spacing of either log scale at the mode.
    min_points : (int, int), optional
        Halve a step until its axis has at least this many nodes.
    min_log_st : float
        Lower end of ``log sigma_theta``.
    stretch : float, default 4
        Scale ``a`` of the sinh map in posterior SDs: the spacing is nearly uniform within
        about ``stretch`` SDs of the mode and grows geometrically beyond.
    max_points : int
        Refuse grids larger than this (``RuntimeError``).

    Returns
    -------
    QuadratureGrid
    """
    mode, _, sd = _mode_and_scale(cm, np.array([np.log(y_sd), np.log(0.1 * y_sd)]))
    a = np.array([_lattice_step(stretch * sd[0]), _lattice_step(stretch * sd[1])])
    res = np.broadcast_to(np.asarray(resolution, dtype=float), (2,))
    hv = np.array([_lattice_step(min(sd[i] / res[i], max_step) / a[i]) for i in (0, 1)])
    c = np.round(mode / (a * hv)) * (a * hv)
    lo_t = int(np.ceil(np.arcsinh((min_log_st - c[1]) / a[1]) / hv[1]))

    def nodes(i0, i1, j0, j1):
        vs, vt = np.arange(i0, i1 + 1) * hv[0], np.arange(j0, j1 + 1) * hv[1]
        return np.meshgrid(c[0] + a[0] * np.sinh(vs), c[1] + a[1] * np.sinh(vt), indexing="ij")

    def check(size):
        if size > max_points:
            raise RuntimeError(
                f"quadrature grid would need more than {max_points} points; the posterior "
                "of the scales is unusually wide (check the data or priors)"
            )

    def evaluate(box):
        check((box[1] - box[0] + 1) * (box[3] - box[2] + 1))
        U1, U2 = nodes(*box)
        return cm.logpost(np.column_stack([U1.ravel(), U2.ravel()])).reshape(U1.shape)

    def log_weight(lp, box):
        vs, vt = np.arange(box[0], box[1] + 1) * hv[0], np.arange(box[2], box[3] + 1) * hv[1]
        return lp + np.log(a[0] * np.cosh(vs))[:, None] + np.log(a[1] * np.cosh(vt))[None, :]

    start = [int(np.ceil(np.arcsinh(3.0 * sd[i] / a[i]) / hv[i])) for i in (0, 1)]
    box = [-start[0], start[0], max(-start[1], lo_t), start[1]]
    lp = evaluate(box)
    for _ in range(200):
        lw = log_weight(lp, box)
        thr = lw.max() - drop
        grow = [max(2, lp.shape[0] // 4), max(2, lp.shape[1] // 4)]
        new = list(box)
        if lw[0].max() > thr:
            new[0] -= grow[0]
        if lw[-1].max() > thr:
            new[1] += grow[0]
        if lw[:, 0].max() > thr and box[2] > lo_t:
            new[2] = max(box[2] - grow[1], lo_t)
        if lw[:, -1].max() > thr:
            new[3] += grow[1]
        if new == box:
            break
        size = (new[1] - new[0] + 1) * (new[3] - new[2] + 1)
        check(size)
        full = np.full((new[1] - new[0] + 1, new[3] - new[2] + 1), np.nan)
        full[box[0] - new[0] : box[1] - new[0] + 1, box[2] - new[2] : box[3] - new[2] + 1] = lp
        todo = np.isnan(full)
        U1, U2 = nodes(*new)
        full[todo] = cm.logpost(np.column_stack([U1[todo], U2[todo]]))
        box, lp = new, full
    if min_points is not None:
        for axis in (0, 1):
            while lp.shape[axis] < min_points[axis]:
                hv[axis] /= 2
                box[2 * axis] *= 2
                box[2 * axis + 1] *= 2
                lp = evaluate(box)
    lw = log_weight(lp, box)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    edge = w[0, :].sum() + w[-1, :].sum() + w[1:-1, 0].sum() + w[1:-1, -1].sum()
    return QuadratureGrid(
        np.arange(box[0], box[1] + 1) * hv[0],
        np.arange(box[2], box[3] + 1) * hv[1],
        hv,
        c,
        a,
        lp,
        w,
        float(edge),
        mode,
    )


def _quantise(x: np.ndarray, bits: int = 40) -> np.ndarray:
    """Round to ``bits`` significant bits (see :meth:`QuadraturePosterior.draws`).

    Veltkamp's splitting: with ``c = (2^(53 - bits) + 1) x``, ``c - (c - x)`` is ``x``
    rounded to nearest at ``bits`` bits; three IEEE operations, exact on every CPU.
    """
    c = np.multiply(x, 2.0 ** (53 - bits) + 1.0)
    t = np.subtract(c, x)
    return np.subtract(c, t, out=c)


def _draw_threads(work: int) -> int:
    """Threads for drawing ``work`` numbers: 2 (the project's machines) from 4 million on."""
    import os

    return min(2, os.cpu_count() or 1) if work > 4_000_000 else 1


#: Probabilities summarised for every coefficient and group effect by default.
_SUMMARY_PROBS = (0.5, 0.025, 0.10, 0.90, 0.975)


class QuadraturePosterior:
    """The quadrature engine's posterior: a finite mixture of Gaussians over the grid.

    Given ``(sigma, sigma_theta)`` at a grid node, ``(beta, gamma, theta, lambda)`` is
    Gaussian, so the posterior of any linear combination of them is a mixture of normals
    with the normalised grid weights; its mean and SD follow in closed form and its
    quantiles from the mixture CDF (:func:`hetfx.inference.mixture_quantiles`). The scales'
    marginals are the grid weights summed over the other axis, with the sinc interpolant
    between nodes (:func:`hetfx.inference.sinc_quantiles`). Nothing here is random.

    Parameters
    ----------
    cm : ArrowLambda
        The collapsed model.
    grid : QuadratureGrid
        Its integration grid.
    prune : float, default 1e-14
        Nodes of smaller normalised weight are left out of the mixtures (they change no
        summary by more than their total weight; measured: below 1e-11).
    stride : (int, int), default (1, 1)
        The mixtures use every ``stride``-th node of the lattice on each axis (itself a
        trapezoid rule, with twice the step for a stride of 2); the scales' marginals use
        every node.
    """

    def __init__(
        self,
        cm: ArrowLambda,
        grid: QuadratureGrid,
        prune: float = 1e-14,
        stride: tuple[int, int] = (1, 1),
    ) -> None:
        self.cm, self.grid = cm, grid
        U1, U2 = np.meshgrid(grid.us, grid.ut, indexing="ij")
        i_s = np.rint(grid.vs / grid.hv[0]).astype(int) % stride[0] == 0
        i_t = np.rint(grid.vt / grid.hv[1]).astype(int) % stride[1] == 0
        w = np.where(i_s[:, None] & i_t[None, :], grid.w, 0.0).ravel()
        w /= w.sum()
        keep = w > prune
        self.nodes = np.column_stack([U1.ravel()[keep], U2.ravel()[keep]])
        self.weights = w[keep] / w[keep].sum()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _chunks(self):
        # small chunks stay in cache (measured 1.5x faster than 1e7 entries at 64-128 groups)
        size = max(16, int(3e5 // max(self.cm.k * (self.cm.G + self.cm.k), 1)))
        for i in range(0, len(self.weights), size):
            yield slice(i, i + size)

    def _moments(self, what: str, W: np.ndarray | None = None):
        """Conditional means and SDs at every kept node, one chunk of nodes at a time:
        ``what`` is ``"lambda"`` (of ``W @ lambda`` when ``W`` is given) or ``"coefs"``."""
        if W is None and what in self._cache:
            return self._cache[what]
        means, sds = [], []
        for sl in self._chunks():
            cond = self.cm.conditional(self.nodes[sl, 0], self.nodes[sl, 1])
            m, s = (
                self.cm.lambda_moments(cond, W) if what == "lambda" else self.cm.coef_moments(cond)
            )
            means.append(m)
            sds.append(s)
        out = np.concatenate(means), np.concatenate(sds)
        if W is None:
            self._cache[what] = out
        return out

    @staticmethod
    def _frame(mean, sd, mix_mean, mix_sd, probs, w):
        qs = mixture_quantiles(w, mix_mean, mix_sd, probs)
        out = pd.DataFrame({"mean": mean, "sd": sd})
        for p, q in zip(probs, qs, strict=True):
            out[quantile_name(p)] = q
        return out

    def summarise_lambda(
        self, W: np.ndarray | None = None, probs: Sequence[float] = _SUMMARY_PROBS
    ) -> pd.DataFrame:
        """Exact posterior summaries of the group effects or of linear combinations.

        Parameters
        ----------
        W : numpy.ndarray, optional
            ``(m, G)`` weights; row ``i`` defines ``sum_g W[i, g] lambda_g`` (default: each
            ``lambda_g``).
        probs : sequence of float
            Quantiles to report (columns named as :func:`hetfx.inference.quantile_name`).

        Returns
        -------
        pandas.DataFrame
            One row per combination: ``mean``, ``sd`` and the quantile columns.
        """
        m, s = self._moments("lambda", W)
        mean, sd = mixture_moments(self.weights, m, s)
        return self._frame(mean, sd, m, s, probs, self.weights)

    def summarise_coefs(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """Exact summaries of ``beta`` then ``gamma`` (rows in that order)."""
        m, s = self._moments("coefs")
        mean, sd = mixture_moments(self.weights, m, s)
        return self._frame(mean, sd, m, s, probs, self.weights)

    def summarise_scales(self, probs: Sequence[float] = _SUMMARY_PROBS) -> pd.DataFrame:
        """Summaries of ``sigma`` and ``sigma_theta`` from the grid's 1-D marginals.

        Means and SDs are trapezoid sums over the nodes; quantiles solve the CDF of the sinc
        interpolant of the marginal density of the grid's uniform coordinate (exponentially
        accurate, like the trapezoid rule) and are transformed back.
        """
        g = self.grid
        rows = []
        for axis, (v, mass) in enumerate(((g.vs, g.w.sum(axis=1)), (g.vt, g.w.sum(axis=0)))):
            mass = mass / mass.sum()
            x = np.exp(g.to_log(axis, v))
            mean = float(mass @ x)
            sd = float(np.sqrt(mass @ (x - mean) ** 2))
            row = {"mean": mean, "sd": sd}
            qv = sinc_quantiles(v, mass, probs)
            for p, q in zip(probs, np.exp(g.to_log(axis, qv)), strict=True):
                row[quantile_name(p)] = float(q)
            rows.append(row)
        return pd.DataFrame(rows)

    def draws(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """Independent posterior draws in an order no floating-point tie can change.

        Every random number is drawn up front in a fixed order from ``seed`` (uniforms to
        pick a grid cell by inverse CDF of the cumulative weights, uniforms to jitter
        within the cell, then standard normals per fixed block of draws), so a last-bit
        change of the weights moves draws by as little and no stream shifts. Given the
        jittered ``(sigma, sigma_theta)`` the coefficients are drawn exactly. Draws are
        rounded to 40 significant bits (relative 1e-12), so that on another CPU they are
        bit-identical (a value changes by one unit of that precision with probability about
        1e-3) and so are the rank-based diagnostics computed from them: arviz's folded R-hat
        ranks ``|x - median|``, where the two middle draws tie exactly, and a last-bit
        difference would break that tie.
        """
        g = self.grid
        rng = np.random.default_rng(seed)
        pick = rng.random(n)
        jit = rng.random((n, 2)) - 0.5
        cum = np.cumsum(g.w.ravel())
        idx = np.minimum(np.searchsorted(cum, pick * cum[-1], side="right"), cum.size - 1)
        i_s, i_t = np.unravel_index(idx, g.w.shape)
        us = g.to_log(0, g.vs[i_s] + g.hv[0] * jit[:, 0])
        ut = g.to_log(1, g.vt[i_t] + g.hv[1] * jit[:, 1])
        cm = self.cm
        out = {
            "beta": np.empty((n, cm.p)),
            "gamma": np.empty((n, cm.q)),
            "theta": np.empty((n, cm.G)),
            "lambda": np.empty((n, cm.G)),
        }
        block = 256
        blocks = [slice(i, min(i + block, n)) for i in range(0, n, block)]
        # the normals in their fixed order (z_a then z_theta per block), then the blocks,
        # independent of each other: on two threads when the draws are large (numpy and BLAS
        # release the GIL); the same numbers either way
        z = [
            (
                rng.standard_normal((sl.stop - sl.start, cm.k)),
                rng.standard_normal((sl.stop - sl.start, cm.G)),
            )
            for sl in blocks
        ]

        def run(j: int) -> None:
            sl = blocks[j]
            d = cm.draw(us[sl], ut[sl], *z[j])
            for key in out:
                out[key][sl] = _quantise(d[key])
            z[j] = None

        workers = _draw_threads(n * (cm.G + cm.k))
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run, range(len(blocks))))
        else:
            for j in range(len(blocks)):
                run(j)
        out["sigma"] = _quantise(np.exp(us))
        out["sigma_theta"] = _quantise(np.exp(ut))
        return out


class ScaledPosterior:
    """An exact posterior of a fit to ``(y - loc) / scale``, reported on the scale of ``y``.

    Wraps :class:`QuadraturePosterior` (or anything with ``summarise_lambda``,
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


def _fit_quadrature(
    d: LambdaData,
    gamma_sd,
    beta_sd,
    sigma_prior,
    sigma_theta_prior,
    chains: int,
    draws: int,
    seed: int,
    n_grid: tuple[int, int] | None,
    resolution,
    within: bool = False,
):
    t0 = time.perf_counter()
    if within:
        from hetfx.models.baselines import fixed_baseline_model

        cm = fixed_baseline_model(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior)
    else:
        cm = ArrowLambda(d, gamma_sd, beta_sd, sigma_prior, sigma_theta_prior)
    t1 = time.perf_counter()
    grid = lattice_grid(
        cm,
        float(np.std(d.y)) or 1.0,
        resolution=resolution,
        min_points=None if n_grid is None else tuple(n_grid),
    )
    # the scales' quantiles need the full grid (3 nodes per SD); the mixtures of the
    # coefficients need half of it on log sigma (measured: within 1e-10 either way)
    post = QuadraturePosterior(cm, grid, stride=(2, 1))
    draws_d = post.draws(chains * draws, seed)
    t2 = time.perf_counter()
    idata = _idata_from_draws(draws_d, d, chains)
    idata.attrs = {
        "engine": "quadrature",
        "grid_edge_mass": grid.edge_mass,
        "grid_points": int(grid.w.size),
    }
    return idata, {
        "compile": t1 - t0,
        "sampling": t2 - t1,
        "edge": grid.edge_mass,
        "posterior": post,
    }


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
    n_grid: tuple[int, int] | None = None,
    cores: int | None = None,
    resolution: float | tuple[float, float] = 3.0,
    within: bool = False,
    sigma_alpha_prior: ScalePrior | None = None,
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
    n_grid : (int, int), optional
        Quadrature engine: at least this many grid nodes on ``log sigma`` and
        ``log sigma_theta`` (steps are halved until reached). By default the grid is set by
        ``resolution`` alone (see :func:`lattice_grid`).
    cores : int, optional
        Threads for nutpie (default min(chains, 2)).
    resolution : float or (float, float), default 3
        Quadrature engine: grid nodes per posterior SD of each log scale at the mode. The
        default keeps every summary within about 1e-9 of its limit (measured on the paper's
        models and the simulation's data by halving the steps and widening the box).
    within : bool, default False
        Quadrature engine: one free (flat-prior) baseline per group, integrated out exactly
        by centring ``y``, ``T`` and ``X`` within group
        (:func:`hetfx.models.baselines.fixed_baseline_model`; ``X`` then has no constant
        column).
    sigma_alpha_prior : ScalePrior, optional
        nutpie engine: pooled baselines ``alpha_g ~ N(0, sigma_alpha)`` with this prior (the
        quadrature engine's pooled baselines are
        :func:`hetfx.models.pooled.fit_exact_lambda`).

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
            idata, tm = _fit_quadrature(
                d,
                gamma_sd,
                beta_sd,
                sigma_prior,
                sigma_theta_prior,
                chains,
                draws,
                seed,
                n_grid,
                resolution,
                within,
            )
    else:
        if within:
            raise ValueError("within=True needs engine='quadrature'")
        tm_kw = {"sigma_alpha_prior": sigma_alpha_prior}
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
            **tm_kw,
        )
    wall = time.perf_counter() - t0
    pooled = sigma_alpha_prior is not None and engine == "nutpie"
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
    return LambdaFit(
        idata=idata, data=d, diagnostics_record=diag, engine=engine, posterior=tm.get("posterior")
    )


def design_from_factorial(
    keys: pd.DataFrame, formula_terms: Sequence[Sequence[str]]
) -> pd.DataFrame:
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
