"""Collapsed varying-slopes engine: analytic gradient, log density against an independent
dense computation, stable tails, exact conditional draws, and agreement with the full
PyMC/nutpie model on simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hetfx.models.gaussian import ScalePrior
from hetfx.models.varying_slopes import (
    CollapsedVaryingSlopes,
    fit_varying_slopes,
    prepare_data,
)
from hetfx.priors import Prior


def gradient_check(cm: CollapsedVaryingSlopes, h: np.ndarray, eps: float = 1e-6) -> float:
    """Largest absolute difference between analytic and finite-difference gradients."""
    _, g = cm.logp_and_grad(h)
    fd = np.empty_like(g)
    for i in range(len(h)):
        e = np.zeros_like(h)
        e[i] = eps
        fd[i] = (cm.logp_and_grad(h + e)[0] - cm.logp_and_grad(h - e)[0]) / (2 * eps)
    return float(np.max(np.abs(fd - g)))


def simulate(sizes=(12,), n=300, seed=0, sd=(0.4, 0.3), rho=0.3, sigma=0.8):
    """Simulated data: treatment, one control, one correlated (u0, u1) per factor."""
    rng = np.random.default_rng(seed)
    treat = rng.integers(0, 2, n).astype(float)
    x = rng.normal(size=n)
    factors = pd.DataFrame({f"f{k}": rng.integers(0, G, n) for k, G in enumerate(sizes)})
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    y = 0.5 + 0.3 * x + 0.4 * treat + rng.normal(0, sigma, n)
    for f, G in zip(factors, sizes, strict=True):
        u = rng.multivariate_normal(np.zeros(2), cov, G)
        y += u[factors[f], 0] + u[factors[f], 1] * treat
    X = pd.DataFrame({"Intercept": 1.0, "x": x, "treat": treat})
    return y, treat, X, factors


def collapsed(sizes, intercept_prior=None, seed=0, **kw):
    y, treat, X, factors = simulate(sizes, seed=seed)
    d = prepare_data(y, treat, X, factors, None, None)
    args = dict(
        b_sd=0.7,
        intercept_prior=intercept_prior or Prior.normal(1.0),
        sd_prior=kw.get("sd_prior", ScalePrior("half_normal", 1.0)),
        sigma_prior=kw.get("sigma_prior", ScalePrior.brms_default()),
        lkj_eta=kw.get("lkj_eta", 1.0),
        center=True,
    )
    return CollapsedVaryingSlopes(d, **args), d


def dense_log_posterior(cm: CollapsedVaryingSlopes, h: np.ndarray) -> float:
    """log p(y | h) p(h) from the marginal y ~ N(A m0, s2 I + A P^-1 A') (independent of the
    kernel; Gaussian intercept prior so P is invertible)."""
    sigma, s0, s1, rho = cm.unpack(h)
    P = cm._prec(s0, s1, rho)
    A = cm._A
    cov = sigma**2 * np.eye(len(cm._y)) + A @ np.linalg.solve(P, A.T)
    lp = stats.multivariate_normal(A @ cm.m0, cov).logpdf(cm._y)
    lp += cm.sigma_prior.logpdf(sigma) + h[0]
    hk = h[1:].reshape(cm.K, 3)
    lp += np.sum(cm.sd_prior.logpdf(np.exp(hk[:, :2])) + hk[:, :2])
    lp += np.sum(cm.lkj_eta * np.log1p(-(rho**2)))  # LKJ(eta) and the tanh Jacobian
    return float(lp)


def design(cm: CollapsedVaryingSlopes, d) -> None:
    """Attach the full design A and y to ``cm`` for the dense reference."""
    X = d.X.to_numpy(dtype=float) - cm.xmean
    blocks = [X]
    for f in d.factors:
        B = np.zeros((len(d.y), 2 * len(d.levels[f])))
        B[np.arange(len(d.y)), 2 * d.codes[f]] = 1.0
        B[np.arange(len(d.y)), 2 * d.codes[f] + 1] = d.treat
        blocks.append(B)
    cm._A, cm._y = np.hstack(blocks), d.y


@pytest.mark.parametrize("sizes", [(12,), (2, 7, 3)])
@pytest.mark.parametrize("intercept_prior", [Prior.flat(), Prior.normal(1.0)])
@pytest.mark.parametrize(
    "sd_prior", [ScalePrior("half_normal", 1.0), ScalePrior("half_student_t", 2.5, 3.0)]
)
def test_gradient_matches_finite_differences(sizes, intercept_prior, sd_prior):
    cm, _ = collapsed(sizes, intercept_prior, sd_prior=sd_prior, lkj_eta=2.0)
    hm = cm.mode()
    rng = np.random.default_rng(1)
    for h in [hm, *(hm + 0.5 * rng.standard_normal(cm.ndim) for _ in range(4))]:
        lp, g = cm.logp_and_grad(h)
        assert np.isfinite(lp)
        assert gradient_check(cm, h, eps=1e-5) < 1e-4 * max(1.0, np.abs(g).max())


@pytest.mark.parametrize("sizes", [(9,), (2, 5, 3)])
def test_log_density_equals_dense_marginal_likelihood(sizes):
    cm, d = collapsed(sizes)
    design(cm, d)
    rng = np.random.default_rng(2)
    hm = cm.mode()
    diffs = [
        cm.logp_and_grad(h)[0] - dense_log_posterior(cm, h)
        for h in [hm, *(hm + 0.7 * rng.standard_normal(cm.ndim) for _ in range(5))]
    ]
    # equal up to a constant (the kernel drops -n/2 log 2 pi and the fixed b prior terms)
    assert np.ptp(diffs) < 1e-7


@pytest.mark.parametrize("sizes", [(12,), (2, 7, 3)])
def test_left_tail_of_log_sds_is_finite_and_smooth(sizes):
    """No artificial wall where NUTS goes (a -inf at log s = -30 made divergences): the
    density decays like exp(log s) and its gradient tends to 1 + prior terms."""
    cm, _ = collapsed(sizes)
    hm = cm.mode()
    for j in [i for i in range(1, cm.ndim) if i % 3 != 0]:
        for v in (-30.5, -60.0, -120.0):
            h = hm.copy()
            h[j] = v
            lp, g = cm.logp_and_grad(h)
            assert np.isfinite(lp) and np.all(np.isfinite(g))
            assert g[j] == pytest.approx(1.0, abs=1e-6)
            assert gradient_check(cm, h, eps=1e-5) < 1e-4
        h = hm.copy()
        h[j] = -60.0
        h2 = h.copy()
        h2[j] = -61.0
        assert cm.logp_and_grad(h)[0] - cm.logp_and_grad(h2)[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("sizes", [(10,), (2, 6, 3)])
def test_conditional_draws_are_exact(sizes):
    cm, _ = collapsed(sizes)
    h = cm.mode() + 0.2
    sigma, s0, s1, rho = cm.unpack(h)
    M = cm._prec(s0, s1, rho) + cm.ss.AtA / sigma**2
    mean = np.linalg.solve(M, cm.ss.Aty / sigma**2 + cm.Pm0)
    cov = np.linalg.inv(M)
    N = 40_000
    D = cm.draw_coefficients(np.tile(h, (N, 1)), np.random.default_rng(3))
    z = (D.mean(0) - mean) / np.sqrt(np.diag(cov) / N)
    assert np.abs(z).max() < 4.5
    sd_ratio = D.std(0) / np.sqrt(np.diag(cov))
    assert np.abs(sd_ratio - 1).max() < 0.03
    corr = np.corrcoef(D.T)
    corr_true = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.abs(corr - corr_true).max() < 0.03


def test_collapsed_fit_runs_with_at_most_a_stray_divergence():
    """NUTS on the collapsed density: at most two divergences, R-hat below 1.01, bulk ESS
    above 400.

    NUTS draws differ on another CPU, so the bounds are sized by measurement over 125 seeds
    (1-125) and the combined CPU emulation of tests/test_cross_cpu.py: one divergence in 4
    of 125 runs (3.2%: "no divergence" failed that often), never two (a Poisson rate of
    0.032 puts three or more at 6e-6); R-hat at most 1.0053, bulk ESS at least 1234."""
    y, treat, X, factors = simulate((12,), n=300, seed=4)
    fit = fit_varying_slopes(
        y, treat, X, factors, engine="collapsed", seed=1, intercept_prior=Prior.flat()
    )
    diag = fit.diagnostics().iloc[0]
    assert diag["divergences"] <= 2
    assert diag["max_r_hat"] < 1.01
    assert diag["min_ess_bulk"] > 400


@pytest.mark.slow
def test_collapsed_agrees_with_full_nutpie_engine():
    """Posterior medians of the effects (and SDs) of both engines agree within Monte Carlo
    error on simulated data with two crossed factors: 4 x 1.25 sd sqrt(2 / 400) (the MCSE of
    a difference of medians at an ESS of 400 each; the fits' ESS is larger).

    Both engines run NUTS, whose draws differ on another CPU; measured over 11 seeds (the
    test's and 1-10) and the combined CPU emulation of tests/test_cross_cpu.py: the largest
    |difference| was 0.26 of this bound (0.18 under the emulation), no divergence."""
    y, treat, X, factors = simulate((6, 3), n=240, seed=5, sd=(0.5, 0.5))
    profiles = factors.drop_duplicates().sort_values(list(factors.columns))
    contrast = pd.DataFrame({"treat": np.ones(len(profiles))})
    kw = dict(
        profiles=profiles,
        contrast=contrast,
        intercept_prior=Prior.normal(2.0),
        b_sd=1.0,
        seed=2,
        target_accept=0.9,
    )
    a = fit_varying_slopes(y, treat, X, factors, engine="collapsed", **kw)
    b = fit_varying_slopes(y, treat, X, factors, engine="nutpie", **kw)
    assert a.diagnostics().iloc[0]["divergences"] == 0
    ea = a.idata.posterior["effect"].values.reshape(-1, len(profiles))
    eb = b.idata.posterior["effect"].values.reshape(-1, len(profiles))
    # MC error of a median ~ 1.25 sd / sqrt(ESS); ESS >= 400 for either engine
    tol = 4 * 1.25 * np.sqrt(ea.var(0) / 400 + eb.var(0) / 400)
    assert np.all(np.abs(np.median(ea, 0) - np.median(eb, 0)) < tol)
    for v in ["sigma", "sd"]:
        va = a.idata.posterior[v].values.reshape(len(ea), -1)
        vb = b.idata.posterior[v].values.reshape(len(eb), -1)
        tol = 4 * 1.25 * np.sqrt(va.var(0) / 400 + vb.var(0) / 400)
        assert np.all(np.abs(np.median(va, 0) - np.median(vb, 0)) < tol)
