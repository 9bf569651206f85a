"""The specification decomposition, the robustness numbers and the replication verdict.

Inputs are the artifacts of the fit stages (M1/M2 with and without the grouping variables'
main effects, under both codings) and of the ``robustness`` stage; outputs are formatted
variables for ``_variables.yml`` and markdown tables. The verdict on each of the paper's claims
is the claims register of :mod:`hetfx.paper.claims`, computed from these numbers by the rules
stated in :data:`hetfx.paper.claims.RULES`, so the sentences change when the numbers do.

The four analyses of the decomposition (replication spec section 6):

=====================  ===================  =========================================
analysis               coding               outcome equation
=====================  ===================  =========================================
``published``          published            without the grouping variables
``coding_fixes``       corrected            without the grouping variables
``specification_fix``  published            with their main effects
``corrected``          corrected            with their main effects
=====================  ===================  =========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from hetfx.paper import claims as C
from hetfx.paper import provenance
from hetfx.paper.report import fmt_int, fmt_num, fmt_pct, fmt_signed, markdown_table

__all__ = ["ANALYSES", "SpecificationInputs", "specification_report"]

#: analysis -> (model suffix, coding) of the fit directories ``<model><suffix>_<coding>``.
ANALYSES: dict[str, tuple[str, str]] = {
    "published": ("", "published"),
    "coding_fixes": ("", "corrected"),
    "specification_fix": ("_main_effects", "published"),
    "corrected": ("_main_effects", "corrected"),
}
ANALYSIS_LABELS = {
    "published": "Published",
    "coding_fixes": "Coding fixes only",
    "specification_fix": "Main effects only",
    "corrected": "Corrected (both)",
}

KEYS = ["regime", "stakes", "costs", "region"]


@dataclass
class SpecificationInputs:
    """What the section reads (``analysis/report.py`` loads it).

    Attributes
    ----------
    fits : mapping
        ``(model, analysis) -> {"groups", "coefs"}`` for model in m1, m2, m1_ols and analysis
        in :data:`ANALYSES` (OLS: coding only, so ``coding_fixes`` and ``corrected`` share a
        fit, as do ``published`` and ``specification_fix``).
    cells : mapping
        analysis -> Figure 8's cells of that analysis' M2 fit.
    robustness : mapping
        Table name -> frame of ``results/robustness`` (spread, signs, prior, coarse, loo, ppc).
    sensitivity : pandas.DataFrame, optional
        ``results/simulation/sensitivity/summary.csv``: the simulation under both DGPs (with
        and without baseline shifts) and four estimators.
    bias_by_size : pandas.DataFrame, optional
        ``results/simulation/groupsize/bias_by_size.csv``: the mean absolute error of design 2
        by scenario, model and group-size bin (for the register's small-group claim).
    """

    fits: Mapping
    cells: Mapping
    robustness: Mapping
    sensitivity: pd.DataFrame | None = None
    bias_by_size: pd.DataFrame | None = None


def _region(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"region_txt": "region"})


def _m1_stats(hier: pd.DataFrame, ols: pd.DataFrame) -> dict[str, float]:
    both = _region(hier)[KEYS + ["estimate"]].merge(
        _region(ols)[KEYS + ["estimate"]], on=KEYS, suffixes=("", "_ols"), validate="1:1"
    )
    low = both.loc[both["estimate_ols"].idxmin()]
    mean_ols = both["estimate_ols"].mean()
    return {
        "m1_sd": both["estimate"].std(ddof=1),
        "m1_ols_sd": both["estimate_ols"].std(ddof=1),
        "m1_min": both["estimate"].min(),
        "m1_max": both["estimate"].max(),
        "m1_cor_ols": both["estimate"].corr(both["estimate_ols"]),
        "m1_at_ols_min": low["estimate"],
        "m1_ols_min": low["estimate_ols"],
        "m1_ols_mean": mean_ols,
        "m1_shrinkage": (low["estimate"] - low["estimate_ols"]) / (mean_ols - low["estimate_ols"]),
    }


def _m2_stats(coefs: pd.DataFrame, cells: pd.DataFrame) -> dict[str, float]:
    eff = coefs.loc[coefs["equation"] == "effect"].set_index("term")
    out = {}
    for term in ("high_newsint", "dem", "rep", "white", "male"):
        out[f"g_{term}"] = eff.loc[term, "mean"]
        out[f"g_{term}_lo"] = eff.loc[term, "q025"]
        out[f"g_{term}_hi"] = eff.loc[term, "q975"]
    modifiers = eff.drop(index="Intercept", errors="ignore")
    out["g_news_largest"] = float(modifiers["mean"].abs().idxmax() == "high_newsint")
    out["cells_min"], out["cells_max"] = cells["estimate"].min(), cells["estimate"].max()
    out["cells_q10_positive"] = float((cells["q10"] > 0).sum())
    out["cells"] = float(len(cells))
    return out


def decomposition(inputs: SpecificationInputs) -> dict[str, dict[str, float]]:
    """analysis -> statistics of M1 (against saturated OLS of the same coding) and M2."""
    out = {}
    for analysis in ANALYSES:
        ols = inputs.fits[("m1_ols", analysis)]["groups"]
        stats = _m1_stats(inputs.fits[("m1", analysis)]["groups"], ols)
        stats |= _m2_stats(inputs.fits[("m2", analysis)]["coefs"], inputs.cells[analysis])
        out[analysis] = {k: float(v) for k, v in stats.items()}
    return out


def _interval(d: Mapping[str, float], name: str) -> str:
    return f"{fmt_num(d[name])} [{fmt_num(d[name + '_lo'])}, {fmt_num(d[name + '_hi'])}]"


def decomposition_table(dec: Mapping[str, Mapping[str, float]]) -> str:
    rows = [
        ("M1: SD of the 32 condition effects", lambda d: fmt_num(d["m1_sd"])),
        (
            "M1: smallest and largest effect",
            lambda d: f"{fmt_num(d['m1_min'])} to {fmt_num(d['m1_max'])}",
        ),
        ("M1: correlation with saturated OLS", lambda d: fmt_num(d["m1_cor_ols"])),
        ("M1: effect in the most negative OLS condition", lambda d: fmt_num(d["m1_at_ols_min"])),
        ("M2: γ high news interest", lambda d: _interval(d, "g_high_newsint")),
        ("M2: γ Democrat", lambda d: _interval(d, "g_dem")),
        ("M2: γ Republican", lambda d: _interval(d, "g_rep")),
        ("M2: γ white", lambda d: _interval(d, "g_white")),
        ("M2: γ male", lambda d: _interval(d, "g_male")),
        (
            "M2 demographic cells: weakest and strongest",
            lambda d: f"{fmt_num(d['cells_min'])} to {fmt_num(d['cells_max'])}",
        ),
        (
            "M2 demographic cells with a 10% quantile above 0",
            lambda d: f"{fmt_int(d['cells_q10_positive'])} of {fmt_int(d['cells'])}",
        ),
    ]
    frame = pd.DataFrame(
        {
            "Statistic": [r[0] for r in rows],
            **{ANALYSIS_LABELS[a]: [r[1](dec[a]) for r in rows] for a in ANALYSES},
        }
    )
    return markdown_table(
        frame,
        "From the published to the corrected analysis: the coding fixes alone, the "
        "grouping variables' main effects in the outcome equation alone, and both "
        "(posterior medians; M2 coefficients as mean and 95% interval)",
        "decomposition",
        align="lrrrr",
    )


def robustness_numbers(rob: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """The numbers the text quotes from ``results/robustness``."""
    spread = rob["spread"].set_index("variant")
    out: dict[str, float] = {}
    for v, row in spread.iterrows():
        for stat in ("sd", "min", "max", "cor_ols", "neg1"):
            out[f"{v}_{stat}"] = float(row[stat])
    signs = rob["signs"].set_index(["variant_a", "variant_b"])["opposite_signs"]
    out["signs_published_ols"] = float(signs[("ols_saturated", "m1_published")])
    out["signs_main_effects_ols"] = float(signs[("ols_saturated", "m1_main_effects")])
    out["signs_max"] = float(signs.max())
    out["prior_max_change"] = float(rob["prior"]["max_abs_change"].max())
    out["prior_min_cor"] = float(rob["prior"]["cor_default"].min())
    coarse = rob["coarse"].pivot(index="treat_group", columns="variant", values="estimate")
    for v in ("m1_published", "m1_main_effects"):
        out[f"coarse_gap_{v}"] = float((coarse[v] - coarse["ols_saturated"]).abs().max())
    out["coarse_groups"] = float(len(coarse))
    loo = rob["loo"].set_index("variant")
    out["loo_diff_published"] = float(loo.loc["m1_published", "elpd_diff"])
    out["loo_diff_se_published"] = float(loo.loc["m1_published", "diff_se"])
    out["loo_diff_m1_main_effects"] = float(loo.loc["m1_main_effects", "elpd_diff"])
    out["loo_diff_se_m1_main_effects"] = float(loo.loc["m1_main_effects", "diff_se"])
    out["loo_max_k"] = float(loo["max_k"].max())
    if "condition_effects" in rob:
        wide = rob["condition_effects"].pivot(
            index="treat_group", columns="variant", values="estimate"
        )
        for logit, linear in (
            ("logit_published", "m1_published"),
            ("logit_additive_main_effects", "additive_main_effects"),
        ):
            if logit in wide and linear in wide:
                out[f"logit_gap_{linear}"] = float((wide[logit] - wide[linear]).abs().max())
    ppc = rob["ppc"].groupby("variant")["inside"].mean()
    out["ppc_inside_published"] = float(ppc["m1_published"])
    out["ppc_inside_main_effects"] = float(ppc["m1_main_effects"])
    out["ppc_cells"] = float(rob["ppc"].groupby("variant").size().iloc[0])
    return out


SIM_MODELS = {
    "ols": "OLS",
    "hierarchical": "Hierarchical (published)",
    "hierarchical_fe": "Hierarchical, cell fixed effects",
    "hierarchical_pooled": "Hierarchical, pooled baselines",
}


def sensitivity_numbers(summary: pd.DataFrame) -> dict[str, float]:
    """Per DGP and estimator: the range of its 90% interval coverage, and the largest RMSE loss
    of the published specification to OLS under shifted baselines. (Wins and losses against
    OLS, counted beyond Monte Carlo noise: :func:`hetfx.paper.claims.simulation_comparisons`.)"""
    out: dict[str, float] = {}
    key = ["dgp", "design", "condition"]
    ols = summary.loc[summary["model"] == "ols"].set_index(key)["rmse_mean"]
    for (dgp, model), part in summary.groupby(["dgp", "model"]):
        part = part.set_index(key)
        name = f"{dgp}_{model}"
        out[f"{name}_cov90_min"] = float(part["coverage_90"].min())
        out[f"{name}_cov90_max"] = float(part["coverage_90"].max())
        out["conditions"] = float(len(part))
    shifted = summary.loc[summary["dgp"] == "shifted"]
    worst = shifted.loc[shifted["model"] == "hierarchical"].set_index(key)["rmse_mean"]
    gap = worst - ols.loc[worst.index]
    out["shifted_hierarchical_max_loss"] = float(gap.max())
    return out


def sensitivity_markdown(summary: pd.DataFrame) -> str:
    rows = []
    for (dgp, design, condition), part in summary.groupby(
        ["dgp", "design", "condition"], sort=False
    ):
        part = part.set_index("model")
        row = {
            "Data": "shifted baselines" if dgp == "shifted" else "as published",
            "Design": f"{int(design)}: {condition}"
            if design == 2
            else f"{int(design)}: {condition} groups",
        }
        for model, label in SIM_MODELS.items():
            r = part.loc[model]
            row[label] = (
                f"{fmt_num(r['rmse_mean'], 3)} ± {fmt_num(r['rmse_mcse'], 3)} "
                f"({fmt_num(r['coverage_90'])})"
            )
        rows.append(row)
    return markdown_table(
        pd.DataFrame(rows),
        "The simulation with and without baseline shifts (each cell's "
        "control-arm mean moved by a normal draw): mean RMSE ± MCSE over the replicates and, in "
        "brackets, the coverage of 90% intervals, for OLS and three hierarchical models",
        "sim-sensitivity",
        align="llrrrr",
    )


def spread_markdown(spread: pd.DataFrame) -> str:
    frame = pd.DataFrame(
        {
            "Model": spread["label"],
            "SD": spread["sd"].map(fmt_num),
            "Min": spread["min"].map(fmt_num),
            "Max": spread["max"].map(fmt_num),
            "Cor. with OLS": spread["cor_ols"].map(fmt_num),
            **{f"Low {i}": spread[f"neg{i}"].map(fmt_num) for i in (1, 2, 3)},
        }
    )
    return markdown_table(
        frame,
        "The 32 condition effects (published coding) under each specification: spread, "
        "correlation with saturated OLS, and the estimates of the three conditions with the "
        "lowest OLS effects (Low 1 is the lowest)",
        "robustness-spread",
        align="lrrrrrrr",
    )


def loo_markdown(loo: pd.DataFrame, ppc: pd.DataFrame) -> str:
    inside = ppc.groupby("variant")["inside"].mean()
    frame = pd.DataFrame(
        {
            "Model": loo["label"],
            "ELPD (LOO)": loo["elpd_loo"].map(lambda v: fmt_num(v, 1)),
            "Difference to best": [
                f"{fmt_signed(-d, 1)} ± {fmt_num(s, 1)}"
                for d, s in zip(loo["elpd_diff"], loo["diff_se"], strict=True)
            ],
            "p_loo": loo["p_loo"].map(lambda v: fmt_num(v, 1)),
            "Max Pareto k": loo["max_k"].map(fmt_num),
            "Cells inside 95% PPI": [fmt_pct(inside[v]) for v in loo["variant"]],
        }
    )
    return markdown_table(
        frame,
        "Leave-one-out predictive accuracy (PSIS-LOO) of the two-equation specifications "
        "and the share of the 64 condition × arm cells whose observed support lies inside the "
        "95% posterior predictive interval",
        "robustness-loo",
        align="lrrrrr",
    )


def specification_report(inputs: SpecificationInputs) -> tuple[dict[str, str], dict[str, str]]:
    """Formatted variables and markdown tables of the specification and robustness section.

    Variables are named ``dec_<analysis>_<statistic>``, ``rob_<name>`` and, from the claims
    register (:func:`hetfx.paper.claims.register_variables`), ``claim_<id>``,
    ``claim_<id>_status``, ``claim_<id>_verb``, ``claim_<id>_text`` and ``claims_<tally>``.
    """
    dec = decomposition(inputs)
    rob = robustness_numbers(inputs.robustness)
    if inputs.sensitivity is not None:
        rob |= {f"sim_{k}": v for k, v in sensitivity_numbers(inputs.sensitivity).items()}
    variables: dict[str, str] = {}
    for analysis, stats in dec.items():  # the unrounded values, for the record of sources
        provenance.note(stats, prefix=f"dec_{analysis}_")
    provenance.note(rob, prefix="rob_")
    for analysis, stats in dec.items():
        for k, v in stats.items():
            name = f"dec_{analysis}_{k}"
            variables[name] = fmt_int(v) if k in ("cells", "cells_q10_positive") else fmt_num(v)
    for k, v in rob.items():
        counts = ("signs_", "coarse_groups", "ppc_cells", "sim_conditions")
        if k.startswith(counts):
            variables[f"rob_{k}"] = fmt_int(v)
        elif k.startswith("ppc_inside"):
            variables[f"rob_{k}"] = fmt_pct(v)
        elif k.startswith("loo_diff"):
            variables[f"rob_{k}"] = fmt_num(v, 1)
        elif k == "prior_max_change":
            variables[f"rob_{k}"] = fmt_num(v, 3)
        else:
            variables[f"rob_{k}"] = fmt_num(v)
    effects = inputs.robustness.get("condition_effects")
    m2_groups = {a: inputs.fits[("m2", a)]["groups"] for a in ANALYSES}
    numbers = C.register_numbers(
        dec, rob, effects, m2_groups, inputs.sensitivity, inputs.bias_by_size
    )
    claims = C.register(numbers)
    variables |= C.register_variables(claims)
    tables = {
        "decomposition": decomposition_table(dec),
        "robustness_spread": spread_markdown(inputs.robustness["spread"]),
        "robustness_loo": loo_markdown(inputs.robustness["loo"], inputs.robustness["ppc"]),
        "verdict": C.register_table(claims),
    }
    if inputs.sensitivity is not None:
        tables["sim_sensitivity"] = sensitivity_markdown(inputs.sensitivity)
        variables["sim_interval_level"] = fmt_pct(0.9)  # the coverage the table reports
    return variables, tables
