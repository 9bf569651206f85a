"""Tests of hetfx.paper.simulation: DGP, seeding, estimators, runner (parallel, dask, resume)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from hetfx.paper import simulation as S

OLS = {"ols": S.ols_estimator}


# ------------------------------------------------------------------------- DGP
def test_conditions_and_labels():
    c1, c2 = S.conditions(1), S.conditions(2)
    assert [c.n_groups for c in c1] == [8, 16, 32, 64, 128]
    assert [c.label for c in c1] == ["8", "16", "32", "64", "128"]
    assert all(c.effect_terms == "saturated" and not c.require_all_cells for c in c1)
    assert [c.label for c in c2] == ["balanced", "mild", "moderate", "strong"]
    assert all(
        c.n_groups == 64 and c.effect_terms == "additive" and c.require_all_cells for c in c2
    )
    assert c2[3].probs == (0.2, 0.3, 0.5, 0.5, 0.675, 0.75)
    assert S.group_labels(2) == ["0_0", "0_1", "1_0", "1_1"]
    with pytest.raises(ValueError):
        S.conditions(3)


def test_dgp_moments():
    rng = np.random.default_rng(2024)
    tau_draws = S.draw_tau(rng, 200_000)
    assert abs(tau_draws.mean() - 0.2) < 4 * 0.3 / np.sqrt(200_000)
    assert abs(tau_draws.std() - 0.3) < 0.003

    probs = S.IMBALANCE_SCENARIOS["strong"]
    tau = S.draw_tau(rng, 64)
    n = 200_000
    d = S.simulate_data(rng, probs, tau, n_obs=n)
    se = np.sqrt(0.25 / n)
    assert abs(d["treat"].mean() - 0.5) < 4 * se
    assert abs(d["z2"].mean() - 0.5) < 4 * se
    for j, p in enumerate(probs):
        assert abs(d[f"x{j + 1}"].mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    # cell shares = products of the moderator probabilities
    bits = (np.arange(64)[:, None] >> np.arange(5, -1, -1)) & 1
    pcell = np.prod(np.where(bits == 1, probs, 1 - np.asarray(probs)), axis=1)
    share = np.bincount(d["group_index"], minlength=64) / n
    assert np.all(np.abs(share - pcell) < 5 * np.sqrt(pcell * (1 - pcell) / n))
    # labels and tau line up with the moderators
    head = d.iloc[:2000]
    lab = head[[f"x{j}" for j in range(1, 7)]].astype(str).agg("_".join, axis=1)
    assert (lab == head["group"]).all()
    np.testing.assert_array_equal(d["tau"].to_numpy(), tau[d["group_index"].to_numpy()])
    # controls' coefficients recovered by OLS (true effect removed), residual sd 1
    X = np.column_stack([np.ones(n), d["z1"], d["z2"], d["z3"]])
    yy = d["y"] - d["tau"] * d["treat"]
    b, *_ = np.linalg.lstsq(X, yy, rcond=None)
    resid = yy - X @ b
    se_b = np.sqrt(np.diag(np.linalg.inv(X.T @ X)) * resid.var())
    np.testing.assert_array_less(np.abs(b - [0.0, 0.4, -0.3, 0.25]), 4 * se_b)
    assert abs(resid.std() - 1.0) < 0.01


def test_dgp_controls_recovered_by_saturated_ols():
    from hetfx.models.saturated_ols import fit_saturated_ols

    cond = S.conditions(1)[0]
    rng = np.random.default_rng(17)
    data = S.simulate_data(rng, cond.probs, S.draw_tau(rng, 8), n_obs=40_000)
    fit = fit_saturated_ols(data, "y", "treat", cond.effect_formula, "z1 + z2 + z3")
    idx = [fit.terms.index(z) for z in ("z1", "z2", "z3")]
    np.testing.assert_array_less(np.abs(fit.params[idx] - S.CONTROL_COEFS), 4 * fit.bse[idx])
    assert fit.sigma == pytest.approx(1.0, abs=0.02)
    ge = fit.group_effects().merge(
        pd.DataFrame(
            {
                "group": S.group_labels(3),
                "tau": data.groupby("group")["tau"].first().reindex(S.group_labels(3)).to_numpy(),
            }
        ),
        on="group",
    )
    assert (np.abs(ge["estimate"] - ge["tau"]) < 4 * ge["std_error"]).all()


def test_all_cells_redraw_and_shared_tau():
    conds = S.conditions(2)
    taus = []
    for cond in conds:
        data, truth = S.simulate_condition(5, 3, cond)
        assert data["group_index"].nunique() == 64 and (truth["n"] > 0).all()
        assert truth["n"].sum() == S.N_OBS
        taus.append(truth["tau"].to_numpy())
    for t in taus[1:]:
        np.testing.assert_array_equal(t, taus[0])  # one tau per replicate in design 2
    d1 = [S.simulate_condition(5, 3, c)[1]["tau"].to_numpy() for c in S.conditions(1)]
    assert len({len(t) for t in d1}) == 5  # fresh tau per k
    with pytest.raises(RuntimeError, match="not all"):
        S.simulate_data(
            np.random.default_rng(0),
            (0.01,) * 6,
            np.zeros(64),
            n_obs=50,
            require_all_cells=True,
            max_tries=5,
        )


def test_replicate_streams_follow_seedsequence_spawn():
    root, R = 99, 7
    children = np.random.SeedSequence(root).spawn(R)
    for r in (0, 4, 6):
        want = np.random.default_rng(children[r].spawn(3)[2].spawn(5)[3]).random(4)
        got = S.replicate_rng(root, r, 2, 3).random(4)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            S.replicate_rng(root, r).random(3), np.random.default_rng(children[r]).random(3)
        )


# ------------------------------------------------------------------ estimators
@pytest.mark.parametrize("design", [1, 2])
def test_fast_ols_equals_statsmodels_path(design):
    for cond in S.conditions(design):
        data, truth = S.simulate_condition(11, 0, cond)
        fast = S.ols_estimator(data, cond)
        ref = S.ols_estimator_statsmodels(data, cond)
        assert list(fast["group"]) == list(ref["group"])
        cols = ["estimate", "std_error", *S.INTERVAL_COLUMNS]
        np.testing.assert_allclose(fast[cols], ref[cols], rtol=0, atol=1e-9)


def test_fast_ols_non_estimable_cell_is_nan():
    cond = S.conditions(1)[0]
    data, _ = S.simulate_condition(11, 0, cond)
    data = data.loc[~((data["group"] == "1_0_1") & (data["treat"] == 1))].reset_index(drop=True)
    fast = S.ols_estimator(data, cond).set_index("group")
    ref = S.ols_estimator_statsmodels(data, cond).set_index("group")
    assert np.isnan(fast.loc["1_0_1", "estimate"]) and np.isnan(ref.loc["1_0_1", "estimate"])
    np.testing.assert_allclose(fast.drop(index="1_0_1"), ref.drop(index="1_0_1"), atol=1e-9)


# ---------------------------------------------------------------------- runner
def test_run_replicate_columns_and_rerun_alone():
    res = S.run_simulation(3, designs=(1, 2), root_seed=4, estimators=OLS, progress=False)
    e = res.estimates
    assert list(e.columns) == [
        "design", "condition", "n_groups", "scenario", "replicate", "group", "n", "n_treated",
        "tau", "model", "estimate", "std_error", "q025", "q05", "q95", "q975", "grid_edge_mass",
    ]  # fmt: skip
    assert len(e) == 3 * (8 + 16 + 32 + 64 + 128 + 4 * 64)
    assert e["grid_edge_mass"].isna().all()  # OLS reports none
    alone = S.run_replicate(2, 2, 4, OLS)
    part = e[(e["design"] == 2) & (e["replicate"] == 2)].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, part)
    s = res.summary
    assert len(s) == 9 and (s["n_replicates"] == 3).all()
    assert list(s.columns) == [
        "design", "condition", "n_groups", "scenario", "model", "rmse_mean", "rmse_mcse",
        "n_replicates", "rmse_one_replicate", "coverage_90", "coverage_90_mcse", "coverage_95",
        "coverage_95_mcse", "mean_abs_bias", "mean_abs_bias_mcse", "n_missing",
        "max_grid_edge_mass",
    ]  # fmt: skip


def test_run_replicate_aligns_estimates_to_the_truth_and_rejects_duplicates():
    """Estimates are matched to the truth by group, whatever order the estimator returns
    them in; a group it leaves out gets nan (no row is dropped); a group returned twice is an
    error, not a duplicated row."""

    def reversed_partial(data, condition):
        est = S.ols_estimator(data, condition).iloc[::-1]
        return est.iloc[1:]  # the last group of the design left out

    ref = S.run_replicate(2, 1, 4, OLS)
    out = S.run_replicate(2, 1, 4, {"ols": reversed_partial})
    values = ["estimate", "std_error", "q025", "q05", "q95", "q975"]
    pd.testing.assert_frame_equal(out.drop(columns=values), ref.drop(columns=values))
    last = out.groupby("condition", sort=False).tail(1).index
    assert out.loc[last, values].isna().all().all()
    keep = out.index.difference(last)
    pd.testing.assert_frame_equal(out.loc[keep, values], ref.loc[keep, values])

    def doubled(data, condition):
        est = S.ols_estimator(data, condition)
        return pd.concat([est, est.iloc[:1]])

    with pytest.raises(ValueError, match="returned a group twice"):
        S.run_replicate(2, 1, 4, {"ols": doubled})


def _ols_in_a_child(data, condition):
    """OLS that records whether it ran in a forked child process (the "fork" backend)."""
    assert os.getpid() != _PARENT, "ran in the parent process"
    return S.ols_estimator(data, condition)


_PARENT = os.getpid()


def test_parallel_workers_give_identical_results():
    a = S.run_simulation(3, root_seed=8, estimators=OLS, n_jobs=1, progress=False)
    b = S.run_simulation(3, root_seed=8, estimators=OLS, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(a.estimates, b.estimates)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    # forked workers (the pipeline's backend), each fit in a child process
    forked = {"ols": _ols_in_a_child}
    c = S.run_simulation(
        3, root_seed=8, estimators=forked, n_jobs=2, backend="fork", progress=False
    )
    pd.testing.assert_frame_equal(a.estimates, c.estimates)
    pd.testing.assert_frame_equal(a.summary, c.summary)
    # one worker: in this process, no pool
    with pytest.raises(AssertionError, match="parent"):
        S.run_simulation(1, estimators=forked, n_jobs=1, backend="fork", progress=False)


def _ols_on_dask_worker(data, condition):
    import distributed

    distributed.get_worker()  # raises ValueError outside a dask worker
    return S.ols_estimator(data, condition)


def test_dask_cluster_equals_local():
    distributed = pytest.importorskip("distributed")
    local = S.run_simulation(2, designs=(2,), root_seed=8, estimators=OLS, progress=False)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = S.run_simulation(
            2,
            designs=(2,),
            root_seed=8,
            estimators={"ols": _ols_on_dask_worker},
            scheduler_address=cluster.scheduler_address,
            progress=False,
        )
    pd.testing.assert_frame_equal(local.estimates, remote.estimates)


class _CountingOLS:
    """Module-level picklable estimator that counts its calls (sequential runs only)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, data, condition):
        self.calls += 1
        return S.ols_estimator(data, condition)


