"""One exact engine for every Gaussian model: a collapsed linear-Gaussian model with
per-group blocks (:class:`BlockModel`) integrated over its scales on a lattice grid.

The model::

    y_i = A_i a + R_i c_g[i] + e_i,          e_i ~ N(0, sigma^2)
    a_j ~ N(0, coef_sd_j^2)  (flat where coef_sd_j = inf)
    c_g ~ N(0, D),  D = diag(s_1^2, .., s_b^2)  or, correlated (b = 2),
        D = [[s_1^2, rho s_1 s_2], [rho s_1 s_2, s_2^2]],  rho ~ LKJ(eta)

``A`` (n x k) is the global design, ``R`` (n x b, b in {1, 2}) the regressors of each
row's group block: ``R = T`` (b = 1) gives the published lambda model
(``c_g = theta_g``, ``a = (beta, gamma)`` with ``A = [X, T Z_g]``), ``R = [1, T]`` (b = 2)
pooled cell baselines ``(alpha_g, theta_g)``.

Given the scales ``u = (log sigma, log s_1, .., log s_b[, atanh rho])`` everything is
Gaussian. Each group's block touches only its own rows, so with per-group sufficient
statistics (``R_g'R_g``, ``R_g'A_g``, ``R_g'y_g``, computed once) the block-diagonal part is
eliminated by a Schur complement: ``M_g = R_g'R_g / sigma^2 + D^-1`` (b x b, inverted in
closed form as ``(I + D R_g'R_g / sigma^2)^-1 D``, so ``D`` may be tiny or singular),

``S = A'A / sigma^2 + P_a - sum_g A_g'R_g M_g^-1 R_g'A_g / sigma^4``  (k x k),
``r = A'y / sigma^2 - sum_g A_g'R_g M_g^-1 R_g'y_g / sigma^4``,

and ``log p(y | u) = -(n - dof_offset)/2 log(2 pi sigma^2) + 1/2 log|P_a| - 1/2 sum_g
log|I + D R_g'R_g / sigma^2| - 1/2 log|S| - 1/2 (y'y / sigma^2 - sum_g y_g'R_g M_g^-1
R_g'y_g / sigma^4 - r'S^-1 r)``. A node costs ``O(G b^3 + G b^2 k^2 + k^3)``: linear in the
number of groups, never ``O(n)``, never a dense ``(G b + k)``-square factorisation. Given
``a``, ``c_g ~ N(M_g^-1 (R_g'y_g - R_g'A_g a) / sigma^2, M_g^-1)``, so every linear
combination of ``a`` and the blocks is Gaussian given the scales (:meth:`BlockModel.combo_moments`)
and its posterior is a finite mixture of normals over the grid's nodes
(:class:`BlockPosterior`): exact means, SDs and quantiles (solving the mixture CDF), nothing
random. Draws (for arviz) are exact draws from that mixture, at its nodes rounded to values
that are the same on any CPU and themselves rounded (:data:`DRAW_BITS`), so that the stored
draws are the same bits on any CPU.

:func:`fit_block_model` integrates the scales on :func:`lattice_grid_nd` (Gauss-Hermite nodes
on ``log sigma``, a lattice with flood fill on the others) with the settings of
:data:`GRIDS`.

Up to :data:`KERNEL_MAX_COEFS` coefficients the log density and the group effects' moments of
the grid's nodes come from a compiled kernel (:mod:`hetfx.models._block_kernel`, numba: a
node at a time, no temporaries, the same numbers to rounding and the same bits on any CPU);
the numpy path is the reference, and the only path without numba or for more coefficients.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, sparse, special
from scipy.linalg import blas as _blas
from scipy.linalg import lapack

from hetfx.design import column_index
from hetfx.inference import mixture_moments, mixture_quantiles, quantile_name, sinc_quantiles
from hetfx.models import _block_kernel
from hetfx.models.gaussian import ScalePrior, single_threaded_blas

__all__ = [
    "GRIDS",
    "BlockFit",
    "BlockModel",
    "BlockPosterior",
    "NDGrid",
    "fit_block_model",
    "lattice_grid_nd",
]

_LOG2PI = float(np.log(2 * np.pi))

#: Grid of :func:`fit_block_model` by number of scales (2: one block column, the published
#: model and fixed baselines; 3: pooled baselines; 4: correlated baselines and effects):
#: Gauss-Hermite nodes on ``log sigma`` (None: a lattice there too), lattice nodes per
#: posterior SD of the other coordinates (3 scales: per the narrower one-sided width, see
#: :func:`lattice_grid_nd`'s ``one_sided``), the box's depth below the top (log units), the
#: weight below which nodes leave the mixtures (and for 2 scales two layers of neighbours
#: per flood-fill pass: the same nodes in fewer calls, 15-25% less time). For 3 scales a
#: depth of 12 rather than 14 evaluates 13% fewer nodes and keeps the same ones above the
#: prune level (errors unchanged to 3 digits on the 36 simulation data sets and 5 simulated
#: ones below). For 3 scales the lattice's spacing starts to grow 3 posterior SDs from the
#: mode rather than 4 (``stretch``; :func:`lattice_grid_nd`), where the pooled baselines'
#: long tail towards sigma_alpha = 0 lies: 12-23% fewer nodes, 14% less time on the
#: simulation's data sets, and the same errors (largest group-effect error on 72 of them,
#: four replicates, 1.3e-4 against 1.6e-4 with a stretch of 4; Tomz-Weeks M1 and M2 with
#: pooled baselines 1.4e-5 and 1.4e-5 against 1.2e-5 and 1.8e-5; a stretch of 2 gives
#: 1.4e-3). Against
#: :data:`FINE_GRID` (4 lattice nodes per SD on every axis, depth 32, no pruning; for 4
#: scales 5 Hermite nodes, 2 per SD, depth 18), on the simulation's data sets (8 to 128
#: cells, 2,000 rows, two replicates, baseline SD 0.3 and 0), Tomz-Weeks M1, M2 and M1 with
#: main effects, and simulated data (24 cells x 125 rows, 128 x 16, 512 x 40, 8 x 50, 24 x
#: 40), in posterior SDs, the largest over means, SDs, medians, 2.5, 5, 95 and 97.5%
#: quantiles: 2 scales (42 to 95 nodes), group
#: effects within 7.9e-5, coefficients 3.0e-5, sigma's quantiles 5.5e-3 (see
#: :meth:`BlockPosterior.summarise_scales`; without its skewness correction 4.1e-2),
#: sigma_theta's 5.1e-3; 3 scales (310 to 1,220 nodes), group effects within 1.5e-4,
#: coefficients 5.7e-5, sigma's quantiles 8.3e-3, the other scales 3.8e-3; 4 scales, group
#: effects 1.9e-3 (1.8e-4 but for 128 cells of 16 rows, whose sigma_theta is skewed:
#: ``one_sided=True`` gives 3.9e-4 there, with 1.5 times the nodes), coefficients 3.9e-4,
#: sigma's quantiles 9e-3 (8 cells of 50 rows, against a lattice on all four axes), the
#: other scales and rho 1.2e-2. (4,000 NUTS draws have quantile Monte Carlo errors of 0.02
#: to 0.04 SDs.) ``tests/test_exact_engine.py`` pins these bounds.
GRIDS = {
    2: {"hermite": 3, "resolution": 1.5, "drop": 14.0, "prune": 1e-7, "layers": 2},
    3: {
        "hermite": 3,
        "resolution": 1.25,
        "drop": 12.0,
        "prune": 1e-7,
        "one_sided": True,
        "stretch": 3.0,
    },
    4: {"hermite": 3, "resolution": 1.0, "drop": 12.0, "prune": 1e-7},
}
#: Largest number of coefficients ``k`` for which :class:`BlockModel` evaluates its log
#: density and the effects' moments with the compiled per-node kernel
#: (:mod:`hetfx.models._block_kernel`); above it the numpy path (BLAS products). Measured
#: (CPU per node, 80 nodes a call, b = 1, G = k - 4): log density and moments 3-5 times
#: faster than numpy up to k = 36, 3 times at 52, slower at 68 (194 against 163 us); for
#: G = 16 to 128 and b = 1 or 2 faster at every k up to 48 (the log density alone is
#: slower from k = 36 at 128 groups, but the grid's nodes need the moments). Against the
#: numpy path with ``dsyrk`` and ``dtrsm`` (same set-up, noisy machine): with the moments
#: 49 against 80 us at k = 56, 81 against 100 at 68, equal at 76 to 84, slower at 100 (355
#: against 305); the log density alone slower from 64 (45 against 38 us at 64, 55 against
#: 42 at 68). The simulation's 64-cell fits (k = 68, about half their nodes with moments)
#: take the same time either way (best of 7: 29.7 ms with the kernel, 31.6 without;
#: medians 38.9 and 39.3), so 56 stays.
KERNEL_MAX_COEFS = 56
#: Largest size (doubles) of the groups' precomputed products in the compiled kernel (they
#: stay in cache; beyond it the kernel forms them row by row: more groups, less memory).
KERNEL_MAX_PRODUCTS = 1 << 18
#: From this many coefficients on, :meth:`BlockModel.factor` forms the Schur correction by
#: one ``dsyrk`` per node (:meth:`BlockModel._bordered_direct`) instead of precomputing the
#: groups' products (``G k^2 / 2`` per pair of block columns): as fast per node from about
#: 40 coefficients on, without the precomputation (measured with a matrix product per node:
#: the published model of the simulation at 128 cells, k = 132, 136 -> 98 ms a fit; at 64
#: cells, k = 68, 45 -> 40 ms; below 24 coefficients the precomputed products are 2 to 4
#: times faster per node). Measured again with ``dsyrk`` (the log density, 80 nodes a
#: call, G = k - 4, numpy path): b = 1, 19 against 12 us at k = 24, 25 against 38 at 48,
#: within 10% from 56 to 140; b = 2, 51 against 38 at 48, 59 against 70 at 56 (noisy
#: machine: the crossing lies between 40 and 56), so 48 stays.
SCHUR_DIRECT_COEFS = 48
#: The finer grid the settings of :data:`GRIDS` are measured against.
FINE_GRID = {"hermite": None, "resolution": 4.0, "drop": 32.0, "prune": 0.0}
#: The draws (:meth:`BlockPosterior.draws`) are the same bits on any CPU, but with a small
#: probability: they are drawn at the grid's nodes rounded to canonical values
#: (:attr:`NDGrid.draw_nodes`; the grid and every exact summary keep the nodes themselves)
#: and rounded to ``DRAW_BITS`` bits per quantity. Another CPU's arithmetic (measured with
#: the emulations of tests/test_cross_cpu.py: numpy without AVX2/AVX-512 kernels, OpenBLAS's
#: Prescott kernel, two BLAS threads, numba for a generic CPU, all at once) moves what they
#: are made from: the mode by up to 7.8e-11 and the Laplace SDs by 3.2e-9 relative (Tomz-Weeks
#: M1, M2, A1), 8,424 of A1's 29,510 lattice nodes by up to 3.6e-15 (``np.sinh``), and the
#: unrounded draws by up to 1.3e-13. A rounded value changes only where that noise crosses a
#: rounding boundary: expected number of crossings ``sum |noise| / step``, measured per
#: fit: the draws at 16 bits 2.4e-5 (M1: 164,000 values), 5.5e-6 (M2), 2.4e-5 (A1); the
#: lattice nodes 3.0e-6 (A1), 1.4e-8 (M1); the Hermite axis 1.8e-8 (A1). At 20 bits the
#: draws' would be 16 times as many (3.8e-4 for M1), so 16.
#:
#: The Gauss-Hermite axis's scale ``sqrt(2) sd`` of the draws' nodes is rounded to
#: ``HERMITE_BITS`` significant bits and its centre (the mode) to a multiple of
#: ``2^-HERMITE_BITS`` of the power of two below the scale: its nodes move by less than
#: ``2^-HERMITE_BITS`` of the scale (7e-4 posterior SDs of ``log sigma``).
HERMITE_BITS = 10
#: The lattice axes' nodes ``u = c + a sinh(v)`` of the draws rounded to multiples of
#: ``2^-LATTICE_BITS`` of the power of two below ``a``: they move by less than 2^-21 ``a``.
LATTICE_BITS = 20
#: Significant bits of the Hermite nodes of :func:`numpy.polynomial.hermite.hermgauss` (an
#: eigen-solver's: their last bits could depend on the LAPACK kernel; the same under the
#: emulations).
HERMITE_NODE_BITS = 32
#: Bits per quantity of the stored draws (:func:`_quantise_columns`: a step of
#: ``2^(e - DRAW_BITS)`` where ``2^e`` bounds the quantity's largest draw, 1.5e-5 of it at
#: most; Monte Carlo error of 4,000 draws: 1.6e-2 posterior SDs).
DRAW_BITS = 16


# ---------------------------------------------------------------- numerical helpers
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


def _lattice_step(x: float) -> float:
    """Largest ``2^(m/4) <= x`` (integer ``m``): a step that last-bit changes of ``x``
    leave unchanged (except when ``x`` sits on a boundary)."""
    return float(2.0 ** (np.floor(4 * np.log2(x)) / 4))


def _quantise(x: np.ndarray, bits: int = 40) -> np.ndarray:
    """Round to ``bits`` significant bits (see :meth:`BlockPosterior.draws`).

    Veltkamp's splitting: with ``c = (2^(53 - bits) + 1) x``, ``c - (c - x)`` is ``x``
    rounded to nearest at ``bits`` bits; three IEEE operations, exact on every CPU.
    """
    c = np.multiply(x, 2.0 ** (53 - bits) + 1.0)
    t = np.subtract(c, x)
    return np.subtract(c, t, out=c)


def _quantise_columns(x: np.ndarray, bits: int = 40) -> np.ndarray:
    """Round each column (the draws ``x[:, j, ...]`` of one quantity) to a binary grid of
    step ``2^(e - bits)``, where ``2^e`` bounds the column's largest absolute value.

    Unlike :func:`_quantise`, the step is the same for every draw of a quantity, so the two
    middle draws of an even number lie at exactly equal distances from their median on every
    CPU: the folded ranks behind R-hat and the tail ESS do not then depend on how another
    CPU rounds that tie. Scaling by a power of two and rounding are exact. ``x`` (a float
    array the caller owns) is rounded in place and returned.
    """
    big = np.maximum(np.max(x, axis=0, keepdims=True), -np.min(x, axis=0, keepdims=True))
    step = np.ldexp(1.0, np.frexp(big)[1] - bits)
    # in place (x is the caller's own array; no temporaries of its size)
    np.divide(x, step, out=x)
    np.rint(x, out=x)
    return np.multiply(x, step, out=x)


def _snap(x, step):
    """``x`` rounded to the nearest multiple of ``step`` (a power of two, or an array of
    them): exact in IEEE arithmetic, so the same on every CPU for the same ``x``."""
    return np.rint(np.divide(x, step)) * step


def _power_of_two_below(x):
    """Largest power of two ``<= x`` (``x > 0``; exact: the exponent of ``x``)."""
    return np.ldexp(1.0, np.frexp(x)[1] - 1)


def _as_2d(name: str, a, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds missing or infinite values")
    return a


def _matvec(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``M @ v`` over the last axes of stacks of 1 x 1 or 2 x 2 matrices, elementwise."""
    out = M[..., :, 0] * v[..., None, 0]
    for j in range(1, M.shape[-1]):
        out = out + M[..., :, j] * v[..., None, j]
    return out


