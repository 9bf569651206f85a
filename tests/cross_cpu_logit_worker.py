"""Fits whose summaries tests/test_cross_cpu_logit.py compares across emulated CPUs.

Usage: python tests/cross_cpu_logit_worker.py OUT_DIR

Writes OUT_DIR/{variant}_{groups,logit,coefs}.csv at full precision for the robustness
stage's two logit variants (published coding, params.yaml settings, the default ``qmc``
engine) and OUT_DIR/seconds.csv (wall and CPU seconds of each fit).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from hetfx.paper import robustness, studies
from hetfx.paper.data import tomz_weeks

ROOT = Path(__file__).resolve().parents[1]
TW_FILE = ROOT / "data" / "raw" / "tomz-weeks-2021" / "2017-04-YouGov-extracted.dta"
VARIANTS = ("logit_published", "logit_additive_main_effects")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg, rob = params["models"], params["robustness"]
    sampler = studies.Sampler(seed=cfg["seed"], chains=cfg["chains"], draws=cfg["draws"])
    tw = tomz_weeks.clean(TW_FILE).data
    by_name = {v.name: v for v in robustness.CONDITION_VARIANTS}
    seconds = []
    for name in VARIANTS:
        t0, c0 = time.perf_counter(), time.process_time()
        fit = robustness.fit_variant(
            tw, by_name[name], rob["coding"], cfg["m1"], sampler, rob["logit"]
        )
        seconds.append(
            {"variant": name, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        )
        assert fit.engine == "qmc", fit.engine
        kw = {"index": False, "float_format": "%.17g"}
        fit.group_effects().to_csv(out / f"{name}_groups.csv", **kw)
        fit.group_effects(scale="logit").to_csv(out / f"{name}_logit.csv", **kw)
        fit.coefs().to_csv(out / f"{name}_coefs.csv", **kw)
    pd.DataFrame(seconds).to_csv(out / "seconds.csv", index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
