"""Collapsed linear-Gaussian core shared by the fast engines.

Every model of hetfx is, given a few scale (covariance) hyperparameters ``h``, a linear
regression ``y = A c + e``, ``e ~ N(0, sigma^2 I)``, with a Gaussian prior ``c ~ N(m0, P^-1)``.
The coefficients integrate out exactly: with the sufficient statistics ``A'A``, ``A'y``,
``y'y`` (computed once) and ``M = P + A'A / sigma^2``,

    log p(y | h) = -n/2 log(2 pi sigma^2) + 1/2 log|P| - 1/2 log|M|
                   - 1/2 (y'y/sigma^2 + m0'P m0 - b'M^-1 b),   b = A'y/sigma^2 + P m0,

and ``c | y, h ~ N(M^-1 b, M^-1)``. Flat prior components have precision 0 and are left out
of ``log|P|`` (a constant). The functions here are batched over a leading axis of
hyperparameter values.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from scipy.special import gammaln

__all__ = [
    "ScalePrior",
    "single_threaded_blas",
    "SuffStats",
    "batched_posterior",
    "draw_conditional",
    "suff_stats",
    "check_finite",
]

_LOG2PI = float(np.log(2 * np.pi))


@functools.cache
def _blas_controller():
    import scipy.linalg  # noqa: F401  (scipy's own BLAS loaded, so the controller sees it)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas():
    """Context manager limiting BLAS to one thread.

    The collapsed engines work on many small matrices, where BLAS threads cost far more
    than they save (measured: 0.5 ms vs 0.18 ms per A1 log-density evaluation). The
    libraries are looked up once per process (a lookup reads the process's memory map: 3
    ms, as long as a small simulation fit).
    """
    import contextlib

    try:
        controller = _blas_controller()
    except ImportError:  # pragma: no cover - threadpoolctl ships with the environment
        return contextlib.nullcontext()
    # BLAS on one thread already (``OPENBLAS_NUM_THREADS=1``, or inside another such
    # context): nothing to limit (reading the counts took 3 us, a limit 27 us, measured)
    blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    if all(lib.num_threads == 1 for lib in blas):
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def check_finite(name: str, a: np.ndarray) -> np.ndarray:
    """Return ``a`` as float array, raising ``ValueError`` if it holds NaN or inf."""
    arr = np.asarray(a, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclasses.dataclass(frozen=True)
class ScalePrior:
    """Prior of a standard deviation: half-Student-t(nu, 0, scale) or half-Normal(0, scale).

    Parameters
    ----------
    kind : {"half_student_t", "half_normal"}
        Family.
    scale : float
        Scale parameter.
    nu : float
        Degrees of freedom (half-Student-t only). brms's default is
        ``half_student_t`` with ``nu = 3``, ``scale = 2.5``.
    """

    kind: str = "half_student_t"
    scale: float = 2.5
    nu: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in ("half_student_t", "half_normal"):
            raise ValueError(f"unknown scale prior kind {self.kind!r}")
        if not self.scale > 0 or not self.nu > 0:
            raise ValueError("scale prior needs scale > 0 and nu > 0")

    @classmethod
    def brms_default(cls) -> ScalePrior:
        """brms's default prior for SDs and sigma: half-Student-t(3, 0, 2.5)."""
        return cls("half_student_t", 2.5, 3.0)

    @functools.cached_property
    def _log_norm(self):
        """The log normalising constant of the half-Student-t, computed once per prior (its
        five scalar calls were a third of :meth:`logpdf` on 60 points, measured)."""
        nu, s = self.nu, self.scale
        return (
            np.log(2)
            + gammaln((nu + 1) / 2)
            - gammaln(nu / 2)
            - 0.5 * np.log(nu * np.pi)
            - np.log(s)
        )

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at ``x > 0``."""
        x = np.asarray(x, dtype=float)
        s = self.scale
        if self.kind == "half_normal":
            return np.log(2) - 0.5 * _LOG2PI - np.log(s) - 0.5 * (x / s) ** 2
        nu = self.nu
        return self._log_norm - (nu + 1) / 2 * np.log1p((x / s) ** 2 / nu)

    def logpdf_log_value(self, u: np.ndarray) -> np.ndarray:
        """The log density of :meth:`logpdf_log` without its derivative."""
        u = np.asarray(u, dtype=float)
        return self.logpdf(np.exp(u)) + u

    def logpdf_log(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log density of ``u = log x`` (Jacobian included) and its derivative in ``u``."""
        u = np.asarray(u, dtype=float)
        x = np.exp(u)
        lp = self.logpdf(x) + u
        r = (x / self.scale) ** 2
        if self.kind == "half_normal":
            g = 1.0 - r
        else:
            g = 1.0 - (self.nu + 1) * (r / self.nu) / (1 + r / self.nu)
        return lp, g

    def to_pymc(self, name: str, **kwargs):
        """Create the matching PyMC random variable (inside a model context)."""
        import pymc as pm

        if self.kind == "half_normal":
            return pm.HalfNormal(name, sigma=self.scale, **kwargs)
        return pm.HalfStudentT(name, nu=self.nu, sigma=self.scale, **kwargs)