def test_resume_refits_only_missing_replicates(tmp_path):
    est = _CountingOLS()
    first = S.run_simulation(
        3, designs=(1,), root_seed=6, estimators={"ols": est}, work_dir=tmp_path, progress=False
    )
    assert est.calls == 3 * 5
    files = sorted((tmp_path / "design1").glob("*.parquet"))
    assert len(files) == 3
    files[1].unlink()
    est.calls = 0
    second = S.run_simulation(
        3, designs=(1,), root_seed=6, estimators={"ols": est}, work_dir=tmp_path, progress=False
    )
    assert est.calls == 5  # one replicate, five conditions
    pd.testing.assert_frame_equal(first.estimates, second.estimates)
    # extending the run fits only the new replicates
    est.calls = 0
    S.run_simulation(
        4, designs=(1,), root_seed=6, estimators={"ols": est}, work_dir=tmp_path, progress=False
    )
    assert est.calls == 5
    with pytest.raises(ValueError, match="different run"):
        S.run_simulation(
            2, designs=(1,), root_seed=7, estimators={"ols": est}, work_dir=tmp_path, progress=False
        )
    # ... unless told to restart: the old replicates are removed and refitted
    est.calls = 0
    S.run_simulation(
        2,
        designs=(1,),
        root_seed=7,
        estimators={"ols": est},
        work_dir=tmp_path,
        progress=False,
        on_mismatch="restart",
    )
    assert est.calls == 2 * 5
    assert len(list((tmp_path / "design1").glob("*.parquet"))) == 2


