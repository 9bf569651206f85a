"""Worker of tests/test_varying_slopes_qmc.py: fit A1 and Bush-Prather (published coding,
params.yaml settings, the given engine) and save groups.csv/coefs.csv numbers to an .npz.

Run in a subprocess whose environment emulates another CPU::

    python tests/vs_crosscpu_worker.py ENGINE OUT.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main(engine: str, out: str) -> None:
    from hetfx.paper import studies
    from hetfx.paper.data import bush_prather, tomz_weeks

    raw = ROOT / "data" / "raw"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    clean = yaml.safe_load((ROOT / "params.yaml").read_text())["clean"]
    sampler = studies.Sampler(
        seed=params["seed"], chains=params["chains"], draws=params["draws"], tune=params["tune"]
    )
    tw = tomz_weeks.clean(raw / clean["tomz_weeks"]["file"]).data
    bp = bush_prather.clean(raw / clean["bush_prather"]["file"]).data
    res = {}
    for name in ("a1", "bp"):
        settings = {**params[name], "engine": engine}
        fit = (
            studies.fit_tomz_weeks(tw, "a1", "published", settings, sampler)
            if name == "a1"
            else studies.fit_bush_prather(bp, "published", settings, sampler)
        )
        g = fit.group_effects()
        c = fit.coefs()
        res[f"{name}_groups"] = g[["estimate", "q025", "q10", "q90", "q975"]].to_numpy(float)
        res[f"{name}_coefs"] = c[["mean", "sd", "q025", "q975"]].to_numpy(float)
        res[f"{name}_seconds"] = np.array(fit.diagnostics_record.wall_seconds)
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
