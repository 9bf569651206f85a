"""The exact engine's posterior of the published lambda model (``baselines="none"``): its
collapse against brute force, the mixture and sinc quantile solvers, linear combinations of
group effects, the coefficients and the draws. The engine's own tests (dense algebra, the
grid's quadrature error) are tests/test_exact_engine.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from hetfx.inference import mixture_moments, mixture_quantiles, sinc_quantiles
from hetfx.models.exact import BlockPosterior, fit_block_model
from hetfx.models.gaussian import ScalePrior
from hetfx.models.lambda_model import prepare_lambda_data
from hetfx.models.pooled import fit_exact_lambda, lambda_block_model

PRIOR = ScalePrior.brms_default()


def small_problem(seed: int = 0, G: int = 6, n: int = 60, Z: str = "additive"):
    """A small data set; group 0 has no treated row; Z additive, saturated or
    rank-deficient (a duplicated column)."""
    rng = np.random.default_rng(seed)
    a = np.arange(G) % 2
    cols = {"Intercept": np.ones(G), "a": a}
    if Z == "saturated":
        Zf = pd.DataFrame(
            np.tril(np.ones((G, G))),
            index=[f"g{i}" for i in range(G)],
            columns=[f"z{j}" for j in range(G)],
        )
    else:
        if Z == "deficient":
            cols["a_copy"] = a
        Zf = pd.DataFrame(cols, index=[f"g{i}" for i in range(G)])
    group = np.concatenate([np.arange(G), rng.integers(0, G, n - G)])
    treat = rng.integers(0, 2, n).astype(float)
    treat[group == 0] = 0.0
    X = pd.DataFrame({"Intercept": 1.0, "x": rng.normal(size=n)})
    y = (
        (0.3 + 0.4 * rng.normal(size=G))[group] * treat
        + 0.5 * X["x"].to_numpy()
        + rng.normal(size=n)
    )
    return prepare_lambda_data(y, treat, X, group, Zf)


def brute_force_logml(d, gamma_sd, beta_sd, sigma, sigma_theta):
    """log N(y; 0, sigma^2 I + A diag(prior variances) A') with A = [X, W Z, W]."""
    X = d.X.to_numpy(float)
    Z = d.Z.to_numpy(float)
    n, G = len(d.y), Z.shape[0]
    W = np.zeros((n, G))
    W[np.arange(n), d.group] = d.treat
    A = np.hstack([X, W @ Z, W])
    v = np.concatenate(
        [
            np.full(X.shape[1], beta_sd**2),
            np.full(Z.shape[1], gamma_sd**2),
            np.full(G, sigma_theta**2),
        ]
    )
    cov = sigma**2 * np.eye(n) + (A * v) @ A.T
    return stats.multivariate_normal(np.zeros(n), cov).logpdf(d.y)


def _published(d, gamma_sd=1.0, beta_sd=1.0):
    return lambda_block_model(
        d, "none", gamma_sd=gamma_sd, beta_sd=beta_sd, sigma_prior=PRIOR, sigma_theta_prior=PRIOR
    )


def _fit(d, **kw):
    return fit_exact_lambda(d.y, d.treat, d.X, d.group, d.Z, baselines="none", **kw)


@pytest.mark.parametrize("kind", ["additive", "saturated", "deficient"])
def test_log_marginal_likelihood_equals_brute_force(kind):
    d = small_problem(1, Z=kind)
    model = _published(d, 0.7, 0.5)
    for sigma, st in [(0.8, 0.3), (1.3, 1e-6), (0.5, 2.0)]:
        u = np.log([[sigma, st]])
        ours = model.logpost(u)[0] - model.log_prior(u)[0]
        assert abs(ours - brute_force_logml(d, 0.7, 0.5, sigma, st)) < 1e-9


def test_mixture_quantiles_solve_the_mixture_cdf():
    rng = np.random.default_rng(0)
    w = rng.random(7)
    mu = rng.normal(size=(7, 5)) * 3
    sd = rng.uniform(0.05, 2, size=(7, 5))
    probs = [0.001, 0.025, 0.5, 0.9, 0.999]
    q = mixture_quantiles(w, mu, sd, probs)
    wn = w / w.sum()
    for i in range(5):
        cdf = lambda x, i=i: wn @ stats.norm.cdf(x, mu[:, i], sd[:, i])  # noqa: E731
        for j, p in enumerate(probs):
            ref = optimize.brentq(lambda x, p=p, cdf=cdf: cdf(x) - p, -50, 50, xtol=1e-14)
            assert abs(q[j, i] - ref) < 1e-10
    mean, sdev = mixture_moments(w, mu, sd)
    np.testing.assert_allclose(mean, wn @ mu)
    np.testing.assert_allclose(sdev**2, wn @ (sd**2 + mu**2) - mean**2)


def test_sinc_quantiles_are_exponentially_accurate():
    """A normal density known only at grid nodes (spacing 0.4 SD): quantiles to 1e-10."""
    nodes = np.arange(-40, 41) * 0.4
    mass = stats.norm.pdf(nodes, 0.3, 1.0) * 0.4
    probs = [0.025, 0.1, 0.5, 0.9, 0.975]
    np.testing.assert_allclose(
        sinc_quantiles(nodes, mass, probs), stats.norm.ppf(probs, 0.3, 1.0), rtol=0, atol=1e-10
    )


def test_linear_combinations_and_levels():
    d = small_problem(5, G=8, n=800)
    kw = dict(y=d.y, treat=d.treat, X=d.X, group=d.group, Z=d.Z)
    fit = fit_exact_lambda(**kw, baselines="none", chains=4, draws=2000, seed=3)
    ge = fit.group_effects(level=[0.9, 0.5])
    assert {"q05", "q95", "q25", "q75"} <= set(ge.columns)
    full = fit.summarise_lambda(quantiles=[0.5, 0.05, 0.95])
    np.testing.assert_allclose(full["q50"], ge["estimate"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(full["q05"], ge["q05"], rtol=0, atol=1e-10)
    # the identity as explicit weights, and a DataFrame with group labels as columns
    np.testing.assert_allclose(
        fit.summarise_lambda(np.eye(8)).to_numpy(),
        fit.summarise_lambda().to_numpy(),
        rtol=0,
        atol=1e-10,
    )
    W = pd.DataFrame(
        [[1, -1, 0, 0, 0, 0, 0, 0], [1 / 8] * 8], index=["g0 - g1", "mean"], columns=d.labels
    )
    comb = fit.summarise_lambda(W.iloc[:, ::-1], quantiles=[0.05, 0.5, 0.95])
    assert list(comb.index) == ["g0 - g1", "mean"]
    np.testing.assert_allclose(comb.loc["mean", "mean"], full["mean"].mean(), atol=1e-12)
    # against the draws: within Monte Carlo error
    lam = fit.idata.posterior["lambda"].values.reshape(-1, 8)
    draws = lam @ W.to_numpy().T
    n = len(draws)
    assert (np.abs(draws.mean(axis=0) - comb["mean"]) < 4.5 * comb["sd"] / np.sqrt(n)).all()
    np.testing.assert_allclose(draws.std(axis=0), comb["sd"], rtol=0.06)
    for p in (0.05, 0.5, 0.95):
        name = {0.05: "q05", 0.5: "q50", 0.95: "q95"}[p]
        assert (np.abs(np.quantile(draws, p, axis=0) - comb[name]) < 0.1 * comb["sd"]).all()


def test_coefs_are_exact_and_keep_the_draw_diagnostics():
    d = small_problem(6, G=8, n=800)
    fit = _fit(d, chains=4, draws=1000, seed=1)
    co = fit.coefs()
    assert list(co.columns) == [
        "equation",
        "term",
        "mean",
        "sd",
        "q025",
        "q975",
        "r_hat",
        "ess_bulk",
    ]
    assert list(co["equation"]) == ["effect"] * 2 + ["control"] * 2 + ["scale"] * 2
    post = fit.idata.posterior
    draws = np.concatenate(
        [
            post["gamma"].values.reshape(-1, 2),
            post["beta"].values.reshape(-1, 2),
            post["sigma"].values.reshape(-1, 1),
            post["sigma_theta"].values.reshape(-1, 1),
        ],
        axis=1,
    )
    n = len(draws)
    sd = co["sd"].to_numpy()
    assert (np.abs(draws.mean(axis=0) - co["mean"].to_numpy()) < 4.5 * sd / np.sqrt(n)).all()
    # the coefficients' 97.5% quantiles (the scales' draws sit on the grid's nodes: the
    # engine draws a node, not a point within its cell, so their quantiles move by up to half
    # a node spacing, while their exact quantiles interpolate the marginal between nodes)
    q975 = np.quantile(draws[:, :4], 0.975, axis=0)
    assert (np.abs(q975 - co["q975"].to_numpy()[:4]) < 0.15 * sd[:4]).all()
    assert (co["r_hat"] < 1.01).all() and (co["ess_bulk"] > 2000).all()


def test_draws_are_reproducible_and_rounded():
    d = small_problem(7, G=8, n=500)
    a, b, c = (_fit(d, chains=2, draws=300, seed=s) for s in (9, 9, 10))
    la, lb, lc = (f.idata.posterior["lambda"].values for f in (a, b, c))
    np.testing.assert_array_equal(la, lb)
    assert not np.allclose(la, lc)
    # the coefficients and scales (whose R-hat and ESS are reported) are rounded to 40 bits
    for v in ("beta", "gamma", "sigma", "sigma_theta"):
        m, _ = np.frexp(a.idata.posterior[v].values)
        np.testing.assert_array_equal(m * 2.0**40, np.round(m * 2.0**40))


def test_vectorised_rhat_and_ess_equal_arviz():
    """rhat_ess (used by every fit's diagnostics) against arviz on autocorrelated chains of
    many shapes: one chain (R-hat undefined), odd draw counts, ties, a constant scalar."""
    import warnings

    import arviz as az
    import xarray as xr

    from hetfx.inference import rhat_ess

    rng = np.random.default_rng(5)
    for _ in range(20):
        c, n, k = int(rng.integers(1, 5)), int(rng.integers(4, 300)), 6
        x = rng.standard_normal((c, n, k))
        phi = rng.uniform(-0.5, 0.99, k)
        for t in range(1, n):
            x[:, t] = phi * x[:, t - 1] + x[:, t]
        x[..., 0] = np.round(x[..., 0])  # ties
        x[..., 1] = 2.0  # constant
        ds = xr.Dataset({"v": (("chain", "draw", "k"), x)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refs = (
                az.rhat(ds)["v"].values,
                az.ess(ds, method="bulk")["v"].values,
                az.ess(ds, method="tail")["v"].values,
            )
        for ours, ref in zip(rhat_ess(x), refs, strict=True):
            np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
            ok = ~np.isnan(ref)
            np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-10, atol=1e-10)


def test_results_do_not_depend_on_chunks():
    """The evaluation chunks of the collapse and of the mixtures are speed settings: the
    numbers are the same."""
    d = small_problem(3, G=40, n=800, Z="saturated")
    model = _published(d)
    u = np.column_stack([np.linspace(-0.5, 0.5, 101), np.linspace(-4, 1, 101)])
    ref = model.logpost(u, chunk=1000)
    for chunk in (1, 7, 16):
        np.testing.assert_allclose(model.logpost(u, chunk=chunk), ref, rtol=1e-14, atol=0)
    grid = fit_block_model(model, draws=0).grid
    probs = (0.5, 0.025, 0.975)
    base, small = BlockPosterior(model, grid), BlockPosterior(model, grid)
    for post in (base, small):
        post._cache.clear()  # not the grid's moments: computed again over the kept nodes
    small._chunks = lambda: (slice(i, i + 5) for i in range(0, len(grid.weights), 5))
    for what in ("effects", "coefs"):
        a, b = small.summarise(what, probs=probs), base.summarise(what, probs=probs)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-13)


def test_mixture_quantiles_converge_on_skewed_mixtures():
    """Quantiles of wide, skewed mixtures (a grid's mixture over sigma_theta) solve the CDF to
    the tolerance, including those whose Newton iterate lands on the end of its bracket."""
    from scipy.special import ndtr

    rng = np.random.default_rng(5)
    J, N = 400, 60
    w = np.exp(-0.5 * rng.normal(0, 2, J) ** 2)
    mu = rng.normal(0, 1, (J, N)) * np.linspace(0.01, 3, J)[:, None]
    sd = np.exp(rng.normal(-2, 1, (J, N)))
    probs = [0.5, 0.025, 0.05, 0.95, 0.975]
    q = mixture_quantiles(w, mu, sd, probs)
    wn = w / w.sum()
    for i, p in enumerate(probs):
        F = wn @ ndtr((q[i][None, :] - mu) / sd)
        dens = wn @ (stats.norm.pdf((q[i][None, :] - mu) / sd) / sd)
        # F(q) = p up to rounding; in x: within the tolerance 1e-12 (1 + |q|)
        assert np.all(np.abs(F - p) / dens <= 1e-12 * (1 + np.abs(q[i])) + 1e-15 / dens)


def _skewed_mixtures(seed: int, J: int = 300, N: int = 40):
    rng = np.random.default_rng(seed)
    w = np.exp(-0.5 * rng.normal(0, 2, J) ** 2)
    mu = rng.normal(0, 1, (J, N)) * np.linspace(0.01, 3, J)[:, None]
    sd = np.exp(rng.normal(-2, 1, (J, N)))
    return w, mu, sd


def test_compiled_mixture_quantiles_agree_with_the_numpy_solver(monkeypatch):
    """The compiled kernel (Taylor polynomial with a proven remainder) and the numpy
    fallback (Halley) solve the same quantiles to their tolerance, 1e-12 (1 + |x|), on
    skewed mixtures and on near-normal ones; leaving the components of weight zero in
    changes no bit."""
    import hetfx.inference as inf
    from hetfx.models import _mixtures

    if _mixtures.numba is None:
        pytest.skip("numba is not installed")
    probs = [0.5, 0.025, 0.05, 0.95, 0.975, 1e-6]
    rng = np.random.default_rng(3)
    cases = [_skewed_mixtures(1), _skewed_mixtures(2, J=50, N=7)]
    near_normal = (rng.random(200), rng.normal(0, 0.1, (200, 30)), rng.uniform(0.5, 1, (200, 30)))
    cases.append(near_normal)
    for w, mu, sd in cases:
        compiled = inf.mixture_quantiles(w, mu, sd, probs)
        monkeypatch.setattr(inf, "_NUMPY_QUANTILES", True)
        fallback = inf.mixture_quantiles(w, mu, sd, probs)
        monkeypatch.setattr(inf, "_NUMPY_QUANTILES", False)
        assert np.all(np.abs(compiled - fallback) <= 2e-12 * (1 + np.abs(fallback)))
    w, mu, sd = cases[0]
    padded = inf.mixture_quantiles(
        np.r_[w, 0.0, 0.0], np.r_[mu, mu[:2] + 5], np.r_[sd, sd[:2]], probs
    )
    assert np.array_equal(padded, inf.mixture_quantiles(w, mu, sd, probs))


def test_each_mixture_quantile_is_solved_on_its_own(monkeypatch):
    """A quantile's value does not depend on the other probabilities asked for, nor on the
    threads the mixtures are split over: the same bits."""
    import hetfx.inference as inf
    from hetfx.models import _mixtures

    if _mixtures.numba is None:
        pytest.skip("numba is not installed")
    w, mu, sd = _skewed_mixtures(4)
    probs = [0.5, 0.1, 0.025, 0.975, 0.05, 0.95, 0.9]
    allq = inf.mixture_quantiles(w, mu, sd, probs)
    some = inf.mixture_quantiles(w, mu, sd, [0.95, 0.5])
    assert np.array_equal(some, allq[[5, 0]])
    monkeypatch.setattr(inf, "_threads", lambda work: 3)
    assert np.array_equal(inf.mixture_quantiles(w, mu, sd, probs), allq)