def test_other_library_code_is_not_resumed(tmp_path, monkeypatch):
    """Replicates fitted by other library code (an engine change) are refitted, not read back."""
    est = _CountingOLS()
    kw = {"designs": (1,), "root_seed": 6, "estimators": {"ols": est}, "progress": False}
    S.run_simulation(1, work_dir=tmp_path, **kw)
    fingerprint = S.code_fingerprint()
    assert len(fingerprint) == 64 and fingerprint == S.code_fingerprint()
    monkeypatch.setattr(S, "code_fingerprint", lambda: "another engine")
    with pytest.raises(ValueError, match="different run"):
        S.run_simulation(1, work_dir=tmp_path, **kw)
    est.calls = 0
    S.run_simulation(1, work_dir=tmp_path, on_mismatch="restart", **kw)
    assert est.calls == 5


def test_ols_coverage_is_nominal():
    """OLS on simulated replicates at fixed seeds: exact arithmetic, the same on any CPU."""
    res = S.run_simulation(20, designs=(1,), root_seed=21, estimators=OLS, progress=False)
    e = res.estimates.dropna(subset=["estimate"])  # cells without treated or control units
    cover95 = ((e["q025"] <= e["tau"]) & (e["tau"] <= e["q975"])).mean()
    cover90 = ((e["q05"] <= e["tau"]) & (e["tau"] <= e["q95"])).mean()
    n = len(e)
    assert abs(cover95 - 0.95) < 4 * np.sqrt(0.95 * 0.05 / n)
    assert abs(cover90 - 0.90) < 4 * np.sqrt(0.90 * 0.10 / n)
    s = res.summary
    assert (s["rmse_mcse"] > 0).all() and (s["coverage_95_mcse"] > 0).all()
    # per condition, within 4 replicate-level Monte Carlo SEs of nominal
    assert (np.abs(s["coverage_95"] - 0.95) < 4 * s["coverage_95_mcse"] + 1e-9).all()
    assert (np.abs(s["coverage_90"] - 0.90) < 4 * s["coverage_90_mcse"] + 1e-9).all()


