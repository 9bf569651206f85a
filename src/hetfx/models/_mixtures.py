"""Compiled quantiles of normal mixtures (the kernel of :func:`hetfx.inference.
mixture_quantiles` and of the ``qmc`` engine's :func:`hetfx.models.varying_slopes.
mixture_summaries`).

Imported only where quantiles are solved (numba takes about a second to import); without
numba, :func:`hetfx.inference.mixture_quantiles` falls back to its numpy solver.

Each quantile of each mixture is solved on its own, from a start inside a bracket of the
root: one pass over the components gives the mixture CDF's Taylor polynomial of degree
:data:`DEGREE` at the current point (the CDF from ``erfc``, its derivatives from one ``exp``
and the Hermite polynomials of the standardised point), the polynomial's root near the
point is the next point, and the Taylor remainder bounds how far that point can be from the
mixture's quantile (Cramer's inequality ``|He_n(z)| exp(-z^2 / 4) <= 1.086435 sqrt(n!)``
bounds every derivative of a normal CDF). From a Cornish-Fisher start one pass usually
proves the tolerance (measured on the simulation study's mixtures: 1.016 passes per
quantile; Halley's method needs two, one of them to check the step it took). Where the
polynomial has no root in the bracket, or its root does not come closer, the bracket is
bisected. The answer of one quantile depends neither on the other quantiles asked for nor on
how the mixtures are split over threads.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba ships with pytensor
    import numba
except ImportError:  # pragma: no cover
    numba = None

#: Degree of the Taylor polynomial of the mixture CDF taken at each pass.
DEGREE = 8
_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# |d^(n+1)/dx^(n+1) Phi((x - m) / s)| = |He_n(z)| phi(z) / s^(n+1) <= _CRAMER sqrt(n!) / s^(n+1)
_CRAMER = 1.086435 * _INV_SQRT_2PI
#: Bound of the CDF's remainder after the term of degree ``DEGREE`` (times ``sum_j w_j
#: s_j^-(DEGREE + 1) |d|^(DEGREE + 1)``) and of its derivative's (times ``|d|^DEGREE``).
_REMAINDER = _CRAMER * math.sqrt(math.factorial(DEGREE)) / math.factorial(DEGREE + 1)
_REMAINDER_DERIV = _CRAMER * math.sqrt(math.factorial(DEGREE)) / math.factorial(DEGREE)


def _taylor_py(x, w, mu, isd, c):
    """``c[k] = F^(k)(x) / k!`` (k = 0, ..., 8) of the mixture CDF ``F(x) = sum_j w_j
    Phi((x - mu_j) isd_j)``: ``F^(k)(x) = sum_j w_j (-1)^(k-1) He_(k-1)(z_j) phi(z_j)
    isd_j^k`` for k >= 1 (``He``: the probabilists' Hermite polynomials)."""
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = 0.0
    for j in range(w.shape[0]):
        s = isd[j]
        z = (x - mu[j]) * s
        c0 += w[j] * math.erfc(-z * _SQRT1_2)
        e = w[j] * math.exp(-0.5 * z * z) * s
        c1 += e
        h2 = z * z - 1.0
        h3 = z * h2 - 2.0 * z
        h4 = z * h3 - 3.0 * h2
        h5 = z * h4 - 4.0 * h3
        h6 = z * h5 - 5.0 * h4
        h7 = z * h6 - 6.0 * h5
        e *= s
        c2 += e * z
        e *= s
        c3 += e * h2
        e *= s
        c4 += e * h3
        e *= s
        c5 += e * h4
        e *= s
        c6 += e * h5
        e *= s
        c7 += e * h6
        e *= s
        c8 += e * h7
    r = _INV_SQRT_2PI
    c[0] = 0.5 * c0
    c[1] = r * c1
    c[2] = -r * c2 / 2.0
    c[3] = r * c3 / 6.0
    c[4] = -r * c4 / 24.0
    c[5] = r * c5 / 120.0
    c[6] = -r * c6 / 720.0
    c[7] = r * c7 / 5040.0
    c[8] = -r * c8 / 40320.0


def _poly_root_py(c, p, dmax, eps):
    """Root ``d`` of ``sum_k c[k] d^k = p`` by Newton's method from 0, and the polynomial's
    slope there; ``(nan, 0)`` where the slope is not positive or ``|d|`` passes ``dmax``."""
    n = c.shape[0]
    d = 0.0
    for _ in range(50):
        v = c[n - 1]
        dv = 0.0
        for k in range(n - 2, -1, -1):
            dv = dv * d + v
            v = v * d + c[k]
        if not dv > 0.0:
            return np.nan, 0.0
        step = (v - p) / dv
        d -= step
        if not abs(d) <= dmax:
            return np.nan, 0.0
        if abs(step) <= eps:  # quadratic convergence: the error is below eps^2 / scale
            dv = 0.0
            for k in range(n - 1, 0, -1):
                dv = dv * d + k * c[k]
            return d, dv
    return np.nan, 0.0


def _solve_py(w, mu, isd, p, x, lo, hi, remainder, xtol, max_iter, c):
    """The quantile ``p`` of one mixture from ``x`` inside the bracket ``[lo, hi]``
    (``remainder``: ``sum_j w_j isd_j^(DEGREE + 1)``)."""
    last = np.inf
    for _ in range(max_iter):
        _taylor(x, w, mu, isd, c)
        if c[0] < p:
            lo = x
        else:
            hi = x
        tol = xtol * (1.0 + abs(x))
        d, slope = _poly_root(c, p, hi - lo, 1e-3 * tol)
        xn = x + d
        if not (xn > lo and xn < hi and abs(d) <= 0.5 * last):  # (nan included)
            xn = 0.5 * (lo + hi)
            if hi - lo <= xtol * (1.0 + abs(xn)):
                return xn
            last = np.inf
            x = xn
            continue
        ad = abs(d)
        # the CDF at xn is p within err_F, and its slope near xn at least f_low: the root
        # is within err_F / f_low of xn
        err_f = _REMAINDER * remainder * ad ** (DEGREE + 1)
        f_low = slope - _REMAINDER_DERIV * remainder * ad**DEGREE
        if ad <= tol or (f_low > 0.0 and err_f <= 0.1 * tol * f_low):
            return xn
        last = ad
        x = xn
    return x


def _quantiles_py(w, muT, sdT, isdT, probs, zs, xtol, max_iter, out, r0, r1):
    """Quantiles ``out[k, r]`` at ``probs[k]`` of the mixtures ``sum_j w_j N(muT[r, j],
    sdT[r, j]^2)`` for the rows ``r0`` to ``r1 - 1`` (``isdT = 1 / sdT``; ``zs``: the normal
    quantiles of ``probs``). The start is the Cornish-Fisher expansion with the mixture's
    skewness and excess kurtosis, the bracket the components' means -+ 40 SDs."""
    J = w.shape[0]
    c = np.empty(DEGREE + 1)
    for r in range(r0, r1):
        mu, sd, isd = muT[r], sdT[r], isdT[r]
        mean = 0.0
        for j in range(J):
            mean += w[j] * mu[j]
        m2 = m3 = m4 = remainder = 0.0
        lo = np.inf
        hi = -np.inf
        for j in range(J):
            d = mu[j] - mean
            s2 = sd[j] * sd[j]
            d2 = d * d
            m2 += w[j] * (s2 + d2)
            m3 += w[j] * (d * (d2 + 3.0 * s2))
            m4 += w[j] * (d2 * (d2 + 6.0 * s2) + 3.0 * s2 * s2)
            remainder += w[j] * isd[j] ** (DEGREE + 1)
            lo = min(lo, mu[j] - 40.0 * sd[j])
            hi = max(hi, mu[j] + 40.0 * sd[j])
        g1 = m3 / m2**1.5
        g2 = m4 / (m2 * m2) - 3.0
        if not math.isfinite(g1):
            g1 = 0.0
        if not math.isfinite(g2):
            g2 = 0.0
        scale = math.sqrt(m2)
        for k in range(probs.shape[0]):
            z0 = zs[k]
            z2, z3 = z0 * z0, z0 * z0 * z0
            z = z0 + (z2 - 1.0) * g1 / 6.0 + (z3 - 3.0 * z0) * g2 / 24.0
            z -= (2.0 * z3 - 5.0 * z0) * g1 * g1 / 36.0
            x = min(max(mean + scale * z, lo), hi)
            out[k, r] = _solve(w, mu, isd, probs[k], x, lo, hi, remainder, xtol, max_iter, c)


def _importance_quantiles_py(W, M, S, probs, x0, tol, out, se, r0, r1):
    """Quantiles of the normal mixtures ``sum_t W[t] N(M[r, t], S[r, t]^2)`` for the rows
    ``r0`` to ``r1 - 1`` of ``M`` and ``S`` (one mixture per row, its components
    contiguous; ``W`` normalised), from ``x0[k, r]`` to ``tol * (1 + |x|)`` as
    :func:`_quantiles_py` (the bracket: the means -+ 40 SDs of the components of positive
    weight).

    ``se[k, r]`` receives the delta-method Monte Carlo standard error of the quantile as a
    self-normalised importance-sampling estimate with weights ``W``: ``sqrt(sum_t W_t^2
    (F_t(x) - p)^2) / f(x)`` (independent points; randomised QMC points do at least as
    well).
    """
    N = M.shape[1]
    c = np.empty(DEGREE + 1)
    isd = np.empty(N)
    max_iter = np.int64(200)  # (typed as the other kernel's: one compiled _solve)
    for r in range(r0, r1):
        lo = np.inf
        hi = -np.inf
        remainder = 0.0
        for t in range(N):
            isd[t] = 1.0 / S[r, t]
            if W[t] > 0.0:
                lo = min(lo, M[r, t] - 40.0 * S[r, t])
                hi = max(hi, M[r, t] + 40.0 * S[r, t])
                remainder += W[t] * isd[t] ** (DEGREE + 1)
        for k in range(probs.shape[0]):
            p = probs[k]
            x = min(max(x0[k, r], lo), hi)
            x = _solve(W, M[r], isd, p, x, lo, hi, remainder, tol, max_iter, c)
            out[k, r] = x
            acc = 0.0
            f = 0.0
            for t in range(N):
                if W[t] > 0.0:
                    z = (x - M[r, t]) * isd[t]
                    d = 0.5 * math.erfc(-z * _SQRT1_2) - p
                    acc += W[t] * W[t] * d * d
                    f += W[t] * math.exp(-0.5 * z * z) * isd[t]
            se[k, r] = math.sqrt(acc) / (f * _INV_SQRT_2PI)


if numba is not None:
    _taylor = numba.njit(cache=True, nogil=True)(_taylor_py)
    _poly_root = numba.njit(cache=True, nogil=True)(_poly_root_py)
    _solve = numba.njit(cache=True, nogil=True)(_solve_py)
    quantiles = numba.njit(cache=True, nogil=True)(_quantiles_py)
    importance_quantiles = numba.njit(cache=True, nogil=True)(_importance_quantiles_py)
else:  # pragma: no cover
    _taylor, _poly_root, _solve, quantiles = _taylor_py, _poly_root_py, _solve_py, _quantiles_py
    importance_quantiles = _importance_quantiles_py
