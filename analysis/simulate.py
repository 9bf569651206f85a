"""Stage `simulate`: the simulation study of section 3 and its Figures 1-4.

Usage: python analysis/simulate.py

Reads the `simulation:` section of params.yaml. Runs both designs (replication spec §5) for
`replicates` replicates (replicate 0 alone is the published one-data-set design), in parallel
(processes forked from the stage, joblib loky, or Dask) and resumably (finished replicates are
kept in results/simulation/work/ and read back by a rerun with the same settings). Writes, for
design 1 (`spec`, equal groups) and design 2 (`groupsize`, imbalance):

  results/simulation/<design>/estimates.parquet  one row per replicate x condition x group x model
  results/simulation/<design>/summary.csv        one row per condition x model (mean RMSE, MCSE,
                                                 coverage of the 90% and 95% intervals, ...)
  results/simulation/<design>/one_replicate.csv  RMSE of replicate 0 (the published design)
  results/simulation/<design>/bias_by_size.csv   mean |bias| by group size
  results/simulation/<design>/metrics.json       the summary as DVC metrics (`dvc metrics show`)
  results/simulation/spec/rmse_by_groups.csv     mean RMSE per estimator (`dvc plots show`)
  results/simulation/design.json                 the design as run (the report quotes it)

and manuscript/figures/figure{1,2,3,4}.{png,svg}.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread per worker

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from _figures import save_figures  # noqa: E402
from _stage import MONTE_CARLO_DIGITS, load_params, log, run, write_csv  # noqa: E402
from hetfx.paper import figures  # noqa: E402
from hetfx.paper import simulation as S  # noqa: E402
from hetfx.paper.params import ParamsError  # noqa: E402

STAGE = "simulate"
OUT = Path("results/simulation")
WORK = OUT / "work"
FIGURES = Path("manuscript/figures")
DESIGNS = {1: ("spec", "n_groups"), 2: ("groupsize", "scenario")}
SMALL_REPLICATES = 5


def outputs() -> list[Path]:
    files = [
        OUT / name / f
        for name, _ in DESIGNS.values()
        for f in ("estimates.parquet", "summary.csv", "one_replicate.csv", "bias_by_size.csv")
    ]
    files += [OUT / name / "metrics.json" for name, _ in DESIGNS.values()]
    files += [OUT / "design.json", OUT / "spec" / "rmse_by_groups.csv"]
    files += [FIGURES / f"figure{i}.{ext}" for i in (1, 2, 3, 4) for ext in ("png", "svg")]
    return files


#: Summary columns reported as DVC metrics (per condition and estimator).
METRICS = (
    "rmse_mean",
    "rmse_mcse",
    "rmse_one_replicate",
    "coverage_90",
    "coverage_95",
    "mean_abs_bias",
    "n_missing",
)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def design_record(n_obs: int, replicates: int, root_seed: int) -> dict:
    """The design the simulation ran (from hetfx.paper.simulation's conditions), for the report."""
    equal, imbalance = S.conditions(1, n_obs), S.conditions(2, n_obs)
    return {
        "n_obs": n_obs,
        "replicates": replicates,
        "root_seed": root_seed,
        "tau_mean": S.TAU_MEAN,
        "tau_sd": S.TAU_SD,
        "control_coefs": list(S.CONTROL_COEFS),
        "equal_group_k": [c.k for c in equal],
        "imbalance_scenarios": {c.label: list(c.probs) for c in imbalance},
    }


def metrics(summary: pd.DataFrame, cond: str) -> dict:
    """``{condition: {model: {metric: value}}}`` (missing values left out: JSON has no NaN)."""
    out: dict = {}
    for row in summary.to_dict("records"):
        values = {
            m: row[m]
            for m in METRICS
            if m in row and not (isinstance(row[m], float) and math.isnan(row[m]))
        }
        out.setdefault(str(row[cond]), {})[row["model"]] = {
            k: int(v) if k == "n_missing" else float(f"{v:.6g}") for k, v in values.items()
        }
    return out


ESTIMATORS = {"ols": S.ols_estimator, "hierarchical": S.hierarchical_estimator}


def write_design(estimates: pd.DataFrame, design: int) -> dict[str, pd.DataFrame]:
    name, cond = DESIGNS[design]
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    e = estimates.loc[estimates["design"] == design].reset_index(drop=True)
    summary = S.summarise(e)
    one = (
        summary[[cond, "model", "rmse_one_replicate"]]
        .rename(columns={"rmse_one_replicate": "rmse"})
        .assign(replicate=int(e["replicate"].min()))
    )
    bias = S.bias_by_group_size(e)
    drop = ["design", "condition", "n_groups" if design == 2 else "scenario"]
    e.to_parquet(folder / "estimates.parquet", index=False)
    digits = MONTE_CARLO_DIGITS
    write_csv(summary.drop(columns=drop), folder / "summary.csv", digits)
    write_csv(one, folder / "one_replicate.csv", digits)
    write_csv(bias.drop(columns=drop), folder / "bias_by_size.csv", digits)
    write_json(folder / "metrics.json", metrics(summary, cond))
    if design == 1:  # the RMSE curves of Figure 1, one column per estimator, for dvc plots
        wide = summary.pivot(index=cond, columns="model", values="rmse_mean").reset_index()
        write_csv(wide, folder / "rmse_by_groups.csv", digits)
    return {"estimates": e, "summary": summary, "one": one}


def report(summary: pd.DataFrame, cond: str) -> str:
    t = summary.copy()
    t["rmse"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(t["rmse_mean"], t["rmse_mcse"], strict=True)]
    t["one rep"] = t["rmse_one_replicate"].map("{:.3f}".format)
    for lvl in ("90", "95"):
        t[f"cover{lvl}"] = [
            f"{m:.3f} ± {s:.3f}"
            for m, s in zip(t[f"coverage_{lvl}"], t[f"coverage_{lvl}_mcse"], strict=True)
        ]
    return t[
        [cond, "model", "rmse", "one rep", "cover90", "cover95", "n_replicates", "n_missing"]
    ].to_string(index=False)


def draw_figures(spec: dict, size: dict) -> None:
    e1 = spec["estimates"]
    first = e1.loc[e1["replicate"] == e1["replicate"].min()]
    # the slowest first (Figure 4 draws 51,200 points, 2.9 s; Figure 2 1.6 s; Figures 1 and 3
    # about 1 s), so that the two drawing processes end together: 3.7 s rather than 4.5 s
    plots = {
        "figure4": figures.figure4(size["estimates"]),
        "figure2": figures.figure2(first),
        "figure1": figures.figure1(spec["summary"], spec["one"]),
        "figure3": figures.figure3(size["summary"], size["one"]),
    }
    save_figures([(plot, FIGURES / stem, *figures.SIZES[stem]) for stem, plot in plots.items()])


def main() -> None:
    for path in outputs():  # never leave a previous run's files beside a failure
        path.unlink(missing_ok=True)
    params = load_params().simulation
    if params is None:
        raise ParamsError("params.yaml has no `simulation:` section")
    replicates = params.replicates
    if params.small:
        replicates = min(replicates, SMALL_REPLICATES)
    where = f"dask @ {params.scheduler_address}" if params.scheduler_address else params.backend
    log(
        STAGE,
        f"{replicates} replicates x 9 conditions x 2 estimators, root seed "
        f"{params.root_seed}, n = {params.n_obs}, hierarchical model by hetfx.fit (exact "
        f"posterior summaries), backend {where}, "
        f"n_jobs {params.n_jobs}",
    )
    cluster = None
    address = params.scheduler_address
    if params.backend == "dask" and address is None:
        from distributed import LocalCluster

        workers = params.n_jobs if params.n_jobs > 0 else os.cpu_count()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)
        address = cluster.scheduler_address
    start = time.perf_counter()
    try:
        result = S.run_simulation(
            replicates,
            root_seed=params.root_seed,
            estimators=ESTIMATORS,
            work_dir=WORK,
            n_jobs=params.n_jobs,
            backend=params.backend,
            scheduler_address=address,
            n_obs=params.n_obs,
            on_mismatch="restart",
        )
    finally:
        if cluster is not None:
            cluster.close()
    log(STAGE, f"fits done in {time.perf_counter() - start:.1f} s")
    write_json(OUT / "design.json", design_record(params.n_obs, replicates, params.root_seed))
    spec, size = (write_design(result.estimates, d) for d in DESIGNS)
    log(
        STAGE,
        "equal groups (RMSE mean ± MCSE, one replicate, coverage ± MCSE):\n"
        + report(spec["summary"], "n_groups"),
    )
    log(STAGE, "imbalance:\n" + report(size["summary"], "scenario"))
    edge = result.summary["max_grid_edge_mass"].max()
    log(STAGE, f"largest quadrature grid edge mass of any fit: {edge:.1e}")
    draw_figures(spec, size)


if __name__ == "__main__":
    run(STAGE, main, (ParamsError, FileNotFoundError))