def test_summarise_by_hand():
    e = pd.DataFrame(
        {
            "design": 1, "condition": "2", "n_groups": 2, "scenario": "equal", "model": "m",
            "replicate": [0, 0, 1, 1], "group": ["0", "1", "0", "1"], "n": [5, 20, 5, 20],
            "tau": [0.0, 1.0, 0.0, 1.0], "estimate": [0.3, 1.4, -0.1, np.nan],
            "q025": [-1.0, 1.1, -1.0, np.nan], "q975": [1.0, 1.3, 1.0, np.nan],
            "q05": [-0.5, 1.2, 0.05, np.nan], "q95": [0.5, 1.3, 0.5, np.nan],
        }
    )  # fmt: skip
    s = S.summarise(e).iloc[0]
    r0, r1 = np.sqrt((0.09 + 0.16) / 2), 0.1
    assert s["rmse_mean"] == pytest.approx((r0 + r1) / 2)
    assert s["rmse_mcse"] == pytest.approx(np.std([r0, r1], ddof=1) / np.sqrt(2))
    assert s["rmse_one_replicate"] == pytest.approx(r0)
    # metrics are per replicate first (replicate 1 has one estimable group), then averaged
    assert s["coverage_95"] == pytest.approx((1 / 2 + 1) / 2)
    assert s["coverage_95_mcse"] == pytest.approx(np.std([0.5, 1.0], ddof=1) / np.sqrt(2))
    assert s["coverage_90"] == pytest.approx((1 / 2 + 0) / 2)
    assert s["mean_abs_bias"] == pytest.approx(((0.3 + 0.4) / 2 + 0.1) / 2)
    assert s["n_missing"] == 1 and s["n_replicates"] == 2
    assert np.isnan(s["max_grid_edge_mass"])
    b = S.bias_by_group_size(e, breaks=(0, 10, 100))
    assert b.set_index("size_bin")["n_estimates"].to_dict() == {"(0, 10]": 2, "(10, 100]": 1}


