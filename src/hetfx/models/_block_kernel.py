"""Compiled per-node kernel of :class:`hetfx.models.exact.BlockModel` (numba).

For a batch of scale nodes it computes what ``BlockModel.logpost_and_moments`` computes with
numpy (the log marginal likelihood and the groups' effects' conditional means and SDs), one
node at a time with no temporaries: for the small models of the simulation (``b`` = 1 or 2
block columns, a few to a dozen coefficients) numpy's per-call overhead costs several times
the arithmetic. Each node: the blocks' ``M_g^-1`` in closed form (the same expressions as
``BlockModel._minv``), the Schur correction of the bordered system ``[[S, r], [r', q]]`` as
``sum_g [R_g'A_g, R_g'y_g]' M_g^-1 [R_g'A_g, R_g'y_g]`` (lower triangle), its Cholesky
factor, then per group one forward substitution for the effect's variance.

No fast-math: every operation is an IEEE operation in a fixed order (loops vectorised only
where elements are independent), so a generic CPU gives the same bits as the host.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np

_LOG2PI = math.log(2.0 * math.pi)


def _group_minv_py(d11, d12, d22, w, r11, r12, r22, b, correlated):
    """``M_g^-1`` of one group (packed 00, 01, 11) and ``log|I + D R_g'R_g w|``, as
    ``BlockModel._minv`` (``w = 1 / sigma^2``)."""
    if b == 1:
        K = 1.0 + (d11 * w) * r11
        return d11 / K, 0.0, 0.0, math.log(K)
    if not correlated:
        a = d11 * w
        c = d22 * w
        k11 = 1.0 + a * r11
        k22 = 1.0 + c * r22
        det = k11 * k22 - (a * c) * (r12 * r12)
        idet = 1.0 / det
        return d11 * k22 * idet, -(d11 * c) * r12 * idet, d22 * k11 * idet, math.log(det)
    k11 = 1.0 + (d11 * r11 + d12 * r12) * w
    k12 = (d11 * r12 + d12 * r22) * w
    k21 = (d12 * r11 + d22 * r12) * w
    k22 = 1.0 + (d12 * r12 + d22 * r22) * w
    det = k11 * k22 - k12 * k21
    off = 0.5 * ((k22 * d12 - k12 * d22) + (k11 * d12 - k21 * d11)) / det
    return (k22 * d11 - k12 * d12) / det, off, (k11 * d22 - k21 * d12) / det, math.log(det)


def _schur_rows_py(g, RAy, m00, m01, m11, P):
    """Add group ``g``'s ``[R_g'A_g, R_g'y_g]' M_g^-1 [R_g'A_g, R_g'y_g]`` to the packed
    lower triangle ``P``, row by row (no precomputed products: for many groups)."""
    b, kk = RAy.shape[1], RAy.shape[2]
    for i in range(kk):
        o = i * (i + 1) // 2
        if b == 1:
            c0 = RAy[g, 0, i] * m00
            for j in range(i + 1):
                P[o + j] += c0 * RAy[g, 0, j]
        else:
            c0 = RAy[g, 0, i] * m00 + RAy[g, 1, i] * m01
            c1 = RAy[g, 0, i] * m01 + RAy[g, 1, i] * m11
            for j in range(i + 1):
                P[o + j] += c0 * RAy[g, 0, j] + c1 * RAy[g, 1, j]
    return None


def _assemble_py(u, RR, RAy, Q, AtAy, prec, correlated, B, P, Mi):
    """The bordered system ``B`` (lower triangle) of node ``u``, the groups' ``M_g^-1``
    (``Mi``, packed) and ``sum_g log|I + D R_g'R_g / sigma^2|``; returns ``(s2, logdet)``.
    The Schur correction accumulates in ``P`` (packed lower triangle), from the groups'
    products ``Q`` (one long elementwise loop per group) where given (``Q.shape[0] > 0``)."""
    G, b, kk = RAy.shape
    s2 = math.exp(2.0 * u[0])
    inv = 1.0 / s2
    inv2 = inv * inv
    s0 = math.exp(u[1])
    d11 = s0 * s0
    d12 = 0.0
    d22 = 0.0
    if b == 2:
        s1 = math.exp(u[2])
        d22 = s1 * s1
        if correlated:
            d12 = math.tanh(u[3]) * s0 * s1
    P[:] = 0.0
    logdet = 0.0
    for g in range(G):
        r12 = RR[g, 0, 1] if b == 2 else 0.0
        r22 = RR[g, 1, 1] if b == 2 else 0.0
        m00, m01, m11, ld = _group_minv(d11, d12, d22, inv, RR[g, 0, 0], r12, r22, b, correlated)
        Mi[0, g] = m00
        Mi[1, g] = m01
        Mi[2, g] = m11
        logdet += ld
        if Q.shape[0] == 0:
            _schur_rows(g, RAy, m00, m01, m11, P)
        elif b == 1:
            for p in range(P.shape[0]):
                P[p] += m00 * Q[0, g, p]
        else:
            for p in range(P.shape[0]):
                P[p] += m00 * Q[0, g, p] + m01 * Q[1, g, p] + m11 * Q[2, g, p]
    k = kk - 1
    for i in range(kk):
        o = i * (i + 1) // 2
        for j in range(i + 1):
            B[i, j] = AtAy[i, j] * inv - P[o + j] * inv2
        if i < k:
            B[i, i] += prec[i]
    return s2, logdet


def _cholesky_py(B):
    """Lower Cholesky factor of ``B`` in place (its lower triangle); False where a pivot is
    not positive (numpy's path then raises as before)."""
    n = B.shape[0]
    for j in range(n):
        s = B[j, j]
        for p in range(j):
            s -= B[j, p] * B[j, p]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        B[j, j] = d
        for i in range(j + 1, n):
            t = B[i, j]
            for p in range(j):
                t -= B[i, p] * B[j, p]
            B[i, j] = t / d
    return True


def _effects_py(L, Mi, RAt, Et, inv, b, effect_col, mean_a, Z, mean, sd):
    """The groups' effects' conditional means and SDs at one factored node (``mean``,
    ``sd``: that node's rows), as ``BlockModel.effect_moments``. Every loop over groups is
    elementwise (``RAt``: ``(b, k + 1, G)``, ``Et``: ``(k, G)``, ``Z``: ``(k, G)`` work):
    per group the same operations in the same order as one forward substitution each."""
    k, G = Et.shape
    # E(a) = L_k^-T l, l the border row of the factor
    for i in range(k - 1, -1, -1):
        t = L[k, i]
        for p in range(i + 1, k):
            t -= L[p, i] * mean_a[p]
        mean_a[i] = t / L[i, i]
    # row effect_col of M_g^-1: (e0, e1) = Mi[r], Mi[r + 1]; its diagonal Mi[v]
    r = 1 if (b == 2 and effect_col == 1) else 0
    v = 2 if r == 1 else 0
    for g in range(G):
        mg = Mi[r, g] * RAt[0, k, g]
        if b == 2:
            mg += Mi[r + 1, g] * RAt[1, k, g]
        mean[g] = mg * inv
        sd[g] = 0.0
    for i in range(k):
        for g in range(G):
            he = Mi[r, g] * RAt[0, i, g]
            if b == 2:
                he += Mi[r + 1, g] * RAt[1, i, g]
            h = Et[i, g] - he * inv
            mean[g] += h * mean_a[i]
            Z[i, g] = h
        for p in range(i):
            c = L[i, p]
            for g in range(G):
                Z[i, g] -= c * Z[p, g]
        d = L[i, i]
        for g in range(G):
            Z[i, g] /= d
            sd[g] += Z[i, g] * Z[i, g]
    for g in range(G):
        sd[g] = math.sqrt(sd[g] + Mi[v, g])
    return None


def _block_nodes_py(u, lprior, floor, RR, RAy, RAt, Q, AtAy, prec, Et, consts, flags, lp, mean, sd):
    """Log posterior ``lp`` (log marginal plus ``lprior``) at every row of ``u`` and, where
    it is above ``floor``, the effects' moments (``mean``, ``sd``; left as they are
    elsewhere). ``consts`` = ``(n - dof_offset, log|P_a|)``, ``flags`` = ``(correlated,
    effect_col, moments)``. Returns False where a factorisation fails (not positive
    definite)."""
    G, b, kk = RAy.shape
    k = kk - 1
    correlated = flags[0] != 0
    B = np.empty((kk, kk))
    P = np.empty(kk * (kk + 1) // 2)
    Mi = np.empty((3, G))
    mean_a = np.empty(k)
    Z = np.empty((k, G))
    for j in range(u.shape[0]):
        s2, logdet = _assemble(u[j], RR, RAy, Q, AtAy, prec, correlated, B, P, Mi)
        if not _cholesky(B):
            return False
        logl = 0.0
        for i in range(k):
            logl += math.log(B[i, i])
        marg = (
            -0.5 * consts[0] * (_LOG2PI + math.log(s2))
            + 0.5 * consts[1]
            - 0.5 * logdet
            - logl
            - 0.5 * B[k, k] ** 2
        )
        lp[j] = marg + lprior[j]
        if flags[2] != 0 and lp[j] > floor[j]:
            _effects(B, Mi, RAt, Et, 1.0 / s2, b, flags[1], mean_a, Z, mean[j], sd[j])
    return True


#: numba is installed (it ships with pytensor); it is imported on the kernel's first use only
#: (about 0.9 s of CPU: a process that never evaluates a BlockModel does not pay it)
AVAILABLE = importlib.util.find_spec("numba") is not None
_group_minv, _schur_rows, _assemble = _group_minv_py, _schur_rows_py, _assemble_py
_cholesky, _effects = _cholesky_py, _effects_py


@functools.cache
def kernel():
    """The compiled :func:`_block_nodes_py` (compiled on first use, or loaded from numba's
    cache beside this module); None without numba. Its helpers are inlined into it: one
    compiled function, one type specialisation."""
    if not AVAILABLE:  # pragma: no cover
        return None
    import numba

    names = ("_group_minv", "_schur_rows", "_assemble", "_cholesky", "_effects")
    for name in names:  # the compiled helpers replace the Python ones it calls
        globals()[name] = numba.njit(cache=True, inline="always")(globals()[name + "_py"])
    return numba.njit(cache=True)(_block_nodes_py)


def precompile() -> None:
    """Compile the kernel now (about 2 s of CPU on a fresh clone), or load it from numba's
    cache, with the one signature :class:`~hetfx.models.exact.BlockModel` calls it with: a
    stage can do this once before it starts worker processes, which then load it. Nothing
    happens without numba."""
    fn = kernel()
    if fn is None:  # pragma: no cover
        return
    import numba

    f8 = numba.float64
    v, m, c = f8[::1], f8[:, ::1], f8[:, :, ::1]
    fn.compile((m, v, v, c, c, c, c, m, v, m, v, numba.int64[::1], v, m, m))