@dataclasses.dataclass(frozen=True)
class SuffStats:
    """Sufficient statistics ``A'A``, ``A'y``, ``y'y`` and ``n`` of a linear model."""

    AtA: np.ndarray
    Aty: np.ndarray
    yty: float
    n: int


def suff_stats(A: np.ndarray, y: np.ndarray) -> SuffStats:
    """Compute :class:`SuffStats` of design ``A`` (n x d) and response ``y`` (n,)."""
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    return SuffStats(A.T @ A, A.T @ y, float(y @ y), int(len(y)))


def batched_posterior(
    ss: SuffStats,
    sigma: np.ndarray,
    prec: np.ndarray,
    logdet_prec: np.ndarray,
    prior_mean: np.ndarray | None = None,
    *,
    want_chol: bool = False,
):
    """Log marginal likelihood and conditional mean for a batch of hyperparameters.

    Parameters
    ----------
    ss : SuffStats
        Sufficient statistics of ``A`` (n x d) and ``y``.
    sigma : numpy.ndarray
        ``(k,)`` residual standard deviations.
    prec : numpy.ndarray
        Prior precision of the coefficients: ``(k, d)`` (diagonal) or ``(k, d, d)``.
    logdet_prec : numpy.ndarray
        ``(k,)`` log-determinant of the proper part of the prior precision.
    prior_mean : numpy.ndarray, optional
        ``(d,)`` prior mean (default 0).
    want_chol : bool
        Also return the Cholesky factors of ``M``.

    Returns
    -------
    logml : numpy.ndarray
        ``(k,)`` log p(y | h).
    mean : numpy.ndarray
        ``(k, d)`` conditional posterior mean of the coefficients.
    L : numpy.ndarray
        ``(k, d, d)`` Cholesky factors of ``M`` (only if ``want_chol``).
    """
    sigma = np.atleast_1d(np.asarray(sigma, dtype=float))
    k = sigma.shape[0]
    d = ss.AtA.shape[0]
    s2 = sigma**2
    M = ss.AtA[None, :, :] / s2[:, None, None]
    if prec.ndim == 2:
        M = M.copy()
        idx = np.arange(d)
        M[:, idx, idx] += prec
    else:
        M = M + prec
    b = ss.Aty[None, :] / s2[:, None]
    quad0 = ss.yty / s2
    if prior_mean is not None:
        m0 = np.asarray(prior_mean, dtype=float)
        Pm0 = prec * m0[None, :] if prec.ndim == 2 else prec @ m0
        b = b + Pm0
        quad0 = quad0 + np.einsum("kd,d->k", Pm0, m0)
    L = np.linalg.cholesky(M)
    w = np.linalg.solve(L, b[:, :, None])[:, :, 0]  # L w = b
    mean = np.linalg.solve(np.swapaxes(L, 1, 2), w[:, :, None])[:, :, 0]
    logdet_M = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1)
    logml = (
        -0.5 * ss.n * (_LOG2PI + np.log(s2))
        + 0.5 * logdet_prec
        - 0.5 * logdet_M
        - 0.5 * (quad0 - np.einsum("kd,kd->k", w, w))
    )
    assert logml.shape == (k,)
    if want_chol:
        return logml, mean, L
    return logml, mean


def draw_conditional(mean: np.ndarray, L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw ``c ~ N(mean, M^-1)`` given the Cholesky factor ``L`` of ``M`` (batched)."""
    z = rng.standard_normal(mean.shape)
    # c = mean + L'^{-1} z
    return mean + np.linalg.solve(np.swapaxes(L, 1, 2), z[:, :, None])[:, :, 0]
