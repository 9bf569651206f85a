"""Stage `robustness`: the specification and robustness checks of the condition model.

Usage: python analysis/robustness.py

Reads data/clean/tomz_weeks.parquet and params.yaml (models, robustness), fits every variant
of hetfx.paper.robustness and writes results/robustness/*.csv and the comparison figure
manuscript/figures/figure_robustness.{png,svg}; the fits' run times go to timings/robustness.csv
(git-ignored, no DVC output), so a rerun writes the same bytes. A Bayesian fit that fails the
diagnostic gate fails the stage, naming the fit; nothing is left behind.
"""

from __future__ import annotations

import os

# one BLAS thread, before numpy is imported: the stage writes the same bytes whether or not
# it runs under make (which sets this too)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import shutil
from pathlib import Path

import pandas as pd

from _stage import MONTE_CARLO_DIGITS, load_params, log, run, split_timings, write_csv
from hetfx.inference import SamplerDiagnosticsError
from hetfx.paper import figures, robustness
from hetfx.paper.params import ParamsError

STAGE = "robustness"
OUT = Path("results/robustness")
FIGURE = Path("manuscript/figures/figure_robustness")


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    params = load_params()
    if params.robustness is None:
        raise ParamsError("params.yaml has no robustness section")
    tw = pd.read_parquet("data/clean/tomz_weeks.parquet")
    log(STAGE, f"{len(tw)} rows, {params.robustness.coding} coding")
    res = robustness.run_checks(
        tw, params.models, params.robustness, progress=lambda m: log(STAGE, m)
    )
    OUT.mkdir(parents=True, exist_ok=True)
    # run times to timings/robustness.csv (not committed): a rerun writes the same bytes
    res.diagnostics = split_timings(res.diagnostics, STAGE)
    for name, table in res.tables().items():
        write_csv(table, OUT / f"{name}.csv", MONTE_CARLO_DIGITS)
    log(STAGE, f"wrote {len(res.tables())} tables to {OUT}/")
    width, height = figures.SIZES["figure_robustness"]
    figures.save(
        figures.figure_robustness(res.condition_effects), FIGURE, width=width, height=height
    )
    log(STAGE, f"wrote {FIGURE}.png/.svg")


if __name__ == "__main__":

    def _main() -> None:
        try:
            main()
        except BaseException:
            shutil.rmtree(OUT, ignore_errors=True)
            raise

    run(
        STAGE,
        _main,
        (SamplerDiagnosticsError, ParamsError, FileNotFoundError, ValueError, KeyError),
    )
