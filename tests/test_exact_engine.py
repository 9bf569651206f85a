"""The exact engine of every Gaussian model (:mod:`hetfx.models.exact`): its collapse against
dense linear algebra, its conditional moments and draws, and its grid's quadrature error.

The engine is deterministic (no random numbers anywhere but the draws), so every bound here
is a bound on rounding or quadrature error, not on Monte Carlo noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.stats import multivariate_normal

from hetfx.models.exact import GRIDS, BlockModel, fit_block_model
from hetfx.models.gaussian import ScalePrior

PRIOR = ScalePrior.brms_default()


def _data(G=12, per=30, seed=0):
    rng = np.random.default_rng(seed)
    n = G * per
    g = np.repeat(np.arange(G), per)
    T = rng.integers(0, 2, n).astype(float)
    Z = np.column_stack([np.ones(G), rng.integers(0, 2, G)]).astype(float)
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    lam = Z @ [0.2, 0.3] + rng.normal(0, 0.2, G)
    y = X @ [0.4, 0.1] + rng.normal(0, 0.3, G)[g] + lam[g] * T + rng.normal(size=n)
    A = np.hstack([X, T[:, None] * Z[g]])
    E = np.hstack([np.zeros((G, 2)), Z])
    return y, A, g, T, E


def _model(kind, y, A, g, T, E, coef_sd=(3.0, 2.0, 1.0, 1.5)):
    G = len(E)
    if kind == "b1":
        return BlockModel(
            y,
            A,
            g,
            T,
            n_groups=G,
            coef_sd=coef_sd,
            sigma_prior=PRIOR,
            block_priors=[PRIOR],
            effect_coefs=E,
        )
    R = np.column_stack([np.ones(len(y)), T])
    return BlockModel(
        y,
        A,
        g,
        R,
        n_groups=G,
        coef_sd=coef_sd,
        sigma_prior=PRIOR,
        block_priors=[PRIOR, PRIOR],
        correlated=kind == "corr",
        lkj_eta=2.0,
        effect_coefs=E,
    )


def _dense(model, R, A, y, g, u):
    """The joint Gaussian of (a, c) given the scales and the marginal likelihood, densely."""
    n, G, b, k = len(y), model.G, model.b, model.k
    Rf = np.zeros((n, G * b))
    for i in range(b):
        Rf[np.arange(n), b * g + i] = R[:, i]
    D = model._cov(np.atleast_2d(u))[0]
    P = np.block(
        [
            [np.diag(1 / np.asarray([3.0, 2.0, 1.0, 1.5]) ** 2), np.zeros((k, G * b))],
            [np.zeros((G * b, k)), np.kron(np.eye(G), np.linalg.inv(D))],
        ]
    )
    F = np.hstack([A, Rf])
    s2 = np.exp(2 * u[0])
    Q = F.T @ F / s2 + P
    cov = np.linalg.inv(Q)
    mean = cov @ F.T @ y / s2
    prior_cov = np.linalg.inv(P)
    marg = multivariate_normal(np.zeros(n), s2 * np.eye(n) + F @ prior_cov @ F.T).logpdf(y)
    return mean, cov, marg


@pytest.mark.parametrize("kind", ["b1", "b2", "corr"])
def test_collapse_equals_dense_algebra(kind):
    y, A, g, T, E = _data()
    model = _model(kind, y, A, g, T, E)
    R = T[:, None] if kind == "b1" else np.column_stack([np.ones(len(y)), T])
    u = np.array([0.05, -1.2, -0.9, 0.5][: model.ndim])
    mean, cov, marg = _dense(model, R, A, y, g, u)
    lp = model.logpost(u[None])[0] - model.log_prior(u[None])[0]
    assert lp == pytest.approx(marg, abs=1e-8)
    nd = model.factor(u[None])
    ma, sa = model.coef_moments(nd)
    np.testing.assert_allclose(ma[0], mean[:4], atol=1e-10)
    np.testing.assert_allclose(sa[0], np.sqrt(np.diag(cov)[:4]), atol=1e-10)
    # the group effects and an arbitrary sparse combination of a and the blocks
    G, b = model.G, model.b
    W = np.hstack([E, np.kron(np.eye(G), np.eye(b)[-1])])
    me, se = model.effect_moments(nd)
    np.testing.assert_allclose(me[0], W @ mean, atol=1e-10)
    np.testing.assert_allclose(se[0], np.sqrt(np.diag(W @ cov @ W.T)), atol=1e-10)
    rng = np.random.default_rng(1)
    V = sparse.random(5, W.shape[1], density=0.3, random_state=2).toarray() + rng.normal(
        size=(5, 1)
    ) * (np.arange(W.shape[1]) < 4)
    mc, sc = model.combo_moments(nd, V)
    np.testing.assert_allclose(mc[0], V @ mean, atol=1e-10)
    np.testing.assert_allclose(sc[0], np.sqrt(np.diag(V @ cov @ V.T)), atol=1e-10)
    # draws with zero noise are the conditional means; with unit noise they have its covariance
    a, c = model.draw(nd, np.zeros((1, 4)), np.zeros((1, G, b)), np.array([0]))
    np.testing.assert_allclose(np.concatenate([a[0], c[0].ravel()]), mean, atol=1e-10)


def test_draw_covariance_is_exact():
    """Draw ``i`` is linear in its normals: the map's Jacobian times its transpose is the
    conditional covariance (checked column by column with unit vectors)."""
    y, A, g, T, E = _data(G=4, per=20)
    model = _model("corr", y, A, g, T, E)
    R = np.column_stack([np.ones(len(y)), T])
    u = np.array([0.0, -1.0, -1.5, -0.4])
    mean, cov, _ = _dense(model, R, A, y, g, u)
    nd = model.factor(u[None])
    dim = 4 + 4 * 2
    cols = []
    for j in range(dim):
        z = np.zeros(dim)
        z[j] = 1.0
        a, c = model.draw(nd, z[None, :4], z[None, 4:].reshape(1, 4, 2), np.array([0]))
        cols.append(np.concatenate([a[0], c[0].ravel()]) - mean)
    J = np.array(cols).T
    np.testing.assert_allclose(J @ J.T, cov, atol=1e-10)


def test_correlated_reduces_to_independent_at_rho_zero():
    y, A, g, T, E = _data()
    ind, cor = _model("b2", y, A, g, T, E), _model("corr", y, A, g, T, E)
    u = np.array([[0.0, -1.0, -1.3]])
    lp_i = ind.logpost(u) - ind.log_prior(u)
    lp_c = cor.logpost(np.hstack([u, [[0.0]]])) - cor.log_prior(np.hstack([u, [[0.0]]]))
    assert lp_i[0] == pytest.approx(lp_c[0], abs=1e-10)


def test_lkj_prior_density():
    """exp(eta log(1 - rho^2)) in atanh(rho) integrates to the normalised LKJ density."""
    y, A, g, T, E = _data()
    m = _model("corr", y, A, g, T, E)
    z = np.linspace(-12, 12, 20001)
    u = np.column_stack([np.zeros_like(z), np.zeros_like(z), np.zeros_like(z), z])
    dens = np.exp(m.log_prior(u) - m.log_prior(u[:1]))
    rho = np.tanh(z)
    # eta = 2: the density of rho is (3/4) (1 - rho^2), so E(rho^2) = 1/5
    m2 = np.trapezoid(dens * rho**2, z) / np.trapezoid(dens, z)
    assert m2 == pytest.approx(1 / 5, abs=1e-8)


# The grid settings of GRIDS against finer grids (a lattice with 4 nodes per SD on every axis,
# depth 32, nothing pruned; for 4 scales 5 Hermite nodes and 2 per SD, depth 18), measured on
# the simulation's data sets (8 to 128 cells, 2,000 rows, baselines none, fixed and pooled,
# two replicates), Tomz-Weeks M1 and M2 and simulated data (24 cells x 125 rows, 128 x 16,
# 512 x 40, 8 x 50, 24 x 40) in posterior SDs, the largest over means, SDs, medians, 2.5%
# and 97.5% quantiles: see the GRIDS comment in hetfx/models/exact.py.
# The tests pin the same on one data set each (24 x 40; measured: 2 scales, effects 3.3e-5,
# coefficients 8.1e-6, sigma 2.7e-3, sigma_theta 2.3e-5; 3 scales 1.4e-5, 1.7e-5, 4.2e-3,
# 4.6e-4; 4 scales 6.2e-5, 3.7e-5, 5.2e-3, 1.1e-3), bounds 2 to 4 times the measured errors.
@pytest.mark.parametrize(
    ("kind", "fine", "bound_effects", "bound_sigma", "bound_scales"),
    [
        ("b1", {"hermite": None, "resolution": 4.0, "drop": 32.0, "prune": 0.0}, 1e-4, 1e-2, 1e-4),
        ("b2", {"hermite": None, "resolution": 2.5, "drop": 24.0, "prune": 0.0}, 1e-4, 1e-2, 2e-3),
        ("corr", {"hermite": 5, "resolution": 2.0, "drop": 18.0, "prune": 0.0}, 2e-4, 1.5e-2, 3e-3),
    ],
)
def test_grid_quadrature_error(kind, fine, bound_effects, bound_sigma, bound_scales):
    y, A, g, T, E = _data(G=24, per=40, seed=5)
    model = _model(kind, y, A, g, T, E, coef_sd=(np.inf, 2.0, 1.0, 1.5))
    probs = (0.5, 0.025, 0.975)
    f = fit_block_model(model, draws=0)
    ff = fit_block_model(model, draws=0, grid=fine)
    assert f.grid.edge_mass < 1e-4
    for what in ("effects", "coefs"):
        a, b = f.posterior.summarise(what, probs=probs), ff.posterior.summarise(what, probs=probs)
        assert float((abs(a - b).div(b["sd"], axis=0)).max().max()) < bound_effects
    a, b = f.posterior.summarise_scales(probs), ff.posterior.summarise_scales(probs)
    err = (abs(a - b).div(b["sd"], axis=0)).max(axis=1).to_numpy()
    # sigma's quantiles: the normal of its 3 Gauss-Hermite nodes, corrected for skewness
    assert err[0] < bound_sigma and err[1:].max() < bound_scales
    assert model.ndim in GRIDS


def test_draws_zero_and_draws():
    y, A, g, T, E = _data()
    model = _model("b2", y, A, g, T, E)
    f0 = fit_block_model(model, draws=0)
    assert f0.draws is None
    f = fit_block_model(model, draws=500, chains=2, seed=3)
    assert f.draws["a"].shape == (1000, 4) and f.draws["c"].shape == (1000, 12, 2)
    again = fit_block_model(model, draws=500, chains=2, seed=3)
    np.testing.assert_array_equal(f.draws["effect"], again.draws["effect"])
    # the draws' means against the exact means: 1000 independent draws, 5 standard errors
    s = f.posterior.summarise("effects", probs=())
    z = (f.draws["effect"].mean(axis=0) - s["mean"]) / (s["sd"] / np.sqrt(1000))
    assert np.abs(z).max() < 5  # false-failure rate for 12 groups: about 7e-6
    with pytest.raises(TypeError, match="unknown grid settings"):
        fit_block_model(model, draws=0, grid={"n_grid": 3})


def test_quasi_newton_mode_search_agrees_with_newton_in_fewer_rows():
    """The quasi-Newton search (models of 48 coefficients or more) lands where Newton's does
    (within 1e-8, from the default start and from 3 log units away) and where a tight
    Nelder-Mead search does (1e-5), evaluating fewer rows."""
    from scipy import optimize

    from hetfx.models.exact import _mode_and_sd, _newton_mode, _quasi_newton_mode

    y, _, g, T, _ = _data(G=50, per=20, seed=7)
    X = np.column_stack([np.ones(len(y)), np.random.default_rng(1).normal(size=len(y))])
    A = np.hstack([X, T[:, None] * np.eye(50)[g]])
    model = BlockModel(
        y, A, g, T, n_groups=50, coef_sd=1.0, sigma_prior=PRIOR, block_priors=[PRIOR]
    )
    assert model.k >= 48
    rows = []

    class Counting:
        ndim, k = model.ndim, model.k

        def logpost(self, u, chunk=None):
            rows.append(len(np.atleast_2d(u)))
            return model.logpost(u)

    u0 = model.start(model.y_sd)
    quasi, _ = _quasi_newton_mode(Counting(), u0, 1e-2)
    n_quasi = sum(rows)
    rows.clear()
    newton, _ = _newton_mode(Counting(), u0, 1e-2)
    assert n_quasi < sum(rows)
    np.testing.assert_allclose(quasi, newton, rtol=0, atol=1e-8)
    far, sd = _mode_and_sd(model, u0 - 3.0)
    np.testing.assert_allclose(far, quasi, rtol=0, atol=1e-8)
    assert np.all((sd > 0) & (sd < 3))
    ref = optimize.minimize(
        lambda u: -model.logpost(u[None, :])[0],
        quasi + 0.05,
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000},
    ).x
    np.testing.assert_allclose(quasi, ref, rtol=0, atol=1e-5)


def test_one_sided_widths_resolve_a_skewed_scale():
    """128 cells of 16 rows: sigma_theta's posterior has a long tail towards zero and a steep
    fall on the other side. Spaced by its Laplace SD, the 3-scale lattice is too coarse on the
    steep side (effects 1.6e-3 SDs from a grid of 3 nodes per SD, depth 20); spaced by the
    narrower one-sided width (GRIDS' default), 2.2e-5."""
    y, A, g, T, E = _data(G=128, per=16, seed=2)
    model = _model("b2", y, A, g, T, E, coef_sd=(np.inf, 2.0, 1.0, 1.5))
    assert GRIDS[model.ndim]["one_sided"]
    probs = (0.5, 0.025, 0.975)
    fine = {"hermite": 3, "resolution": 3.0, "drop": 20.0, "prune": 0.0}
    b = fit_block_model(model, draws=0, grid=fine).posterior.summarise("effects", probs=probs)
    errs = []
    for one_sided in (False, True):
        f = fit_block_model(model, draws=0, grid={"one_sided": one_sided})
        a = f.posterior.summarise("effects", probs=probs)
        errs.append(float((abs(a - b).div(b["sd"], axis=0)).max().max()))
    assert errs[0] > 1e-3 and errs[1] < 1e-4
