"""Bernoulli fits are quick and checked: the qmc engine works on the distinct rows, recovers
known effects deterministically, and every Bayesian result runs the diagnostics gate (a
warning naming the parameter and the threshold); summaries print what the engine measured."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import hetfx
from hetfx.inference import (
    RHAT_UNAVAILABLE,
    Diagnostics,
    DiagnosticsWarning,
    check_diagnostics,
    compute_diagnostics,
    diagnostic_problems,
    warn_diagnostics,
)

#: cell effects on the log-odds scale and control-arm log-odds, by (party, south)
LAM = {("D", 0): 0.2, ("D", 1): 0.6, ("R", 0): -0.1, ("R", 1): 0.35}
BASE = {("D", 0): 0.1, ("D", 1): -0.2, ("R", 0): 0.0, ("R", 1): 0.15}


def simulate(seed: int = 5, n: int = 4000):
    """Four cells of two binary modifiers, a 0/1 treatment and outcome; the cells' true AMEs."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"party": rng.choice(["D", "R"], n), "south": rng.integers(0, 2, n)},
    )
    df["treat"] = rng.integers(0, 2, n)
    key = list(zip(df.party, df.south, strict=True))
    base = np.array([BASE[k] for k in key])
    lam = np.array([LAM[k] for k in key])
    df["y"] = (rng.random(n) < expit(base + lam * df.treat)).astype(int)
    # with baselines constant within a cell, a cell's AME is one difference of probabilities
    truth = {f"{p}_{s}": expit(BASE[(p, s)] + LAM[(p, s)]) - expit(BASE[(p, s)]) for p, s in LAM}
    return df, pd.Series(truth)


def qmc_fit(df, seed=0, **kw):
    return hetfx.fit(df, "y", "treat", ["party", "south"], family="bernoulli", seed=seed, **kw)


@pytest.fixture(scope="module")
def sim():
    df, truth = simulate()
    return df, truth, qmc_fit(df)


def test_qmc_recovers_known_effects_deterministically(sim):
    """The engine is deterministic given its seed (same numbers, to the bit, on a refit); the
    posterior medians of the four cells' AMEs lie within 2.5 posterior SDs of the truth (the
    data are one fixed draw; measured 0.2 to 1.25 SDs); a refit under another scramble seed
    moves them by less than 5 combined Monte Carlo SEs (measured 0 to 0.6 MCSE), and the MCSE
    of a median is below 5% of the posterior SD (measured 1.1-1.3%)."""
    df, truth, res = sim
    ge = res.group_effects().set_index("cell")
    again = qmc_fit(df).group_effects().set_index("cell")
    pd.testing.assert_frame_equal(ge, again, check_exact=True)
    z = (ge["estimate"] - truth.loc[ge.index]).abs() / ge["sd"]
    assert z.max() < 2.5, z
    other = qmc_fit(df, seed=7).group_effects().set_index("cell")
    mcse = res.fit.mcse().set_index("cell")["estimate"]
    assert ((other["estimate"] - ge["estimate"]).abs() < 5 * mcse * np.sqrt(2)).all()
    assert (mcse < 0.05 * ge["sd"]).all()  # the point count meets its accuracy target


def test_qmc_works_on_the_distinct_rows():
    """A Broockman-sized design (5,592 rows, 7 cells, main effects in X) collapses to 14
    distinct (X, treatment, cell) rows; the collapsed log-likelihood equals the sum over the
    rows, with and without weights."""
    from hetfx.models.logit_qmc import _Problem

    rng = np.random.default_rng(0)
    n, G = 5592, 7
    g = rng.integers(0, G, n)
    t = rng.integers(0, 2, n).astype(float)
    y = rng.integers(0, 2, n).astype(float)
    X = np.column_stack([np.ones(n), np.eye(G)[g][:, 1:4]])
    Z = np.column_stack([np.ones(G), np.arange(G) % 2])
    w = rng.uniform(0.5, 2, n)
    for weights in (None, w):
        pb = _Problem(X, t, g, Z, y, np.ones(4), 1.0, weights)
        assert pb.n == 14
        C = rng.normal(0, 0.5, (5, pb.dim))
        s = 0.7
        beta, gamma, z = C[:, :4], C[:, 4:6], C[:, 6:]
        eta = beta @ X.T + ((gamma @ Z.T + s * z)[:, g]) * t
        ll = (y * eta - np.logaddexp(0, eta)) @ (np.ones(n) if weights is None else w)
        np.testing.assert_allclose(pb.loglik(C, pb.design(s)), ll, rtol=1e-12)


def test_summary_of_a_qmc_fit_prints_what_it_measured(sim):
    """No NaN R-hat and no residual-SD prior in the summary of a logit fitted by qmc."""
    text = str(sim[2].summary())
    assert "nan" not in text.lower()
    assert "sigma Prior" not in text and "sigma_theta Prior.half_student_t(3, 2.5)" in text
    assert "Pareto k-hat" in text and "weight ESS" in text and "gate passed" in text


