"""Linear models with correlated varying intercepts and treatment slopes.

Model (formula-free; appendix models A1 and Bush-Prather of ``replication-spec.md``)::

    y_i = X_i b + sum_k (u0_k[g_k[i]] + u1_k[g_k[i]] T_i) + e_i,    e_i ~ N(0, sigma)
    (u0_k, u1_k)_g ~ N(0, diag(s_k) R_k diag(s_k)),   R_k ~ LKJ(eta)
    b ~ N(0, b_sd)  (the intercept has its own prior, on the centred-predictor intercept
                     when ``center=True``, as brms does)
    s_k ~ sd_prior,  sigma ~ sigma_prior

Engines (``engine`` of :func:`fit_varying_slopes`):

``"collapsed"`` (default)
    Given the 1 + 3K hyperparameters ``h = (log sigma, log s0_k, log s1_k, atanh rho_k)`` the
    model is linear-Gaussian, so ``(b, u)`` integrate out exactly. NUTS (nutpie, Python
    callback, no compile step) samples ``h`` using the analytic gradient of the collapsed
    log density; ``(b, u)`` are then drawn exactly from their Gaussian conditional for each
    draw of ``h``.
``"nutpie"``
    The full model in PyMC (non-centred ``u``), compiled and sampled by nutpie: the
    reference engine.

Effects are reported per *profile*: a row with a level of every grouping factor and a
contrast row ``x(T=1) - x(T=0)`` over the columns of ``X``; the effect is
``contrast @ b + sum_k u1_k[level_k]``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import arviz as az
import numpy as np
import pandas as pd
from scipy import linalg, optimize

from hetfx.inference import Diagnostics, compute_diagnostics, summarise_coefs, summarise_groups
from hetfx.models.gaussian import (
    ScalePrior,
    check_finite,
    draw_conditional,
    single_threaded_blas,
    suff_stats,
)

__all__ = [
    "VaryingSlopesData",
    "VaryingSlopesFit",
    "CollapsedVaryingSlopes",
    "build_pymc_model",
    "fit_varying_slopes",
    "ENGINES",
]

ENGINES = ("collapsed", "nutpie")
_COEF2 = ["Intercept", "treat"]


# ------------------------------------------------------------------------------ data
@dataclasses.dataclass
class VaryingSlopesData:
    """Validated inputs (see :func:`fit_varying_slopes`).

    Attributes
    ----------
    y, treat : numpy.ndarray
        Outcome and treatment, shape (n,).
    X : pandas.DataFrame
        Population-level design (n x p) with an ``Intercept`` column.
    codes : dict of str to numpy.ndarray
        Per grouping factor, integer level codes 0..G_k-1 of every row.
    levels : dict of str to list
        Per grouping factor, the sorted level values.
    profiles : pandas.DataFrame
        One row per reported effect: the factor columns (level values) and key columns.
    contrast : numpy.ndarray
        (n_profiles x p) contrast ``x(T=1) - x(T=0)`` per profile over the columns of ``X``.
    profile_codes : dict of str to numpy.ndarray
        Level code of every profile per factor.
    """

    y: np.ndarray
    treat: np.ndarray
    X: pd.DataFrame
    codes: dict
    levels: dict
    profiles: pd.DataFrame
    contrast: np.ndarray
    profile_codes: dict
    n_obs: np.ndarray

    @property
    def factors(self) -> list[str]:
        """Names of the grouping factors."""
        return list(self.codes)


def prepare_data(y, treat, X, factors: pd.DataFrame, profiles: pd.DataFrame | None,
                 contrast: pd.DataFrame | None) -> VaryingSlopesData:
    """Validate and bundle inputs (see :func:`fit_varying_slopes`)."""
    y = check_finite("y", np.asarray(y, dtype=float).ravel())
    n = len(y)
    treat = check_finite("treat", np.asarray(treat, dtype=float).ravel())
    if len(treat) != n:
        raise ValueError(f"treat has length {len(treat)}, y has {n}")
    if not isinstance(X, pd.DataFrame):
        raise TypeError("X must be a pandas DataFrame (column names are the terms)")
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows, expected {n}")
    check_finite("X", X.to_numpy(dtype=float))
    if "Intercept" not in X.columns:
        raise ValueError("X must contain an 'Intercept' column")
    if not isinstance(factors, pd.DataFrame) or factors.shape[1] < 1:
        raise TypeError("factors must be a DataFrame with one column per grouping factor")
    if len(factors) != n:
        raise ValueError(f"factors has {len(factors)} rows, expected {n}")
    if factors.isna().any().any():
        raise ValueError("factors contain missing values")
    codes, levels = {}, {}
    for f in factors.columns:
        lv = sorted(pd.unique(factors[f]))
        levels[str(f)] = lv
        codes[str(f)] = pd.Categorical(factors[f], categories=lv).codes.astype(np.int64)
    fcols = [str(f) for f in factors.columns]
    if profiles is None:
        profiles = factors.drop_duplicates().sort_values(list(factors.columns))
        profiles = profiles.reset_index(drop=True)
    else:
        profiles = profiles.reset_index(drop=True)
        missing = [f for f in fcols if f not in profiles.columns]
        if missing:
            raise ValueError(f"profiles lack factor columns {missing}")
    pcodes = {}
    for f in fcols:
        c = pd.Categorical(profiles[f], categories=levels[f]).codes
        if np.any(c < 0):
            raise ValueError(f"profiles hold levels of {f} not seen in the data")
        pcodes[f] = c.astype(np.int64)
    if contrast is None:
        C = np.zeros((len(profiles), X.shape[1]))
    else:
        if len(contrast) != len(profiles):
            raise ValueError("contrast must have one row per profile")
        unknown = [c for c in contrast.columns if c not in X.columns]
        if unknown:
            raise ValueError(f"contrast columns {unknown} are not columns of X")
        C = contrast.reindex(columns=X.columns, fill_value=0.0).to_numpy(dtype=float)
        check_finite("contrast", C)
    # observations per profile: rows matching every factor level
    key_data = pd.DataFrame({f: codes[f] for f in fcols})
    key_prof = pd.DataFrame({f: pcodes[f] for f in fcols})
    cnt = key_data.value_counts().rename("n").reset_index()
    n_obs = key_prof.merge(cnt, on=fcols, how="left")["n"].fillna(0).to_numpy(dtype=int)
    return VaryingSlopesData(y, treat, X.copy(), codes, levels, profiles, C, pcodes, n_obs)


def _schur_kernel_py(BtB, XtB, XtX, Xty, Bty, pb, Pm0b, s2, Om):
    """One-factor collapsed core (compiled with numba when available).

    Returns ``(ok, logdet_M, b'm, m_b'P m0, tr(Minv P), m'P m, S)`` where ``S`` is the sum
    over groups of the conditional second moments of ``(u0, u1)`` (2 x 2).
    """
    G = BtB.shape[0]
    p = XtX.shape[0]
    S = XtX / s2
    bb = Xty / s2 + Pm0b
    rhs = bb.copy()
    for j in range(p):
        S[j, j] += pb[j]
    Mi = np.empty((G, 3))
    C = np.empty((G, 2, p))
    e = np.empty((G, 2))
    bu = np.empty((G, 2))
    logdet_u = 0.0
    for g in range(G):
        a = BtB[g, 0, 0] / s2 + Om[0, 0]
        b = BtB[g, 0, 1] / s2 + Om[0, 1]
        c = BtB[g, 1, 1] / s2 + Om[1, 1]
        det = a * c - b * b
        if not det > 0.0:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros((2, 2))
        logdet_u += np.log(det)
        i00, i01, i11 = c / det, -b / det, a / det
        Mi[g, 0], Mi[g, 1], Mi[g, 2] = i00, i01, i11
        bu0, bu1 = Bty[g, 0] / s2, Bty[g, 1] / s2
        bu[g, 0], bu[g, 1] = bu0, bu1
        e0 = i00 * bu0 + i01 * bu1
        e1 = i01 * bu0 + i11 * bu1
        e[g, 0], e[g, 1] = e0, e1
        for j in range(p):
            m0 = XtB[g, 0, j] / s2
            m1 = XtB[g, 1, j] / s2
            C[g, 0, j] = i00 * m0 + i01 * m1
            C[g, 1, j] = i01 * m0 + i11 * m1
        for j in range(p):
            m0 = XtB[g, 0, j] / s2
            m1 = XtB[g, 1, j] / s2
            rhs[j] -= m0 * e0 + m1 * e1
            for k in range(p):
                S[j, k] -= m0 * C[g, 0, k] + m1 * C[g, 1, k]
    for j in range(p):
        if not S[j, j] > 0.0:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros((2, 2))
    L = np.linalg.cholesky(S)
    logdet_S = 0.0
    for j in range(p):
        logdet_S += 2.0 * np.log(L[j, j])
    Sinv = np.linalg.inv(S)
    mb = Sinv @ rhs
    bm = 0.0
    mPm0 = 0.0
    tr = 0.0
    mPm = 0.0
    for j in range(p):
        bm += bb[j] * mb[j]
        mPm0 += mb[j] * Pm0b[j]
        tr += Sinv[j, j] * pb[j]
        mPm += pb[j] * mb[j] * mb[j]
    Ssum = np.zeros((2, 2))
    for g in range(G):
        mu0 = e[g, 0]
        mu1 = e[g, 1]
        for j in range(p):
            mu0 -= C[g, 0, j] * mb[j]
            mu1 -= C[g, 1, j] * mb[j]
        bm += bu[g, 0] * mu0 + bu[g, 1] * mu1
        CS0 = C[g, 0] @ Sinv
        CS1 = C[g, 1] @ Sinv
        v00 = Mi[g, 0] + CS0 @ C[g, 0]
        v01 = Mi[g, 1] + CS0 @ C[g, 1]
        v11 = Mi[g, 2] + CS1 @ C[g, 1]
        tr += v00 * Om[0, 0] + 2 * v01 * Om[0, 1] + v11 * Om[1, 1]
        mPm += mu0 * mu0 * Om[0, 0] + 2 * mu0 * mu1 * Om[0, 1] + mu1 * mu1 * Om[1, 1]
        Ssum[0, 0] += v00 + mu0 * mu0
        Ssum[0, 1] += v01 + mu0 * mu1
        Ssum[1, 1] += v11 + mu1 * mu1
    Ssum[1, 0] = Ssum[0, 1]
    return True, logdet_u + logdet_S, bm, mPm0, tr, mPm, Ssum


try:  # numba ships with pytensor; fall back to Python if it is missing
    import numba

    _schur_kernel = numba.njit(cache=True)(_schur_kernel_py)
except ImportError:  # pragma: no cover
    _schur_kernel = _schur_kernel_py


# ------------------------------------------------------------------------- fit object
@dataclasses.dataclass
class VaryingSlopesFit:
    """Fitted varying-slopes model (estimand API).

    Attributes
    ----------
    idata : arviz.InferenceData
        Posterior: ``b[control]``, ``sigma``, ``sd[factor, coef]``, ``cor[factor]``,
        ``u_<factor>[<factor>_level, coef]`` and ``effect[profile]``.
    data : VaryingSlopesData
        Validated inputs.
    diagnostics_record : Diagnostics
        Convergence and timing record.
    engine : str
        Engine used.
    """

    idata: az.InferenceData
    data: VaryingSlopesData
    diagnostics_record: Diagnostics
    engine: str

    def group_effects(self) -> pd.DataFrame:
        """Effect of the treatment per profile (posterior median and quantiles)."""
        eff = self.idata.posterior["effect"].transpose("chain", "draw", "profile").values
        return summarise_groups(eff, self.data.profiles, self.data.n_obs)

    def coefs(self) -> pd.DataFrame:
        """Coefficients: ``control`` (b) and ``scale`` (sigma, SDs, correlations)."""
        post = self.idata.posterior
        ds = {"b": post["b"], "sigma": post["sigma"]}
        for f in self.data.factors:
            for j, c in enumerate(_COEF2):
                ds[f"sd_{f}__{c}"] = post["sd"].sel(factor=f).isel(coef=j).drop_vars(
                    ["factor", "coef"], errors="ignore")
            ds[f"cor_{f}"] = post["cor"].sel(factor=f).drop_vars("factor", errors="ignore")
        idt = az.InferenceData(posterior=__import__("xarray").Dataset(ds))
        scale = ["sigma"] + [k for k in ds if k.startswith(("sd_", "cor_"))]
        return summarise_coefs(idt, {"control": ["b"], "scale": scale})

    def diagnostics(self) -> pd.DataFrame:
        """One-row diagnostics frame."""
        return self.diagnostics_record.to_frame()


# -------------------------------------------------------------------- collapsed model
class CollapsedVaryingSlopes:
    """Collapsed log density of the hyperparameters and exact conditional draws.

    Parameters
    ----------
    d : VaryingSlopesData
        Inputs.
    b_sd : float or array-like
        Prior SD of the non-intercept coefficients.
    intercept_prior : tuple
        ``("normal", mu, sd)`` or ``("flat",)``.
    sd_prior, sigma_prior : ScalePrior
        Priors of the group SDs and of sigma.
    lkj_eta : float
        LKJ shape of each 2x2 correlation.
    center : bool
        Centre the non-intercept columns of X (intercept prior on the centred intercept).
    """

    def __init__(self, d: VaryingSlopesData, b_sd, intercept_prior, sd_prior: ScalePrior,
                 sigma_prior: ScalePrior, lkj_eta: float = 1.0, center: bool = True) -> None:
        X = d.X.to_numpy(dtype=float)
        n, p = X.shape
        self.ic = list(d.X.columns).index("Intercept")
        self.xmean = X.mean(axis=0) if center else np.zeros(p)
        self.xmean[self.ic] = 0.0
        Xc = X - self.xmean
        blocks = [Xc]
        self.offsets, self.sizes = [], []
        off = p
        for f in d.factors:
            G = len(d.levels[f])
            B = np.zeros((n, 2 * G))
            B[np.arange(n), 2 * d.codes[f]] = 1.0
            B[np.arange(n), 2 * d.codes[f] + 1] = d.treat
            blocks.append(B)
            self.offsets.append(off)
            self.sizes.append(G)
            off += 2 * G
        self.dim = off
        self.p, self.K = p, len(d.factors)
        self.ss = suff_stats(np.hstack(blocks), d.y)
        bsd = np.broadcast_to(np.asarray(b_sd, dtype=float), (p,)).copy()
        if np.any(bsd <= 0):
            raise ValueError("b_sd must be positive")
        pb = 1.0 / bsd**2
        m0 = np.zeros(p)
        kind = intercept_prior[0]
        if kind == "flat":
            pb[self.ic] = 0.0
        elif kind == "normal":
            m0[self.ic] = float(intercept_prior[1])
            pb[self.ic] = 1.0 / float(intercept_prior[2]) ** 2
        else:
            raise ValueError(
                "the collapsed engine needs a Gaussian or flat intercept prior "
                f"(got {intercept_prior!r}); use ('flat',) or engine='nutpie'")
        self.pb, self.m0b = pb, m0
        self.m0 = np.concatenate([m0, np.zeros(off - p)])
        Pm0 = np.zeros(off)
        Pm0[:p] = pb * m0
        self.Pm0, self.m0Pm0 = Pm0, float(m0 @ (pb * m0))
        self.sd_prior, self.sigma_prior, self.lkj_eta = sd_prior, sigma_prior, float(lkj_eta)
        self.ndim = 1 + 3 * self.K
        self._diag = np.arange(off)
        if self.K == 1:
            self._setup_blocks()

    # -- hyperparameters
    def unpack(self, h: np.ndarray):
        """Return sigma, s0 (K,), s1 (K,), rho (K,) from the unconstrained vector."""
        h = np.asarray(h, dtype=float)
        hk = h[1:].reshape(self.K, 3)
        return np.exp(h[0]), np.exp(hk[:, 0]), np.exp(hk[:, 1]), np.tanh(hk[:, 2])

    def _prec(self, s0, s1, rho) -> np.ndarray:
        P = np.zeros((self.dim, self.dim))
        P[self._diag[: self.p], self._diag[: self.p]] = self.pb
        for k in range(self.K):
            det = (s0[k] * s1[k]) ** 2 * (1 - rho[k] ** 2)
            a, b, c = s1[k] ** 2 / det, -rho[k] * s0[k] * s1[k] / det, s0[k] ** 2 / det
            i0 = self.offsets[k] + 2 * np.arange(self.sizes[k])
            P[i0, i0] = a
            P[i0 + 1, i0 + 1] = c
            P[i0, i0 + 1] = b
            P[i0 + 1, i0] = b
        return P

    def _setup_blocks(self) -> None:
        """Pre-slice the sufficient statistics for the one-factor Schur kernel."""
        p, ss = self.p, self.ss
        G = self.sizes[0]
        o = self.offsets[0]
        self._XtX = np.ascontiguousarray(ss.AtA[:p, :p])
        self._XtB = np.ascontiguousarray(ss.AtA[:p, o:].reshape(p, G, 2).transpose(1, 2, 0))
        i0 = o + 2 * np.arange(G)
        BtB = np.empty((G, 2, 2))
        BtB[:, 0, 0] = ss.AtA[i0, i0]
        BtB[:, 1, 1] = ss.AtA[i0 + 1, i0 + 1]
        BtB[:, 0, 1] = BtB[:, 1, 0] = ss.AtA[i0, i0 + 1]
        self._BtB = BtB
        self._Xty = ss.Aty[:p]
        self._Bty = np.ascontiguousarray(ss.Aty[o:].reshape(G, 2))

    def logp_and_grad(self, h: np.ndarray) -> tuple[float, np.ndarray]:
        """Collapsed log posterior of ``h`` (up to a constant) and its gradient."""
        h = np.asarray(h, dtype=float)
        if not np.all(np.isfinite(h)) or np.any(np.abs(h) > 30):
            return -np.inf, np.zeros_like(h)
        sigma, s0, s1, rho = self.unpack(h)
        if np.any(np.abs(rho) >= 1.0):
            return -np.inf, np.zeros_like(h)
        ss = self.ss
        s2 = sigma**2
        Sigs, Oms = [], []
        for k in range(self.K):
            c = s0[k] * s1[k]
            Sig = np.array([[s0[k] ** 2, rho[k] * c], [rho[k] * c, s1[k] ** 2]])
            det = c**2 * (1 - rho[k] ** 2)
            Sigs.append(Sig)
            Oms.append(np.array([[Sig[1, 1], -Sig[0, 1]], [-Sig[0, 1], Sig[0, 0]]]) / det)
        try:
            if self.K == 1:
                ok, logdet_M, bm, mPm0, tr_MinvP, mPm, S1 = _schur_kernel(
                    self._BtB, self._XtB, self._XtX, self._Xty, self._Bty, self.pb,
                    self.Pm0[: self.p], s2, Oms[0])
                if not ok:
                    return -np.inf, np.zeros_like(h)
                blocks = [S1]
            else:
                M = self._prec(s0, s1, rho)
                P_diag_blocks = M.copy()
                M += ss.AtA / s2
                bvec = ss.Aty / s2 + self.Pm0
                cf = linalg.cho_factor(M, lower=True, check_finite=False)
                m = linalg.cho_solve(cf, bvec, check_finite=False)
                Minv = linalg.cho_solve(cf, np.eye(self.dim), check_finite=False)
                logdet_M = 2 * np.log(np.diag(cf[0])).sum()
                bm = bvec @ m
                tr_MinvP = np.sum(Minv * P_diag_blocks)
                mPm = m @ P_diag_blocks @ m
                blocks = []
                for k in range(self.K):
                    i0 = self.offsets[k] + 2 * np.arange(self.sizes[k])
                    Vu = np.empty((self.sizes[k], 2, 2))
                    Vu[:, 0, 0] = Minv[i0, i0]
                    Vu[:, 1, 1] = Minv[i0 + 1, i0 + 1]
                    Vu[:, 0, 1] = Vu[:, 1, 0] = Minv[i0, i0 + 1]
                    mu_k = np.column_stack([m[i0], m[i0 + 1]])
                    blocks.append(Vu.sum(axis=0) + mu_k.T @ mu_k)
                mPm0 = float(m[: self.p] @ self.Pm0[: self.p])
        except (linalg.LinAlgError, np.linalg.LinAlgError):
            return -np.inf, np.zeros_like(h)
        G = np.asarray(self.sizes, dtype=float)
        logdet_P = -(G * (2 * np.log(s0) + 2 * np.log(s1) + np.log1p(-rho**2))).sum()
        lp = (-0.5 * ss.n * np.log(s2) + 0.5 * logdet_P - 0.5 * logdet_M
              - 0.5 * (ss.yty / s2 + self.m0Pm0 - bm))
        grad = np.zeros(self.ndim)
        # rss + tr(Minv A'A) with A'A = s2 (M - P) and M m = bvec
        mAtAm = s2 * (bm - mPm)
        m_Aty = s2 * (bm - mPm0)
        rss = ss.yty - 2 * m_Aty + mAtAm
        grad[0] = -ss.n + (rss + s2 * (self.dim - tr_MinvP)) / s2
        for k in range(self.K):
            S = blocks[k]
            r = rho[k]
            Sig, Om = Sigs[k], Oms[k]
            g_om = 0.5 * (self.sizes[k] * Sig - S)
            g_sig = -Om @ g_om @ Om
            c = s0[k] * s1[k]
            grad[1 + 3 * k] = 2 * s0[k] ** 2 * g_sig[0, 0] + 2 * r * c * g_sig[0, 1]
            grad[2 + 3 * k] = 2 * s1[k] ** 2 * g_sig[1, 1] + 2 * r * c * g_sig[0, 1]
            grad[3 + 3 * k] = 2 * (1 - r**2) * c * g_sig[0, 1]
        # priors with Jacobians
        lps, gs = self.sigma_prior.logpdf_log(h[0])
        lp += float(lps)
        grad[0] += float(gs)
        hk = np.asarray(h[1:]).reshape(self.K, 3)
        a, ga = self.sd_prior.logpdf_log(hk[:, :2])
        lp += float(a.sum())
        grad[1:].reshape(self.K, 3)[:, :2] += ga
        lp += self.lkj_eta * np.log1p(-rho**2).sum()
        grad[3::3] += -2 * self.lkj_eta * rho
        if not np.isfinite(lp):
            return -np.inf, np.zeros_like(h)
        return float(lp), grad

    def mode(self, h0: np.ndarray | None = None) -> np.ndarray:
        """Posterior mode of ``h`` (L-BFGS with the analytic gradient)."""
        if h0 is None:
            h0 = np.zeros(self.ndim)
            h0[0] = np.log(np.sqrt(self.ss.yty / self.ss.n) + 1e-12) - 0.5
            h0[1:] = np.tile([np.log(0.1), np.log(0.1), 0.0], self.K)

        def f(h):
            lp, g = self.logp_and_grad(h)
            if not np.isfinite(lp):
                return 1e300, np.zeros_like(h)
            return -lp, -g

        res = optimize.minimize(f, h0, jac=True, method="L-BFGS-B",
                                bounds=[(-12, 5)] * self.ndim)
        return res.x

    def draw_coefficients(self, H: np.ndarray, rng: np.random.Generator,
                          chunk: int = 250) -> np.ndarray:
        """Exact draws of the coefficient vector (centred b, u) given draws ``H`` of h."""
        out = np.empty((len(H), self.dim))
        ss = self.ss
        for i in range(0, len(H), chunk):
            hh = H[i : i + chunk]
            Ms = np.empty((len(hh), self.dim, self.dim))
            bs = np.empty((len(hh), self.dim))
            for j, h in enumerate(hh):
                sigma, s0, s1, rho = self.unpack(h)
                Ms[j] = self._prec(s0, s1, rho) + ss.AtA / sigma**2
                bs[j] = ss.Aty / sigma**2 + self.Pm0
            L = np.linalg.cholesky(Ms)
            w = np.linalg.solve(L, bs[:, :, None])
            mean = np.linalg.solve(np.swapaxes(L, 1, 2), w)[:, :, 0]
            out[i : i + chunk] = draw_conditional(mean, L, rng)
        return out


def _gradient_check(cm: CollapsedVaryingSlopes, h: np.ndarray, eps: float = 1e-6) -> float:
    """Largest absolute difference between analytic and finite-difference gradients."""
    _, g = cm.logp_and_grad(h)
    fd = np.empty_like(g)
    for i in range(len(h)):
        e = np.zeros_like(h)
        e[i] = eps
        fd[i] = (cm.logp_and_grad(h + e)[0] - cm.logp_and_grad(h - e)[0]) / (2 * eps)
    return float(np.max(np.abs(fd - g)))


def _assemble(d: VaryingSlopesData, cm_xmean: np.ndarray, ic: int, bc: np.ndarray,
              sigma, sd, cor, us: dict, chains: int, sample_stats=None) -> az.InferenceData:
    """Posterior InferenceData from flat draws (uncentres the intercept, adds effects)."""
    b = bc.copy()
    b[:, ic] = bc[:, ic] - bc @ cm_xmean
    eff = b @ d.contrast.T
    for f in d.factors:
        eff = eff + us[f][:, d.profile_codes[f], 1]
    post = {"b": b, "sigma": sigma, "sd": sd, "cor": cor, "effect": eff}
    post.update({f"u_{f}": us[f] for f in d.factors})
    post = {k: np.asarray(v).reshape(chains, -1, *np.asarray(v).shape[1:])
            for k, v in post.items()}
    coords = {"control": [str(c) for c in d.X.columns], "factor": d.factors, "coef": _COEF2,
              "profile": np.arange(len(d.profiles))}
    dims = {"b": ["control"], "sd": ["factor", "coef"], "cor": ["factor"],
            "effect": ["profile"]}
    for f in d.factors:
        coords[f"{f}_level"] = [str(v) for v in d.levels[f]]
        dims[f"u_{f}"] = [f"{f}_level", "coef"]
    return az.from_dict(posterior=post, coords=coords, dims=dims, sample_stats=sample_stats)


def _fit_collapsed(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta, center,
                   chains, draws, tune, seed, target_accept, cores):
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    t0 = time.perf_counter()
    cm = CollapsedVaryingSlopes(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta,
                                center)
    h_mode = cm.mode()
    ndim = cm.ndim

    def safe_logp(x, **_):
        try:
            return cm.logp_and_grad(x)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return -np.inf, np.zeros(ndim)

    def make_logp():
        return safe_logp

    def make_expand(seed1, seed2, chain):
        return lambda x, **_: {"h": np.asarray(x, dtype=np.float64).copy()}

    def make_init(s):
        r = np.random.default_rng(s)
        return h_mode + 0.1 * r.standard_normal(ndim)

    model = from_pyfunc(ndim, make_logp, make_expand, [np.dtype("float64")], [(ndim,)],
                        ["h"], make_initial_point_fn=make_init)
    t1 = time.perf_counter()
    tr = nutpie.sample(model, chains=chains, draws=draws, tune=tune, seed=seed,
                       target_accept=target_accept, progress_bar=False,
                       cores=cores or min(chains, 2))
    H = tr.posterior["h"].values.reshape(chains * draws, ndim)
    rng = np.random.default_rng(seed + 7919)
    c = cm.draw_coefficients(H, rng)
    t2 = time.perf_counter()
    sigma, s0, s1, rho = np.exp(H[:, 0]), np.exp(H[:, 1::3]), np.exp(H[:, 2::3]), np.tanh(
        H[:, 3::3])
    sd = np.stack([s0, s1], axis=-1)
    us = {f: c[:, o : o + 2 * G].reshape(len(c), G, 2)
          for f, o, G in zip(d.factors, cm.offsets, cm.sizes, strict=True)}
    idata = _assemble(d, cm.xmean, cm.ic, c[:, : cm.p], sigma, sd, rho, us, chains,
                      sample_stats={"diverging": tr.sample_stats["diverging"].values})
    idata.attrs = {"engine": "collapsed", "target_accept": target_accept}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1}


# ---------------------------------------------------------------- full PyMC reference
_NUTPIE_CACHE: dict = {}


def build_pymc_model(d: VaryingSlopesData, b_sd=0.5, intercept_prior=("normal", 0.0, 0.5),
                     sd_prior: ScalePrior | None = None, sigma_prior: ScalePrior | None = None,
                     lkj_eta: float = 1.0, center: bool = True):
    """Full varying-slopes model in PyMC (non-centred group coefficients).

    Parameters are as in :func:`fit_varying_slopes`; ``intercept_prior`` may also be
    ``("student_t", nu, mu, sd)`` (brms's default for the centred intercept).

    Returns
    -------
    pymc.Model
        Deterministics ``b`` (uncentred), ``sd``, ``cor``, ``u_<factor>``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    sd_prior = sd_prior or ScalePrior("half_normal", 1.0)
    sigma_prior = sigma_prior or ScalePrior.brms_default()
    X = d.X.to_numpy(dtype=float)
    p = X.shape[1]
    ic = list(d.X.columns).index("Intercept")
    xmean = X.mean(axis=0) if center else np.zeros(p)
    xmean[ic] = 0.0
    others = [j for j in range(p) if j != ic]
    coords = {"control": [str(c) for c in d.X.columns], "factor": d.factors, "coef": _COEF2,
              "obs": np.arange(len(d.y))}
    for f in d.factors:
        coords[f"{f}_level"] = [str(v) for v in d.levels[f]]
    bsd = np.broadcast_to(np.asarray(b_sd, dtype=float), (p,)).copy()
    with pm.Model(coords=coords) as model:
        Xc = pm.Data("Xc", (X - xmean)[:, others])
        xm = pm.Data("xmean", xmean[others])
        T = pm.Data("treat", d.treat, dims="obs")
        y = pm.Data("y", d.y, dims="obs")
        idx = {f: pm.Data(f"idx_{f}", d.codes[f], dims="obs") for f in d.factors}
        b_other = pm.Normal("b_other", 0.0, bsd[others], shape=len(others))
        kind = intercept_prior[0]
        if kind == "normal":
            a = pm.Normal("Intercept_c", float(intercept_prior[1]), float(intercept_prior[2]))
        elif kind == "student_t":
            a = pm.StudentT("Intercept_c", nu=float(intercept_prior[1]),
                            mu=float(intercept_prior[2]), sigma=float(intercept_prior[3]))
        elif kind == "flat":
            a = pm.Flat("Intercept_c")
        else:
            raise ValueError(f"unknown intercept prior {intercept_prior!r}")
        b_full = pt.zeros(p)
        b_full = pt.set_subtensor(b_full[others], b_other)
        b_full = pt.set_subtensor(b_full[ic], a - pt.dot(xm, b_other))
        pm.Deterministic("b", b_full, dims="control")
        mu = a + pt.dot(Xc, b_other)
        sds, cors = [], []
        for f in d.factors:
            s = sd_prior.to_pymc(f"sd_{f}", dims="coef")
            r01 = pm.Beta(f"cor01_{f}", lkj_eta, lkj_eta)
            r = 2 * r01 - 1
            z = pm.Normal(f"z_{f}", 0.0, 1.0, dims=(f"{f}_level", "coef"))
            u0 = s[0] * z[:, 0]
            u1 = s[1] * (r * z[:, 0] + pt.sqrt(1 - r**2) * z[:, 1])
            pm.Deterministic(f"u_{f}", pt.stack([u0, u1], axis=1), dims=(f"{f}_level", "coef"))
            mu = mu + u0[idx[f]] + u1[idx[f]] * T
            sds.append(s)
            cors.append(r)
        pm.Deterministic("sd", pt.stack(sds), dims=("factor", "coef"))
        pm.Deterministic("cor", pt.stack(cors), dims="factor")
        sigma = sigma_prior.to_pymc("sigma")
        pm.Normal("y_obs", mu=mu, sigma=sigma, observed=y, dims="obs")
    return model


def _fit_nutpie(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta, center, chains,
                draws, tune, seed, target_accept, cores, maxdepth):
    import nutpie

    t0 = time.perf_counter()
    key = (len(d.y), tuple(d.X.columns), tuple((f, len(d.levels[f])) for f in d.factors),
           tuple(np.atleast_1d(b_sd)), intercept_prior, sd_prior, sigma_prior, lkj_eta, center)
    if key in _NUTPIE_CACHE:
        compiled = _NUTPIE_CACHE[key]
        X = d.X.to_numpy(dtype=float)
        ic = list(d.X.columns).index("Intercept")
        others = [j for j in range(X.shape[1]) if j != ic]
        xmean = X.mean(axis=0) if center else np.zeros(X.shape[1])
        compiled = compiled.with_data(
            Xc=(X - xmean)[:, others], xmean=xmean[others], treat=d.treat, y=d.y,
            **{f"idx_{f}": d.codes[f] for f in d.factors})
    else:
        model = build_pymc_model(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta,
                                 center)
        compiled = nutpie.compile_pymc_model(model, freeze_model=False)
        _NUTPIE_CACHE[key] = compiled
    t1 = time.perf_counter()
    tr = nutpie.sample(compiled, chains=chains, draws=draws, tune=tune, seed=seed,
                       target_accept=target_accept, maxdepth=maxdepth, progress_bar=False,
                       cores=cores or min(chains, 2))
    t2 = time.perf_counter()
    post = tr.posterior

    def flat(v):
        a = post[v].values
        return a.reshape(-1, *a.shape[2:])

    b = flat("b")
    us = {f: flat(f"u_{f}") for f in d.factors}
    eff = b @ d.contrast.T
    for f in d.factors:
        eff = eff + us[f][:, d.profile_codes[f], 1]
    idata = _assemble(d, np.zeros(b.shape[1]), list(d.X.columns).index("Intercept"), b,
                      flat("sigma"), flat("sd"), flat("cor"), us, chains,
                      sample_stats={"diverging": tr.sample_stats["diverging"].values})
    idata.attrs = {"engine": "nutpie", "target_accept": target_accept}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1}


# ----------------------------------------------------------------------------- public
def fit_varying_slopes(
    y,
    treat,
    X: pd.DataFrame,
    factors: pd.DataFrame,
    *,
    profiles: pd.DataFrame | None = None,
    contrast: pd.DataFrame | None = None,
    engine: str = "collapsed",
    b_sd: float | Sequence[float] = 0.5,
    intercept_prior: tuple = ("normal", 0.0, 0.5),
    sd_prior: ScalePrior | None = None,
    sigma_prior: ScalePrior | None = None,
    lkj_eta: float = 1.0,
    center: bool = True,
    chains: int = 4,
    draws: int = 1000,
    tune: int = 1000,
    target_accept: float = 0.8,
    maxdepth: int = 10,
    seed: int = 0,
    cores: int | None = None,
) -> VaryingSlopesFit:
    """Fit a linear model with correlated varying intercepts and treatment slopes.

    Parameters
    ----------
    y, treat : array-like, shape (n,)
        Outcome and treatment.
    X : pandas.DataFrame, shape (n, p)
        Population-level design with an ``Intercept`` column (include the treatment and
        its interactions here).
    factors : pandas.DataFrame, shape (n, K)
        One column per grouping factor; each gets a correlated varying intercept and
        treatment slope.
    profiles : pandas.DataFrame, optional
        Rows at which effects are reported: a level of every factor (columns named as in
        ``factors``) plus any key columns. Default: observed combinations of the factors.
    contrast : pandas.DataFrame, optional
        Per profile, ``x(T=1) - x(T=0)`` over (a subset of) the columns of ``X``; missing
        columns are 0. Effect = ``contrast @ b + sum_k u1_k[level]``.
    engine : {"collapsed", "nutpie"}
        Posterior engine (see module docstring).
    b_sd : float or array-like
        Prior SD of the non-intercept coefficients (spec: 0.5; brms fixture A1: 1).
    intercept_prior : tuple
        ``("normal", mu, sd)``, ``("flat",)`` or (nutpie only) ``("student_t", nu, mu, sd)``;
        on the centred intercept when ``center``.
    sd_prior : ScalePrior, optional
        Prior of the group SDs (default half-Normal(0, 1), the spec).
    sigma_prior : ScalePrior, optional
        Prior of sigma (default half-Student-t(3, 0, 2.5)).
    lkj_eta : float
        LKJ shape of the correlations.
    center : bool
        Centre the non-intercept columns of X, as brms.
    chains, draws, tune : int
        NUTS layout.
    target_accept : float
        NUTS target acceptance (original: .95 for A1, .99 for Bush-Prather).
    maxdepth : int
        NUTS maximum tree depth (nutpie engine).
    seed : int
        Random seed.
    cores : int, optional
        Threads for nutpie.

    Returns
    -------
    VaryingSlopesFit
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    sd_prior = sd_prior or ScalePrior("half_normal", 1.0)
    sigma_prior = sigma_prior or ScalePrior.brms_default()
    if lkj_eta <= 0:
        raise ValueError("lkj_eta must be positive")
    t0 = time.perf_counter()
    d = prepare_data(y, treat, X, factors, profiles, contrast)
    if engine == "collapsed":
        with single_threaded_blas():
            idata, tm = _fit_collapsed(d, b_sd, intercept_prior, sd_prior, sigma_prior,
                                       lkj_eta, center, chains, draws, tune, seed,
                                       target_accept, cores)
    else:
        idata, tm = _fit_nutpie(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta,
                                center, chains, draws, tune, seed, target_accept, cores,
                                maxdepth)
    wall = time.perf_counter() - t0
    diag = compute_diagnostics(idata, engine, var_names=["b", "sigma", "sd", "cor", "effect"],
                               wall_seconds=wall, compile_seconds=tm["compile"],
                               sampling_seconds=tm["sampling"])
    return VaryingSlopesFit(idata=idata, data=d, diagnostics_record=diag, engine=engine)
