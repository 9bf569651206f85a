"""Quoted numbers from Monte Carlo outputs are printed no finer than 4 x their MCSE.

Bush-Prather is fitted by the ``qmc`` engine (importance sampling): its group medians and
bounds carry Monte Carlo SEs (``fit.exact["groups_mcse"]``; the fit stage writes the largest
ones to diagnostics.csv/json, the appendix's diagnostics table prints them). A1 is fitted by the
exact ``quadrature`` engine: nothing is random, its numbers carry only the grid's error (at most
6.3e-5, ``varying_slopes.QUADRATURE_GRID``), which stands in for the MCSE here. The
manuscript quotes the range of the medians (two decimals) and how many 95% intervals exclude
zero (a count). A range end is safe when 4 MCSEs of its group's median stay below the printed
unit; a count is safe when no bound lies within 4 MCSEs of zero.

Measured when written: every range end is safe (4 MCSE <= .006 < .01); one count is not:
``bp_excluding_zero`` (published coding), one profile's bound lies within 4 MCSEs of zero,
so the quoted 26 may read 25 or 27 under another scramble of the Sobol points.
"""

from __future__ import annotations

import pytest
import yaml

from conftest import BP_FILE, RAW, ROOT, TW_FILE

#: Quoted counts known to rest on a bound within 4 MCSEs of zero (see the module docstring).
FRAGILE = {"bp_excluding_zero"}
#: Bound of the quadrature engine's error on A1's summaries (measured: 6.3e-5).
GRID_ERROR = 1e-4


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


@pytest.mark.slow  # three qmc fits and the cleaning of both raw files: about 20 s
def test_quoted_monte_carlo_numbers_respect_their_mcse():
    from hetfx.paper import studies
    from hetfx.paper.data import bush_prather, tomz_weeks

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    quoted = yaml.safe_load((ROOT / "manuscript" / "_variables.yml").read_text())
    sampler = studies.Sampler(seed=params["seed"], chains=params["chains"], draws=params["draws"])
    tw = tomz_weeks.clean(RAW / TW_FILE).data
    bp = bush_prather.clean(RAW / BP_FILE).data
    fits = {
        "a1": studies.fit_tomz_weeks(tw, "a1", "published", params["a1"], sampler),
        "bp": studies.fit_bush_prather(bp, "published", params["bp"], sampler),
        "cor_bp": studies.fit_bush_prather(bp, "corrected", params["bp"], sampler),
    }
    fragile = set()
    for prefix, fit in fits.items():
        g = fit.group_effects()
        if prefix == "a1":
            assert fit.engine == "quadrature" and "groups_mcse" not in fit.exact
            se = g[["estimate", "q025", "q975"]] * 0.0 + GRID_ERROR
        else:
            assert fit.engine == "qmc"
            se = fit.exact["groups_mcse"]
        for end, i in (("min", g["estimate"].idxmin()), ("max", g["estimate"].idxmax())):
            key = f"{prefix}_{end}"
            unit = 10.0 ** -_decimals(str(quoted[key]))
            assert 4 * se["estimate"][i] <= unit, (key, se["estimate"][i], quoted[key])
        key = f"{prefix}_excluding_zero"
        if key in quoted:
            assert int(quoted[key]) == int(((g["q025"] > 0) | (g["q975"] < 0)).sum()), key
            near = (g["q025"].abs() < 4 * se["q025"]) | (g["q975"].abs() < 4 * se["q975"])
            if near.any():
                fragile.add(key)
    assert fragile == FRAGILE, fragile


def test_diagnostics_table_prints_the_largest_mcses():
    import pandas as pd

    from hetfx.paper import report as R

    row = {
        "sampler": "qmc",
        "chains": 1,
        "draws": 16384,
        "max_r_hat": float("nan"),
        "min_ess_bulk": 9000.0,
        "min_ess_tail": 9000.0,
        "divergences": 0,
        "pareto_k": 0.31,
    }
    imp = pd.DataFrame([{**row, "mcse_estimate_max": 0.00123, "mcse_bounds_max": 0.0042}])
    nuts = pd.DataFrame([{**row, "sampler": "nutpie", "pareto_k": float("nan")}])
    shown = R.diagnostics_markdown(
        R.diagnostics_table({("a1", "published"): imp, ("m1", "published"): nuts})
    )
    col = "Max MCSE (median; 95% bounds)"
    assert shown[col].tolist() == ["0.0012; 0.0042", "–"]
