"""Speed of the paper's model fits against the original brms run (not a pipeline stage).

Usage::

    python analysis/benchmark.py              # fast engines and full NUTS (nutpie)
    python analysis/benchmark.py --fast-only  # the pipeline's engines only

Prints one row per model and engine: compile and sampling seconds (the total includes data
preparation and compilation), min bulk ESS, ESS per second, and how many times faster than
brms (tests/fixtures/brms/timings.csv: compile + sampling, 4 chains x 1000 draws, on the
same kind of 2-core machine). Settings are those of params.yaml, with the draws of the
original run. Needs the cleaned data (dvc repro clean_tomz_weeks clean_bush_prather).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

from _stage import load_params  # noqa: E402
from hetfx import studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRMS = ROOT / "tests" / "fixtures" / "brms" / "timings.csv"
#: brms run each of our models is compared with (A1: the adapt_delta .95 run, no divergence)
BRMS_RUN = {"m1": "m1", "m2": "m2_published", "a1": "m3_ad95", "m1_ols": "m1_ols",
            "m2_ols": "m2_ols", "bp": None}
FULL_ENGINE = {"m1": "nutpie", "m2": "nutpie", "a1": "nutpie", "bp": "nutpie"}


def run_one(model: str, engine: str | None, tw, bp, params) -> dict:
    cfg = params.models
    sampler = studies.Sampler(seed=cfg.seed, chains=cfg.chains, draws=cfg.draws, tune=cfg.tune)
    settings = getattr(cfg, model, None)
    settings = settings.model_dump() if settings is not None else {}
    if engine:
        settings["engine"] = engine
    start = time.perf_counter()
    if model == "bp":
        fit = studies.fit_bush_prather(bp, "published", settings, sampler)
    else:
        fit = studies.fit_tomz_weeks(tw, model, "published", settings, sampler)
    total = time.perf_counter() - start
    row = {"model": model, "sampler": engine or settings.get("engine", "ols"),
           "total_s": total}
    if hasattr(fit, "diagnostics_record"):
        d = fit.diagnostics_record
        row.update(compile_s=d.compile_seconds, sampling_s=d.sampling_seconds,
                   min_ess_bulk=d.min_ess_bulk, max_r_hat=d.max_r_hat,
                   divergences=d.divergences, ess_per_s=d.min_ess_bulk / total)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast-only", action="store_true", help="skip full NUTS (nutpie)")
    parser.add_argument("--models", default="m1,m2,a1,bp,m1_ols,m2_ols")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    params = load_params()
    tw = pd.read_parquet("data/clean/tomz_weeks.parquet")
    bp = pd.read_parquet("data/clean/bush_prather.parquet")
    brms = pd.read_csv(BRMS).drop_duplicates("fit").set_index("fit")
    rows = []
    for model in args.models.split(","):
        engines = [None]
        if not args.fast_only and model in FULL_ENGINE:
            engines.append(FULL_ENGINE[model])
        for engine in engines:
            print(f"fitting {model} ({engine or 'pipeline engine'}) ...", file=sys.stderr,
                  flush=True)
            rows.append(run_one(model, engine, tw, bp, params))
    table = pd.DataFrame(rows)
    ref = table["model"].map(BRMS_RUN)
    table["brms_total_s"] = ref.map(brms["total_wall_s"])
    table["brms_min_ess"] = ref.map(brms["min_bulk_ess"])
    table["times_faster"] = table["brms_total_s"] / table["total_s"]
    cols = ["model", "sampler", "compile_s", "sampling_s", "total_s", "min_ess_bulk",
            "ess_per_s", "max_r_hat", "divergences", "brms_total_s", "brms_min_ess",
            "times_faster"]
    print(table.reindex(columns=cols).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
