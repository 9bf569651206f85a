"""Stage `simulate_sensitivity`: the simulation under baseline shifts.

Usage: python analysis/simulate_sensitivity.py

Reads `simulation_sensitivity:` (replicates, shift SD, models) and, from `simulation:`, the
root seed, sample size and workers. Both designs (replication spec §5) run under two DGPs:
`published` (no baseline shifts, the paper's) and `shifted` (every cell's baseline, both arms,
moves by N(0, baseline_sd)); the shifts come from their own random stream, so a replicate's
other data are the same under both. Estimators: `ols` (the paper's OLS) and the hierarchical
model fitted by the public API, `hetfx.fit`, with the published priors: `hierarchical` (as
published: one common baseline, baselines="none"), `hierarchical_fe` (the cells' baselines as
fixed effects, baselines="fixed") and `hierarchical_pooled` (pooled baselines, alpha_g ~ N(0,
sigma_alpha), baselines="pooled"). Under the published
DGP, `ols` and `hierarchical` are the stage `simulate`'s fits of the same data sets with the
same estimators, read from its estimates (results/simulation/{spec,groupsize}/
estimates.parquet) rather than fitted again; they are fitted here only if that stage ran
fewer replicates. The runner resumes from results/simulation/sensitivity/work/<dgp>/. Writes

  results/simulation/sensitivity/estimates.parquet  one row per dgp x replicate x condition x
                                                    group x model
  results/simulation/sensitivity/summary.csv        one row per dgp x design x condition x
                                                    model: mean RMSE, coverage of the 90% and
                                                    95% intervals, each with its MCSE, ...

The published stage `simulate` and its outputs are untouched.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread per worker

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from _stage import MONTE_CARLO_DIGITS, load_params, log, run, write_csv  # noqa: E402
from hetfx.paper import simulation as S  # noqa: E402
from hetfx.paper.params import ParamsError  # noqa: E402

STAGE = "simulate_sensitivity"
OUT = Path("results/simulation/sensitivity")
WORK = OUT / "work"
#: the stage `simulate`'s estimates: the published DGP's OLS and hierarchical fits
PUBLISHED = [
    Path("results/simulation/spec/estimates.parquet"),
    Path("results/simulation/groupsize/estimates.parquet"),
]
REUSED = ("ols", "hierarchical")  # the same estimator functions as the stage `simulate`
SMALL_REPLICATES = 5
ESTIMATORS = {
    "ols": S.ols_estimator,
    "hierarchical": S.hierarchical_estimator,
    "hierarchical_fe": S.hierarchical_fe_estimator,
    "hierarchical_pooled": S.hierarchical_pooled_estimator,
}


def outputs() -> list[Path]:
    return [OUT / "estimates.parquet", OUT / "summary.csv"]


def report(summary: pd.DataFrame) -> str:
    t = summary.copy()
    t["rmse"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(t["rmse_mean"], t["rmse_mcse"], strict=True)]
    for lvl in ("90", "95"):
        t[f"cover{lvl}"] = [
            f"{m:.3f} ± {s:.3f}"
            for m, s in zip(t[f"coverage_{lvl}"], t[f"coverage_{lvl}_mcse"], strict=True)
        ]
    return t[
        ["dgp", "design", "condition", "model", "rmse", "cover90", "cover95", "n_missing"]
    ].to_string(index=False)


def published_fits(models: list[str], replicates: int) -> pd.DataFrame | None:
    """The stage `simulate`'s fits of `models` for replicates 0 .. replicates - 1, or None if
    it ran fewer replicates."""
    fits = pd.concat([pd.read_parquet(path) for path in PUBLISHED], ignore_index=True)
    fits = fits.loc[fits["model"].isin(models) & (fits["replicate"] < replicates)]
    have = fits.groupby(["design", "model"])["replicate"].nunique()
    if len(have) < 2 * len(models) or (have < replicates).any():
        return None
    return fits


def main() -> None:
    for path in outputs():  # never leave a previous run's files beside a failure
        path.unlink(missing_ok=True)
    params = load_params()
    sim, sens = params.simulation, params.simulation_sensitivity
    if sim is None or sens is None:
        raise ParamsError("params.yaml needs `simulation:` and `simulation_sensitivity:` sections")
    replicates = min(sens.replicates, SMALL_REPLICATES) if sens.small else sens.replicates
    estimators = {name: ESTIMATORS[name] for name in sens.models}
    log(
        STAGE,
        f"{replicates} replicates x 9 conditions x 2 DGPs x {len(estimators)} "
        f"estimators ({', '.join(estimators)}), shift SD {sens.baseline_sd}, root seed "
        f"{sim.root_seed}, n = {sim.n_obs}, backend {sim.backend}, n_jobs {sim.n_jobs}",
    )
    dgps = {"published": 0.0, "shifted": sens.baseline_sd}
    reused = published_fits([m for m in REUSED if m in estimators], replicates)
    plan = {dgp: (sd, estimators) for dgp, sd in dgps.items()}
    if reused is not None:
        plan["published"] = (0.0, {m: f for m, f in estimators.items() if m not in REUSED})
        log(
            STAGE,
            f"DGP published: {', '.join(sorted(set(reused['model'])))} read "
            "from the stage simulate's estimates (same data, same estimators)",
        )
    plan = {dgp: step for dgp, step in plan.items() if step[1]}
    start = time.perf_counter()
    # both DGPs of a replicate in one task: hierarchical_fe (centring within the cells
    # removes the shifts) is fitted once for both
    results = S.run_simulations(
        replicates,
        plan,
        root_seed=sim.root_seed,
        work_dir=WORK,
        n_jobs=sim.n_jobs,
        backend=sim.backend,
        scheduler_address=sim.scheduler_address,
        n_obs=sim.n_obs,
        on_mismatch="restart",
        progress=False,
    )
    log(STAGE, f"fits of both DGPs done in {time.perf_counter() - start:.1f} s")
    frames = []
    for dgp in dgps:
        parts = [] if dgp not in results else [results[dgp].estimates]
        if dgp == "published" and reused is not None:
            parts.insert(0, reused)
        est = S.combine_estimates(parts, list(estimators))
        frames.append(est.assign(dgp=dgp))
    estimates = pd.concat(frames, ignore_index=True)
    estimates.insert(0, "dgp", estimates.pop("dgp"))
    summary = pd.concat(
        [S.summarise(e).assign(dgp=dgp) for dgp, e in estimates.groupby("dgp", sort=False)],
        ignore_index=True,
    )
    summary.insert(0, "dgp", summary.pop("dgp"))
    OUT.mkdir(parents=True, exist_ok=True)
    estimates.to_parquet(OUT / "estimates.parquet", index=False)
    write_csv(summary, OUT / "summary.csv", MONTE_CARLO_DIGITS)
    log(STAGE, "RMSE mean ± MCSE, coverage ± MCSE:\n" + report(summary))
    edge = summary["max_grid_edge_mass"].max()
    log(STAGE, f"largest quadrature grid edge mass of any fit: {edge:.1e}")


if __name__ == "__main__":
    run(STAGE, main, (ParamsError, FileNotFoundError))