def _chol_small(M: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of 1 x 1 or 2 x 2 covariance matrices."""
    L = np.zeros_like(M)
    L[..., 0, 0] = np.sqrt(M[..., 0, 0])
    if M.shape[-1] == 2:
        l21 = np.divide(
            M[..., 1, 0], L[..., 0, 0], out=np.zeros(M.shape[:-2]), where=L[..., 0, 0] > 0
        )
        L[..., 1, 0] = l21
        L[..., 1, 1] = np.sqrt(np.maximum(M[..., 1, 1] - l21 * l21, 0.0))
    return L


@dataclasses.dataclass
class _Node:
    """The factorisation of a batch of scale nodes (see :meth:`BlockModel.factor`)."""

    L: np.ndarray  # (m, k + 1, k + 1) bordered Cholesky factor of [[S, r], [r', y'Q y]]
    Minv: np.ndarray  # (m, G, b, b) the blocks' conditional covariances M_g^-1
    logdet_k: np.ndarray  # (m,) sum_g log|I + D R_g'R_g / sigma^2|
    s2: np.ndarray  # (m,) sigma^2
    _LinvT: np.ndarray | None = None

    @property
    def k(self) -> int:
        return self.L.shape[1] - 1

    @property
    def LinvT(self) -> np.ndarray:
        """``L_k^-T``: ``Cov(a) = LinvT LinvT'``."""
        if self._LinvT is None:
            k = self.k
            self._LinvT = np.swapaxes(_batched_tri_inv(self.L[:, :k, :k]), 1, 2)
        return self._LinvT

    @property
    def mean_a(self) -> np.ndarray:
        k = self.k
        return np.einsum("jim,jm->ji", self.LinvT, self.L[:, k, :k])

    def take(self, rows: np.ndarray) -> _Node:
        if len(rows) == len(self.s2) and np.array_equal(rows, np.arange(len(rows))):
            return self  # every node (the usual case: no copies)
        inv = None if self._LinvT is None else self._LinvT[rows]
        return _Node(self.L[rows], self.Minv[rows], self.logdet_k[rows], self.s2[rows], inv)


def _gaussian_forms(nd: _Node, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h @ E(a)`` and the diagonal of ``h Cov(a) h'`` at every node of ``nd`` (``h``:
    ``(m, r, k + 1)``, the last column zero: overwritten).

    From 24 coefficients on, by one triangular solve per node with the bordered Cholesky
    factor ``[[L_k, 0], [l', l_kk]]`` (BLAS ``dtrsm``, in place on ``[h' ; 0]``): its first
    ``k`` rows are ``W = L_k^-1 h'`` (``k^2 r`` flops, where ``L^-T`` costs ``k^3 / 3`` more
    and the product with it ``k^2 r``), whose column sums of squares are the variances, and
    its last row is ``-W' l / l_kk = -h E(a) / l_kk``. Measured at k = 132, G = 128: 0.28 ->
    0.25 ms a node for :meth:`BlockModel.effect_moments` (two ``solve_triangular`` before).
    """
    k = nd.k
    if k < 24 or nd._LinvT is not None:
        h = h[:, :, :k]
        mean = np.einsum("mgk,mk->mg", h, nd.mean_a)
        V = h @ nd.LinvT
        return mean, np.einsum("mgk,mgk->mg", V, V)
    W = h  # W[j].T: Fortran-ordered (k + 1, r), solved in place
    for j in range(len(W)):
        L = nd.L[j]
        if L.flags.f_contiguous:  # L itself (as factor() leaves it)
            x = _blas.dtrsm(1.0, L, W[j].T, lower=1, overwrite_b=1)
        else:  # L' Fortran-ordered: solve with its transpose
            x = _blas.dtrsm(1.0, np.asfortranarray(L.T), W[j].T, trans_a=1, overwrite_b=1)
        if not np.shares_memory(x, W[j]):
            W[j].T[...] = x
    Wk = W[:, :, :k]
    return -W[:, :, k] * nd.L[:, k, k, None], np.einsum("mgk,mgk->mg", Wk, Wk)


class BlockModel:
    """Collapsed linear-Gaussian model with per-group blocks (see the module notes).

    Parameters
    ----------
    y : array-like, shape (n,)
        Outcome.
    A : array-like, shape (n, k)
        Global design (coefficients ``a``).
    group : array-like of int, shape (n,)
        Group codes ``0 .. n_groups - 1``.
    R : array-like, shape (n, b) or (n,)
        Each row's regressors of its group's block, ``b`` in {1, 2}.
    n_groups : int
        Number of groups ``G`` (every group needs a row).
    coef_sd : float or array-like of shape (k,)
        Prior SDs of ``a`` (independent normals; ``np.inf`` is a flat prior).
    sigma_prior : ScalePrior
        Prior of the residual SD.
    block_priors : sequence of ScalePrior
        One prior per block column (the SDs ``s_1 .. s_b``).
    correlated : bool, default False
        ``b = 2`` only: the block's two values are correlated with ``rho``, LKJ(``lkj_eta``)
        prior on the 2 x 2 correlation (density of ``rho`` proportional to
        ``(1 - rho^2)^(eta - 1)``), coordinate ``atanh rho`` (Jacobian included).
    lkj_eta : float, default 1
        Shape of the LKJ prior.
    dof_offset : int, default 0
        Residual degrees of freedom removed (within-group centring for fixed baselines:
        ``G``).
    effect_coefs : array-like of shape (G, k), optional
        Each group's *effect* is ``effect_coefs[g] @ a + c_g[effect_col]`` (default: zero
        coefficients, the effect is the block value itself): e.g. ``lambda_g = Z_g gamma +
        theta_g``. :meth:`logpost_and_moments` and :class:`BlockPosterior` summarise it.
    effect_col : int, optional
        Block column of the effect (default the last, ``b - 1``).
    """

    def __init__(
        self,
        y,
        A,
        group,
        R,
        *,
        n_groups: int,
        coef_sd,
        sigma_prior: ScalePrior,
        block_priors: Sequence[ScalePrior],
        correlated: bool = False,
        lkj_eta: float = 1.0,
        dof_offset: int = 0,
        effect_coefs=None,
        effect_col: int | None = None,
    ) -> None:
        y = np.asarray(y, dtype=float).ravel()
        n = len(y)
        A = _as_2d("A", A, n)
        R = _as_2d("R", R, n)
        g = np.asarray(group, dtype=np.int64).ravel()
        G, k, b = int(n_groups), A.shape[1], R.shape[1]
        if len(g) != n or (n and (g.min() < 0 or g.max() >= G)):
            raise ValueError(f"group must hold {n} codes in 0..{G - 1}")
        if b not in (1, 2):
            raise ValueError("R must have one or two columns")
        if len(block_priors) != b:
            raise ValueError(f"block_priors needs one prior per block column ({b})")
        if correlated and b != 2:
            raise ValueError("correlated=True needs two block columns")
        if not lkj_eta > 0:
            raise ValueError("lkj_eta must be positive")
        sd = np.broadcast_to(np.asarray(coef_sd, dtype=float), (k,)).copy()
        if np.any(~(sd > 0)):
            raise ValueError("coef_sd must be positive (np.inf: a flat prior)")
        self.n, self.k, self.b, self.G = n - int(dof_offset), k, b, G
        self.correlated, self.lkj_eta = bool(correlated), float(lkj_eta)
        self.sigma_prior, self.block_priors = sigma_prior, tuple(block_priors)
        self.ndim = 1 + b + int(self.correlated)
        prec = 1.0 / sd**2
        self.prec = prec
        self.logdet_prior = float(np.log(prec[prec > 0]).sum())
        self.rows = np.bincount(g, minlength=G)
        if np.any(self.rows == 0):
            raise ValueError("every group needs at least one row")
        ind = sparse.csr_matrix((np.ones(n), (g, np.arange(n))), shape=(G, n))
        self.RR = np.stack([ind @ (R * R[:, [i]]) for i in range(b)], axis=1)  # (G, b, b)
        self.RA = np.stack([ind @ (A * R[:, [i]]) for i in range(b)], axis=1)  # (G, b, k)
        self.Ry = ind @ (R * y[:, None])  # (G, b)
        self.AtA, self.Aty, self.yty = A.T @ A, A.T @ y, float(y @ y)
        self.y_sd = float(np.std(y)) if n else 1.0
        self._pairs = [(i, j) for i in range(b) for j in range(i, b)]
        self._RAy = self._AtAy = None
        self._Q = self._schur_products()
        E = np.zeros((G, k)) if effect_coefs is None else np.asarray(effect_coefs, float)
        if E.shape != (G, k):
            raise ValueError(f"effect_coefs must be ({G}, {k})")
        self.effect_coefs = E
        self.effect_col = b - 1 if effect_col is None else int(effect_col)
        self._kernel_args = self._kernel_arrays()

    def _kernel_arrays(self) -> tuple | None:
        """The arrays of the compiled per-node kernel (:mod:`hetfx.models._block_kernel`),
        or None where the numpy path is used (no numba, or more coefficients than
        :data:`KERNEL_MAX_COEFS`: BLAS then does the products faster)."""
        if not _block_kernel.AVAILABLE or self.k > KERNEL_MAX_COEFS:
            return None
        k = self.k
        RAy, AtAy = self._bordered_products()
        consts = np.array([float(self.n), self.logdet_prior])
        # the groups' products of the rows of [R_g'A_g, R_g'y_g] (packed lower triangle, one
        # per pair of block columns) where they stay in cache; else the kernel forms them
        iu, ju = np.tril_indices(k + 1)
        if len(self._pairs) * self.G * len(iu) <= KERNEL_MAX_PRODUCTS:
            Q = np.empty((len(self._pairs), self.G, len(iu)))
            for p, (i, j) in enumerate(self._pairs):
                Q[p] = RAy[:, i, iu] * RAy[:, j, ju]
                if i != j:
                    Q[p] += RAy[:, j, iu] * RAy[:, i, ju]
        else:
            Q = np.empty((0, 0, 0))
        return (
            np.ascontiguousarray(self.RR),
            RAy,
            np.ascontiguousarray(RAy.transpose(1, 2, 0)),
            Q,
            AtAy,
            np.ascontiguousarray(self.prec),
            np.ascontiguousarray(self.effect_coefs.T),
            consts,
        )

    def _kernel(self, u: np.ndarray, floor: np.ndarray | None):
        """The compiled kernel at rows ``u``: ``(lp, mean, sd)`` (the moments where
        ``floor`` is given, NaN at rows not above it), or None where a factorisation failed
        (the numpy path then raises as it always did)."""
        RR, RAy, RAt, Q, AtAy, prec, Et, consts = self._kernel_args
        u = np.ascontiguousarray(u, dtype=float)
        m = len(u)
        lprior = np.ascontiguousarray(self.log_prior(u), dtype=float)
        want = floor is not None
        flags = np.array([int(self.correlated), self.effect_col, int(want)], dtype=np.int64)
        shape = (m, self.G) if want else (0, 0)
        mean, sd = np.full(shape, np.nan), np.full(shape, np.nan)
        floor = np.array(np.broadcast_to(floor if want else np.inf, (m,)), dtype=float)
        lp = np.empty(m)
        ok = _block_kernel.kernel()(
            u, lprior, floor, RR, RAy, RAt, Q, AtAy, prec, Et, consts, flags, lp, mean, sd
        )
        return (lp, mean, sd) if ok else None

    def _schur_products(self) -> np.ndarray | None:
        """Per-group products of the rows of ``R_g'A_g`` for the Schur correction, one
        ``(G, k (k + 1) / 2)`` matrix per pair of block columns (the upper triangle, row by
        row: the correction is symmetric), so that a batch of nodes needs one matrix product
        per pair; None from :data:`SCHUR_DIRECT_COEFS` coefficients on (a product per node
        is then cheaper than precomputing them) or where they would not fit in memory."""
        G, k = self.G, self.k
        iu, ju = np.triu_indices(k)
        nk = len(iu)
        # the bordered (k + 1)-square system [[S, r], [r', q]] as one gather from the packed
        # values [S's upper triangle, r, q] (a gather is twice as fast as two scatters)
        pos = np.empty((k + 1, k + 1), dtype=np.intp)
        pos[iu, ju] = pos[ju, iu] = np.arange(nk)
        pos[:k, k] = pos[k, :k] = nk + np.arange(k)
        pos[k, k] = nk + k
        self._border = pos.ravel()
        self._diag = np.flatnonzero(iu == ju)
        self._AtA_packed = self.AtA[iu, ju]
        if k >= SCHUR_DIRECT_COEFS or G * nk * len(self._pairs) > 1.5e7:
            return None
        Q = np.empty((len(self._pairs), G, len(iu)))
        for p, (i, j) in enumerate(self._pairs):
            Q[p] = self.RA[:, i, iu] * self.RA[:, j, ju]
            if i != j:
                Q[p] += self.RA[:, j, iu] * self.RA[:, i, ju]
        return Q

    # -- coordinates ------------------------------------------------------------------
    @property
    def min_log(self) -> list[float | None]:
        """Lower ends of the coordinates for :func:`lattice_grid_nd` (scales down to 1e-14)."""
        return [None] + [float(np.log(1e-14))] * self.b + [None] * int(self.correlated)

    def start(self, y_sd: float = 1.0) -> np.ndarray:
        """A start of the mode search."""
        ls = float(np.log(y_sd or 1.0))
        return np.array([ls] + [ls - 2.0] * self.b + [0.0] * int(self.correlated))

    def _cov(self, u: np.ndarray) -> np.ndarray:
        """The blocks' prior covariance ``D`` per node, ``(m, b, b)``."""
        m, b = len(u), self.b
        s = np.exp(u[:, 1 : 1 + b])
        D = np.zeros((m, b, b))
        D[:, np.arange(b), np.arange(b)] = s * s
        if self.correlated:
            off = np.tanh(u[:, 3]) * s[:, 0] * s[:, 1]
            D[:, 0, 1] = D[:, 1, 0] = off
        return D

    def log_prior(self, u: np.ndarray) -> np.ndarray:
        """Log prior density of the coordinates (Jacobians included), rows of ``u``."""
        lp = self.sigma_prior.logpdf_log_value(u[:, 0])
        for i, prior in enumerate(self.block_priors):
            lp = lp + prior.logpdf_log_value(u[:, 1 + i])
        if self.correlated:
            # LKJ on 2 x 2: (1 - rho^2)^(eta - 1); d rho / d atanh(rho) = 1 - rho^2
            t = np.abs(u[:, 3])
            log1mr2 = np.log(4.0) - 2.0 * t - 2.0 * np.log1p(np.exp(-2.0 * t))
            lp = lp + self.lkj_eta * log1mr2
        return lp

    # -- the factorisation ------------------------------------------------------------
    def factor(self, u: np.ndarray) -> _Node:
        """Factor the collapsed system at rows ``u`` (see the module notes)."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        m, k = len(u), self.k
        s2 = np.exp(2 * u[:, 0])
        inv = 1.0 / s2
        Minv, logdet_k = self._minv(u, inv)
        if self._Q is not None:  # the upper triangle, packed
            v = _matvec(Minv, self.Ry[None])
            inv2 = inv * inv
            vRA = sum(v[:, :, i] @ self.RA[:, i, :] for i in range(self.b))
            r = self.Aty[None] * inv[:, None] - vRA * inv2[:, None]
            quad = sum(v[:, :, i] @ self.Ry[:, i] for i in range(self.b))
            q = self.yty * inv - quad * inv2
            corr = sum(Minv[:, :, i, j] @ self._Q[p] for p, (i, j) in enumerate(self._pairs))
            Sp = self._AtA_packed[None] * inv[:, None] - corr * inv2[:, None]
            Sp[:, self._diag] += self.prec
            packed = np.concatenate([Sp, r, q[:, None]], axis=1)
            B = np.take(packed, self._border, axis=1).reshape(m, k + 1, k + 1)
            return _Node(_batched_cholesky(B), Minv, logdet_k, s2)
        return _Node(self._bordered_direct(Minv, inv), Minv, logdet_k, s2)

    def _bordered_products(self) -> tuple[np.ndarray, np.ndarray]:
        """``[R_g'A_g, R_g'y_g]`` per group, ``(G, b, k + 1)``, and the bordered ``[[A'A,
        A'y], [y'A, y'y]]``, built once (the compiled kernel and :meth:`_bordered_direct`
        share them)."""
        if self._RAy is None:
            k = self.k
            self._RAy = np.ascontiguousarray(np.concatenate([self.RA, self.Ry[:, :, None]], axis=2))
            AtAy = np.empty((k + 1, k + 1))
            AtAy[:k, :k], AtAy[:k, k], AtAy[k, :k] = self.AtA, self.Aty, self.Aty
            AtAy[k, k] = self.yty
            self._AtAy = AtAy
        return self._RAy, self._AtAy

    def _bordered_direct(self, Minv: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """The lower Cholesky factors of the bordered systems ``[[S, r], [r', q]]``, one node
        at a time (BLAS, no precomputed products: for many coefficients, or many groups).

        The Schur correction ``sum_g [R'A, R'y]_g' M_g^-1 [R'A, R'y]_g`` is a Gram matrix of
        the rows ``X_g = C_g' [R'A, R'y]_g`` (``C_g C_g' = M_g^-1``: ``sqrt(M_g^-1)`` for
        ``b = 1``, the 2 x 2 Cholesky factor for ``b = 2``), so one ``dsyrk`` per node forms
        its lower triangle with the scaling folded in (``inv [[A'A, A'y], [y'A, y'y]] -
        inv^2 X'X``, in place in the result), and ``dpotrf`` factors it there. Measured
        (CPU, best of 9 alternating, the simulation's 128 cells, k = 132, G = 128, b = 1):
        :meth:`factor` 0.22 -> 0.16 ms a node against the full matrix product and a
        separate factorisation. The factors are Fortran-ordered views (as
        :func:`_batched_cholesky`'s)."""
        k, b, G = self.k, self.b, self.G
        RAy, AtAy = self._bordered_products()
        if b == 1:
            X = np.sqrt(Minv[:, :, 0, 0])[:, :, None] * RAy[None, :, 0, :]
        else:  # rows C_g' [R'A, R'y]_g of the lower 2 x 2 factors C_g
            C = _chol_small(Minv)
            X = np.empty((len(inv), G, 2, k + 1))
            X[:, :, 0] = (
                C[:, :, 0, 0, None] * RAy[None, :, 0] + C[:, :, 1, 0, None] * RAy[None, :, 1]
            )
            X[:, :, 1] = C[:, :, 1, 1, None] * RAy[None, :, 1]
            X = X.reshape(len(inv), G * 2, k + 1)
        # out[j].T, Fortran-ordered, is the system and then L, in place; out[j] = AtAy is
        # c = AtAy' = AtAy (a contiguous copy, twice as fast as a transposing one into c)
        out = np.empty((len(inv), k + 1, k + 1))
        out[:] = AtAy
        diag = out.reshape(len(inv), -1)[:, : k * (k + 2) : k + 2]  # S's diagonal, a view
        for j in range(len(inv)):
            c = _blas.dsyrk(
                -inv[j] * inv[j], X[j].T, beta=inv[j], c=out[j].T, lower=1, overwrite_c=1
            )
            if not np.shares_memory(c, out[j]):
                out[j].T[...] = c
            diag[j] += self.prec
            c, info = lapack.dpotrf(out[j].T, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                raise np.linalg.LinAlgError("matrix is not positive definite")
            if not np.shares_memory(c, out[j]):
                out[j].T[...] = c
        return out.transpose(0, 2, 1)

    def _minv(self, u: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``M_g^-1 = (I + D R_g'R_g / sigma^2)^-1 D`` per node and group, ``(m, G, b, b)``,
        and ``sum_g log|I + D R_g'R_g / sigma^2|``, in closed form (elementwise: numpy's
        batched products of 2 x 2 matrices cost several times more)."""
        D = self._cov(u)
        w = inv[:, None]
        RR = self.RR
        if self.b == 1:
            d = D[:, 0, 0][:, None]
            K = 1.0 + (d * w) * RR[None, :, 0, 0]
            return (d / K)[:, :, None, None], np.log(K).sum(axis=1)
        d11, d12, d22 = (D[:, i, j][:, None] for i, j in ((0, 0), (0, 1), (1, 1)))
        r11, r12, r22 = RR[None, :, 0, 0], RR[None, :, 0, 1], RR[None, :, 1, 1]
        Minv = np.empty((len(u), self.G, 2, 2))
        if not self.correlated:  # d12 = 0: half the operations
            a, c = d11 * w, d22 * w
            k11, k22 = 1.0 + a * r11, 1.0 + c * r22
            det = k11 * k22 - (a * c) * (r12 * r12)
            idet = 1.0 / det
            Minv[:, :, 0, 0] = d11 * k22 * idet
            Minv[:, :, 1, 1] = d22 * k11 * idet
            Minv[:, :, 0, 1] = Minv[:, :, 1, 0] = -(d11 * c) * r12 * idet
            return Minv, np.log(det).sum(axis=1)
        k11 = 1.0 + (d11 * r11 + d12 * r12) * w
        k12 = (d11 * r12 + d12 * r22) * w
        k21 = (d12 * r11 + d22 * r12) * w
        k22 = 1.0 + (d12 * r12 + d22 * r22) * w
        det = k11 * k22 - k12 * k21
        Minv[:, :, 0, 0] = (k22 * d11 - k12 * d12) / det
        Minv[:, :, 1, 1] = (k11 * d22 - k21 * d12) / det
        off = 0.5 * ((k22 * d12 - k12 * d22) + (k11 * d12 - k21 * d11)) / det
        Minv[:, :, 0, 1] = Minv[:, :, 1, 0] = off
        return Minv, np.log(det).sum(axis=1)

    def _log_marginal(self, nd: _Node) -> np.ndarray:
        k = self.k
        piv = np.diagonal(nd.L, axis1=1, axis2=2)
        return (
            -0.5 * self.n * (_LOG2PI + np.log(nd.s2))
            + 0.5 * self.logdet_prior
            - 0.5 * nd.logdet_k
            - np.log(piv[:, :k]).sum(axis=1)
            - 0.5 * piv[:, k] ** 2
        )

    def _chunk(self) -> int:
        # about 2 MB of temporaries per chunk (they stay in cache; measured faster than
        # large batches for the pooled model)
        return max(8, int(2.5e5 // max(self.G * self.b * (self.b + self.k) + self.k**2, 1)))

    def logpost(self, u: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Log posterior density (up to a constant) of the coordinates, rows of ``u``."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        if self._kernel_args is not None:
            res = self._kernel(u, None)
            if res is not None:
                return res[0]
        chunk = chunk or self._chunk()
        out = np.empty(len(u))
        for i in range(0, len(u), chunk):
            uu = u[i : i + chunk]
            out[i : i + chunk] = self._log_marginal(self.factor(uu)) + self.log_prior(uu)
        return out

    def logpost_and_moments(self, u: np.ndarray, floor=-np.inf, moments=None, width=None):
        """:meth:`logpost` and conditional means and SDs (``(m, width)``; NaN at rows whose
        log density is not above ``floor``), one factorisation per row.

        ``moments(node) -> (mean, sd)`` gives them from a factorised node (default
        :meth:`effect_moments`, the groups' effects: ``width`` G); a caller that reports
        other combinations (e.g. profile effects) passes its own, with their ``width``.
        """
        u = np.atleast_2d(np.asarray(u, dtype=float))
        floor = np.broadcast_to(np.asarray(floor, dtype=float), (len(u),))
        if moments is None and self._kernel_args is not None:
            res = self._kernel(u, floor)
            if res is not None:
                return res
        moments = self.effect_moments if moments is None else moments
        width = self.G if width is None else width
        lp = np.empty(len(u))
        mean = np.full((len(u), width), np.nan)
        sd = np.full((len(u), width), np.nan)
        chunk = self._chunk()
        for i in range(0, len(u), chunk):
            uu = u[i : i + chunk]
            nd = self.factor(uu)
            lp[i : i + chunk] = self._log_marginal(nd) + self.log_prior(uu)
            rows = np.flatnonzero(lp[i : i + chunk] > floor[i : i + chunk])
            if len(rows):
                mean[i + rows], sd[i + rows] = moments(nd.take(rows))
        return lp, mean, sd

    # -- conditional moments ----------------------------------------------------------
    def coef_moments(self, nd: _Node) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs of ``a`` at the factored nodes, ``(m, k)``."""
        LinvT = nd.LinvT
        return nd.mean_a, np.sqrt(np.einsum("jim,jim->ji", LinvT, LinvT))

    def _block_pieces(self, nd: _Node):
        """``m_g`` (m, G, b) and ``H_g`` (m, G, b, k): ``c_g | a ~ N(m_g - H_g a, M_g^-1)``."""
        inv = (1.0 / nd.s2)[:, None, None]
        mg = _matvec(nd.Minv, self.Ry[None]) * inv
        H = np.zeros((*nd.Minv.shape[:2], self.b, self.k))
        for i in range(self.b):
            for j in range(self.b):
                H[:, :, i, :] += nd.Minv[:, :, i, j, None] * self.RA[None, :, j, :]
        H *= inv[..., None]
        return mg, H

    def effect_moments(self, nd: _Node) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs of every group's effect (``effect_coefs[g] @ a +
        c_g[effect_col]``), ``(m, G)``."""
        # row e of _block_pieces only: c_g[e] | a ~ N(m_g[e] - H_g[e] a, M_g^-1[e, e])
        e = self.effect_col
        inv = (1.0 / nd.s2)[:, None]
        Me = nd.Minv[:, :, e, :]  # (m, G, b)
        mg = (Me * self.Ry[None]).sum(axis=2) * inv
        w = Me * inv[:, :, None]
        # h = effect_coefs - sum_j w_j R'A_j, in a zero-bordered (m, G, k + 1) array that
        # _gaussian_forms solves in place (two passes over it, no other temporaries)
        k = self.k
        h = np.empty((len(inv), self.G, k + 1))
        h[:, :, k] = 0.0
        hk = h[:, :, :k]
        np.multiply(w[:, :, 0, None], self.RA[None, :, 0, :], out=hk)
        for j in range(1, self.b):
            hk += w[:, :, j, None] * self.RA[None, :, j, :]
        np.subtract(self.effect_coefs[None], hk, out=hk)
        mean, var = _gaussian_forms(nd, h)
        return mg + mean, np.sqrt(var + nd.Minv[:, :, e, e])

    def split_weights(self, W) -> tuple[np.ndarray, list]:
        """``W`` (r, k + G b) as its coefficient part (r, k, dense) and one sparse (r, G)
        matrix per block column (block values flattened group by group)."""
        k, G, b = self.k, self.G, self.b
        W = sparse.csr_matrix(W) if not sparse.issparse(W) else W.tocsr()
        if W.shape[1] != k + G * b:
            raise ValueError(f"W must have {k + G * b} columns (k + G b)")
        Wa = W[:, :k].toarray()
        Wc = [W[:, k + i :: b].tocsr() for i in range(b)]
        return Wa, Wc

    def combo_moments(self, nd: _Node, W) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs of ``W @ [a, c_0, .., c_{G-1}]`` at factored nodes.

        ``W`` is ``(r, k + G b)`` (dense or scipy sparse), or a pair ``(Wa, Wc)`` from
        :meth:`split_weights`. Returns ``(m, r)`` arrays.
        """
        Wa, Wc = W if isinstance(W, tuple) else self.split_weights(W)
        m, k, G = len(nd.s2), self.k, self.G
        mg, H = self._block_pieces(nd)
        mean = np.zeros((len(Wa), m))
        h = np.broadcast_to(Wa[None], (m, *Wa.shape)).copy()
        var = np.zeros((len(Wa), m))
        for i, Wi in enumerate(Wc):
            if Wi.nnz == 0:
                continue
            mean += Wi @ mg[:, :, i].T
            h -= (
                (Wi @ H[:, :, i, :].transpose(1, 0, 2).reshape(G, m * k))
                .reshape(-1, m, k)
                .transpose(1, 0, 2)
            )
            for j, Wj in enumerate(Wc):
                if Wj.nnz:
                    var += Wi.multiply(Wj).tocsr() @ nd.Minv[:, :, i, j].T
        mean = mean.T + np.einsum("mrk,mk->mr", h, nd.mean_a)
        V = h @ nd.LinvT
        var = var.T + np.einsum("mrk,mrk->mr", V, V)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def draw(self, nd: _Node, z_a: np.ndarray, z_c: np.ndarray, rows: np.ndarray, pieces=None):
        """Exact draws: ``a`` from its Gaussian conditional, then each group's block given
        ``a``. ``z_a`` (s, k) and ``z_c`` (s, G, b) are standard normals; draw ``i`` is at
        node ``rows[i]`` of ``nd``. ``pieces``: :meth:`draw_pieces` of ``nd`` (computed here
        when not given). Returns ``(a, c)``: ``(s, k)`` and ``(s, G, b)``."""
        mean_a, LinvT, mg, H, C = self.draw_pieces(nd) if pieces is None else pieces
        a = mean_a[rows] + np.einsum("sij,sj->si", LinvT[rows], z_a)
        c = mg[rows] - np.einsum("sgik,sk->sgi", H[rows], a)
        c += _matvec(C[rows], z_c)
        return a, c

    def draw_pieces(self, nd: _Node):
        """What :meth:`draw` needs of the factored nodes: ``a``'s mean and ``L^-T``, the
        blocks' conditional pieces and the Cholesky factors of ``M_g^-1``."""
        mg, H = self._block_pieces(nd)
        return nd.mean_a, nd.LinvT, mg, H, _chol_small(nd.Minv)


class BlockPosterior:
    """Exact posterior of a :class:`BlockModel`: a mixture of normals over the grid's nodes.

    Parameters
    ----------
    model : BlockModel
        The collapsed model.
    grid : NDGrid
        Its grid (the group effects' moments are used where the grid kept them).
    """

    def __init__(self, model: BlockModel, grid: NDGrid) -> None:
        self.model, self.grid = model, grid
        self.nodes, self.weights = grid.nodes, grid.weights
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if grid.means is not None and grid.sds is not None:
            self._cache["effects"] = (grid.means, grid.sds)

    def _chunks(self):
        md = self.model
        size = max(8, int(2.5e5 // max(md.k * (md.G * md.b + md.k), 1)))
        for i in range(0, len(self.weights), size):
            yield slice(i, i + size)

    def _over_nodes(self, fn) -> tuple[np.ndarray, np.ndarray]:
        parts = [fn(self.model.factor(self.nodes[sl])) for sl in self._chunks()]
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])

    def moments(self, what: str = "effects", W=None) -> tuple[np.ndarray, np.ndarray]:
        """Conditional means and SDs ``(J, r)`` at every node: ``"effects"`` (the groups'
        effects), ``"coefs"`` (``a``), ``"block<i>"`` (block column ``i`` of every group) or
        ``"combo"`` (the combinations ``W``, see :meth:`BlockModel.combo_moments`)."""
        if what in self._cache and W is None:
            return self._cache[what]
        md = self.model
        if what == "effects":
            out = self._over_nodes(md.effect_moments)
        elif what == "coefs":
            out = self._over_nodes(md.coef_moments)
        elif what.startswith("block"):
            i = int(what[5:])
            Wc = [sparse.identity(md.G, format="csr") * (j == i) for j in range(md.b)]
            pair = (np.zeros((md.G, md.k)), [sparse.csr_matrix(w) for w in Wc])
            out = self._over_nodes(lambda nd: md.combo_moments(nd, pair))
        elif what == "combo":
            pair = W if isinstance(W, tuple) else md.split_weights(W)
            return self._over_nodes(lambda nd: md.combo_moments(nd, pair))
        else:
            raise ValueError(f"unknown summary {what!r}")
        self._cache[what] = out
        return out

    def summarise(self, what: str = "effects", W=None, probs: Sequence[float] = (0.5,)):
        """Exact mixture summaries (``mean``, ``sd``, quantile columns) of :meth:`moments`."""
        m, s = self.moments(what, W)
        return mixture_frame(self.weights, m, s, probs)

    def summarise_scales(self, probs: Sequence[float] = (0.5, 0.025, 0.975)) -> pd.DataFrame:
        """``sigma``, the block SDs (and ``rho``): means and SDs over the nodes; quantiles of
        each coordinate's marginal, transformed. A lattice axis's marginal is the sinc
        interpolant of its masses (as :func:`hetfx.inference.sinc_quantiles`); the
        Gauss-Hermite axis's (``log sigma``) is the normal of its mean and SD over the nodes,
        corrected (Cornish-Fisher) by the skewness of ``log sigma`` given the rest,
        ``-psi2(n / 2) / psi1(n / 2)^1.5`` (``sigma^2`` scaled inverse chi-squared on the
        ``n`` residual degrees of freedom), which its three nodes cannot see."""
        g, rows = self.grid, []
        # log sigma given the rest is close to -log(Gamma(n / 2)) / 2 (sigma^2 scaled
        # inverse chi-squared): its skewness, -psi''(n / 2) / psi'(n / 2)^1.5, about
        # sqrt(2 / n), corrects the normal of the Gauss-Hermite axis's mean and SD
        a = self.model.n / 2
        skew = float(-special.polygamma(2, a) / special.polygamma(1, a) ** 1.5) if a > 1 else 0.0
        for j in range(self.nodes.shape[1]):
            u = self.nodes[:, j]
            x = np.tanh(u) if (self.model.correlated and j == 3) else np.exp(u)
            mean = float(self.weights @ x)
            row = {"mean": mean, "sd": float(np.sqrt(self.weights @ (x - mean) ** 2))}
            qu = _axis_quantiles(g, j, u, self.weights, probs, skew)
            qx = np.tanh(qu) if (self.model.correlated and j == 3) else np.exp(qu)
            row.update({quantile_name(p): float(q) for p, q in zip(probs, qx, strict=True)})
            rows.append(row)
        return pd.DataFrame(rows)

    def draws(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """``n`` independent exact draws: a node by its weight, then ``a`` and the blocks
        from their Gaussian conditionals. Keys ``a`` (n, k), ``c`` (n, G, b), ``effect``
        (n, G) and ``u`` (n, ndim). The draws are made in the order of their nodes (each
        node factored once), in blocks, from one stream of ``seed``, and put back in the
        order of the picks.

        The same bits on any CPU (but with a probability of about 1e-4 per fit, see
        :data:`DRAW_BITS`): the conditionals are those of the grid's ``draw_nodes`` (its
        nodes rounded, see :data:`HERMITE_BITS`), ``u`` holds those nodes, and ``a``, the
        blocks and the effects are rounded to ``DRAW_BITS`` bits per quantity
        (:func:`_quantise_columns`: the same step for every draw of a quantity, so their
        R-hat and ESS are the same on any CPU too)."""
        md = self.model
        at = getattr(self.grid, "draw_nodes", None)
        at = self.nodes if at is None else at
        rng = np.random.default_rng(seed)
        cum = np.cumsum(self.weights)
        idx = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        a_out, c_out = np.empty((n, md.k)), np.empty((n, md.G, md.b))
        size = max(1, int(2e6 // max(md.G * md.b * (md.k + 1), 1)))
        block = min(256, size)
        used = np.unique(idx)
        for j in range(0, len(used), size):  # nodes factored together
            nodes = used[j : j + size]
            pieces = md.draw_pieces(md.factor(at[nodes]))
            lo = np.searchsorted(sidx, nodes[0], side="left")
            hi = np.searchsorted(sidx, nodes[-1], side="right")
            for i in range(lo, hi, block):
                rows = order[i : min(i + block, hi)]
                z_a = rng.standard_normal((len(rows), md.k))
                z_c = rng.standard_normal((len(rows), md.G, md.b))
                inv = np.searchsorted(nodes, idx[rows])
                a, c = md.draw(None, z_a, z_c, inv, pieces)
                a_out[rows], c_out[rows] = a, c
        a_out, c_out = _quantise_columns(a_out, DRAW_BITS), _quantise_columns(c_out, DRAW_BITS)
        effect = a_out @ md.effect_coefs.T + c_out[:, :, md.effect_col]
        effect = _quantise_columns(effect, DRAW_BITS)
        return {"a": a_out, "c": c_out, "effect": effect, "u": at[idx]}


def mixture_frame(w, m, s, probs) -> pd.DataFrame:
    """``mean``, ``sd`` and quantile columns of the mixtures ``sum_j w_j N(m[j, i], s[j, i])``."""
    mean, sd = mixture_moments(w, m, s)
    if not len(probs):
        return pd.DataFrame({"mean": mean, "sd": sd})
    # a few thousand columns at a time: the root finder's work arrays are
    # (probabilities x columns x nodes)
    step = max(1, int(4e7 // max(len(w) * len(probs), 1)))
    qs = np.concatenate(
        [
            mixture_quantiles(w, m[:, i : i + step], s[:, i : i + step], probs)
            for i in range(0, m.shape[1], step)
        ],
        axis=1,
    )
    # one block, built in one step (a frame from a dict of 7 columns took 170 us, from
    # their stacked array 96 us, measured)
    names = ["mean", "sd", *(quantile_name(p) for p in probs)]
    if len(set(names)) < len(names):  # a probability asked for twice: one column
        return pd.DataFrame(dict(zip(names, [mean, sd, *qs], strict=True)))
    # (the column names from a cache: an index of 8 strings took 90 us to make, measured)
    return pd.DataFrame(np.column_stack([mean, sd, *qs]), columns=column_index(tuple(names)))


def _axis_quantiles(
    g: NDGrid, j: int, u: np.ndarray, w: np.ndarray, probs, skew: float = 0.0
) -> np.ndarray:
    """Quantiles of coordinate ``j``'s marginal (see :meth:`BlockPosterior.summarise_scales`);
    ``skew``: the Gauss-Hermite axis's skewness."""
    vals, inv = np.unique(u, return_inverse=True)
    mass = np.bincount(inv, weights=w)
    if g.hermite is not None and j == 0:
        from scipy.special import ndtri

        mean = float(w @ u)
        sd = float(np.sqrt(w @ (u - mean) ** 2))
        z = ndtri(np.asarray(probs, dtype=float))
        return mean + sd * (z + (z * z - 1) * skew / 6)
    v = np.rint(np.arcsinh((vals - g.centre[j]) / g.scale[j]) / g.step[j]).astype(int)
    full = np.zeros(v.max() - v.min() + 1)
    np.add.at(full, v - v.min(), mass)
    vv = (np.arange(v.min(), v.max() + 1)) * g.step[j]
    if len(full) < 2:
        return np.full(len(probs), float(vals[0]))
    qv = sinc_quantiles(vv, full, probs)
    return g.centre[j] + g.scale[j] * np.sinh(qv)


@dataclasses.dataclass
class BlockFit:
    """What :func:`fit_block_model` returns.

    Attributes
    ----------
    model : BlockModel
    grid : NDGrid
    posterior : BlockPosterior
    draws : dict or None
        :meth:`BlockPosterior.draws` (None when ``draws=0``).
    seconds : dict
        ``setup`` (the model was built before the call: 0 here), ``grid`` and ``draws``.
    """

    model: BlockModel
    grid: NDGrid
    posterior: BlockPosterior
    draws: dict | None
    seconds: dict


def fit_block_model(
    model: BlockModel,
    *,
    draws: int = 1000,
    chains: int = 4,
    seed: int = 0,
    grid: dict | None = None,
    y_sd: float | None = None,
) -> BlockFit:
    """Integrate a :class:`BlockModel` over its scales and draw from the exact posterior.

    Parameters
    ----------
    model : BlockModel
        The collapsed model.
    draws, chains : int
        ``chains * draws`` exact draws (``draws=0``: none, exact summaries only).
    seed : int
        Seed of the draws.
    grid : dict, optional
        Overrides of :data:`GRIDS` (keys of :func:`lattice_grid_nd`: ``hermite``,
        ``resolution``, ``drop``, ``prune``, ``max_step``, ``stretch``, ``max_points``,
        ``one_sided``, ``layers``).
    y_sd : float, optional
        Scale of the outcome (start of the mode search; default from the model's sums).

    Returns
    -------
    BlockFit
    """
    if draws < 0 or chains < 1:
        raise ValueError("draws must be non-negative and chains positive")
    settings = {**GRIDS[model.ndim], **(grid or {})}
    unknown = set(settings) - _GRID_KEYS
    if unknown:
        raise TypeError(f"unknown grid settings {sorted(unknown)}; known: {sorted(_GRID_KEYS)}")
    if y_sd is None:
        y_sd = model.y_sd
    t0 = time.perf_counter()
    with single_threaded_blas():
        g = lattice_grid_nd(
            model, model.start(y_sd), min_log=model.min_log, moments=True, **settings
        )
        post = BlockPosterior(model, g)
        t1 = time.perf_counter()
        dr = post.draws(chains * draws, seed) if draws else None
    t2 = time.perf_counter()
    return BlockFit(model, g, post, dr, {"grid": t1 - t0, "draws": t2 - t1})


_GRID_KEYS = {
    "hermite",
    "resolution",
    "drop",
    "prune",
    "max_step",
    "stretch",
    "max_points",
    "one_sided",
    "layers",
}


@dataclasses.dataclass
class NDGrid:
    """Lattice grid of ``d`` log scales (:func:`lattice_grid_nd`).

    Attributes
    ----------
    nodes : numpy.ndarray
        ``(J, d)`` log scales of the kept nodes.
    weights : numpy.ndarray
        ``(J,)`` normalised quadrature weights (density times the map's Jacobian).
    edge_mass : float
        Mass on the grid's shell (nodes with a neighbour that was not evaluated).
    mode : numpy.ndarray
        Mode found by the optimiser.
    shape : tuple of int
        Extent of the evaluated nodes per axis.
    means, sds : numpy.ndarray or None
        ``(J, G)`` conditional moments of the group effects at the kept nodes, where the
        grid was built with ``moments=True``.
    draw_nodes : numpy.ndarray or None
        ``(J, d)`` the nodes rounded to values that are the same on any CPU, where
        :meth:`BlockPosterior.draws` draws (None: at ``nodes``).
    """

    nodes: np.ndarray
    weights: np.ndarray
    edge_mass: float
    mode: np.ndarray
    shape: tuple[int, ...]
    means: np.ndarray | None = None
    sds: np.ndarray | None = None
    centre: np.ndarray | None = None
    scale: np.ndarray | None = None
    step: np.ndarray | None = None
    draw_nodes: np.ndarray | None = None
    hermite: int | None = None


def _stencil(d: int, h: float) -> np.ndarray:
    """Offsets of a central-difference stencil in ``d`` dims: the centre, ``+-h`` on each
    axis, the four corners ``(+-h, +-h)`` of each pair (the Hessian), then ``+-h / 10`` on
    each axis (the gradient, with a truncation error 100 times smaller)."""
    offs = [np.zeros(d)]
    for i in range(d):
        for j in range(i, d):
            for si, sj in ((1, 1), (-1, -1), (1, -1), (-1, 1)) if i != j else ((1, 0), (-1, 0)):
                o = np.zeros(d)
                o[i] += si * h
                o[j] += sj * h if i != j else 0.0
                offs.append(o)
    for i in range(d):
        for si in (1, -1):
            o = np.zeros(d)
            o[i] = si * h / 10
            offs.append(o)
    return np.array(offs)


def _grad_hess(f: np.ndarray, d: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient and Hessian from values on :func:`_stencil`'s offsets."""
    H = np.empty((d, d))
    pos = 1
    for i in range(d):
        for j in range(i, d):
            if i == j:
                H[i, i] = (f[pos] - 2 * f[0] + f[pos + 1]) / h**2
                pos += 2
            else:
                H[i, j] = H[j, i] = (f[pos] + f[pos + 1] - f[pos + 2] - f[pos + 3]) / (4 * h**2)
                pos += 4
    g = (f[pos : pos + 2 * d : 2] - f[pos + 1 : pos + 2 * d : 2]) / (2 * h / 10)
    return g, H


def _clamped(H: np.ndarray) -> np.ndarray:
    """``-H`` with its eigenvalues made positive (at least ``1e-3`` in size)."""
    lam, V = np.linalg.eigh(-H)
    return (V * np.maximum(np.abs(lam), 1e-3)) @ V.T


def _newton_mode(cm, u0: np.ndarray, h: float, max_iter: int = 60):
    """Mode of ``cm.logpost`` by Newton's method on central differences.

    Each iteration evaluates the whole stencil around the current point in one batched
    call (``1 + 2 d^2 + 2 d`` rows), so a mode costs a handful of calls where a simplex
    search needs a hundred or more single rows. The step solves with the Hessian's
    eigenvalues made negative (at least ``1e-3`` in size) and is at most one log unit long;
    a step longer than ``1e-3`` is halved while it would lower the density. The iteration
    ends one step after the step falls below ``1e-6``. Returns ``(mode, values on the
    stencil there)``, or None when a value is not finite or the iteration does not settle.
    """
    d = len(u0)
    offs = _stencil(d, h)
    u = np.asarray(u0, dtype=float)
    f = cm.logpost(u[None, :] + offs)
    for _ in range(max_iter):
        if not np.all(np.isfinite(f)):
            return None
        g, H = _grad_hess(f, d, h)
        lam, V = np.linalg.eigh(-H)
        step = V @ ((V.T @ g) / np.maximum(np.abs(lam), 1e-3))
        length = float(np.sqrt(step @ step))
        if length > 1.0:
            step /= length
            length = 1.0
        if length < 1e-6:
            # one more step from here lands within rounding of the fixed point, so the mode
            # does not depend on which iteration happened to pass the threshold
            ft = cm.logpost((u + step)[None, :] + offs)
            return (u + step, ft) if np.all(np.isfinite(ft)) else (u, f)
        while True:
            ft = cm.logpost((u + step)[None, :] + offs)
            if length < 1e-3 or (np.isfinite(ft[0]) and ft[0] >= f[0]):
                break
            step /= 2
            length /= 2
        u, f = u + step, ft
    return None


def _quasi_newton_mode(cm, u0: np.ndarray, h: float, max_iter: int = 60):
    """Mode of ``cm.logpost`` by a quasi-Newton search on central differences.

    The whole stencil (``1 + 2 d^2 + 2 d`` rows, one batched call) gives the gradient and
    Hessian at the start; each step then evaluates only the gradient's rows (``1 + 2 d``)
    and updates the Hessian by BFGS. A step is at most one log unit long, and one longer
    than ``1e-3`` is halved while it would lower the density. Where a step falls below
    ``1e-5`` the whole stencil is evaluated there and one Newton step taken from it: the
    mode is then within about ``1e-10`` of the fixed point whichever path led there (Newton's
    quadratic convergence), and the stencil gives the Laplace SDs. About 35% fewer rows than
    :func:`_newton_mode` (in 8 to 14 calls where it needs 6 or 7): the cheaper search where a
    row costs more than a call. Returns ``(mode, values on the last whole stencil)``, or
    None when a value is not finite or the search does not settle.
    """
    d = len(u0)
    offs = _stencil(d, h)
    grad_rows = np.r_[0, np.arange(len(offs) - 2 * d, len(offs))]
    u = np.asarray(u0, dtype=float)
    f = cm.logpost(u[None, :] + offs)
    if not np.all(np.isfinite(f)):
        return None
    g, H = _grad_hess(f, d, h)
    B, top = _clamped(H), f[0]
    for _ in range(max_iter):
        step = np.linalg.solve(B, g)
        length = float(np.sqrt(step @ step))
        if length > 1.0:
            step, length = step / length, 1.0
        if length < 1e-5:
            f = cm.logpost(u[None, :] + offs)
            if not np.all(np.isfinite(f)):
                return None
            g, H = _grad_hess(f, d, h)
            B = _clamped(H)
            step = np.linalg.solve(B, g)
            if float(np.sqrt(step @ step)) < 1e-4:
                return u + step, f
            top = f[0]
            continue
        while True:
            ft = cm.logpost((u + step)[None, :] + offs[grad_rows])
            if length < 1e-3 or (np.isfinite(ft[0]) and ft[0] >= top):
                break
            step, length = step / 2, length / 2
        if not np.all(np.isfinite(ft)):
            return None
        g_new = (ft[1::2] - ft[2::2]) / (2 * h / 10)
        y = g - g_new  # B approximates -H: B step ~ g - g_new
        ys = float(y @ step)
        if ys > 0:
            Bs = B @ step
            B = B + np.outer(y, y) / ys - np.outer(Bs, Bs) / float(step @ Bs)
        u, g, top = u + step, g_new, ft[0]
    return None


def _mode_and_sd(cm, u0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode of the log scales' posterior and the SDs of its Laplace approximation.

    Newton's method (:func:`_newton_mode`, or :func:`_quasi_newton_mode` for models of 48
    coefficients or more); where it fails, a Nelder-Mead search. The SDs
    come from a central-difference Hessian with step ``1e-2`` at the mode (capped at 3;
    0.5 where the Hessian is not negative definite).
    """
    d = len(u0)
    h = 1e-2
    # from about 48 coefficients on a row costs more than a call (measured: 34 -> 25 ms for
    # the published model at 128 cells, 9 -> 6 ms at 64; 0.3 ms more for small models)
    search = _quasi_newton_mode if getattr(cm, "k", 0) >= 48 else _newton_mode
    found = search(cm, u0, h)
    if found is None:
        res = optimize.minimize(
            lambda u: -cm.logpost(u[None, :])[0],
            u0,
            method="Nelder-Mead",
            options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 300 * d},
        )
        mode = res.x
        f = cm.logpost(mode[None, :] + _stencil(d, h))
    else:
        mode, f = found
    H = _grad_hess(f, d, h)[1]
    try:
        cov = np.linalg.inv(-H)
        sd = np.sqrt(np.diag(cov))
        if not np.all(np.isfinite(sd)):
            raise np.linalg.LinAlgError
    except (np.linalg.LinAlgError, FloatingPointError):
        sd = np.full(d, 0.5)
    return mode, np.minimum(sd, 3.0)


def _one_sided_widths(cm, mode: np.ndarray, sd: np.ndarray, axes) -> np.ndarray:
    """The narrower of each axis's two one-sided widths, from the log density at the mode
    and at ``mode +- sd`` along the axis (a normal of SD ``s`` drops by ``sd^2 / 2 s^2``
    there), between ``sd / 4`` and ``sd`` (``sd`` on the other axes)."""
    width = sd.copy()
    axes = np.asarray(axes, dtype=int)
    if not len(axes):
        return width
    offs = np.zeros((2 * len(axes), len(sd)))
    offs[np.arange(len(axes)), axes] = sd[axes]
    offs[len(axes) + np.arange(len(axes)), axes] = -sd[axes]
    f = cm.logpost(np.vstack([mode[None, :], mode[None, :] + offs]))
    drop = np.maximum(f[0] - f[1:], 1e-300).reshape(2, -1)
    with np.errstate(invalid="ignore"):
        s = sd[axes] / np.sqrt(2.0 * drop)
    s = np.where(np.isfinite(s), s, sd[axes]).min(axis=0)
    width[axes] = np.clip(s, 0.25 * sd[axes], sd[axes])
    return width


def lattice_grid_nd(
    cm,
    u0: Sequence[float],
    *,
    resolution: float | Sequence[float] = 1.5,
    drop: float = 25.0,
    max_step: float = 0.35,
    stretch: float = 4.0,
    min_log: Sequence[float | None] | None = None,
    prune: float = 1e-13,
    max_points: int = 2_000_000,
    hermite: int | None = None,
    one_sided: bool = False,
    layers: int = 1,
    moments: bool = False,
) -> NDGrid:
    """Lattice grid of the log scales of ``cm`` (anything with ``logpost`` and ``ndim``).

    Each axis is ``u = c + a sinh(v)``, ``v = h i`` with ``a`` and ``h`` powers of
    ``2^(1/4)`` (:func:`_lattice_step`: last-bit changes of the mode and SDs leave them
    unchanged) and ``c`` a multiple of ``a h`` chosen from the mode and the posterior SDs.
    From a box of 3 posterior SDs around
    the mode the grid grows by flood fill: every face neighbour of a node less than ``drop``
    log units below the top is evaluated, so the nodes left out are all deeper than that and
    lie outside the region above it. Nodes of normalised weight below ``prune`` are then
    left out of the mixture.

    Parameters
    ----------
    cm
        The collapsed model.
    u0 : sequence of float
        Start of the mode search.
    resolution : float or sequence of float, default 1.5
        Nodes per posterior SD at the mode (per axis).
    drop : float, default 25
        Depth of the box's faces below the top (log units).
    max_step : float, default 0.35
        Largest node spacing at the mode.
    stretch : float, default 4
        Scale of the sinh map in posterior SDs.
    min_log : sequence of float or None, optional
        Lower end of each log scale (default ``log(1e-14)`` for all but the first axis).
    prune : float, default 1e-13
        Weight below which nodes are dropped.
    max_points : int
        Refuse larger boxes (``RuntimeError``).
    hermite : int, optional
        Integrate the first axis by Gauss-Hermite quadrature with this many nodes, centred
        at the mode and scaled by the posterior SD, in place of its lattice: for an axis
        whose posterior is close to Gaussian (``log sigma`` with many observations), three
        nodes integrate what a lattice needs seven or more for. The other axes keep their
        lattices and flood fill; the first axis has no shell.
    one_sided : bool, default False
        Space each lattice axis by the narrower of its posterior SD and its two one-sided
        widths, measured from the log density at the mode +- 1 SD (2 rows per axis): a
        skewed posterior (a scale near zero: a long tail on one side, a steep fall on the
        other) gets nodes as fine as its steep side needs.
    layers : int, default 1
        Layers of face neighbours the flood fill evaluates per pass: more layers, fewer
        batched calls (each costs a fixed overhead) for a few more nodes.
    moments : bool, default False
        Keep the group effects' conditional moments of the nodes, from
        ``cm.logpost_and_moments`` (one factorisation per node where :class:`BlockPosterior`
        would factor the kept nodes again); nodes already below the prune level when they are
        evaluated get none.

    Returns
    -------
    NDGrid
    """
    mode, sd = _mode_and_sd(cm, np.asarray(u0, dtype=float))
    if hermite is not None and int(hermite) < 1:
        raise ValueError("hermite needs at least one node")
    width = sd
    if one_sided:
        width = _one_sided_widths(cm, mode, sd, range(0 if hermite is None else 1, cm.ndim))
    lat = _Lattice(mode, sd, width, resolution, stretch, max_step, min_log, hermite, layers)
    done: dict[str, list] = {"idx": [], "lw": [], "mom": []}

    def evaluate(idx: np.ndarray, top: float) -> np.ndarray:
        if sum(len(i) for i in done["idx"]) + len(idx) > max_points:
            raise RuntimeError(f"quadrature grid would need more than {max_points} points")
        u, lj = lat.to_u(idx)
        if moments:
            # a node whose weight is below prune * exp(top) now stays below the prune level
            # (the top only rises and the normalising sum is at least exp(top)): its
            # moments are never needed
            floor = top + np.log(prune) - lj if prune > 0 and np.isfinite(top) else -np.inf
            lp, mean, sd_ = cm.logpost_and_moments(u, floor)
            done["mom"].append((mean, sd_))
        else:
            lp = cm.logpost(u)
        done["idx"].append(idx)
        done["lw"].append(lp + lj)
        return done["lw"][-1]

    known = _flood_fill(lat, evaluate, drop)
    grid = _assemble_grid(lat, done, known, prune, moments)
    grid.draw_nodes = lat.canonical(grid.nodes)
    return grid


class _Lattice:
    """The lattice of :func:`lattice_grid_nd`: each axis ``u = c + a sinh(h i)`` (the first
    Gauss-Hermite nodes where ``hermite``), node indices in range, their integer codes."""

    def __init__(self, mode, sd, width, resolution, stretch, max_step, min_log, hermite, layers):
        d = len(mode)
        self.d, self.mode, self.sd, self.hermite = d, mode, sd, hermite
        if hermite is not None:
            gh_x, gh_w = np.polynomial.hermite.hermgauss(int(hermite))
            # int f(u) du = sqrt(2) sd sum_i w_i e^{x_i^2} f(mode + sqrt(2) sd x_i) for a
            # Gaussian weight; the e^{x^2} undoes the weight function: f is the density itself
            self.gh_u = mode[0] + np.sqrt(2.0) * sd[0] * gh_x
            self.gh_lj = np.log(gh_w) + gh_x**2 + np.log(np.sqrt(2.0) * sd[0])
            # the nodes of the draws (see canonical): centre, scale and the Hermite nodes
            # rounded, the same on any CPU (the mode and SD move in their last bits)
            s = _quantise(np.sqrt(2.0) * sd[:1], HERMITE_BITS)
            centre = _snap(mode[:1], _power_of_two_below(s) * 2.0**-HERMITE_BITS)
            self.gh_canonical = centre + s * _quantise(gh_x, HERMITE_NODE_BITS)
        res = np.broadcast_to(np.asarray(resolution, dtype=float), (d,))
        a = np.array([_lattice_step(stretch * sd[i]) for i in range(d)])
        hv = np.array([_lattice_step(min(width[i] / res[i], max_step) / a[i]) for i in range(d)])
        self.a, self.hv = a, hv
        self.u_step = _power_of_two_below(a) * 2.0**-LATTICE_BITS  # see canonical
        self.c = c = np.round(mode / (a * hv)) * (a * hv)
        if min_log is None:
            min_log = [None] + [float(np.log(1e-14))] * (d - 1)
        lo_lim = [
            None if m is None else int(np.ceil(np.arcsinh((m - c[i]) / a[i]) / hv[i]))
            for i, m in enumerate(min_log)
        ]
        self.floor = np.array([np.iinfo(int).min if m is None else m for m in lo_lim])
        self.ceil = np.full(d, np.iinfo(int).max)
        start = [int(np.ceil(np.arcsinh(3.0 * sd[i] / a[i]) / hv[i])) for i in range(d)]
        self.lo = [-s if lo_lim[i] is None else max(-s, lo_lim[i]) for i, s in enumerate(start)]
        self.hi = list(start)
        if hermite is not None:  # the first axis: node numbers 0 .. hermite - 1, all evaluated
            self.lo[0], self.hi[0] = 0, int(hermite) - 1
            self.floor[0], self.ceil[0] = 0, int(hermite) - 1
        self.steps = np.vstack([np.eye(d, dtype=int), -np.eye(d, dtype=int)])
        self.reach = np.vstack([self.steps * j for j in range(1, int(layers) + 1)])
        # node indices are encoded as one integer each, in lexicographic order (the
        # bookkeeping of the flood fill is then array operations: sorted codes, searchsorted)
        self.bits = max(1, 62 // d)
        self.off = 1 << (self.bits - 1)

    def to_u(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log scales of lattice nodes and the log of their quadrature weight factor."""
        v = idx * self.hv
        u = self.c + self.a * np.sinh(v)
        lj = np.log(self.a * np.cosh(v))
        if self.hermite is not None:
            u[:, 0] = self.gh_u[idx[:, 0]]
            lj[:, 0] = self.gh_lj[idx[:, 0]]
        return u, lj.sum(axis=1)

    def canonical(self, u: np.ndarray) -> np.ndarray:
        """The nodes ``u`` (of :meth:`to_u`) as :meth:`BlockPosterior.draws` uses them: the
        same bits on any CPU. A lattice coordinate rounded to a multiple of
        ``2^-LATTICE_BITS`` of its axis's ``a`` (``np.sinh``'s last bit differs between SIMD
        kernels); a Gauss-Hermite node replaced by its node on a centre and scale rounded to
        ``HERMITE_BITS`` (and the Hermite nodes to ``HERMITE_NODE_BITS``: an eigen-solver's).
        The nodes move by at most ``2^-(LATTICE_BITS + 1)`` of ``a`` and about
        ``2^-HERMITE_BITS`` of the Hermite scale; see :data:`DRAW_BITS` for what that costs."""
        out = _snap(u, self.u_step)
        if self.hermite is not None and len(u):
            near = np.abs(u[:, :1] - self.gh_u[None, :]).argmin(axis=1)
            out[:, 0] = self.gh_canonical[near]
        return out

    def encode(self, idx: np.ndarray) -> np.ndarray:
        # |idx| >= off, from the extremes (one pass each, no temporaries)
        if idx.size and (idx.min() <= -self.off or idx.max() >= self.off):
            raise RuntimeError("quadrature grid index out of range")
        code = np.zeros(len(idx), dtype=np.int64)
        for j in range(self.d):
            code = (code << self.bits) + (idx[:, j] + self.off)
        return code

    def inside(self, idx: np.ndarray) -> np.ndarray:
        return ((idx >= self.floor) & (idx <= self.ceil)).all(axis=1)

    def box(self) -> np.ndarray:
        """Indices of the starting box (+-3 posterior SDs on the lattice axes)."""
        axes = [np.arange(lo, hi + 1) for lo, hi in zip(self.lo, self.hi, strict=True)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.d)


def _member(code: np.ndarray, known: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(known, code), max(len(known) - 1, 0))
    return known[pos] == code if len(known) else np.zeros(len(code), dtype=bool)


def _flood_fill(lat: _Lattice, evaluate, drop: float) -> np.ndarray:
    """Evaluate the starting box, then the neighbours (``lat.reach``) of every node above
    ``top - drop`` until none is left unevaluated; returns the sorted codes evaluated."""
    idx = lat.box()
    lw = evaluate(idx, -np.inf)
    known = np.sort(lat.encode(idx))
    top = float(lw.max())
    for _ in range(10_000):
        above = idx[lw > top - drop]
        if not len(above):
            break
        cand = (above[:, None, :] + lat.reach[None]).reshape(-1, lat.d)
        cand = cand[lat.inside(cand)]
        # the candidates not evaluated yet, then their distinct codes (sorted) and the first
        # row of each: the nodes, in the order, that the unique codes of all the candidates
        # less the known ones gave (most candidates are known: the sort is of the rest)
        cand_code = lat.encode(cand)
        fresh = ~_member(cand_code, known)
        if not fresh.any():
            break
        cand = cand[fresh]
        code, first = np.unique(cand_code[fresh], return_index=True)
        idx = cand[first]
        lw = evaluate(idx, top)
        top = max(top, float(lw.max()))
        # the union of two disjoint sets of distinct codes: sorted (``np.union1d`` would
        # sort and deduplicate: 65 us a pass against 3 us, measured)
        known = np.concatenate([known, code])
        known.sort()
    return known


def _unevaluated_neighbour(lat: _Lattice, keys, codes, known) -> np.ndarray:
    """Whether each node (``keys``, their ``codes``) has a face neighbour in range whose code
    is not ``known``. A neighbour's code is the node's plus or minus the unit of its axis
    (a code is ``sum_j (i_j + off) 2^(bits (d - 1 - j))``, each term below ``2^bits``), where
    no index is within one of the codes' range; else the neighbours are encoded (which
    raises as :meth:`_Lattice.encode` does). In range: ``lat.inside`` of the neighbour."""
    d = lat.d
    if len(keys) and (keys.min() - 1 <= -lat.off or keys.max() + 1 >= lat.off):
        nb = (keys[:, None, :] + lat.steps[None]).reshape(-1, d)
        ok = lat.inside(nb)
        missing = np.zeros(len(nb), dtype=bool)
        missing[ok] = ~_member(lat.encode(nb[ok]), known)
        return missing.reshape(len(keys), 2 * d).any(axis=1)
    unit = np.array([1 << (lat.bits * (d - 1 - j)) for j in range(d)], dtype=np.int64)
    nb_codes = codes[:, None] + np.concatenate([unit, -unit])[None, :]  # lat.steps' order
    # lat.inside of a neighbour: its moved index in range, and the node's other ones
    axis_in = (keys >= lat.floor) & (keys <= lat.ceil)
    others = np.stack([np.delete(axis_in, j, axis=1).all(axis=1) for j in range(d)], axis=1)
    up, down = keys + 1, keys - 1
    ok = np.concatenate(
        [
            (up >= lat.floor) & (up <= lat.ceil) & others,
            (down >= lat.floor) & (down <= lat.ceil) & others,
        ],
        axis=1,
    )
    missing = np.zeros(nb_codes.shape, dtype=bool)
    missing[ok] = ~_member(nb_codes[ok], known)
    return missing.any(axis=1)


def _assemble_grid(lat: _Lattice, done: dict, known: np.ndarray, prune, moments) -> NDGrid:
    """The :class:`NDGrid` of the evaluated nodes: a fixed (lexicographic) order, normalised
    weights, the shell's mass, the nodes above ``prune`` (and their moments)."""
    keys = np.concatenate(done["idx"])
    codes = lat.encode(keys)
    order = np.argsort(codes, kind="stable")
    keys, codes = keys[order], codes[order]
    lw = np.concatenate(done["lw"])[order]
    w = np.exp(lw - lw.max())
    w /= w.sum()
    # the shell: evaluated nodes with a face neighbour that was not evaluated
    edge = float(w[_unevaluated_neighbour(lat, keys, codes, known)].sum())
    keep = w > prune
    shape = tuple(int(x) for x in keys.max(axis=0) - keys.min(axis=0) + 1)
    grid = NDGrid(lat.to_u(keys[keep])[0], w[keep] / w[keep].sum(), edge, lat.mode, shape)
    grid.centre, grid.scale, grid.step = lat.c, lat.a, lat.hv
    grid.hermite = None if lat.hermite is None else int(lat.hermite)
    if moments:
        rows = order[keep]
        grid.means = np.concatenate([m for m, _ in done["mom"]])[rows]
        grid.sds = np.concatenate([s_ for _, s_ in done["mom"]])[rows]
        if not np.all(np.isfinite(grid.sds)):  # pragma: no cover - excluded by the floor's bound
            raise RuntimeError("a kept node has no moments")
    return grid
