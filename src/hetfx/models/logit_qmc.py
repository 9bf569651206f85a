"""Deterministic engine of the logit lambda model: quadrature over sigma_theta, randomised
quasi-Monte Carlo importance sampling given it.

The model of :mod:`hetfx.models.bernoulli`, written non-centred,
``lambda = Z gamma + sigma_theta * z`` with ``z ~ N(0, I)``, is for a fixed ``sigma_theta``
a logistic regression on ``c = (beta, gamma, z)`` with the linear predictor
``eta = A(sigma_theta) c`` and a Gaussian prior that does not depend on ``sigma_theta``; its
conditional posterior is log-concave. The engine

1. integrates ``sigma_theta`` by the trapezoid rule on ``K + 1`` equispaced nodes
   ``0, h, ..., K h``. The marginal posterior density of ``sigma_theta`` is (extended to
   negative values) an even analytic function, so the trapezoid rule with half weight at 0
   converges geometrically; ``K h`` is where the Laplace approximation of the log marginal
   density has fallen ``QMC_TAIL`` below its maximum;
2. at every node finds the conditional mode of ``c`` by Newton's method; a pilot of
   ``2**m`` points from the conditional Laplace (Gaussian) approximation moves it to the
   pilot's posterior mean and scales it by the root mean square Mahalanobis radius of the
   weighted pilot (the posterior is skewed: this halves the variance of the weights); the
   ``2**m`` points of the proposal come from one fixed scrambled Sobol set (the same
   standard normal points at every node, scramble seed ``seed``);
3. weights every point by ``node weight x prior(sigma_theta) x p(y, c | sigma_theta) /
   q(c)``: the pooled self-normalised weights estimate the joint posterior, and a node's mean
   weight is its importance-sampling estimate of ``p(y | sigma_theta)``.

Every likelihood evaluation runs over the distinct rows ``(X_i, T_i, g_i)`` with their
(weighted) counts of ones and of rows, and the AMEs over the distinct ``(X_i, g_i)``: with
discrete covariates a fit of thousands of rows costs what one of a few dozen does (5,592 rows
in 7 cells: 14 distinct rows, 1-2 s for the default 25 x 2**12 points). Their count is
the smallest power of two that keeps the Monte Carlo SE of every cell's AME median below 2% of
its posterior SD and that of the 95% bounds below 3% on a Broockman-sized binary experiment
(measured: 1.1-1.2% and 2.8%; 2**11 points give 1.8% and 4.2%).

Summaries (AMEs, lambda, theta, gamma, beta) are weighted quantiles that interpolate the
weighted empirical CDF (:func:`hetfx.models.varying_slopes.weighted_quantiles`), continuous in
the points and weights, so a last-bit change of the arithmetic (another CPU) moves them by
rounding, not by a draw; quantiles of ``sigma_theta`` come from the sinc interpolant of the
node masses (:func:`hetfx.inference.sinc_quantiles`). The Pareto k-hat (arviz) of the
weights relative to their node's mean, pooled over the nodes holding at least 0.1% of the
posterior, gates the fit. Monte Carlo standard errors of every quantile follow from the
delta method for self-normalised importance sampling (conservative for scrambled Sobol
points, whose error is smaller than that of independent draws).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy import linalg, special
from scipy.special import expit
from scipy.stats import qmc

from hetfx.inference import GROUP_QUANTILES, SamplerDiagnosticsError, sinc_quantiles
from hetfx.models.gaussian import ScalePrior
from hetfx.models.varying_slopes import pareto_khat, systematic_resample, weighted_quantiles

__all__ = ["QMC_NODES", "QMC_M", "QMC_TAIL", "fit_qmc", "quantile_mcse"]

#: Nodes of the sigma_theta quadrature (including sigma_theta = 0).
QMC_NODES = 25
#: log2 of the Sobol points per node.
QMC_M = 12
#: The grid ends where the Laplace log marginal density of sigma_theta is this far below
#: its maximum (mass beyond: about exp(-QMC_TAIL)).
QMC_TAIL = 15.0
#: Nodes holding less than this share of the posterior are left out of the summaries (their
#: total effect on any summary is below 1e-15 of its range) and of the k-hat gate.
_NEGLIGIBLE = 1e-15
_KHAT_MASS = 1e-3
_PROBS = np.array([0.5, *GROUP_QUANTILES.values()])


def _softplus_dot_py(eta, N, out):  # pragma: no cover - compiled by numba
    """``out[s] -= sum_k N_k log(1 + exp(eta[s, k]))`` (no temporaries)."""
    for s in range(eta.shape[0]):
        acc = 0.0
        for k in range(eta.shape[1]):
            x = eta[s, k]
            acc += N[k] * (max(x, 0.0) + math.log1p(math.exp(-abs(x))))
        out[s] -= acc


try:  # numba ships with pytensor; without it the log-likelihood uses numpy
    import numba

    #: compiled once per machine (cached beside this module), reused by every fit
    _softplus_dot = numba.njit(cache=True)(_softplus_dot_py)
except ImportError:  # pragma: no cover
    _softplus_dot = None


class _Problem:
    """The logistic regression given sigma_theta: ``eta = A(s) c``, ``c = (beta, gamma, z)``.

    Rows that share ``(X_i, T_i, g_i)`` share ``eta``: they enter as one distinct row with
    the (weighted) counts of its ones ``n1`` and of all its rows ``N``, and the
    log-likelihood is ``sum_k n1_k eta_k - N_k log(1 + exp(eta_k))``. With discrete
    covariates the cost of every evaluation then grows with the number of distinct rows,
    not of observations (Broockman's 5,592 legislators in 7 cells: 14 rows).
    """

    def __init__(self, X, treat, group, Z, y, beta_sd, gamma_sd, weights):
        from hetfx.models.bernoulli import distinct_rows

        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
        rows, inv = distinct_rows(X, treat, group)
        k = len(rows)
        self.p = X.shape[1]
        self.G, self.q = Z.shape
        self.X, self.T = rows[:, : self.p], rows[:, self.p]
        self.g = rows[:, self.p + 1].astype(np.int64)
        self.n1 = np.bincount(inv, weights=w * y, minlength=k)
        self.N = np.bincount(inv, weights=w, minlength=k)
        self.n = k
        self.dim = self.p + self.q + self.G
        self.prec = np.concatenate(
            [beta_sd**-2.0, np.full(self.q, gamma_sd**-2.0), np.ones(self.G)]
        )
        self._base = np.zeros((k, self.dim))
        self._base[:, : self.p] = self.X
        self._base[:, self.p : self.p + self.q] = self.T[:, None] * Z[self.g]
        self._col = self.p + self.q + self.g

    def design(self, s: float) -> np.ndarray:
        A = self._base.copy()
        A[np.arange(self.n), self._col] = s * self.T
        return A

    def loglik(self, C: np.ndarray, A: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """``sum_i w_i log p(y_i | c)`` for every row of ``C``."""
        out = C @ (A.T @ self.n1)
        chunk = max(1, min(chunk, 2**22 // self.n))
        for i in range(0, len(C), chunk):
            eta = C[i : i + chunk] @ A.T
            if _softplus_dot is not None:
                _softplus_dot(eta, self.N, out[i : i + chunk])
            else:
                out[i : i + chunk] -= np.logaddexp(0.0, eta) @ self.N
        return out

    def logpost(self, C: np.ndarray, A: np.ndarray) -> np.ndarray:
        """Log joint density of ``(y, c)`` given sigma_theta, up to a constant that does not
        depend on sigma_theta."""
        return self.loglik(C, A) - 0.5 * (C * C) @ self.prec

    def mode(self, A: np.ndarray, c0: np.ndarray, tol: float = 1e-10, max_iter: int = 100):
        """Newton's method (step halving if the log density would fall) to the conditional
        mode; returns the mode and the Cholesky factor of the negative Hessian there."""
        c = c0.copy()
        f = self.logpost(c[None], A)[0]
        for _ in range(max_iter):
            pi = expit(A @ c)
            grad = A.T @ (self.n1 - self.N * pi) - self.prec * c
            H = (A * (self.N * pi * (1.0 - pi))[:, None]).T @ A
            H[np.diag_indices_from(H)] += self.prec
            step = linalg.cho_solve(linalg.cho_factor(H, lower=True), grad)
            t = 1.0
            while True:
                cn = c + t * step
                fn = self.logpost(cn[None], A)[0]
                if fn >= f - 1e-12 * abs(f) or t < 1e-6:
                    break
                t *= 0.5
            c, f = cn, fn
            if np.max(np.abs(t * step)) < tol:
                break
        else:
            raise RuntimeError(
                f"Newton's method found no conditional mode in {max_iter} iterations"
            )
        pi = expit(A @ c)
        H = (A * (self.N * pi * (1.0 - pi))[:, None]).T @ A
        H[np.diag_indices_from(H)] += self.prec
        return c, np.linalg.cholesky(H), f


def _laplace_log_marginal(pb: _Problem, prior: ScalePrior, s: float, c0: np.ndarray):
    """Laplace approximation of ``log p(s | y)`` (up to a constant) and the mode."""
    c, L, f = pb.mode(pb.design(s), c0)
    return float(prior.logpdf(s) + f - np.sum(np.log(np.diag(L)))), c


def _grid_end(pb: _Problem, prior: ScalePrior, tail: float) -> float:
    """Where the Laplace log marginal density of sigma_theta has fallen ``tail`` below its
    maximum (linear interpolation between pilot points 0.02 * 1.25**j)."""
    c = np.zeros(pb.dim)
    s_prev, l_prev = 0.0, None
    best = -np.inf
    for j in range(80):
        s = 0.02 * 1.25**j
        lm, c = _laplace_log_marginal(pb, prior, s, c)
        best = max(best, lm)
        if l_prev is not None and lm < best - tail:
            a = (l_prev - (best - tail)) / (l_prev - lm)
            return s_prev + a * (s - s_prev)
        s_prev, l_prev = s, lm
    raise RuntimeError("the posterior of sigma_theta has no upper tail below 0.02 * 1.25**79")


def quantile_mcse(x: np.ndarray, w: np.ndarray, probs, q: np.ndarray | None = None) -> np.ndarray:
    """Monte Carlo SE of weighted quantiles (delta method for self-normalised importance
    sampling): ``sqrt(sum_i w_i^2 (1{x_i <= q} - p)^2) / f(q)`` with ``w`` normalised and the
    density ``f`` at the quantile from the quantiles at ``p -+ delta``,
    ``delta = min(0.02, p / 2, (1 - p) / 2)``.
    """
    probs = np.asarray(probs, dtype=float)
    if q is None:
        q = weighted_quantiles(x, w, probs)
    w = w / w.sum()
    out = np.empty(len(probs))
    for i, (p, qi) in enumerate(zip(probs, q, strict=True)):
        dlt = min(0.02, p / 2, (1 - p) / 2)
        lo, hi = weighted_quantiles(x, w, [p - dlt, p + dlt])
        dens = 2 * dlt / (hi - lo) if hi > lo else np.inf
        out[i] = np.sqrt(np.sum(w * w * ((x <= qi) - p) ** 2)) / dens
    return out


def _normals(dim: int, m: int, seed: int, stream: int):
    """``2**m`` standard normal points (inverse CDF of a scrambled Sobol set) and their log
    density without its constant."""
    U = qmc.Sobol(dim, scramble=True, seed=np.random.default_rng([seed, stream])).random_base2(m)
    E = special.ndtri(np.clip(U, 2.0**-53, 1.0 - 2.0**-53))
    return E, -0.5 * np.sum(E * E, axis=1)


def _summaries(x: np.ndarray, w: np.ndarray, probs) -> tuple[np.ndarray, np.ndarray]:
    """Weighted quantiles ``(len(probs), k)`` of every column of ``x`` (as
    :func:`~hetfx.models.varying_slopes.weighted_quantiles`) and their MCSEs (as
    :func:`quantile_mcse`), one sort per column."""
    probs = np.asarray(probs, dtype=float)
    w = w / np.sum(w)
    dlt = np.minimum(0.02, np.minimum(probs, 1 - probs) / 2)
    k = x.shape[1]
    qs = np.empty((len(probs), k))
    se = np.empty_like(qs)
    for j in range(k):
        o = np.argsort(x[:, j], kind="stable")
        xs, ws = x[o, j], w[o]
        c = np.cumsum(ws) - 0.5 * ws
        qs[:, j] = np.interp(probs, c, xs)
        lo, hi = np.interp(probs - dlt, c, xs), np.interp(probs + dlt, c, xs)
        c2 = np.concatenate([[0.0], np.cumsum(ws * ws)])
        below = c2[np.searchsorted(xs, qs[:, j], side="right")]
        var = below * (1 - probs) ** 2 + (c2[-1] - below) * probs**2
        se[:, j] = np.sqrt(var) * (hi - lo) / (2 * dlt)
    return qs, se


def fit_qmc(
    X: np.ndarray,
    treat: np.ndarray,
    group: np.ndarray,
    Z: np.ndarray,
    y: np.ndarray,
    beta_sd: np.ndarray,
    gamma_sd: float,
    prior: ScalePrior,
    weights: np.ndarray | None,
    *,
    n_draws: int,
    seed: int,
    qmc_m: int = QMC_M,
    n_nodes: int = QMC_NODES,
    tail: float = QMC_TAIL,
    max_pareto_k: float = 0.7,
) -> dict:
    """Fit the logit lambda model by quadrature over sigma_theta and RQMC importance sampling.

    Parameters
    ----------
    X, treat, group, Z, y : numpy.ndarray
        Outcome design ``(n, p)``, 0/1 treatment and outcome ``(n,)``, group codes ``(n,)``,
        heterogeneity design ``(G, q)``.
    beta_sd : numpy.ndarray
        ``(p,)`` prior SDs of beta.
    gamma_sd : float
        Prior SD of gamma.
    prior : ScalePrior
        Prior of sigma_theta.
    weights : numpy.ndarray or None
        Observation weights (likelihood of row i raised to ``w_i``; weighted group AMEs).
    n_draws : int
        Posterior draws returned (systematic resampling with fixed uniforms).
    seed : int
        Scramble seed of the Sobol points (and of the draws' order).
    qmc_m, n_nodes, tail : int, int, float
        ``2**qmc_m`` points per node, nodes of the sigma_theta grid, where it ends.
    max_pareto_k : float
        The fit fails (:class:`~hetfx.inference.SamplerDiagnosticsError`) when the Pareto
        k-hat of the weights (relative to their node's mean, pooled over the nodes holding at
        least 0.1% of the posterior) exceeds this.

    Returns
    -------
    dict
        ``draws`` (beta, gamma, sigma_theta, theta, lambda, ame), ``summaries`` (tidy
        quantiles and their MCSEs) and ``info`` (nodes, masses, k-hats, timings).
    """
    if n_nodes < 3 or qmc_m < 4:
        raise ValueError("need n_nodes >= 3 and qmc_m >= 4")
    t0 = time.perf_counter()
    pb = _Problem(X, treat, group, Z, y, np.asarray(beta_sd, float), float(gamma_sd), weights)
    s_max = _grid_end(pb, prior, tail)
    t_setup = time.perf_counter()
    nodes = np.linspace(0.0, s_max, n_nodes)
    h = nodes[1] - nodes[0]
    trap = np.full(n_nodes, h)
    trap[0] = 0.5 * h
    C_all, lw = _importance_points(pb, nodes, qmc_m, seed)
    t1 = time.perf_counter()
    gate = _node_weights(lw, nodes, trap, prior, max_pareto_k)
    mass, W = gate["mass"], gate["W"]
    M = 2**qmc_m
    keep = mass >= _NEGLIGIBLE
    Ck = C_all[keep].reshape(-1, pb.dim)
    wk = W[keep].ravel()
    sk = np.repeat(nodes[keep], M)
    p, q = pb.p, pb.q
    beta, gamma, z = Ck[:, :p], Ck[:, p : p + q], Ck[:, p + q :]
    theta = sk[:, None] * z
    lam = gamma @ Z.T + theta
    from hetfx.models.bernoulli import group_ame

    ame = group_ame(beta, lam, X, group, weights=weights)
    summ = _weighted_summaries(
        {"ame": ame, "lambda": lam, "beta": beta, "gamma": gamma}, wk, sk, nodes, mass
    )
    # posterior draws: systematic resampling with fixed uniforms, in a fixed shuffled order
    rng = np.random.default_rng([seed, 1])
    idx = systematic_resample(wk, n_draws)[rng.permutation(n_draws)]
    draws = {
        "beta": beta[idx],
        "gamma": gamma[idx],
        "sigma_theta": sk[idx],
        "theta": theta[idx],
        "lambda": lam[idx],
        "ame": ame[idx],
    }
    t2 = time.perf_counter()
    info = {
        "nodes": nodes,
        "node_mass": mass,
        "node_khat": gate["khat"],
        "pareto_k": gate["k_max"],
        "ess": gate["ess"],
        "points": int(W.size),
        "edge_mass": float(mass[-1]),
        "setup_seconds": t_setup - t0,
        "importance_seconds": t1 - t_setup,
        "summary_seconds": t2 - t1,
    }
    # the weighted sample itself, for summaries at other probabilities (same interpolation)
    weighted = {"w": wk, "ame": ame, "lambda": lam}
    return {"draws": draws, "summaries": summ, "weighted": weighted, "info": info}


def _importance_points(
    pb: _Problem, nodes: np.ndarray, qmc_m: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every node's ``2**qmc_m`` proposal points and their log importance weights."""
    M = 2**qmc_m
    E, logq0 = _normals(pb.dim, qmc_m, seed, 0)
    E1, logq1 = _normals(pb.dim, qmc_m, seed, 1)
    C_all = np.empty((len(nodes), M, pb.dim))
    lw = np.empty((len(nodes), M))
    c = np.zeros(pb.dim)
    for k, s in enumerate(nodes):
        A = pb.design(s)
        c, L, _ = pb.mode(A, c)
        # pilot: the Laplace approximation N(mode, (L L')^-1); the proposal is the same
        # Gaussian moved to the pilot's estimate of the conditional posterior mean and
        # scaled by its root mean square Mahalanobis radius (the posterior is skewed and
        # slightly wider than the Laplace approximation: this halves the variance of the
        # weights)
        C = c + linalg.solve_triangular(L, E1.T, lower=True, trans="T").T
        lw1 = pb.logpost(C, A) - logq1
        w1 = np.exp(lw1 - np.max(lw1))
        w1 /= np.sum(w1)
        mu = w1 @ C
        R = (C - mu) @ L
        scale = np.sqrt(w1 @ np.sum(R * R, axis=1) / pb.dim)
        C = mu + scale * linalg.solve_triangular(L, E.T, lower=True, trans="T").T
        # log p(y, c | s) - log q(c); constants common to every node dropped
        lw[k] = pb.logpost(C, A) - (logq0 + np.sum(np.log(np.diag(L))) - pb.dim * np.log(scale))
        C_all[k] = C
    return C_all, lw


def _node_weights(
    lw: np.ndarray, nodes: np.ndarray, trap: np.ndarray, prior: ScalePrior, max_pareto_k: float
) -> dict:
    """Node masses and pooled self-normalised weights; fails when the k-hat gate does.

    Returns ``mass``, ``W`` (the weights, shape of ``lw``), ``khat`` (per node), ``k_max``
    (the gated, pooled k-hat) and ``ess`` (of the weights).
    """
    M = lw.shape[1]
    khat = np.array([pareto_khat(lw[k]) for k in range(len(nodes))])
    log_ev = special.logsumexp(lw, axis=1) - np.log(M)  # node evidence, up to a constant
    log_mass = np.log(trap) + prior.logpdf(nodes) + log_ev
    mass = np.exp(log_mass - special.logsumexp(log_mass))
    LW = (np.log(trap) + prior.logpdf(nodes))[:, None] + lw
    W = np.exp(LW - special.logsumexp(LW))
    ess = float(1.0 / np.sum(W * W))
    # the gate: k-hat of the weights relative to their node's mean, pooled over the nodes
    # that hold the posterior (one node's k-hat rests on its few largest weights, and a
    # near-perfect proposal's bounded weights can then fit any shape)
    gated = mass >= _KHAT_MASS
    k_max = pareto_khat((lw[gated] - log_ev[gated, None]).ravel())
    if not k_max <= max_pareto_k:
        worst = int(np.flatnonzero(gated)[np.argmax(khat[gated])])
        raise SamplerDiagnosticsError(
            f"qmc fit failed: Pareto k-hat of the importance weights {k_max:.2f} > "
            f"{max_pareto_k} (largest at sigma_theta = {nodes[worst]:.3g}: "
            f"{khat[worst]:.2f}, node mass {mass[worst]:.2g}; weight ESS {ess:.0f} of "
            f"{W.size}); the Laplace proposal misses the conditional posterior. Advice: use "
            "engine='nutpie'."
        )
    return {"mass": mass, "W": W, "khat": khat, "k_max": k_max, "ess": ess}


def _weighted_summaries(
    values: dict, wk: np.ndarray, sk: np.ndarray, nodes: np.ndarray, mass: np.ndarray
) -> dict:
    """Quantiles, means and SDs (with MCSEs) of every quantity and of sigma_theta."""
    summ = {}
    for name, x in values.items():
        qs, se = _summaries(x, wk, _PROBS)
        m = wk @ x
        summ[name] = {
            "quantiles": qs,
            "quantiles_se": se,
            "mean": m,
            "sd": np.sqrt(wk @ (x - m) ** 2),
            "mean_se": np.sqrt((wk * wk) @ (x - m) ** 2),
        }
    # sigma_theta: the sinc interpolant of the node masses mirrored to negative values
    full = np.concatenate([-nodes[:0:-1], nodes])
    fm = np.concatenate([mass[:0:-1], [2 * mass[0]], mass[1:]])  # node 0 counted once
    s_q = sinc_quantiles(full, fm, 0.5 + 0.5 * _PROBS)
    s_mean = float(mass @ nodes)
    summ["sigma_theta"] = {
        "quantiles": s_q[:, None],
        "quantiles_se": quantile_mcse(sk, wk, _PROBS)[:, None],
        "mean": np.array([s_mean]),
        "sd": np.array([np.sqrt(mass @ (nodes - s_mean) ** 2)]),
        "mean_se": np.array([np.sqrt((wk * wk) @ (sk - s_mean) ** 2)]),
    }
    return summ
