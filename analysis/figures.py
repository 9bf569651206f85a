"""Stage `figures_tomz_weeks@<coding>`: Figures 5-8, A1, A2 and Figure 8's 24 cells.

Usage: python analysis/figures.py CODING

Reads results/{tomz_weeks,bush_prather}/<model>_<coding>/ and writes
results/tomz_weeks/demographics_cells_<coding>.csv and manuscript/figures/figure{5,6,7,8,_a1,_a2}
(.png at 300 dpi and .svg); the corrected coding's files carry the suffix `_corrected`.
"""

from __future__ import annotations

import os

# one BLAS thread, before numpy is imported: the stage writes the same bytes whether or not
# it runs under make (which sets this too)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
from pathlib import Path

import pandas as pd

from _figures import save_figures
from _stage import log, run, write_csv
from hetfx.paper import figures, studies

RESULTS = Path("results")
FIGURES = Path("manuscript/figures")
SIZES = figures.SIZES  # width, height in inches: at most the text width


def read(study: str, model: str, coding: str, name: str) -> pd.DataFrame:
    path = RESULTS / study / f"{model}_{coding}" / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the fit stages first (dvc repro)")
    return pd.read_csv(path)


def main(coding: str) -> None:
    stage = f"figures_tomz_weeks@{coding}"
    suffix = "" if coding == "published" else f"_{coding}"
    m1, m1_ols = (
        read("tomz_weeks", "m1", coding, "groups"),
        read("tomz_weeks", "m1_ols", coding, "groups"),
    )
    m2 = read("tomz_weeks", "m2", coding, "groups")
    cells = studies.demographic_cells(m2)
    cells_path = RESULTS / "tomz_weeks" / f"demographics_cells_{coding}.csv"
    write_csv(cells, cells_path)
    log(stage, f"wrote {cells_path} ({len(cells)} cells)")
    plots = {
        "figure5": figures.figure5(m1, m1_ols),
        "figure6": figures.figure6(m1, m1_ols),
        "figure7": figures.figure7(read("tomz_weeks", "m2", coding, "coefs")),
        "figure8": figures.figure8(cells),
        "figure_a1": figures.figure_a1(read("tomz_weeks", "a1", coding, "groups")),
        "figure_a2": figures.figure_a2(read("bush_prather", "bp", coding, "groups")),
    }
    for stem in save_figures(
        [(plot, FIGURES / f"{name}{suffix}", *SIZES[name]) for name, plot in plots.items()]
    ):
        log(stage, f"wrote {stem}.png/.svg")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in studies.CODINGS:
        sys.exit(f"usage: python analysis/figures.py {{{','.join(studies.CODINGS)}}}")
    run(
        f"figures_tomz_weeks@{sys.argv[1]}",
        lambda: main(sys.argv[1]),
        (FileNotFoundError, KeyError),
    )