def test_estimator_output_is_validated():
    def bad(data, condition):
        return pd.DataFrame({"group": ["x"], "estimate": [0.0]})

    with pytest.raises(ValueError, match="did not return"):
        S.run_replicate(1, 0, 1, {"bad": bad})


# ---------------------------------------------------------------- hierarchical
def test_hierarchical_adapter_small():
    cond = S.conditions(1)[0]  # 8 groups
    data, truth = S.simulate_condition(3, 0, cond)
    est = S.hierarchical_estimator
    out = est(data, cond)
    assert list(out["group"]) == list(truth["group"])
    assert set(S.INTERVAL_COLUMNS) <= set(out.columns)
    assert (out["q025"] < out["q05"]).all() and (out["q05"] < out["estimate"]).all()
    assert (out["estimate"] < out["q95"]).all() and (out["q95"] < out["q975"]).all()
    rmse = np.sqrt(((out["estimate"] - truth["tau"]) ** 2).mean())
    assert rmse < 0.3
    np.testing.assert_array_equal(out["estimate"], est(data, cond)["estimate"])  # deterministic


@pytest.mark.slow
def test_hierarchical_study_small_r():
    est = {
        "ols": S.ols_estimator,
        "hierarchical": S.hierarchical_estimator,
    }
    res = S.run_simulation(4, root_seed=12, estimators=est, n_jobs=2, progress=False)
    s = res.summary.set_index(["condition", "model"])["rmse_mean"]
    # the paper's qualitative result at 128 groups: hierarchical clearly better
    assert s[("128", "hierarchical")] < s[("128", "ols")]
    h = res.estimates[res.estimates["model"] == "hierarchical"]
    cover = ((h["q025"] <= h["tau"]) & (h["tau"] <= h["q975"])).mean()
    assert 0.85 < cover < 0.995


def test_stored_values_round_exactly_to_the_columns_grid():
    """A replicate's value columns are kept on a binary grid of STORED_BITS bits of their
    largest value: exact arithmetic, so last-bit differences (another CPU) vanish unless
    they straddle a grid point."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.7, 1000)
    x[[3, 8]] = np.nan
    r = S.stored_values(x)
    big = np.nanmax(np.abs(x))
    step = 2.0 ** (np.floor(np.log2(big)) + 1 - S.STORED_BITS)
    assert np.isnan(r[[3, 8]]).all()
    ok = ~np.isnan(x)
    assert np.all(np.abs(r[ok] - x[ok]) <= step / 2)
    assert np.array_equal(r[ok] / step, np.rint(r[ok] / step))  # on the grid
    assert np.array_equal(S.stored_values(r), r, equal_nan=True)  # idempotent
    # a last-bit change of a value that is not next to a grid midpoint is removed
    nudged = np.nextafter(x, np.inf)
    mid = np.abs(np.abs(x / step - np.floor(x / step)) - 0.5) < 1e-6
    keep = ok & ~mid
    assert np.array_equal(S.stored_values(nudged)[keep], r[keep])
    assert np.array_equal(S.stored_values(np.zeros(3)), np.zeros(3))
    assert np.isnan(S.stored_values(np.full(2, np.nan))).all()


def test_replicates_store_rounded_estimates():
    est = S.run_replicate(1, 0, 6, OLS)
    for col in ("estimate", "std_error", "q025", "q975"):
        x = est[col].to_numpy(dtype=float)
        assert np.array_equal(S.stored_values(x), x, equal_nan=True)
