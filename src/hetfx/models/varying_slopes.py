"""Linear models with correlated varying intercepts and treatment slopes.

Model (formula-free; appendix models A1 and Bush-Prather of ``replication-spec.md``)::

    y_i = X_i b + sum_k (u0_k[g_k[i]] + u1_k[g_k[i]] T_i) + e_i,    e_i ~ N(0, sigma)
    (u0_k, u1_k)_g ~ N(0, diag(s_k) R_k diag(s_k)),   R_k ~ LKJ(eta)
    b ~ N(0, b_sd)  (the intercept has its own prior, on the centred-predictor intercept
                     when ``center=True``, as brms does)
    s_k ~ sd_prior,  sigma ~ sigma_prior

Engines (``engine`` of :func:`fit_varying_slopes`; ``"auto"``, the default, is
``"quadrature"`` with one grouping factor and ``"qmc"`` with more):

Given the 1 + 3K hyperparameters ``h = (log sigma, log s0_k, log s1_k, atanh rho_k)`` the
model is linear-Gaussian, so ``(b, u)`` integrate out exactly: the collapsed log density of
``h`` eliminates the 2 x 2 group blocks of the factor with most levels one group at a time (a
Schur complement, cost linear in its number of levels; the other factors' blocks stay with
the coefficients). The engines differ in how they integrate over ``h``.

``"quadrature"`` (one grouping factor: 4 scale parameters)
    Exact: the package's block engine (:mod:`hetfx.models.exact`, the engine of every
    Gaussian model: one correlated ``(u0_g, u1_g)`` block per level, eliminated by a Schur
    complement) integrates ``h`` on its grid (:data:`QUADRATURE_GRID`, its quadrature error
    stated there); every effect and coefficient is the normal mixture over the nodes
    (quantiles solve the mixture CDF), the scales' quantiles come from their marginals on the
    grid; nothing is random but the stored draws.
``"collapsed"``
    NUTS (nutpie, compiled callback) samples ``h`` using the analytic gradient of the
    collapsed log density; ``(b, u)`` are then drawn exactly from their Gaussian
    conditional for each draw of ``h``.
``"nutpie"``
    The full model in PyMC (non-centred ``u``), compiled and sampled by nutpie: the
    reference engine.
``"qmc"``
    Deterministic: the same collapsed density, integrated by randomised quasi-Monte Carlo
    importance sampling instead of NUTS. The proposal is Geweke's split Student-t(4)
    around the precise posterior mode (BFGS, then Newton with a finite-difference Hessian
    of the analytic gradient), its two-sided scales and correlation matched to the
    weighted sample in ``QMC_ADAPT`` rounds, plus a defensive component three times wider
    (balance-heuristic weights). The points are a fixed scrambled Sobol sequence (scramble
    seed ``seed``); the Pareto k-hat of the weights is checked. Given ``h`` every effect
    and coefficient is Gaussian, so their summaries are those of a weighted normal mixture
    (quantiles solve the mixture CDF by the kernel of :func:`hetfx.inference.
    mixture_quantiles`, from the normal approximation); the scale parameters are
    summarised by weighted quantiles of the points. Every step is a smooth function of the
    data, so another CPU's last-bit differences stay last-bit (measured: below 1e-10)
    instead of being amplified by chaotic NUTS trajectories. Posterior draws (for arviz)
    come from systematic resampling with fixed uniforms and exact conditional draws of
    ``(b, u)``. The compiled kernels split the points and the mixtures over numba's
    ``NUMBA_NUM_THREADS`` threads, each computed on its own: the same bits whatever the
    number of threads.

Effects are reported per *profile*: a row with a level of every grouping factor and a
contrast row ``x(T=1) - x(T=0)`` over the columns of ``X``; the effect is
``contrast @ b + sum_k u1_k[level_k]``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import linalg, optimize, special

from hetfx.inference import (
    GROUP_QUANTILES,
    Diagnostics,
    SamplerDiagnosticsError,
    compute_diagnostics,
    run_nutpie,
    sample_nutpie,
    summarise_coefs,
    summarise_groups,
)
from hetfx.models import _mixtures
from hetfx.models.gaussian import (
    ScalePrior,
    check_finite,
    single_threaded_blas,
    suff_stats,
)
from hetfx.priors import Prior

if TYPE_CHECKING:  # imported where used: arviz and scipy.stats take seconds to import
    import arviz as az

__all__ = [
    "VaryingSlopesData",
    "VaryingSlopesFit",
    "CollapsedVaryingSlopes",
    "build_pymc_model",
    "block_model",
    "fit_varying_slopes",
    "resolve_engine",
    "ENGINES",
    "QUADRATURE_GRID",
]

ENGINES = ("quadrature", "qmc", "collapsed", "nutpie")
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


def prepare_data(
    y, treat, X, factors: pd.DataFrame, profiles: pd.DataFrame | None, contrast: pd.DataFrame | None
) -> VaryingSlopesData:
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


# Everything the collapsed log density needs, independent of h, lives in one flat float64
# buffer (built by ``CollapsedVaryingSlopes._pack``) so that a single compiled function,
# callable from nutpie's Rust threads without the GIL, evaluates log density and gradient.
# Layout: a header of _NHDR scalars, then the arrays at the offsets stored in the header.
# The coefficients split into a "dense" part (population coefficients and the groups of
# every factor but one) and the groups of the factor with most levels (the "block"
# factor), whose 2x2 group blocks of the precision are eliminated one group at a time
# (Schur complement), so the cost is O(G q^2) rather than O((q + 2G)^3).
_H_LEN, _H_NDIM, _H_Q, _H_G, _H_K, _H_BF, _H_N, _H_YTY, _H_M0PM0, _H_CONST = range(10)
_H_SIGS, _H_SIGNU, _H_SDS, _H_SDNU, _H_ETA, _H_DIM = range(10, 16)
_H_OPB, _H_OPM0, _H_ODTD, _H_ODTB, _H_OBTB, _H_ODTY, _H_OBTY, _H_OFOFF, _H_OFG = range(16, 25)
_NHDR = 25


def _scale_prior_log_py(scale, nu, u):
    """Log density of ``u = log x`` (Jacobian included, constant dropped), derivative, for
    a half-Student-t(nu, 0, scale) prior of x; ``nu = inf`` is the half-normal (its limit)."""
    x = np.exp(u)
    r = (x / scale) ** 2
    if not np.isfinite(nu):  # half-normal
        return -0.5 * r + u, 1.0 - r
    return -(nu + 1) / 2 * np.log1p(r / nu) + u, 1.0 - (nu + 1) * (r / nu) / (1 + r / nu)


def _factor_py(h, buf, L, rhs, Mi, C, e, sd0, sd1, rr, l1r, ldsig, om):
    """Shared start of the collapsed density and of the exact conditional draws.

    Fills, for hyperparameters ``h``: the Cholesky factor ``L`` of the Schur complement
    ``S`` (precision of the dense coefficients with the block factor integrated out), the
    right-hand side ``rhs`` (``S m_dense = rhs``), per block group ``Mi`` (2x2 conditional
    covariance, packed 00/01/11), ``C`` and ``e`` (conditional mean ``e - C b_dense``), and
    per factor the SDs, correlation, ``log(1 - r^2)``, ``log det Sigma`` and ``Omega``.
    Returns ``(ok, log|M| - log|P_block|, b'm minus the dense part)``.
    """
    ndim = int(buf[_H_NDIM])
    q = int(buf[_H_Q])
    K = int(buf[_H_K])
    bf = int(buf[_H_BF])
    # support: the collapsed density is finite everywhere; these bounds only keep the
    # arithmetic in range (log SDs reach far into the left tail, where the posterior decays
    # like exp(log s) and NUTS does go: a wall there makes divergences)
    if not np.abs(h[0]) <= 30.0:
        return False, 0.0, 0.0
    for i in range(1, ndim):
        lo = -30.0 if i % 3 == 0 else -150.0
        if not (h[i] >= lo and h[i] <= 30.0):
            return False, 0.0, 0.0
    s2 = np.exp(2.0 * h[0])
    is2 = 1.0 / s2
    # per factor: Sigma = [[s0^2, r s0 s1], [., s1^2]] and Omega = Sigma^-1
    sig = np.empty((K, 3))
    _factor_scales(h, K, sig, sd0, sd1, rr, l1r, ldsig, om)
    S = np.empty((q, q))
    _dense_system(buf, is2, om, S, rhs)
    # eliminate the block factor's groups
    logdet, bm = _eliminate_blocks(buf, is2, sig[bf], ldsig[bf], S, rhs, Mi, C, e)
    # Cholesky of the Schur complement, its log determinant added to the blocks'
    ok, logdet = _cholesky(S, L, logdet)
    if not ok:
        return False, 0.0, 0.0
    return True, logdet, bm


def _factor_scales_py(h, K, sig, sd0, sd1, rr, l1r, ldsig, om):
    """Per factor ``k`` of hyperparameters ``h``: the SDs, correlation, ``log(1 - r^2)``
    (without cancellation: ``1 - r^2 = 1 / cosh(z)^2``), ``log det Sigma``, ``Sigma`` and
    ``Omega = Sigma^-1`` (both packed 00/01/11)."""
    for k in range(K):
        u0, u1, z = h[1 + 3 * k], h[2 + 3 * k], h[3 + 3 * k]
        s0 = np.exp(u0)
        s1 = np.exp(u1)
        r = np.tanh(z)
        az_ = np.abs(z)
        l1r[k] = -2.0 * (az_ + np.log1p(np.exp(-2.0 * az_)) - np.log(2.0))
        one_r2 = np.exp(l1r[k])
        sd0[k], sd1[k], rr[k] = s0, s1, r
        ldsig[k] = 2.0 * u0 + 2.0 * u1 + l1r[k]
        sig[k, 0], sig[k, 1], sig[k, 2] = s0 * s0, r * s0 * s1, s1 * s1
        om[k, 0] = np.exp(-2.0 * u0) / one_r2
        om[k, 1] = -r * np.exp(-u0 - u1) / one_r2
        om[k, 2] = np.exp(-2.0 * u1) / one_r2


def _dense_system_py(buf, is2, om, S, rhs):
    """The dense precision ``S = D'D / s2 + prior`` (with the non-block factors' ``Omega``
    on their groups' diagonal blocks) and its right-hand side ``D'y / s2 + P m0``."""
    q = int(buf[_H_Q])
    K = int(buf[_H_K])
    bf = int(buf[_H_BF])
    pb = buf[int(buf[_H_OPB]) : int(buf[_H_OPB]) + q]
    Pm0 = buf[int(buf[_H_OPM0]) : int(buf[_H_OPM0]) + q]
    DtD = buf[int(buf[_H_ODTD]) : int(buf[_H_ODTD]) + q * q]
    Dty = buf[int(buf[_H_ODTY]) : int(buf[_H_ODTY]) + q]
    foff = buf[int(buf[_H_OFOFF]) : int(buf[_H_OFOFF]) + K]
    fG = buf[int(buf[_H_OFG]) : int(buf[_H_OFG]) + K]
    for i in range(q):
        for j in range(q):
            S[i, j] = DtD[i * q + j] * is2
        S[i, i] += pb[i]
    bb = np.empty(q)
    for i in range(q):
        bb[i] = Dty[i] * is2 + Pm0[i]
    rhs[:] = bb
    for k in range(K):
        if k == bf:
            continue
        o = int(foff[k])
        for g in range(int(fG[k])):
            i0 = o + 2 * g
            S[i0, i0] += om[k, 0]
            S[i0, i0 + 1] += om[k, 1]
            S[i0 + 1, i0] += om[k, 1]
            S[i0 + 1, i0 + 1] += om[k, 2]


def _eliminate_blocks_py(buf, is2, sig_b, ldsig_b, S, rhs, Mi, C, e):
    """Eliminate the block factor's groups from ``S`` and ``rhs`` (in place), filling
    ``Mi``, ``C`` and ``e``; returns ``(log|M| - log|P|`` over the blocks, the blocks' part
    of ``b'm)``. ``sig_b`` and ``ldsig_b``: the block factor's ``Sigma`` and log det."""
    q = int(buf[_H_Q])
    G = int(buf[_H_G])
    DtB = buf[int(buf[_H_ODTB]) : int(buf[_H_ODTB]) + G * 2 * q]
    BtB = buf[int(buf[_H_OBTB]) : int(buf[_H_OBTB]) + G * 3]
    Bty = buf[int(buf[_H_OBTY]) : int(buf[_H_OBTY]) + G * 2]
    W = np.empty((2, q))
    logdet = 0.0
    bm = 0.0
    S00, S01, S11 = sig_b[0], sig_b[1], sig_b[2]
    dsig = np.exp(ldsig_b)
    for g in range(G):
        # M_g = Omega + D_g with D_g = B_g'B_g / s2: M_g^-1 = Sigma (I + D_g Sigma)^-1 and
        # det M_g / det Omega = det(I + D_g Sigma) = 1 + tr(D_g Sigma) + det D_g det Sigma,
        # a sum of non-negative terms (no cancellation as Sigma -> 0 or |r| -> 1)
        d00 = BtB[3 * g] * is2
        d01 = BtB[3 * g + 1] * is2
        d11 = BtB[3 * g + 2] * is2
        ddet = max(d00 * d11 - d01 * d01, 0.0)
        detn = 1.0 + d00 * S00 + 2.0 * d01 * S01 + d11 * S11 + ddet * dsig
        logdet += np.log(detn)
        i00 = (S00 + d11 * dsig) / detn
        i01 = (S01 - d01 * dsig) / detn
        i11 = (S11 + d00 * dsig) / detn
        Mi[g, 0], Mi[g, 1], Mi[g, 2] = i00, i01, i11
        bu0, bu1 = Bty[2 * g] * is2, Bty[2 * g + 1] * is2
        e0 = i00 * bu0 + i01 * bu1
        e1 = i01 * bu0 + i11 * bu1
        e[g, 0], e[g, 1] = e0, e1
        bm += bu0 * e0 + bu1 * e1
        base = 2 * q * g
        for j in range(q):
            w0 = DtB[base + j] * is2
            w1 = DtB[base + q + j] * is2
            W[0, j], W[1, j] = w0, w1
            C[g, 0, j] = i00 * w0 + i01 * w1
            C[g, 1, j] = i01 * w0 + i11 * w1
            rhs[j] -= w0 * e0 + w1 * e1
        for j in range(q):
            w0, w1 = W[0, j], W[1, j]
            for m in range(j + 1):
                S[j, m] -= w0 * C[g, 0, m] + w1 * C[g, 1, m]
    return logdet, bm


def _cholesky_py(S, L, logdet):
    """Lower Cholesky factor ``L`` of ``S`` (its lower triangle); returns ``(ok, logdet +
    log|S|)`` (the sum accumulated term by term; ``ok`` false, ``0.0``, where ``S`` is not
    positive definite)."""
    q = S.shape[0]
    L[:, :] = 0.0
    for j in range(q):
        d = S[j, j]
        for m in range(j):
            d -= L[j, m] * L[j, m]
        if not d > 0.0:
            return False, 0.0
        d = np.sqrt(d)
        L[j, j] = d
        logdet += 2.0 * np.log(d)
        for i in range(j + 1, q):
            v = S[i, j]
            for m in range(j):
                v -= L[i, m] * L[j, m]
            L[i, j] = v / d
    return True, logdet


def _collapsed_kernel_py(h, buf, grad):
    """Collapsed log posterior of ``h`` (up to a constant); writes the gradient to ``grad``.

    Returns -inf (gradient zero) outside the support or when a factorisation fails.
    """
    ndim = int(buf[_H_NDIM])
    q = int(buf[_H_Q])
    G = int(buf[_H_G])
    K = int(buf[_H_K])
    bf = int(buf[_H_BF])
    n = buf[_H_N]
    yty = buf[_H_YTY]
    for i in range(ndim):
        grad[i] = 0.0
    L = np.empty((q, q))
    rhs = np.empty(q)
    Mi = np.empty((G, 3))
    C = np.empty((G, 2, q))
    e = np.empty((G, 2))
    sd0 = np.empty(K)
    sd1 = np.empty(K)
    rr = np.empty(K)
    l1r = np.empty(K)
    ldsig = np.empty(K)
    om = np.empty((K, 3))
    ok, logdet, bm = _factor(h, buf, L, rhs, Mi, C, e, sd0, sd1, rr, l1r, ldsig, om)
    if not ok:
        return -np.inf
    pb = buf[int(buf[_H_OPB]) : int(buf[_H_OPB]) + q]
    Pm0 = buf[int(buf[_H_OPM0]) : int(buf[_H_OPM0]) + q]
    fG = buf[int(buf[_H_OFG]) : int(buf[_H_OFG]) + K]
    is2 = np.exp(-2.0 * h[0])
    Sinv = np.empty((q, q))
    _chol_inverse(L, Sinv)
    mb = np.zeros(q)
    for i in range(q):
        v = 0.0
        for j in range(q):
            v += Sinv[i, j] * rhs[j]
        mb[i] = v
    mPm0 = 0.0
    tr_mPm = 0.0  # tr(Minv P) + m'P m
    for j in range(q):  # b'm = rhs' Sinv rhs + sum_g bu_g' Mi_g bu_g
        bm += rhs[j] * mb[j]
        mPm0 += mb[j] * Pm0[j]
        tr_mPm += pb[j] * (Sinv[j, j] + mb[j] * mb[j])
    # second moments sum_g E[u_g u_g'] per factor
    mom = np.zeros((K, 3))
    _second_moments(buf, Sinv, mb, Mi, C, e, mom)
    # log density: -n log s + log|P|/2 - log|M|/2 - (y'y/s2 + m0'P m0 - b'm)/2 + priors
    lp = -0.5 * n * 2.0 * h[0] - 0.5 * logdet - 0.5 * (yty * is2 + buf[_H_M0PM0] - bm)
    lp += buf[_H_CONST]
    for k in range(K):
        if k != bf:  # the block factor's log|P| cancelled against its log|M_g| above
            lp -= 0.5 * fG[k] * ldsig[k]
        tr_mPm += om[k, 0] * mom[k, 0] + 2.0 * om[k, 1] * mom[k, 1] + om[k, 2] * mom[k, 2]
    grad[0] = -n + yty * is2 - bm + 2.0 * mPm0 + buf[_H_DIM] - tr_mPm
    _factor_gradients(om, mom, fG, l1r, sd0, sd1, grad)
    lp = _add_priors(buf, h, rr, l1r, lp, grad)
    if not np.isfinite(lp):
        for i in range(ndim):
            grad[i] = 0.0
        return -np.inf
    return lp


def _chol_inverse_py(L, Sinv):
    """``Sinv = L^-T L^-1`` (the inverse of ``L L'``) from the lower factor ``L``."""
    q = L.shape[0]
    Li = np.zeros((q, q))  # L^-1 (lower)
    for j in range(q):
        Li[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, q):
            v = 0.0
            for m in range(j, i):
                v -= L[i, m] * Li[m, j]
            Li[i, j] = v / L[i, i]
    for i in range(q):
        for j in range(i + 1):
            v = 0.0
            for m in range(i, q):
                v += Li[m, i] * Li[m, j]
            Sinv[i, j] = v
            Sinv[j, i] = v


def _second_moments_py(buf, Sinv, mb, Mi, C, e, mom):
    """Add each factor's summed second moments ``sum_g E[u_g u_g']`` (packed 00/01/11) to
    ``mom``, given the dense part's posterior mean ``mb`` and covariance ``Sinv``."""
    q = int(buf[_H_Q])
    G = int(buf[_H_G])
    K = int(buf[_H_K])
    bf = int(buf[_H_BF])
    foff = buf[int(buf[_H_OFOFF]) : int(buf[_H_OFOFF]) + K]
    fG = buf[int(buf[_H_OFG]) : int(buf[_H_OFG]) + K]
    for k in range(K):
        if k == bf:
            continue
        o = int(foff[k])
        for g in range(int(fG[k])):
            i0 = o + 2 * g
            mom[k, 0] += Sinv[i0, i0] + mb[i0] * mb[i0]
            mom[k, 1] += Sinv[i0, i0 + 1] + mb[i0] * mb[i0 + 1]
            mom[k, 2] += Sinv[i0 + 1, i0 + 1] + mb[i0 + 1] * mb[i0 + 1]
    CS = np.empty((2, q))
    for g in range(G):
        mu0 = e[g, 0]
        mu1 = e[g, 1]
        for j in range(q):
            mu0 -= C[g, 0, j] * mb[j]
            mu1 -= C[g, 1, j] * mb[j]
        for j in range(q):
            v0 = 0.0
            v1 = 0.0
            for m in range(q):
                v0 += C[g, 0, m] * Sinv[m, j]
                v1 += C[g, 1, m] * Sinv[m, j]
            CS[0, j], CS[1, j] = v0, v1
        v00, v01, v11 = Mi[g, 0], Mi[g, 1], Mi[g, 2]
        for j in range(q):
            v00 += CS[0, j] * C[g, 0, j]
            v01 += CS[0, j] * C[g, 1, j]
            v11 += CS[1, j] * C[g, 1, j]
        mom[bf, 0] += v00 + mu0 * mu0
        mom[bf, 1] += v01 + mu0 * mu1
        mom[bf, 2] += v11 + mu1 * mu1


def _factor_gradients_py(om, mom, fG, l1r, sd0, sd1, grad):
    """The gradient's entries of every factor's two log SDs and ``atanh`` correlation
    (without the priors): ``d lp / d Sigma = (Omega S Omega - G Omega) / 2`` with ``S`` the
    summed second moments ``mom``; through ``Sigma = diag(s) R diag(s)``, ``d/du_j = (Omega
    S)_jj - G`` and ``d/dz = (1 - r^2) s0 s1 (Omega S Omega - G Omega)_01``."""
    for k in range(om.shape[0]):
        o00, o01, o11 = om[k, 0], om[k, 1], om[k, 2]
        m00, m01, m11 = mom[k, 0], mom[k, 1], mom[k, 2]
        a00 = o00 * m00 + o01 * m01
        a01 = o00 * m01 + o01 * m11
        a11 = o01 * m01 + o11 * m11
        grad[1 + 3 * k] = a00 - fG[k]
        grad[2 + 3 * k] = a11 - fG[k]
        # (Omega S Omega)_01 = (Omega S)_00 Omega_01 + (Omega S)_01 Omega_11
        gs01 = a00 * o01 + a01 * o11 - fG[k] * o01
        grad[3 + 3 * k] = np.exp(l1r[k]) * sd0[k] * sd1[k] * gs01


def _add_priors_py(buf, h, rr, l1r, lp, grad):
    """``lp`` plus the log priors of the SDs (Jacobians included) and LKJ on the 2x2
    correlations, in that order; their derivatives are added to ``grad``."""
    a, ga = _scale_prior_log(buf[_H_SIGS], buf[_H_SIGNU], h[0])
    lp += a
    grad[0] += ga
    eta = buf[_H_ETA]
    for k in range(rr.shape[0]):
        for j in range(2):
            a, ga = _scale_prior_log(buf[_H_SDS], buf[_H_SDNU], h[1 + 3 * k + j])
            lp += a
            grad[1 + 3 * k + j] += ga
        lp += eta * l1r[k]
        grad[3 + 3 * k] += -2.0 * eta * rr[k]
    return lp


def _draw_py(H, buf, Z, out):
    """Exact draws of the packed coefficients (dense part, then the block factor's groups
    as (u0, u1) pairs) given each row of ``H``; ``Z`` holds standard normals of the same
    shape as ``out``. Rows whose factorisation fails are NaN."""
    q = int(buf[_H_Q])
    G = int(buf[_H_G])
    K = int(buf[_H_K])
    L = np.empty((q, q))
    rhs = np.empty(q)
    Mi = np.empty((G, 3))
    C = np.empty((G, 2, q))
    e = np.empty((G, 2))
    sd0 = np.empty(K)
    sd1 = np.empty(K)
    rr = np.empty(K)
    l1r = np.empty(K)
    ldsig = np.empty(K)
    om = np.empty((K, 3))
    w = np.empty(q)
    for t in range(H.shape[0]):
        ok, _, _ = _factor(H[t], buf, L, rhs, Mi, C, e, sd0, sd1, rr, l1r, ldsig, om)
        if not ok:
            out[t, :] = np.nan
            continue
        # b = S^-1 rhs + L^-T z: forward solve L w = rhs, then L' b = w + z
        for i in range(q):
            v = rhs[i]
            for m in range(i):
                v -= L[i, m] * w[m]
            w[i] = v / L[i, i]
        for i in range(q - 1, -1, -1):
            v = w[i] + Z[t, i]
            for m in range(i + 1, q):
                v -= L[m, i] * out[t, m]
            out[t, i] = v / L[i, i]
        for g in range(G):
            m0 = e[g, 0]
            m1 = e[g, 1]
            for j in range(q):
                m0 -= C[g, 0, j] * out[t, j]
                m1 -= C[g, 1, j] * out[t, j]
            c00 = np.sqrt(Mi[g, 0])
            c10 = Mi[g, 1] / c00
            c11 = np.sqrt(max(Mi[g, 2] - c10 * c10, 0.0))
            z0 = Z[t, q + 2 * g]
            z1 = Z[t, q + 2 * g + 1]
            out[t, q + 2 * g] = m0 + c00 * z0
            out[t, q + 2 * g + 1] = m1 + c10 * z0 + c11 * z1


def _logp_many_py(H, buf, out, t0, t1):
    """Collapsed log posterior at rows ``t0`` to ``t1 - 1`` of ``H`` (gradient discarded)."""
    grad = np.empty(H.shape[1])
    for t in range(t0, t1):
        out[t] = _collapsed_kernel(H[t], buf, grad)


def _moments_py(H, buf, A, gidx, T, mean, var, t0, t1):
    """Conditional mean and variance, given rows ``t0`` to ``t1 - 1`` of ``H``, of linear
    combinations of the coefficients.

    Row ``r`` is ``A[r] @ b_dense + T[r] @ u_g`` with ``g = gidx[r]`` a group of the block
    factor (no block term when ``g < 0``), in the packed coordinates of ``_draw``. Given
    ``h`` the dense part is ``N(S^-1 rhs, S^-1)`` and ``u_g | b_dense`` is
    ``N(e_g - C_g b_dense, Mi_g)``, so the combination is Gaussian with mean
    ``w @ S^-1 rhs + T[r] @ e_g`` and variance ``|L^-1 w|^2 + T[r]' Mi_g T[r]``, where
    ``w = A[r] - C_g' T[r]``. Rows of ``H`` whose factorisation fails get NaN.
    """
    q = int(buf[_H_Q])
    G = int(buf[_H_G])
    K = int(buf[_H_K])
    R = A.shape[0]
    L = np.empty((q, q))
    rhs = np.empty(q)
    Mi = np.empty((G, 3))
    C = np.empty((G, 2, q))
    e = np.empty((G, 2))
    sd0 = np.empty(K)
    sd1 = np.empty(K)
    rr = np.empty(K)
    l1r = np.empty(K)
    ldsig = np.empty(K)
    om = np.empty((K, 3))
    mb = np.empty(q)
    w = np.empty(q)
    y = np.empty(q)
    for t in range(t0, t1):
        ok, _, _ = _factor(H[t], buf, L, rhs, Mi, C, e, sd0, sd1, rr, l1r, ldsig, om)
        if not ok:
            for r in range(R):
                mean[t, r] = np.nan
                var[t, r] = np.nan
            continue
        # mb = S^-1 rhs: forward then backward substitution with L
        for i in range(q):
            v = rhs[i]
            for m in range(i):
                v -= L[i, m] * y[m]
            y[i] = v / L[i, i]
        for i in range(q - 1, -1, -1):
            v = y[i]
            for m in range(i + 1, q):
                v -= L[m, i] * mb[m]
            mb[i] = v / L[i, i]
        for r in range(R):
            g = gidx[r]
            t0 = T[r, 0]
            t1 = T[r, 1]
            mu = 0.0
            vb = 0.0
            if g >= 0:
                mu = t0 * e[g, 0] + t1 * e[g, 1]
                vb = t0 * t0 * Mi[g, 0] + 2.0 * t0 * t1 * Mi[g, 1] + t1 * t1 * Mi[g, 2]
                for j in range(q):
                    w[j] = A[r, j] - t0 * C[g, 0, j] - t1 * C[g, 1, j]
            else:
                for j in range(q):
                    w[j] = A[r, j]
            for j in range(q):
                mu += w[j] * mb[j]
            vd = 0.0
            for i in range(q):
                v = w[i]
                for m in range(i):
                    v -= L[i, m] * y[m]
                y[i] = v / L[i, i]
                vd += y[i] * y[i]
            mean[t, r] = mu
            var[t, r] = vd + vb


try:  # numba ships with pytensor; fall back to Python if it is missing
    import numba

    _scale_prior_log = numba.njit(cache=True, inline="always")(_scale_prior_log_py)
    # the kernels' parts, inlined where they are called (the same operations in the same
    # order as one function)
    _inline = numba.njit(cache=True, inline="always")
    _factor_scales = _inline(_factor_scales_py)
    _dense_system = _inline(_dense_system_py)
    _eliminate_blocks = _inline(_eliminate_blocks_py)
    _cholesky = _inline(_cholesky_py)
    _chol_inverse = _inline(_chol_inverse_py)
    _second_moments = _inline(_second_moments_py)
    _factor_gradients = _inline(_factor_gradients_py)
    _add_priors = _inline(_add_priors_py)
    _factor = numba.njit(cache=True)(_factor_py)
    _collapsed_kernel = numba.njit(cache=True)(_collapsed_kernel_py)
    _draw = numba.njit(cache=True)(_draw_py)
    # the kernels that :func:`_in_parallel` splits over threads release the GIL
    _logp_many = numba.njit(cache=True, nogil=True)(_logp_many_py)
    _moments = numba.njit(cache=True, nogil=True)(_moments_py)
    # the quantile kernel of hetfx.inference.mixture_quantiles, with the Monte Carlo errors
    _mixture_quantiles = _mixtures.importance_quantiles

    @functools.cache
    def _nutpie_callbacks():
        """nutpie's C callbacks, compiled on first use (they cost seconds of numba compilation
        on a fresh machine, which the importance-sampling engine never needs)."""

        @numba.cfunc(
            numba.types.int64(
                numba.types.uint64,
                numba.types.CPointer(numba.types.double),
                numba.types.CPointer(numba.types.double),
                numba.types.CPointer(numba.types.double),
                numba.types.voidptr,
            ),
            cache=True,
        )
        def _logp_cfunc(dim, x_, out_, logp_, user_data_):  # pragma: no cover - called by nutpie
            """nutpie's C logp callback: ``user_data`` points at the packed buffer."""
            head = numba.carray(user_data_, (_NHDR,), np.float64)
            if dim != int(head[_H_NDIM]):
                return -1
            buf = numba.carray(user_data_, (int(head[_H_LEN]),), np.float64)
            x = numba.carray(x_, (dim,))
            out = numba.carray(out_, (dim,))
            logp = numba.carray(logp_, (1,))
            lp = _collapsed_kernel(x, buf, out)
            logp[0] = lp
            if not np.isfinite(lp):
                return 4
            for i in range(dim):
                if not np.isfinite(out[i]):
                    return 3
            return 0

        @numba.cfunc(
            numba.types.int64(
                numba.types.uint64,
                numba.types.uint64,
                numba.types.CPointer(numba.types.double),
                numba.types.CPointer(numba.types.double),
                numba.types.voidptr,
            ),
            cache=True,
        )
        def _expand_cfunc(dim, expanded, x_, out_, user_data_):  # pragma: no cover
            """nutpie's C expand callback: the stored draw is ``h`` itself."""
            if dim != expanded:
                return -1
            x = numba.carray(x_, (dim,))
            out = numba.carray(out_, (dim,))
            for i in range(dim):
                out[i] = x[i]
            return 0

        return _logp_cfunc, _expand_cfunc

except ImportError:  # pragma: no cover
    numba = None
    _scale_prior_log = _scale_prior_log_py
    _factor_scales = _factor_scales_py
    _dense_system = _dense_system_py
    _eliminate_blocks = _eliminate_blocks_py
    _cholesky = _cholesky_py
    _chol_inverse = _chol_inverse_py
    _second_moments = _second_moments_py
    _factor_gradients = _factor_gradients_py
    _add_priors = _add_priors_py
    _factor = _factor_py
    _collapsed_kernel = _collapsed_kernel_py
    _draw = _draw_py
    _logp_many = _logp_many_py
    _moments = _moments_py
    _mixture_quantiles = _mixtures.importance_quantiles

    def _nutpie_callbacks():
        return None


def _kernel_signatures() -> dict:
    """The argument types the engines call each compiled kernel with (the buffer of
    ``CollapsedVaryingSlopes`` is read-only)."""
    f8, i8 = numba.float64, numba.int64
    v, m, c = f8[::1], f8[:, ::1], f8[:, :, ::1]
    buf = numba.types.Array(f8, 1, "C", readonly=True)
    return {
        "_factor": (v, buf, m, v, m, c, m, v, v, v, v, v, m),
        "_collapsed_kernel": (v, buf, v),
        "_logp_many": (m, buf, v, i8, i8),
        "_moments": (m, buf, m, i8[::1], m, m, m, i8, i8),
        "_mixture_quantiles": (v, m, m, v, m, f8, m, m, i8, i8),
        "_draw": (m, buf, m, m),
    }


def compile_kernels(names: Sequence[str]) -> None:
    """Compile the named kernels (``"_factor"``, ``"_collapsed_kernel"``, ``"_logp_many"``,
    ``"_moments"``, ``"_mixture_quantiles"``, ``"_draw"``) now rather than on first use, or
    load them from numba's cache.

    Without the cache (a fresh clone) the ``qmc`` engine spends about 8 s compiling them; a
    caller with a second core can compile some in a child process (which writes them to the
    cache) while it compiles the others, as the fit stage does. Nothing happens without
    numba.
    """
    if numba is None:  # pragma: no cover
        return
    signatures = _kernel_signatures()
    for name in names:
        globals()[name].compile(signatures[name])


def _threads() -> int:
    """Threads of the kernels that :func:`_in_parallel` splits: numba's ``NUMBA_NUM_THREADS``
    (by default the CPUs this process may use); 1 without numba (the Python fallbacks hold the
    GIL)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS)) if numba is not None else 1


def _in_parallel(kernel, n: int, args: tuple, min_chunk: int = 1) -> None:
    """``kernel(*args, start, stop)`` over ``range(n)``, in chunks of at least ``min_chunk``
    items on up to :func:`_threads` threads (the kernels release the GIL).

    Each item is computed on its own, in a fixed order, and written to its own slots of the
    outputs, so the results are the same bits whatever the number of threads (every sum over
    items happens afterwards, in numpy).
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = min(_threads(), n // max(min_chunk, 1))
    if workers <= 1:
        kernel(*args, 0, n)
        return
    # a few chunks per thread even out their costs (a mixture's quantiles take more Newton
    # steps in some columns than in others)
    edges = np.linspace(0, n, min(n, 4 * workers) + 1).astype(np.int64)
    with ThreadPoolExecutor(workers) as pool:
        list(
            pool.map(
                lambda i: kernel(*args, int(edges[i]), int(edges[i + 1])), range(len(edges) - 1)
            )
        )


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
    exact : dict or None
        ``quadrature`` and ``qmc`` engines: ``groups`` and ``coefs`` (the summaries returned
        by :meth:`group_effects` and :meth:`coefs`), ``mode``, ``points`` and ``weights``
        (the grid's nodes or the weighted sample of ``h``); ``qmc`` also ``groups_mcse`` and
        ``coefs_mcse`` (Monte Carlo standard errors of the same cells, importance-sampling
        delta method; NaN where not computed), ``quadrature`` the grid's ``grid_shape``.
    """

    idata: az.InferenceData
    data: VaryingSlopesData
    diagnostics_record: Diagnostics
    engine: str
    exact: dict | None = None

    def group_effects(self) -> pd.DataFrame:
        """Effect of the treatment per profile (posterior median and quantiles).

        The ``quadrature`` and ``qmc`` engines compute them from the normal mixture over
        their points (no sampling); the NUTS engines from the posterior draws.
        """
        if self.exact is not None:
            return self.exact["groups"].copy()
        eff = self.idata.posterior["effect"].transpose("chain", "draw", "profile").values
        return summarise_groups(eff, self.data.profiles, self.data.n_obs)

    def coefs(self) -> pd.DataFrame:
        """Coefficients: ``control`` (b) and ``scale`` (sigma, SDs, correlations).

        ``quadrature`` engine: exact mixture summaries for b, the scales' from their
        marginals on the grid; ``r_hat`` and ``ess_bulk`` those of the independent draws.
        ``qmc`` engine: exact mixture summaries for b, weighted summaries of the points for
        the scales; ``r_hat`` is NaN (no chains) and ``ess_bulk`` the weights' ESS.
        """
        if self.exact is not None:
            return self.exact["coefs"].copy()
        post = self.idata.posterior
        ds = {"b": post["b"], "sigma": post["sigma"]}
        for f in self.data.factors:
            for j, c in enumerate(_COEF2):
                ds[f"sd_{f}__{c}"] = (
                    post["sd"]
                    .sel(factor=f)
                    .isel(coef=j)
                    .drop_vars(["factor", "coef"], errors="ignore")
                )
            ds[f"cor_{f}"] = post["cor"].sel(factor=f).drop_vars("factor", errors="ignore")
        import arviz as az

        idt = az.InferenceData(posterior=__import__("xarray").Dataset(ds))
        scale = ["sigma"] + [k for k in ds if k.startswith(("sd_", "cor_"))]
        return summarise_coefs(idt, {"control": ["b"], "scale": scale})

    def diagnostics(self) -> pd.DataFrame:
        """One-row diagnostics frame."""
        return self.diagnostics_record.to_frame()


# -------------------------------------------------------------------- collapsed model
def _prior_nu(prior: ScalePrior) -> float:
    """Degrees of freedom of a scale prior as the kernel takes them (``inf``: half-normal)."""
    return float(prior.nu) if prior.kind == "half_student_t" else np.inf


def _intercept_precision(prior: Prior) -> float:
    """Prior precision of the (centred) intercept: 0 for ``Prior.flat()``, ``1 / sd^2`` for
    ``Prior.normal(sd)``."""
    if not isinstance(prior, Prior) or prior.family not in ("flat", "normal"):
        raise TypeError(
            f"intercept_prior must be hetfx.Prior.flat() or hetfx.Prior.normal(sd), got {prior!r}"
        )
    return 0.0 if prior.family == "flat" else 1.0 / prior.sd**2


class CollapsedVaryingSlopes:
    """Collapsed log density of the hyperparameters and exact conditional draws.

    Parameters
    ----------
    d : VaryingSlopesData
        Inputs.
    b_sd : float or array-like
        Prior SD of the non-intercept coefficients.
    intercept_prior : hetfx.priors.Prior
        ``Prior.normal(sd)`` (mean 0) or ``Prior.flat()``.
    sd_prior, sigma_prior : ScalePrior
        Priors of the group SDs and of sigma.
    lkj_eta : float
        LKJ shape of each 2x2 correlation.
    center : bool
        Centre the non-intercept columns of X (intercept prior on the centred intercept).
    """

    def __init__(
        self,
        d: VaryingSlopesData,
        b_sd,
        intercept_prior,
        sd_prior: ScalePrior,
        sigma_prior: ScalePrior,
        lkj_eta: float = 1.0,
        center: bool = True,
    ) -> None:
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
        pb[self.ic] = _intercept_precision(intercept_prior)
        m0 = np.zeros(p)  # every prior mean is 0 (the kernel takes any)
        self.pb, self.m0b = pb, m0
        self.m0 = np.concatenate([m0, np.zeros(off - p)])
        Pm0 = np.zeros(off)
        Pm0[:p] = pb * m0
        self.Pm0, self.m0Pm0 = Pm0, float(m0 @ (pb * m0))
        self.sd_prior, self.sigma_prior, self.lkj_eta = sd_prior, sigma_prior, float(lkj_eta)
        self.ndim = 1 + 3 * self.K
        self._diag = np.arange(off)
        self.buf = self._pack()

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

    def _pack(self) -> np.ndarray:
        """Flat buffer of everything the compiled kernel needs (see ``_collapsed_kernel``).

        The factor with most levels is eliminated group by group; the population
        coefficients and the other factors' groups form the dense part.
        """
        ss, p, K = self.ss, self.p, self.K
        bf = int(np.argmax(self.sizes))
        dense = list(range(p))
        foff = np.full(K, -1.0)
        for k in range(K):
            if k != bf:
                foff[k] = len(dense)
                dense += list(range(self.offsets[k], self.offsets[k] + 2 * self.sizes[k]))
        dense = np.asarray(dense)
        q, G = len(dense), self.sizes[bf]
        bidx = self.offsets[bf] + np.arange(2 * G)
        pb = np.zeros(q)
        pb[:p] = self.pb
        Pm0 = np.zeros(q)
        Pm0[:p] = self.Pm0[:p]
        DtD = ss.AtA[np.ix_(dense, dense)]
        DtB = ss.AtA[np.ix_(dense, bidx)].reshape(q, G, 2).transpose(1, 2, 0)  # (G, 2, q)
        BB = ss.AtA[np.ix_(bidx, bidx)]
        i0 = 2 * np.arange(G)
        BtB = np.column_stack([BB[i0, i0], BB[i0, i0 + 1], BB[i0 + 1, i0 + 1]])
        Dty = ss.Aty[dense]
        Bty = ss.Aty[bidx]
        const = float(self.sigma_prior.logpdf(0.0)) + 2 * K * float(self.sd_prior.logpdf(0.0))
        arrays = [pb, Pm0, DtD, DtB, BtB, Dty, Bty, foff, np.asarray(self.sizes, float)]
        hdr = np.zeros(_NHDR)
        off = _NHDR
        for slot, arr in zip(range(_H_OPB, _H_OFG + 1), arrays, strict=True):
            hdr[slot] = off
            off += arr.size
        hdr[_H_LEN], hdr[_H_NDIM], hdr[_H_Q], hdr[_H_G], hdr[_H_K] = off, self.ndim, q, G, K
        hdr[_H_BF], hdr[_H_N], hdr[_H_YTY], hdr[_H_M0PM0] = bf, ss.n, ss.yty, self.m0Pm0
        hdr[_H_CONST] = const
        sg, sd = self.sigma_prior, self.sd_prior
        hdr[_H_SIGS], hdr[_H_SIGNU] = sg.scale, _prior_nu(sg)
        hdr[_H_SDS], hdr[_H_SDNU] = sd.scale, _prior_nu(sd)
        hdr[_H_ETA], hdr[_H_DIM] = self.lkj_eta, self.dim
        buf = np.concatenate([hdr] + [np.ascontiguousarray(a, dtype=float).ravel() for a in arrays])
        buf.flags.writeable = False
        self._perm = np.concatenate([dense, bidx])  # packed position -> coefficient index
        return buf

    def logp_and_grad(self, h: np.ndarray) -> tuple[float, np.ndarray]:
        """Collapsed log posterior of ``h`` (up to a constant) and its gradient."""
        h = np.ascontiguousarray(h, dtype=float)
        grad = np.zeros(self.ndim)
        if h.shape != (self.ndim,) or not np.all(np.isfinite(h)):
            return -np.inf, grad
        lp = _collapsed_kernel(h, self.buf, grad)
        if not np.isfinite(lp):
            return -np.inf, np.zeros(self.ndim)
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

        res = optimize.minimize(f, h0, jac=True, method="L-BFGS-B", bounds=[(-12, 5)] * self.ndim)
        return res.x

    def draw_coefficients(self, H: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exact draws of the coefficient vector (centred b, u) given draws ``H`` of h.

        Dense coefficients from their marginal Gaussian (Schur complement), then each group
        of the largest factor from its 2x2 Gaussian given them (compiled, one pass).
        """
        H = np.ascontiguousarray(np.atleast_2d(H), dtype=float)
        Z = rng.standard_normal((len(H), self.dim))
        packed = np.empty((len(H), self.dim))
        _draw(H, self.buf, Z, packed)
        if not np.all(np.isfinite(packed)):
            raise np.linalg.LinAlgError("conditional precision not positive definite")
        out = np.empty_like(packed)
        out[:, self._perm] = packed
        return out


def _assemble(
    d: VaryingSlopesData,
    cm_xmean: np.ndarray,
    ic: int,
    bc: np.ndarray,
    sigma,
    sd,
    cor,
    us: dict,
    chains: int,
    sample_stats=None,
) -> az.InferenceData:
    """Posterior InferenceData from flat draws (uncentres the intercept, adds effects)."""
    import arviz as az

    from hetfx.models.exact import DRAW_BITS, _quantise_columns

    b = bc.copy()
    b[:, ic] = bc[:, ic] - bc @ cm_xmean
    eff = b @ d.contrast.T
    for f in d.factors:
        eff = eff + us[f][:, d.profile_codes[f], 1]
    post = {"b": b, "sigma": sigma, "sd": sd, "cor": cor, "effect": eff}
    post.update({f"u_{f}": us[f] for f in d.factors})
    # every quantity rounded to DRAW_BITS bits of its largest draw: the same bits on any CPU
    # (see hetfx.models.exact.DRAW_BITS)
    post = {k: _quantise_columns(np.array(v, dtype=float), DRAW_BITS) for k, v in post.items()}
    post = {k: np.asarray(v).reshape(chains, -1, *np.asarray(v).shape[1:]) for k, v in post.items()}
    coords = {
        "control": [str(c) for c in d.X.columns],
        "factor": d.factors,
        "coef": _COEF2,
        "profile": np.arange(len(d.profiles)),
    }
    dims = {"b": ["control"], "sd": ["factor", "coef"], "cor": ["factor"], "effect": ["profile"]}
    for f in d.factors:
        coords[f"{f}_level"] = [str(v) for v in d.levels[f]]
        dims[f"u_{f}"] = [f"{f}_level", "coef"]
    return az.from_dict(posterior=post, coords=coords, dims=dims, sample_stats=sample_stats)


def _collapsed_nutpie_model(cm: CollapsedVaryingSlopes, h_mode: np.ndarray):
    """nutpie's model of the collapsed density of ``h``: the compiled C callbacks where numba
    is there (nutpie's threads evaluate the density without the GIL), else a Python
    callback; chains start near ``h_mode``."""
    ndim = cm.ndim

    def make_init(s):
        r = np.random.default_rng(s)
        return h_mode + 0.1 * r.standard_normal(ndim)

    callbacks = _nutpie_callbacks()
    if callbacks is not None:
        from nutpie.compile_pymc import CompiledPyMCModel

        _logp_cfunc, _expand_cfunc = callbacks
        return CompiledPyMCModel(
            dims={},
            _coords={},
            _n_dim=ndim,
            _shapes={"h": (ndim,)},
            compiled_logp_func=_logp_cfunc,
            compiled_expand_func=_expand_cfunc,
            initial_point_func=make_init,
            shared_data={},
            user_data=cm.buf,
            n_expanded=ndim,
            shape_info=(["h"], [slice(0, ndim)], [(ndim,)]),
            logp_func=None,
            expand_func=None,
        )
    from nutpie.compiled_pyfunc import from_pyfunc  # pragma: no cover - Python callback

    def safe_logp(x, **_):  # pragma: no cover
        try:
            return cm.logp_and_grad(x)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return -np.inf, np.zeros(ndim)

    return from_pyfunc(  # pragma: no cover
        ndim,
        lambda: safe_logp,
        lambda seed1, seed2, chain: lambda x, **_: {"h": np.asarray(x, dtype=np.float64).copy()},
        [np.dtype("float64")],
        [(ndim,)],
        ["h"],
        make_initial_point_fn=make_init,
    )


def _fit_collapsed(d, cm, chains, draws, tune, seed, target_accept, cores):
    """NUTS (nutpie) on the collapsed density of ``h``, then ``(b, u)`` exactly from their
    Gaussian conditional at each draw."""
    t0 = time.perf_counter()
    model = _collapsed_nutpie_model(cm, cm.mode())
    t1 = time.perf_counter()
    # low-rank-modified mass matrix: h is low-dimensional and correlated (log sigma with
    # the SDs); measured min bulk ESS over 6 seeds 770-1080 (A1) and 1800-2600
    # (Bush-Prather) against 560-860 and 1280-1500 with the diagonal one, ~10% more time
    tr = run_nutpie(
        model,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        cores=cores,
        low_rank_modified_mass_matrix=True,
    )
    H = tr.posterior["h"].values.reshape(chains * draws, cm.ndim)
    c = cm.draw_coefficients(H, np.random.default_rng(seed + 7919))
    t2 = time.perf_counter()
    us = {
        f: c[:, o : o + 2 * G].reshape(len(c), G, 2)
        for f, o, G in zip(d.factors, cm.offsets, cm.sizes, strict=True)
    }
    sd = np.stack([np.exp(H[:, 1::3]), np.exp(H[:, 2::3])], axis=-1)
    idata = _assemble(
        d,
        cm.xmean,
        cm.ic,
        c[:, : cm.p],
        np.exp(H[:, 0]),
        sd,
        np.tanh(H[:, 3::3]),
        us,
        chains,
        sample_stats={"diverging": tr.sample_stats["diverging"].values},
    )
    idata.attrs = {"engine": "collapsed", "target_accept": target_accept}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1}


# ------------------------------------------------------------ deterministic QMC engine
#: Degrees of freedom of the multivariate Student-t proposal of the QMC engine.
QMC_NU = 4.0
#: Rounds that adapt the proposal to the weighted sample before the final run.
QMC_ADAPT = 3
#: The adaptation rounds use 2**(m - QMC_ADAPT_SHIFT) points.
QMC_ADAPT_SHIFT = 1
#: Defensive component of the proposal: SDs QMC_WIDE times larger, on 2**(m - shift) points.
QMC_WIDE = 3.0
QMC_WIDE_SHIFT = 2
#: The final proposal rounded (:func:`_canonical_proposal`), so that the points, weights and
#: draws are the same bits on any CPU (with a small probability): the mode and the adapted
#: scales move in their last bits (measured on Bush-Prather under the combined emulation of
#: tests/test_cross_cpu.py: the centre by up to 1.8e-13, the scales by 1.3e-9 relative, the
#: Cholesky factor by 1.7e-9), and the importance weights correct for whatever proposal is
#: used. The centre to multiples of ``2^-QMC_CENTRE_BITS`` of the power of two below each
#: coordinate's smaller scale, the scales and the diagonal of the correlation's Cholesky
#: factor to ``QMC_SCALE_BITS`` significant bits, the factor's other entries to multiples of
#: ``2^-QMC_SCALE_BITS``: expected crossings of
#: a rounding boundary 4.1e-5 per fit (the draws' own, at
#: :data:`hetfx.models.exact.DRAW_BITS`: 1.8e-5). Against the unrounded proposal the
#: estimates moved at the Monte Carlo level: the group effects' quantiles by up to 7.7e-5
#: (the estimates' largest Monte Carlo SE: 1.5e-3), the coefficients' and scales' means and
#: quantiles by up to 8.6e-3 posterior SDs (the 97.5% quantile of a group SD, in its long
#: right tail: 2.0e-3).
QMC_CENTRE_BITS = 16
QMC_SCALE_BITS = 10
#: Probabilities of groups.csv: the median, then GROUP_QUANTILES in order.
_GROUP_PROBS = np.array([0.5, *GROUP_QUANTILES.values()])


def _neg_hessian(cm: CollapsedVaryingSlopes, h: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Negative Hessian of the collapsed log density at ``h``: central differences of the
    analytic gradient, symmetrised."""
    n = len(h)
    A = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = eps
        A[i] = cm.logp_and_grad(h - e)[1] - cm.logp_and_grad(h + e)[1]
    A /= 2.0 * eps
    return 0.5 * (A + A.T)


def precise_mode(cm: CollapsedVaryingSlopes, gtol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mode of the hyperparameters to high precision, and the negative Hessian.

    BFGS with the analytic gradient, then Newton steps with a finite-difference Hessian of
    the analytic gradient until the step is below 1e-11. The mode is then a smooth
    function of the data: a last-bit change of the arithmetic (another CPU) moves it by
    about 1e-12, not by the optimiser's tolerance.

    Parameters
    ----------
    cm : CollapsedVaryingSlopes
        Collapsed model.
    gtol : float
        Gradient tolerance of the BFGS start.

    Returns
    -------
    mode : numpy.ndarray
        Mode of ``h``.
    neg_hessian : numpy.ndarray
        Negative Hessian of the log density at the mode (positive definite).

    Raises
    ------
    RuntimeError
        If no interior mode with a positive definite Hessian is found.
    """
    h0 = np.zeros(cm.ndim)
    h0[0] = np.log(np.sqrt(cm.ss.yty / cm.ss.n) + 1e-12)
    h0[1:] = np.tile([np.log(0.1), np.log(0.1), 0.0], cm.K)

    def f(h):
        lp, g = cm.logp_and_grad(h)
        if not np.isfinite(lp):
            return np.inf, np.zeros_like(h)
        return -lp, -g

    h = optimize.minimize(
        f, h0, jac=True, method="BFGS", options={"gtol": gtol, "maxiter": 10_000}
    ).x
    lp = cm.logp_and_grad(h)[0]
    for _ in range(20):
        g = cm.logp_and_grad(h)[1]
        step = np.linalg.solve(_neg_hessian(cm, h), g)
        hn = h + step
        lpn = cm.logp_and_grad(hn)[0]
        if not lpn >= lp - 1e-9:  # Newton overshoots far from the mode: halve
            step *= 0.5
            hn = h + step
            lpn = cm.logp_and_grad(hn)[0]
        h, lp = hn, lpn
        if np.max(np.abs(step)) < 1e-11:
            break
    A = _neg_hessian(cm, h)
    g = cm.logp_and_grad(h)[1]
    if not (np.isfinite(lp) and np.max(np.abs(g)) < 1e-6):
        raise RuntimeError(
            f"no interior posterior mode found (largest gradient "
            f"{np.max(np.abs(g)):.2g} at h = {np.round(h, 3)})"
        )
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        raise RuntimeError("the Hessian at the posterior mode is not negative definite") from None
    return h, A


def _t_points(U: np.ndarray, cholR: np.ndarray, nu: float) -> np.ndarray:
    """Standard multivariate Student-t points (correlation ``cholR cholR'``) from uniforms
    ``U`` (d + 1 columns: d normals by the inverse CDF, one chi-square)."""
    d = cholR.shape[0]
    U = np.clip(U, 2.0**-53, 1.0 - 2.0**-53)
    z = special.ndtri(U[:, :d])
    r2 = nu / special.chdtri(nu, U[:, d])
    return (z * np.sqrt(r2)[:, None]) @ cholR.T


def _split_logpdf(H, mu, sp, sm, cholR, nu):
    """Log density (constant dropped) of the split Student-t: ``h = mu + s(x) x`` with
    ``x`` standard t (correlation ``cholR cholR'``) and per coordinate the scale ``sp``
    above ``mu`` and ``sm`` below (Geweke 1989)."""
    up = H > mu
    S = np.where(up, sp, sm)
    X = (H - mu) / S
    Y = linalg.solve_triangular(cholR, X.T, lower=True)
    delta = np.sum(Y * Y, axis=0)
    return (
        -0.5 * (nu + len(mu)) * np.log1p(delta / nu)
        - np.sum(np.log(S), axis=1)
        - np.sum(np.log(np.diag(cholR)))
    )


def _importance(cm: CollapsedVaryingSlopes, prop, m: int, seed: int):
    """RQMC importance sample from a defensive mixture of split Student-t distributions.

    ``prop = (mu, sp, sm, cholR)`` (see :func:`_split_logpdf`). ``2**m`` scrambled Sobol
    points go through it, ``2**(m - QMC_WIDE_SHIFT)`` through the same with scales
    ``QMC_WIDE`` times larger; every point is weighted by the posterior over the mixture
    of both (balance heuristic), which bounds the weights in long tails.

    Returns the points, their self-normalised weights and log weights (-inf outside the
    support).
    """
    from scipy.stats import qmc

    mu, sp, sm, cholR = prop
    d = cm.ndim
    U1 = qmc.Sobol(d + 1, scramble=True, seed=np.random.default_rng([seed, 0])).random_base2(m)
    U2 = qmc.Sobol(d + 1, scramble=True, seed=np.random.default_rng([seed, 1])).random_base2(
        max(m - QMC_WIDE_SHIFT, 1)
    )
    X1 = _t_points(U1, cholR, QMC_NU)
    X2 = QMC_WIDE * _t_points(U2, cholR, QMC_NU)
    X = np.vstack([X1, X2])
    H = np.ascontiguousarray(mu + np.where(X > 0, X * sp, X * sm))
    f1 = len(U1) / len(H)
    logq = np.logaddexp(
        np.log(f1) + _split_logpdf(H, mu, sp, sm, cholR, QMC_NU),
        np.log1p(-f1) + _split_logpdf(H, mu, QMC_WIDE * sp, QMC_WIDE * sm, cholR, QMC_NU),
    )
    lp = np.empty(len(H))
    _in_parallel(_logp_many, len(H), (H, cm.buf, lp), min_chunk=256)
    lw = np.where(np.isfinite(lp), lp - logq, -np.inf)
    w = np.exp(lw - np.max(lw))
    return H, w / np.sum(w), lw


def _fit_split(H: np.ndarray, w: np.ndarray, mu: np.ndarray):
    """Split-t scales and correlation matched to a weighted sample around ``mu``: per
    coordinate the root mean square of the deviations above and below ``mu``, then the
    correlation of the standardised deviations."""
    D = H - mu
    up = D > 0
    wu = w @ up
    sp = np.sqrt((w @ np.where(up, D * D, 0.0)) / wu)
    sm = np.sqrt((w @ np.where(up, 0.0, D * D)) / (1.0 - wu))
    if not (np.all(sp > 0) and np.all(sm > 0)):  # a side without points (NaN) or spread
        raise np.linalg.LinAlgError("a proposal scale is zero or undefined")
    X = D / np.where(up, sp, sm)
    C = (X * w[:, None]).T @ X
    sd = np.sqrt(np.diag(C))
    R = C / np.outer(sd, sd)
    return sp, sm, np.linalg.cholesky(0.5 * (R + R.T))


def pareto_khat(log_weights: np.ndarray) -> float:
    """Pareto k-hat of importance weights (arviz.psislw); > 0.7 means unreliable."""
    import arviz as az

    lw = np.asarray(log_weights, dtype=float)
    fin = np.isfinite(lw)
    lw = np.where(fin, lw, np.min(lw[fin]) - 100.0)
    with np.errstate(all="ignore"):
        _, k = az.psislw(lw.copy())
    return float(np.asarray(k))


def weighted_quantiles(x: np.ndarray, w: np.ndarray, probs) -> np.ndarray:
    """Quantiles of a weighted sample, interpolating the CDF between the midpoints of the
    sorted weights (continuous in ``x`` and ``w``, so last-bit changes stay last-bit)."""
    o = np.argsort(x, kind="stable")
    xs, ws = x[o], w[o]
    c = np.cumsum(ws) - 0.5 * ws
    return np.interp(np.asarray(probs, dtype=float), c, xs)


def systematic_resample(w: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` systematic-resampling draws from weights ``w`` (fixed uniforms)."""
    c = np.cumsum(w)
    c /= c[-1]
    u = (np.arange(n) + 0.5) / n
    return np.minimum(np.searchsorted(c, u, side="right"), len(w) - 1)


def _linear_rows(cm: CollapsedVaryingSlopes, d: VaryingSlopesData) -> np.ndarray:
    """Loadings on the full coefficient vector (centred b, u) of the reported effects
    (one row per profile) followed by the uncentred coefficients b (one row per column of
    X)."""
    p = cm.p
    Mt = np.eye(p)
    Mt[cm.ic] -= cm.xmean  # b = Mt @ b_centred
    rows = np.zeros((len(d.profiles) + p, cm.dim))
    rows[: len(d.profiles), :p] = d.contrast @ Mt
    for f, o in zip(d.factors, cm.offsets, strict=True):
        rows[np.arange(len(d.profiles)), o + 2 * d.profile_codes[f] + 1] += 1.0
    rows[len(d.profiles) :, :p] = Mt
    return rows


def _packed_rows(cm: CollapsedVaryingSlopes, rows: np.ndarray):
    """Split full-vector loadings into the packed layout of ``_moments``: dense loadings,
    the block-factor group and its (u0, u1) loadings."""
    q = int(cm.buf[_H_Q])
    G = int(cm.buf[_H_G])
    packed = rows[:, cm._perm]
    A = np.ascontiguousarray(packed[:, :q])
    B = packed[:, q:].reshape(len(rows), G, 2)
    nz = np.any(B != 0.0, axis=2)
    if np.any(nz.sum(axis=1) > 1):
        raise ValueError("an effect loads on two groups of one factor")
    gidx = np.where(nz.any(axis=1), np.argmax(nz, axis=1), -1).astype(np.int64)
    T = np.zeros((len(rows), 2))
    has = gidx >= 0
    T[has] = B[np.flatnonzero(has), gidx[has]]
    return A, gidx, T


def mixture_summaries(
    w: np.ndarray, mean: np.ndarray, var: np.ndarray, probs, tol: float = 1e-12
) -> dict:
    """Mean, SD and quantiles of the normal mixtures ``sum_t w_t N(mean[t, r], var[t, r])``.

    The quantiles are solved to ``tol * (1 + |x|)`` as :func:`hetfx.inference.
    mixture_quantiles` solves them, from the mixture's normal approximation.

    Returns
    -------
    dict
        ``mean`` and ``sd`` (R,), ``quantiles`` (len(probs), R), and the Monte Carlo
        standard errors ``mean_se`` (R,) and ``quantiles_se`` (len(probs), R) of these
        as self-normalised importance-sampling estimates with weights ``w``.
    """
    w = np.ascontiguousarray(w, dtype=float)
    mu = w @ mean
    sd = np.sqrt(w @ (var + (mean - mu) ** 2))
    probs = np.asarray(probs, dtype=float)
    qs = np.empty((len(probs), mean.shape[1]))
    qse = np.empty_like(qs)
    x0 = mu + sd * special.ndtri(probs)[:, None]  # normal approximation as the start
    # one mixture per row, its components contiguous (the Newton steps sweep them)
    args = (
        w,
        np.ascontiguousarray(mean.T),
        np.sqrt(np.ascontiguousarray(var.T)),
        probs,
        np.ascontiguousarray(x0),
        tol,
        qs,
        qse,
    )
    _in_parallel(_mixture_quantiles, mean.shape[1], args)
    return {
        "mean": mu,
        "sd": sd,
        "quantiles": qs,
        "mean_se": np.sqrt((w * w) @ (mean - mu) ** 2),
        "quantiles_se": qse,
    }


def _qmc_proposal(cm: CollapsedVaryingSlopes, qmc_m: int, seed: int):
    """Split-t proposal of the ``qmc`` engine: the Laplace approximation at the precise mode,
    then Geweke's split-t, its two scales per coordinate matched to the weighted sample in
    ``QMC_ADAPT`` rounds (the log SDs have long left tails)."""
    mu, A = precise_mode(cm)
    cov = np.linalg.inv(A)
    sd = np.sqrt(np.diag(cov))
    prop = (mu, sd, sd, np.linalg.cholesky(cov / np.outer(sd, sd)))
    for _ in range(QMC_ADAPT):
        H, w, _ = _importance(cm, prop, max(qmc_m - QMC_ADAPT_SHIFT, 8), seed)
        try:
            prop = (mu, *_fit_split(H, w, mu))
        except np.linalg.LinAlgError:
            break
    return mu, _canonical_proposal(*prop)


def _canonical_proposal(mu, sp, sm, cholR):
    """The split-t proposal ``(mu, sp, sm, cholR)`` rounded to binary grids
    (:data:`QMC_CENTRE_BITS`, :data:`QMC_SCALE_BITS`): rounding is exact, so a proposal that
    differs in its last bits on another CPU rounds to the same one (but where it lies within
    that noise of a grid boundary)."""
    from hetfx.models.exact import _power_of_two_below, _quantise, _snap

    mu = _snap(mu, _power_of_two_below(np.minimum(sp, sm)) * 2.0**-QMC_CENTRE_BITS)
    bits = QMC_SCALE_BITS
    L = _snap(cholR, 2.0**-bits)
    # the diagonal to significant bits: never rounded to zero (a singular proposal)
    L[np.diag_indices_from(L)] = _quantise(np.diag(cholR).copy(), bits)
    return mu, _quantise(sp, bits), _quantise(sm, bits), L


def _scale_names(d: VaryingSlopesData) -> list[str]:
    """Terms of the ``scale`` rows of ``coefs()``, in the order of ``h``: sigma, then per
    factor the SDs of the varying intercept and slope and their correlation."""
    names = ["sigma"]
    for f in d.factors:
        names += [f"sd_{f}__{_COEF2[0]}", f"sd_{f}__{_COEF2[1]}", f"cor_{f}"]
    return names


def _scale_rows(d: VaryingSlopesData, H: np.ndarray, w: np.ndarray, quantiles) -> pd.DataFrame:
    """The ``scale`` rows of ``coefs()``: sigma, then per factor the SDs of the varying
    intercept and slope and their correlation, summarised over the weighted points ``H`` of
    ``h``. ``quantiles(j, tf, probs)`` gives the quantiles of ``tf(h_j)`` for coordinate j
    and its map ``tf`` (exp or tanh)."""
    rows = []
    for j, name in enumerate(_scale_names(d)):
        tf = np.tanh if name.startswith("cor_") else np.exp
        x = tf(H[:, j])
        m = float(w @ x)
        q = quantiles(j, tf, [0.025, 0.975])
        rows.append(
            {
                "equation": "scale",
                "term": name,
                "mean": m,
                "sd": float(np.sqrt(w @ (x - m) ** 2)),
                "q025": q[0],
                "q975": q[1],
            }
        )
    return pd.DataFrame(rows)


def _exact_frames(d: VaryingSlopesData, eff: dict, coef: dict, scales: pd.DataFrame) -> dict:
    """``groups`` and ``coefs`` frames (and the importance-sampling Monte Carlo SEs
    ``groups_mcse``, ``coefs_mcse``) from the mixture summaries of the effects (``eff``) and
    the coefficients (``coef``) (:func:`mixture_summaries`) and the ``scale`` rows."""
    groups = d.profiles.reset_index(drop=True).copy()
    groups["n_obs"] = np.asarray(d.n_obs, dtype=int)
    groups_mcse = groups.copy()
    for i, name in enumerate(["estimate", *GROUP_QUANTILES]):
        groups[name] = eff["quantiles"][i]
        groups_mcse[name] = eff["quantiles_se"][i]
    crow = pd.DataFrame(
        {
            "equation": "control",
            "term": [str(c) for c in d.X.columns],
            "mean": coef["mean"],
            "sd": coef["sd"],
            "q025": coef["quantiles"][0],
            "q975": coef["quantiles"][1],
        }
    )
    coefs = pd.concat([crow, scales], ignore_index=True)
    coefs_mcse = crow.assign(
        mean=coef["mean_se"], sd=np.nan, q025=coef["quantiles_se"][0], q975=coef["quantiles_se"][1]
    )
    return {"groups": groups, "coefs": coefs, "groups_mcse": groups_mcse, "coefs_mcse": coefs_mcse}


def _mixture_tables(
    d: VaryingSlopesData, cm: CollapsedVaryingSlopes, H: np.ndarray, w: np.ndarray, quantiles
) -> dict:
    """Exact summaries over the weighted points ``(H, w)`` of ``h`` (:func:`_exact_frames`):
    every effect and coefficient is a mixture of normals over the points (conditional
    moments from the compiled kernel), the scales come from :func:`_scale_rows`."""
    rows = _linear_rows(cm, d)
    Ar, gidx, T = _packed_rows(cm, rows)
    mean = np.empty((len(H), len(rows)))
    var = np.empty_like(mean)
    _in_parallel(
        _moments, len(H), (np.ascontiguousarray(H), cm.buf, Ar, gidx, T, mean, var), min_chunk=256
    )
    if not (np.all(np.isfinite(mean)) and np.all(var >= 0.0)):
        raise np.linalg.LinAlgError("conditional precision not positive definite")
    P = len(d.profiles)
    eff = mixture_summaries(w, mean[:, :P], var[:, :P], _GROUP_PROBS)
    coef = mixture_summaries(w, mean[:, P:], var[:, P:], [0.025, 0.975])
    return _exact_frames(d, eff, coef, _scale_rows(d, H, w, quantiles))


def _resampled_idata(d, cm, H, w, chains, draws, seed) -> az.InferenceData:
    """Posterior draws (posterior.nc) from weighted points of ``h``: systematic resampling
    with fixed uniforms, shuffled by a fixed permutation, then ``(b, u)`` exactly from their
    Gaussian conditional."""
    n = chains * draws
    rng = np.random.default_rng(seed + 7919)
    idx = systematic_resample(w, n)[rng.permutation(n)]
    Hs = H[idx]
    c = cm.draw_coefficients(Hs, rng)
    sd = np.stack([np.exp(Hs[:, 1::3]), np.exp(Hs[:, 2::3])], axis=-1)
    us = {
        f: c[:, o : o + 2 * G].reshape(len(c), G, 2)
        for f, o, G in zip(d.factors, cm.offsets, cm.sizes, strict=True)
    }
    return _assemble(
        d, cm.xmean, cm.ic, c[:, : cm.p], np.exp(Hs[:, 0]), sd, np.tanh(Hs[:, 3::3]), us, chains
    )


def _fit_qmc(d, cm: CollapsedVaryingSlopes, chains, draws, seed, qmc_m, max_pareto_k):
    t0 = time.perf_counter()
    mu, prop = _qmc_proposal(cm, qmc_m, seed)
    t1 = time.perf_counter()
    H, w, lw = _importance(cm, prop, qmc_m, seed)
    khat = pareto_khat(lw)
    ess = float(1.0 / np.sum(w**2))
    if not khat <= max_pareto_k:
        raise SamplerDiagnosticsError(
            f"qmc fit failed: Pareto k-hat of the importance weights {khat:.2f} > "
            f"{max_pareto_k} (weight ESS {ess:.0f} of {len(w)} points); the Student-t "
            "proposal misses the posterior of the scale parameters. Advice: use "
            "engine='collapsed' (NUTS) or more points (qmc_m)."
        )
    keep = w > 0.0
    Hk, wk = H[keep], w[keep]
    exact = _mixture_tables(d, cm, Hk, wk, lambda j, tf, p: weighted_quantiles(tf(Hk[:, j]), wk, p))
    # no chains: R-hat is undefined; the effective sample size is that of the weights
    exact["coefs"]["r_hat"] = np.nan
    exact["coefs"]["ess_bulk"] = ess
    idata = _resampled_idata(d, cm, H, w, chains, draws, seed)
    t2 = time.perf_counter()
    idata.attrs = {
        "engine": "qmc",
        "qmc_points": len(w),
        "pareto_k": khat,
        "weight_ess": ess,
        "proposal_df": QMC_NU,
    }
    exact.update({"mode": mu, "points": H, "weights": w})
    info = {"compile": t1 - t0, "sampling": t2 - t1, "pareto_k": khat, "ess": ess, "points": len(w)}
    return idata, exact, info


# ------------------------------------------------------------ exact quadrature engine
#: Grid of the ``quadrature`` engine (:func:`hetfx.models.exact.fit_block_model`'s settings,
#: today those of :data:`hetfx.models.exact.GRIDS` for 4 scales, fixed here so that A1's
#: numbers move only with this line): Gauss-Hermite nodes on ``log sigma``, lattice nodes per
#: posterior SD of ``log s0``, ``log s1`` and ``atanh rho``, the box's depth below the top
#: (log units), the weight below which nodes leave the mixtures. Quadrature error, measured on
#: A1 (params.yaml models.a1: 11,471 nodes, edge mass 4.6e-5) against a grid of 7 Hermite
#: nodes, 2.5 lattice nodes per SD, depth 20 and prune 1e-9 (168,059 nodes, 139 s): the
#: effects' medians and 2.5-97.5% quantiles moved by at most 6.3e-5 (6.4e-4 posterior SDs;
#: the qmc engine's Monte Carlo SEs there were 5e-4 to 1e-3), the coefficients' means and
#: quantiles by 8e-6 (1.2e-4 SDs), the scales' means by 1.8e-5 and their 2.5% and 97.5%
#: quantiles by 2.2e-4 (sigma's 9.4e-5, then read from the normal through its three Hermite
#: nodes; the skewness correction of :meth:`hetfx.models.exact.BlockPosterior.summarise_scales`
#: has since moved its 2.5% quantile by 1.6e-4, towards a 5-node grid's).
#: On simulated data (tests/test_varying_slopes_quadrature.py) against 7 Hermite nodes and 2
#: per SD: effects and coefficients 1.3e-4 posterior SDs, sigma's quantiles 5.6e-4, the other
#: scales' 1.6e-4.
QUADRATURE_GRID = {"hermite": 3, "resolution": 1.0, "drop": 12.0, "prune": 1e-7}


class _ProfileBlocks:
    """A1's :class:`~hetfx.models.exact.BlockModel` (one block ``(u0_g, u1_g)`` per level of
    the grouping factor, correlated) as the grid sees it: the moments it keeps at every node
    are those of the reported rows, each profile's effect ``contrast @ b + u1_g`` and the
    uncentred coefficients ``b = Mt a`` (every other attribute is the model's).

    Parameters
    ----------
    model : hetfx.models.exact.BlockModel
        The block model (``a``: the coefficients of the centred design).
    group : numpy.ndarray
        Each profile's level (block).
    Wa : numpy.ndarray
        ``(P, k)`` loadings of the profiles' effects on ``a``.
    Mt : numpy.ndarray
        ``(p, k)``: ``b = Mt a``.
    """

    def __init__(self, model, group: np.ndarray, Wa: np.ndarray, Mt: np.ndarray) -> None:
        self.model, self.group, self.Wa, self.Mt = model, group, Wa, Mt

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def row_moments(self, nd) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs ``(m, P + p)`` of the effects and ``b`` at factored
        nodes: given the scales, ``u_g | a ~ N(m_g - H_g a, M_g^-1)``, so the effect is
        ``m_g1 + (Wa - H_g1) a`` plus the block's own noise."""
        mg, H = self.model._block_pieces(nd)
        g = self.group
        h = self.Wa[None] - H[:, g, 1, :]  # (m, P, k)
        mean = mg[:, g, 1] + np.einsum("mrk,mk->mr", h, nd.mean_a)
        V = h @ nd.LinvT
        var = np.einsum("mrk,mrk->mr", V, V) + nd.Minv[:, g, 1, 1]
        Vb = self.Mt[None] @ nd.LinvT
        sd_b = np.sqrt(np.einsum("mpk,mpk->mp", Vb, Vb))
        mean_b = nd.mean_a @ self.Mt.T
        return np.hstack([mean, mean_b]), np.hstack([np.sqrt(np.maximum(var, 0.0)), sd_b])

    def logpost_and_moments(self, u: np.ndarray, floor=-np.inf):
        """The model's log density at rows ``u`` and :meth:`row_moments` where it is above
        ``floor`` (NaN elsewhere), one factorisation per row."""
        width = len(self.group) + self.Mt.shape[0]
        return self.model.logpost_and_moments(u, floor, self.row_moments, width)


def block_model(
    d: VaryingSlopesData, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta, center
) -> _ProfileBlocks:
    """A model with one grouping factor as the exact engine's block model: global design
    ``X`` (non-intercept columns centred when ``center``: the intercept prior is then on the
    centred intercept, as brms), blocks ``R = [1, T]`` correlated with LKJ(``lkj_eta``),
    reported rows the profiles' effects and the uncentred coefficients."""
    from hetfx.models.exact import BlockModel

    (f,) = d.factors
    X = d.X.to_numpy(dtype=float)
    p = X.shape[1]
    ic = list(d.X.columns).index("Intercept")
    xmean = X.mean(axis=0) if center else np.zeros(p)
    xmean[ic] = 0.0
    coef_sd = np.broadcast_to(np.asarray(b_sd, dtype=float), (p,)).copy()
    if np.any(coef_sd <= 0):
        raise ValueError("b_sd must be positive")
    prec = _intercept_precision(intercept_prior)
    coef_sd[ic] = np.inf if prec == 0.0 else 1.0 / np.sqrt(prec)
    model = BlockModel(
        d.y,
        X - xmean,
        d.codes[f],
        np.column_stack([np.ones(len(d.y)), d.treat]),
        n_groups=len(d.levels[f]),
        coef_sd=coef_sd,
        sigma_prior=sigma_prior,
        block_priors=[sd_prior, sd_prior],
        correlated=True,
        lkj_eta=lkj_eta,
    )
    Mt = np.eye(p)
    Mt[ic] -= xmean  # b = Mt @ a
    return _ProfileBlocks(model, d.profile_codes[f], d.contrast @ Mt, Mt)


def _fit_quadrature(d, model: _ProfileBlocks, chains, draws, seed, grid):
    """The exact engine (:func:`hetfx.models.exact.fit_block_model`) on a model with one
    grouping factor: the 4 scale parameters on a grid (:data:`QUADRATURE_GRID`), every effect
    and coefficient the normal mixture over its nodes, the scales' quantiles from their
    marginals on the grid, independent exact draws."""
    from hetfx.models.exact import fit_block_model

    t0 = time.perf_counter()
    settings = {**QUADRATURE_GRID, **(grid or {})}
    fit = fit_block_model(model, draws=draws, chains=chains, seed=seed, grid=settings)
    t1 = time.perf_counter()
    g, P = fit.grid, len(d.profiles)
    eff = mixture_summaries(g.weights, g.means[:, :P], g.sds[:, :P] ** 2, _GROUP_PROBS)
    coef = mixture_summaries(g.weights, g.means[:, P:], g.sds[:, P:] ** 2, [0.025, 0.975])
    scales = fit.posterior.summarise_scales((0.025, 0.975))
    scales.insert(0, "term", _scale_names(d))
    scales.insert(0, "equation", "scale")
    exact = _exact_frames(d, eff, coef, scales)
    del exact["groups_mcse"], exact["coefs_mcse"]  # no Monte Carlo error: nothing is random
    exact.update({"mode": g.mode, "points": g.nodes, "weights": g.weights, "grid_shape": g.shape})
    u = fit.draws["u"]
    idata = _assemble(
        d,
        np.zeros(model.Mt.shape[0]),  # the draws of b are uncentred already
        0,
        fit.draws["a"] @ model.Mt.T,
        np.exp(u[:, 0]),
        np.exp(u[:, 1:3])[:, None, :],
        np.tanh(u[:, 3:4]),
        {d.factors[0]: fit.draws["c"]},
        chains,
    )
    idata.attrs = {
        "engine": "quadrature",
        "grid_points": len(g.weights),
        "grid_edge_mass": g.edge_mass,
    }
    sampling = fit.seconds["draws"] + time.perf_counter() - t1
    info = {"compile": t1 - t0 - fit.seconds["draws"], "sampling": sampling, "edge": g.edge_mass}
    return idata, exact, info


# ---------------------------------------------------------------- full PyMC reference
_NUTPIE_CACHE: dict = {}


def build_pymc_model(
    d: VaryingSlopesData,
    b_sd=0.5,
    intercept_prior: Prior | None = None,
    sd_prior: ScalePrior | None = None,
    sigma_prior: ScalePrior | None = None,
    lkj_eta: float = 1.0,
    center: bool = True,
):
    """Full varying-slopes model in PyMC (non-centred group coefficients).

    Parameters are as in :func:`fit_varying_slopes`.

    Returns
    -------
    pymc.Model
        Deterministics ``b`` (uncentred), ``sd``, ``cor``, ``u_<factor>``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    intercept_prior = intercept_prior or Prior.normal(0.5)
    sd_prior = sd_prior or ScalePrior("half_normal", 1.0)
    sigma_prior = sigma_prior or ScalePrior.brms_default()
    X = d.X.to_numpy(dtype=float)
    p = X.shape[1]
    ic = list(d.X.columns).index("Intercept")
    xmean = X.mean(axis=0) if center else np.zeros(p)
    xmean[ic] = 0.0
    others = [j for j in range(p) if j != ic]
    coords = {
        "control": [str(c) for c in d.X.columns],
        "factor": d.factors,
        "coef": _COEF2,
        "obs": np.arange(len(d.y)),
    }
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
        prec = _intercept_precision(intercept_prior)
        if prec == 0.0:
            a = pm.Flat("Intercept_c")
        else:
            a = pm.Normal("Intercept_c", 0.0, 1.0 / np.sqrt(prec))
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


def _fit_nutpie(
    d,
    b_sd,
    intercept_prior,
    sd_prior,
    sigma_prior,
    lkj_eta,
    center,
    chains,
    draws,
    tune,
    seed,
    target_accept,
    cores,
    maxdepth,
):
    t0 = time.perf_counter()
    key = (
        len(d.y),
        tuple(d.X.columns),
        tuple((f, len(d.levels[f])) for f in d.factors),
        tuple(np.atleast_1d(b_sd)),
        intercept_prior,
        sd_prior,
        sigma_prior,
        lkj_eta,
        center,
    )
    X = d.X.to_numpy(dtype=float)
    ic = list(d.X.columns).index("Intercept")
    others = [j for j in range(X.shape[1]) if j != ic]
    xmean = X.mean(axis=0) if center else np.zeros(X.shape[1])
    data = dict(
        Xc=(X - xmean)[:, others],
        xmean=xmean[others],
        treat=d.treat,
        y=d.y,
        **{f"idx_{f}": d.codes[f] for f in d.factors},
    )
    tr, t1, t2 = sample_nutpie(
        _NUTPIE_CACHE,
        key,
        lambda: build_pymc_model(d, b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta, center),
        data,
        chains=chains,
        draws=draws,
        tune=tune,
        seed=seed,
        target_accept=target_accept,
        maxdepth=maxdepth,
        cores=cores,
    )
    post = tr.posterior

    def flat(v):
        a = post[v].values
        return a.reshape(-1, *a.shape[2:])

    b = flat("b")
    us = {f: flat(f"u_{f}") for f in d.factors}
    eff = b @ d.contrast.T
    for f in d.factors:
        eff = eff + us[f][:, d.profile_codes[f], 1]
    idata = _assemble(
        d,
        np.zeros(b.shape[1]),
        list(d.X.columns).index("Intercept"),
        b,
        flat("sigma"),
        flat("sd"),
        flat("cor"),
        us,
        chains,
        sample_stats={"diverging": tr.sample_stats["diverging"].values},
    )
    idata.attrs = {"engine": "nutpie", "target_accept": target_accept}
    return idata, {"compile": t1 - t0, "sampling": t2 - t1}


# ----------------------------------------------------------------------------- public
def resolve_engine(engine: str, n_factors: int) -> str:
    """The engine that runs: ``"auto"`` is ``"quadrature"`` (exact) for one grouping factor
    and ``"qmc"`` for more (their 1 + 3K scale parameters are too many for a grid)."""
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be 'auto' or one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "quadrature" if n_factors == 1 else "qmc"
    if engine == "quadrature" and n_factors != 1:
        raise ValueError(
            f"engine='quadrature' integrates the 4 scale parameters of one grouping factor on "
            f"a grid; {n_factors} factors have {1 + 3 * n_factors}, too many for a grid: use "
            "engine='qmc'"
        )
    return engine


def _exact_diagnostics(engine: str, idata, info: dict, wall: float) -> Diagnostics:
    """Diagnostics of the engines with exact summaries: the importance sample's (``qmc``)
    or, for ``quadrature``, R-hat and ESS of its independent draws with the grid's edge
    mass."""
    if engine == "qmc":
        return Diagnostics.importance_sampling(
            info["points"],
            info["ess"],
            info["pareto_k"],
            wall_seconds=wall,
            compile_seconds=info["compile"],
            sampling_seconds=info["sampling"],
        )
    return compute_diagnostics(
        idata,
        "quadrature",
        var_names=["b", "sigma", "sd", "cor", "effect"],
        wall_seconds=wall,
        compile_seconds=info["compile"],
        sampling_seconds=info["sampling"],
        grid_edge_mass=info["edge"],
    )


def _draw_statistics(exact: dict, idata) -> None:
    """R-hat and bulk ESS of the quadrature engine's independent draws beside its exact
    summaries in ``exact["coefs"]`` (the columns the sampling engines report)."""
    post = idata.posterior
    names = {"b": post["b"], "sigma": post["sigma"]}
    coefs = exact["coefs"]
    for name in coefs.loc[coefs["equation"] == "scale", "term"]:
        if name.startswith("sd_"):
            f, c = name[3:].rsplit("__", 1)
            da = post["sd"].sel(factor=f).isel(coef=_COEF2.index(c))
            names[name] = da.drop_vars(["factor", "coef"], errors="ignore")
        elif name.startswith("cor_"):
            names[name] = post["cor"].sel(factor=name[4:]).drop_vars("factor", errors="ignore")
    import arviz as az
    import xarray as xr

    idt = az.InferenceData(posterior=xr.Dataset(names))
    scale = [n for n in names if n != "b"]
    stats = summarise_coefs(idt, {"control": ["b"], "scale": scale})
    exact["coefs"]["r_hat"] = stats["r_hat"].to_numpy()
    exact["coefs"]["ess_bulk"] = stats["ess_bulk"].to_numpy()


def fit_varying_slopes(
    y,
    treat,
    X: pd.DataFrame,
    factors: pd.DataFrame,
    *,
    profiles: pd.DataFrame | None = None,
    contrast: pd.DataFrame | None = None,
    engine: str = "auto",
    b_sd: float | Sequence[float] = 0.5,
    intercept_prior: Prior | None = None,
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
    qmc_m: int = 14,
    max_pareto_k: float = 0.7,
    grid: dict | None = None,
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
    engine : {"auto", "quadrature", "qmc", "collapsed", "nutpie"}
        Posterior engine (see module docstring). ``"auto"``: ``"quadrature"`` (exact) with
        one grouping factor, ``"qmc"`` with more (``"quadrature"`` refuses them).
    b_sd : float or array-like
        Prior SD of the non-intercept coefficients (spec: 0.5; brms fixture A1: 1).
    intercept_prior : hetfx.priors.Prior, optional
        ``Prior.normal(sd)`` (mean 0; default ``Prior.normal(0.5)``, the spec) or
        ``Prior.flat()``; on the centred intercept when ``center``.
    sd_prior : ScalePrior, optional
        Prior of the group SDs (default half-Normal(0, 1), the spec).
    sigma_prior : ScalePrior, optional
        Prior of sigma (default half-Student-t(3, 0, 2.5)).
    lkj_eta : float
        LKJ shape of the correlations.
    center : bool
        Centre the non-intercept columns of X, as brms.
    chains, draws, tune : int
        NUTS layout; the exact engines (``quadrature``, ``qmc``) return ``chains x draws``
        independent draws and ignore ``tune``.
    target_accept : float
        NUTS target acceptance (original: .95 for A1, .99 for Bush-Prather).
    maxdepth : int
        NUTS maximum tree depth (nutpie engine).
    seed : int
        Random seed.
    cores : int, optional
        Threads for nutpie.
    qmc_m : int
        ``qmc`` engine: 2**qmc_m scrambled Sobol points (scramble seed ``seed``).
    max_pareto_k : float
        ``qmc`` engine: the fit fails (:class:`~hetfx.inference.SamplerDiagnosticsError`)
        when the Pareto k-hat of the importance weights exceeds this.
    grid : dict, optional
        ``quadrature`` engine: overrides of :data:`QUADRATURE_GRID` (``hermite``,
        ``resolution``, ``drop``, ``prune``).

    Returns
    -------
    VaryingSlopesFit
    """
    intercept_prior = intercept_prior or Prior.normal(0.5)
    _intercept_precision(intercept_prior)  # a wrong type fails before any work
    sd_prior = sd_prior or ScalePrior("half_normal", 1.0)
    sigma_prior = sigma_prior or ScalePrior.brms_default()
    if lkj_eta <= 0:
        raise ValueError("lkj_eta must be positive")
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be 'auto' or one of {ENGINES}, got {engine!r}")
    t0 = time.perf_counter()
    d = prepare_data(y, treat, X, factors, profiles, contrast)
    engine = resolve_engine(engine, len(d.factors))
    priors = (b_sd, intercept_prior, sd_prior, sigma_prior, lkj_eta, center)
    exact = None
    if engine == "nutpie":
        idata, tm = _fit_nutpie(
            d, *priors, chains, draws, tune, seed, target_accept, cores, maxdepth
        )
    elif engine == "quadrature":
        idata, exact, tm = _fit_quadrature(d, block_model(d, *priors), chains, draws, seed, grid)
    else:
        with single_threaded_blas():
            cm = CollapsedVaryingSlopes(d, *priors)
            if engine == "collapsed":
                idata, tm = _fit_collapsed(d, cm, chains, draws, tune, seed, target_accept, cores)
            else:
                idata, exact, tm = _fit_qmc(d, cm, chains, draws, seed, qmc_m, max_pareto_k)
    wall = time.perf_counter() - t0
    if exact is not None:
        diag = _exact_diagnostics(engine, idata, tm, wall)
        if engine == "quadrature":
            _draw_statistics(exact, idata)
    else:
        diag = compute_diagnostics(
            idata,
            engine,
            var_names=["b", "sigma", "sd", "cor", "effect"],
            wall_seconds=wall,
            compile_seconds=tm["compile"],
            sampling_seconds=tm["sampling"],
        )
    return VaryingSlopesFit(
        idata=idata, data=d, diagnostics_record=diag, engine=engine, exact=exact
    )