def _record(**kw) -> Diagnostics:
    base = dict(
        sampler="nutpie",
        chains=4,
        draws=1000,
        max_r_hat=1.002,
        min_ess_bulk=2000.0,
        min_ess_tail=2000.0,
        divergences=0,
        worst_r_hat_param="gamma[Intercept]",
        worst_ess_bulk_param="sigma_theta",
    )
    return Diagnostics(**(base | kw))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"max_r_hat": 1.05}, r"R-hat 1\.050 > 1\.01 for gamma\[Intercept\]"),
        ({"min_ess_bulk": 158.0}, r"bulk ESS 158 < 400 for sigma_theta"),
        ({"divergences": 2}, r"2 divergent transitions \(> 0\)"),
        ({"sampler": "qmc", "pareto_k": 0.9, "max_r_hat": np.nan}, r"k-hat .* 0\.90 > 0\.7"),
        ({"sampler": "quadrature", "grid_edge_mass": 0.01}, r"grid edge holds 0\.01"),
    ],
)
def test_the_gate_warns_naming_parameter_and_threshold(bad, message):
    with pytest.warns(DiagnosticsWarning, match=message):
        problems = warn_diagnostics(_record(**bad))
    assert len(problems) == 1
    assert issubclass(DiagnosticsWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_diagnostics(_record()) == []  # a good fit: silence


def test_exact_engines_and_one_chain_are_not_gated_on_r_hat():
    """Independent draws of the quadrature engine are not a Markov chain (R-hat and ESS of
    them are not checked by the warning gate); with one chain R-hat is unavailable, which is
    said, not failed."""
    assert (
        diagnostic_problems(_record(sampler="quadrature", min_ess_bulk=300), draws_checked=False)
        == []
    )
    one = _record(chains=1, max_r_hat=np.nan, worst_r_hat_param=RHAT_UNAVAILABLE)
    assert diagnostic_problems(one) == []
    assert check_diagnostics(one) is one
    assert diagnostic_problems(_record(max_r_hat=np.nan)) != []  # NaN with chains: a failure
    assert diagnostic_problems(_record(chains=1, max_r_hat=np.nan)) != []  # unexplained NaN


def test_compute_diagnostics_on_crafted_draws():
    """Two chains stuck in different places fail R-hat (named, with its threshold); one chain
    gives a record whose R-hat is unavailable and says so."""
    import arviz as az

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (2, 500, 3))
    x[1, :, 2] += 3.0  # the second chain of lambda[c] sits elsewhere
    idata = az.from_dict(
        posterior={"lambda": x}, coords={"group": list("abc")}, dims={"lambda": ["group"]}
    )
    d = compute_diagnostics(idata, "nutpie")
    assert d.worst_r_hat_param == "lambda[c]" and d.max_r_hat > 1.5
    with pytest.warns(UserWarning, match=r"R-hat \d\.\d+ > 1\.01 for lambda\[c\]"):
        warn_diagnostics(d)
    one = compute_diagnostics(az.from_dict(posterior={"lambda": x[:1, :, :2]}), "nutpie")
    assert np.isnan(one.max_r_hat) and one.worst_r_hat_param == RHAT_UNAVAILABLE
    assert one.min_ess_bulk > 100


def test_a_result_with_bad_diagnostics_warns_when_built(sim):
    """The gate runs when a result is built (here a Bernoulli result over a fit whose record
    has the divergences, R-hat and ESS of a short NUTS run), warning at the caller."""
    from hetfx.results import BernoulliResults

    res = sim[2]

    class ShortRun:
        idata = res.fit.idata
        diagnostics_record = _record(max_r_hat=1.015, min_ess_bulk=158.0, divergences=2)

    with pytest.warns(DiagnosticsWarning, match="raise target_accept") as rec:
        BernoulliResults(ShortRun(), res.design, res.priors, engine="nutpie")
    text = str(rec[0].message)
    for part in ("R-hat 1.015 > 1.01", "bulk ESS 158 < 400", "2 divergent transitions (> 0)"):
        assert part in text
    assert rec[0].filename == __file__


def test_arviz_compare_warns_nothing_about_pandas():
    """arviz's compare() uses a keyword pandas 3.1 deprecates; hetfx's results silence that
    one warning (in a fresh process: pytest resets the warning filters around each test).
    Without the import of hetfx.results the same script prints the warning."""
    code = """
import warnings, numpy as np, arviz as az
import hetfx.results
rng = np.random.default_rng(0)
def idata(shift):
    ll = rng.normal(-1 - shift, 0.1, (2, 200, 50))
    return az.from_dict(posterior={"a": rng.normal(size=(2, 200))}, log_likelihood={"y": ll})
with warnings.catch_warnings(record=True) as rec:
    az.compare({"a": idata(0), "b": idata(0.1)})
print(sorted({w.category.__name__ + ': ' + str(w.message)[:40] for w in rec}))
"""
    out = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "inplace" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_a_residual_sd_prior_is_not_used_by_a_logit(sim):
    df = sim[0]
    priors = hetfx.Priors(sigma=hetfx.Prior.half_normal(1.0))
    with pytest.warns(UserWarning, match="priors.sigma is not used"):
        res = qmc_fit(df.iloc[:800], priors=priors)
    assert "sigma Prior" not in str(res.summary())


@pytest.mark.parametrize("family", ["gaussian", "bernoulli"])
def test_one_chain_fits_and_says_r_hat_is_unavailable(sim, family):
    """chains=1 gives a result (no R-hat failure, no warning about it) whose summary says that
    R-hat is unavailable; the qmc engine reports its own measures instead."""
    df = sim[0].iloc[:1200]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiagnosticsWarning)
        res = hetfx.fit(
            df, "y", "treat", ["party", "south"], family=family, chains=1, draws=1000, seed=1
        )
    text = str(res.summary())
    assert "nan" not in text.lower()
    if family == "gaussian":
        assert f"R-hat {RHAT_UNAVAILABLE}" in text and "1 chain x 1000 draws" in text
    else:
        assert "Pareto k-hat" in text
