"""Every fit whose summaries tests/test_cross_cpu.py compares across emulated CPUs, in one
process (one start-up and one data cleaning per emulated CPU).

Usage: python tests/cross_cpu_worker.py OUT_DIR

Writes to OUT_DIR, at full precision:

- ``{m1,m2}_{groups,coefs,diagnostics}.csv``: M1 and M2 (published coding, quadrature
  engine; the diagnostics without their run times) and
  ``sim.csv``: replicate 0 of both simulation designs (OLS and hierarchical);
- ``{logit_published,logit_additive_main_effects}_{groups,logit,coefs}.csv``: the robustness
  stage's two logit variants (params.yaml settings, the default ``qmc`` engine);
- ``{a1,bp}_{groups,coefs}.csv``: A1 and Bush-Prather (published coding, params.yaml
  settings: A1 by the exact ``quadrature`` engine, Bush-Prather by ``qmc``);
- ``{m2,a1,bp}.nc``: what the fit stage writes to those models' ``posterior.nc``
  (analysis/fit.py's ``archive``: the stored draws and the rounded pointwise log-likelihood);
- ``seconds.csv``: wall and CPU seconds of each block of fits;
- ``runtime.json``: what this process runs on (numpy's enabled SIMD dispatch targets,
  OpenBLAS's kernel and thread count, numba's target CPU), so that the test can check that
  every emulation is in force.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from hetfx.paper import robustness, studies
from hetfx.paper import simulation as S
from hetfx.paper.data import bush_prather, tomz_weeks

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
CSV = {"index": False, "float_format": "%.17g"}
#: M1 and M2 as in the pipeline (seed 12, 4 x 1000 draws)
LAMBDA = {"m1": {"gamma_sd": 1.0, "beta_sd": 1.0}, "m2": {"gamma_sd": 1.0, "beta_sd": 0.5}}
LOGIT = ("logit_published", "logit_additive_main_effects")
#: Models whose posterior.nc (the fit stage's bytes) the test compares.
ARCHIVED = ("m2", "a1", "bp")


def write_archive(fit, path: Path) -> None:
    """``posterior.nc`` as the fit stage writes it (analysis/fit.py's ``archive``)."""
    import importlib

    sys.path.insert(0, str(ROOT / "analysis"))
    try:
        stage = importlib.import_module("fit")
    finally:
        sys.path.remove(str(ROOT / "analysis"))
    stage.write_netcdf(stage.archive(fit), path)


def runtime() -> dict:
    """The floating-point relevant facts of this process."""
    import numba
    import numpy as np
    import threadpoolctl
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    blas = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]
    return {
        "numpy_dispatch": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)],
        "numpy_version": np.__version__,
        "openblas_architecture": [i.get("architecture") for i in blas],
        "openblas_threads": [i["num_threads"] for i in blas],
        "numba_cpu": numba.config.CPU_NAME or "host",
    }


def lambda_models(tw: pd.DataFrame, out: Path) -> None:
    sampler = studies.Sampler(seed=12, chains=4, draws=1000)
    for model, settings in LAMBDA.items():
        fit = studies.fit_tomz_weeks(tw, model, "published", settings, sampler)
        fit.group_effects(level=0.9).to_csv(out / f"{model}_groups.csv", **CSV)
        fit.coefs().to_csv(out / f"{model}_coefs.csv", **CSV)
        times = ["wall_seconds", "compile_seconds", "sampling_seconds"]
        fit.diagnostics().drop(columns=times).to_csv(out / f"{model}_diagnostics.csv", **CSV)
        if model in ARCHIVED:
            write_archive(fit, out / f"{model}.nc")
    est = {"ols": S.ols_estimator, "hierarchical": S.hierarchical_estimator}
    sim = [S.run_replicate(design, 0, 12, est) for design in (1, 2)]
    pd.concat(sim, ignore_index=True).to_csv(out / "sim.csv", **CSV)


def logit_models(tw: pd.DataFrame, params: dict, out: Path) -> None:
    cfg, rob = params["models"], params["robustness"]
    sampler = studies.Sampler(seed=cfg["seed"], chains=cfg["chains"], draws=cfg["draws"])
    by_name = {v.name: v for v in robustness.CONDITION_VARIANTS}
    for name in LOGIT:
        fit = robustness.fit_variant(
            tw, by_name[name], rob["coding"], cfg["m1"], sampler, rob["logit"]
        )
        assert fit.engine == "qmc", fit.engine
        fit.group_effects().to_csv(out / f"{name}_groups.csv", **CSV)
        fit.group_effects(scale="logit").to_csv(out / f"{name}_logit.csv", **CSV)
        fit.coefs().to_csv(out / f"{name}_coefs.csv", **CSV)


def varying_slopes_models(tw: pd.DataFrame, params: dict, out: Path) -> None:
    cfg = params["models"]
    sampler = studies.Sampler(
        seed=cfg["seed"], chains=cfg["chains"], draws=cfg["draws"], tune=cfg["tune"]
    )
    bp = bush_prather.clean(RAW / params["clean"]["bush_prather"]["file"]).data
    for name in ("a1", "bp"):
        settings = cfg[name]
        fit = (
            studies.fit_tomz_weeks(tw, "a1", "published", settings, sampler)
            if name == "a1"
            else studies.fit_bush_prather(bp, "published", settings, sampler)
        )
        assert fit.engine == settings["engine"], fit.engine
        fit.group_effects().to_csv(out / f"{name}_groups.csv", **CSV)
        fit.coefs().to_csv(out / f"{name}_coefs.csv", **CSV)
        write_archive(fit, out / f"{name}.nc")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tw = tomz_weeks.clean(RAW / params["clean"]["tomz_weeks"]["file"]).data
    seconds = []
    for block, run in (
        ("lambda", lambda: lambda_models(tw, out)),
        ("logit", lambda: logit_models(tw, params, out)),
        ("varying_slopes", lambda: varying_slopes_models(tw, params, out)),
    ):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        seconds.append(
            {"block": block, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        )
    pd.DataFrame(seconds).to_csv(out / "seconds.csv", index=False)
    (out / "runtime.json").write_text(json.dumps(runtime(), indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
