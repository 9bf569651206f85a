"""Fits whose summaries tests/test_cross_cpu.py compares across emulated CPUs.

Usage: python tests/cross_cpu_worker.py OUT_DIR

Writes OUT_DIR/{m1_groups,m1_coefs,m2_groups,m2_coefs,sim}.csv at full precision: M1 and M2
(published coding, the pipeline's settings) and replicate 0 of both simulation designs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hetfx.paper import simulation as S
from hetfx.paper import studies
from hetfx.paper.data import tomz_weeks

ROOT = Path(__file__).resolve().parents[1]
TW_FILE = ROOT / "data" / "raw" / "tomz-weeks-2021" / "2017-04-YouGov-extracted.dta"
SETTINGS = {"m1": {"gamma_sd": 1.0, "beta_sd": 1.0}, "m2": {"gamma_sd": 1.0, "beta_sd": 0.5}}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tw = tomz_weeks.clean(TW_FILE).data
    sampler = studies.Sampler(seed=12, chains=4, draws=1000)
    for model, settings in SETTINGS.items():
        fit = studies.fit_tomz_weeks(tw, model, "published", settings, sampler)
        fit.group_effects(level=0.9).to_csv(
            out / f"{model}_groups.csv", index=False, float_format="%.17g"
        )
        fit.coefs().to_csv(out / f"{model}_coefs.csv", index=False, float_format="%.17g")
    est = {"ols": S.ols_estimator, "hierarchical": S.hierarchical_estimator}
    sim = [S.run_replicate(design, 0, 12, est) for design in (1, 2)]
    import pandas as pd

    pd.concat(sim, ignore_index=True).to_csv(out / "sim.csv", index=False, float_format="%.17g")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
