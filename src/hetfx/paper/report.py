"""Numbers, tables and the replication report of the manuscript (stage ``report``).

Everything the manuscript quotes is computed here from the result artifacts (design §3) and
``params.yaml``; the manuscript only names it (``{{< var name >}}``, ``{{< include >}}``).
Functions take data frames and mappings and return data frames, markdown strings or
mappings; nothing here reads or writes files (``analysis/report.py`` does).

Contents

* formatting: :func:`fmt_num`, :func:`fmt_pct`, :func:`fmt_int`, :func:`markdown_table`;
* Table 1 (:data:`APPROACHES`, :func:`table1`) and the prior table (:func:`priors_table`);
* numbers for the text: :func:`tomz_weeks_facts`, :func:`simulation_numbers`,
  :func:`m1_numbers`, :func:`m2_numbers`, :func:`cells_numbers`, :func:`appendix_numbers`;
* the replication report: :data:`PUBLISHED` and :func:`compare_with_published` (reproduced
  vs published), :func:`compare_codings` and :func:`group_shift_summary` (published vs
  corrected coding), :func:`diagnostics_table`, :func:`simulation_mc_table`;
* :func:`to_variables`, which turns the numbers into the strings of ``_variables.yml``;
* :func:`build_report`, which assembles all of the above from :class:`ReportInputs`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hetfx.paper import provenance
from hetfx.paper.cells import CELL_KEYS

MINUS = "\u2212"

# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def fmt_num(x: float, digits: int = 2) -> str:
    """``0.331 -> "0.33"``, ``-0.2 -> "−0.20"`` (typographic minus); ``nan -> "–"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    text = f"{float(x):.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", MINUS)


def fmt_signed(x: float, digits: int = 2) -> str:
    """Like :func:`fmt_num` but with an explicit ``+`` for positive values."""
    text = fmt_num(x, digits)
    if text.startswith(MINUS) or text == "–" or float(text) == 0:
        return text
    return "+" + text


def fmt_pct(x: float, digits: int = 0) -> str:
    """A proportion as a percentage: ``0.331 -> "33%"``."""
    return fmt_num(100 * float(x), digits) + "%"


def fmt_int(x: float) -> str:
    """An integer with a thousands separator: ``1200 -> "1,200"``."""
    return f"{int(round(float(x))):,}"


def markdown_table(
    frame: pd.DataFrame,
    caption: str | None = None,
    label: str | None = None,
    align: str | None = None,
) -> str:
    """A pipe table, followed by ``: caption {#tbl-label}`` when a caption is given.

    ``align`` has one letter per column (``l``, ``r``, ``c``); default: text columns left,
    the others right. Cells are written as given (format numbers first).
    """
    columns = list(frame.columns)
    if align is None:
        align = "".join(
            "r" if pd.api.types.is_numeric_dtype(frame[c]) or _looks_numeric(frame[c]) else "l"
            for c in columns
        )
    if len(align) != len(columns):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(columns)} columns")

    def cell(v) -> str:
        return _unbreakable(str(v).replace("|", "\\|").replace("\n", " "))

    dashes = _column_dashes(
        [cell(c) for c in columns], [[cell(v) for v in frame[c]] for c in columns]
    )
    rule = {"l": ":{}", "r": "{}:", "c": ":{}:"}
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "|".join(rule[a].format("-" * d) for a, d in zip(align, dashes, strict=True)) + "|",
    ]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    text = "\n".join(lines) + "\n"
    if caption:
        text += f"\n: {caption}" + (f" {{#tbl-{label}}}" if label else "") + "\n"
    return text


NBSP = "\u00a0"
#: An estimate with its interval, ``0.14 [0.06, 0.23]``, and a reference, ``Figure 1``, ``§ 3``:
#: kept on one line in a table cell (their spaces become non-breaking).
_INTERVAL = re.compile(r"(?:[^\s\[\]]+ )?\[[^\[\]]*\]")
_REFERENCE = re.compile(r"\b(Figures?|Tables?|Sections?|§) (?=[A-Z]?\d)")
#: Characters of 8 pt table text across the text width (6 in), cell padding included.
TABLE_LINE_CHARS = 100
#: Characters of cell padding per column.
CELL_PADDING = 3
#: pandoc's line length: a pipe table with a longer line gets the relative column widths of
#: its dashes, a shorter one columns as wide as their content.
PANDOC_COLUMNS = 72


def _unbreakable(text: str) -> str:
    """``text`` with non-breaking spaces inside intervals and references."""
    text = _INTERVAL.sub(lambda m: m.group(0).replace(" ", NBSP), text)
    return _REFERENCE.sub(lambda m: m.group(1) + NBSP, text)


def _column_dashes(header: list[str], cells: list[list[str]]) -> list[int]:
    """Dashes of a pipe table's separator line: relative column widths for pandoc.

    A column gets at least its longest unbreakable run (words joined by non-breaking spaces;
    a header wraps between words, so it needs only its longest word), so that no interval
    wraps; the space left is shared in proportion to how much wider each column's longest cell
    is. A table whose lines are all shorter than pandoc's line length keeps a short separator
    (pandoc then sizes its columns to their content).
    """

    def shown(text: str) -> int:  # markdown escapes and zero-width spaces take no room
        return len(re.sub(r"\\(.)", r"\1", text).replace("\u200b", ""))

    def runs(text: str) -> list[int]:  # lengths of the runs between break opportunities
        return [shown(w) for w in re.split("[ \u200b-]", text)]

    least = [
        max(runs(h) + [max(runs(c), default=0) for c in col]) + CELL_PADDING
        for h, col in zip(header, cells, strict=True)
    ]
    want = [
        max([lo] + [shown(c) + CELL_PADDING for c in col])
        for lo, col in zip(least, cells, strict=True)
    ]
    if sum(want) <= TABLE_LINE_CHARS:
        widths = [float(w) for w in want]
    else:
        spare = max(TABLE_LINE_CHARS - sum(least), 0)
        extra = [w - lo for w, lo in zip(want, least, strict=True)]
        widths = [lo + spare * e / max(sum(extra), 1) for lo, e in zip(least, extra, strict=True)]
    rows = [header, *zip(*cells, strict=True)]
    wide = max(len("| " + " | ".join(r) + " |") for r in rows) > PANDOC_COLUMNS
    total = 100 if wide else 30
    return [max(3, round(total * w / sum(widths))) for w in widths]


def _looks_numeric(values: pd.Series) -> bool:
    def numeric(v) -> bool:
        s = str(v).replace(MINUS, "-").replace(",", "").replace("%", "").lstrip("+")
        try:
            float(s)
            return True
        except ValueError:
            return s in ("–", "")

    return bool(len(values)) and all(numeric(v) for v in values)


# --------------------------------------------------------------------------------------
# Table 1 and the priors
# --------------------------------------------------------------------------------------

#: The paper's Table 1: approach -> characteristic -> value (paper §2).
APPROACHES: dict[str, dict[str, str]] = {
    "Hierarchical model": {
        "Number of modifiers": "Two or more",
        "Best sample size": "Medium",
        "Complexity": "Medium",
        "Computational cost": "Depends on the model",
        "Interpretability": "High",
        "Modifiers are": "Specified",
    },
    "Interactions": {
        "Number of modifiers": "One or two",
        "Best sample size": "Medium to large",
        "Complexity": "Low",
        "Computational cost": "Low",
        "Interpretability": "High",
        "Modifiers are": "Specified",
    },
    "Machine learning": {
        "Number of modifiers": "Many",
        "Best sample size": "Large",
        "Complexity": "High",
        "Computational cost": "Variable",
        "Interpretability": "Low",
        "Modifiers are": "Discovered or specified",
    },
}


def table1(approaches: Mapping[str, Mapping[str, str]] = APPROACHES) -> pd.DataFrame:
    """Characteristics (rows) by approach (columns)."""
    frame = pd.DataFrame(approaches)
    frame.index.name = "Characteristic"
    return frame.reset_index()


def _prior_text(spec) -> str:
    """``{kind: half_student_t, nu: 3, scale: 2.5}`` -> ``half-Student-t(3, 0, 2.5)``."""
    if isinstance(spec, (int, float)):
        return f"Normal(0, {spec:g})"
    if spec == "flat":
        return "flat (improper uniform)"
    kind = spec.get("kind")
    if kind == "half_student_t":
        return f"half-Student-t({spec['nu']:g}, 0, {spec['scale']:g})"
    if kind == "half_normal":
        return f"half-Normal(0, {spec['scale']:g})"
    if kind == "normal":
        return f"Normal({spec.get('loc', 0):g}, {spec['scale']:g})"
    raise ValueError(f"unknown prior kind {kind!r} in {spec!r}")


#: How each model section of ``params.yaml`` is described in the prior table.
MODEL_NAMES = {
    "m1": "M1 (Figures 5–6)",
    "m2": "M2 (Figures 7–8)",
    "a1": "A1 (@fig-a1)",
    "bp": "Bush–Prather (@fig-a2)",
}
PRIOR_ROWS = (  # key in params, parameter, role
    ("gamma_sd", "γ", "effect equation coefficients"),
    ("beta_sd", "β", "control equation coefficients"),
    ("intercept", "b₀", "intercept (predictors centred, as brms)"),
    ("b_sd", "b", "population-level coefficients"),
    ("sigma_theta", "σ_θ", "SD of the group effects θ"),
    ("sd", "σ_group", "SDs of varying intercepts and slopes"),
    ("lkj_eta", "Ω", "correlation of intercept and slope"),
    ("sigma", "σ", "residual SD"),
)


def priors_table(models: Mapping) -> pd.DataFrame:
    """One row per model x parameter, from the ``models:`` section of ``params.yaml``."""
    rows = []
    for key, name in MODEL_NAMES.items():
        spec = models.get(key)
        if spec is None:
            continue
        for field, symbol, role in PRIOR_ROWS:
            if field not in spec:
                continue
            value = spec[field]
            prior = f"LKJ({value:g})" if field == "lkj_eta" else _prior_text(value)
            rows.append({"Model": name, "Parameter": symbol, "Role": role, "Prior": prior})
    if not rows:
        raise ValueError("params models: section has none of " + ", ".join(MODEL_NAMES))
    return pd.DataFrame(rows)


def sampler_settings(models: Mapping) -> dict[str, float]:
    """Chains, draws, warm-up and seed from the ``models:`` section."""
    return {k: models[k] for k in ("chains", "draws", "tune", "seed") if k in models}


# --------------------------------------------------------------------------------------
# Numbers for the text
# --------------------------------------------------------------------------------------


def _fact(checks: pd.DataFrame, name: str) -> float:
    hit = checks.loc[checks["name"] == name, "value"]
    if hit.empty:
        raise KeyError(f"the cleaning checks have no fact {name!r}")
    return float(hit.iloc[0])


def tomz_weeks_facts(checks: pd.DataFrame) -> dict[str, float]:
    """Raw-data facts of Tomz and Weeks from the cleaning stage's checks table."""
    return {
        "tw_n": _fact(checks, "rows"),
        "tw_force_no_alliance": _fact(checks, "mean of force without alliance"),
        "tw_force_alliance": _fact(checks, "mean of force with alliance"),
        "tw_ate": _fact(checks, "alliance difference in force"),
        "tw_n_cells": _fact(checks, "alliance x treat_group cells"),
        "tw_cell_min": _fact(checks, "smallest alliance x treat_group cell"),
        "tw_cell_max": _fact(checks, "largest alliance x treat_group cell"),
        "tw_n_groups": _fact(checks, "treat_groups"),
        "tw_group_min": _fact(checks, "smallest treat_group"),
        "tw_group_max": _fact(checks, "largest treat_group"),
    }


def bush_prather_facts(checks: pd.DataFrame) -> dict[str, float]:
    """Sample sizes of the Bush–Prather model."""
    n = _fact(checks, "complete cases")
    without = _fact(checks, "complete cases without side-taking")
    return {"bp_n": n, "bp_n_no_side": without, "bp_n_side": n - without}


def one_replicate_rmse(estimates: pd.DataFrame, replicate: int = 0) -> pd.DataFrame:
    """RMSE over groups of one replicate per design x condition x model (published design)."""
    e = estimates.loc[estimates["replicate"] == replicate].copy()
    e["sq"] = (e["estimate"] - e["tau"]) ** 2
    keys = [c for c in ("design", "condition", "n_groups", "scenario", "model") if c in e]
    out = e.groupby(keys, dropna=False, sort=False)["sq"].mean().pow(0.5).rename("rmse")
    return out.reset_index()


def _sim_lookup(frame: pd.DataFrame, column: str, value, model: str, what: str) -> float:
    hit = frame.loc[(frame[column] == value) & (frame["model"] == model), what]
    if hit.empty:
        raise KeyError(f"simulation frame has no {column} = {value!r}, model = {model!r}")
    return float(hit.iloc[0])


def simulation_numbers(
    spec: pd.DataFrame,
    spec_one: pd.DataFrame,
    size: pd.DataFrame,
    size_one: pd.DataFrame,
    bias_bins: pd.DataFrame | None = None,
) -> dict[str, float]:
    """RMSEs of both designs: mean over replicates (with MCSE) and the single replicate.

    ``spec``/``size`` are the ``summary.csv`` frames (``n_groups`` / ``scenario``),
    ``*_one`` the one-replicate RMSEs (column ``rmse``). ``bias_bins`` (optional) has
    ``model``, ``small`` (bool: group under 20), ``mean_abs_bias`` for design 2.
    """
    out: dict[str, float] = {}
    out["sim_reps"] = float(spec["n_replicates"].min())
    groups = sorted(spec["n_groups"].unique())
    out["sim1_groups_min"], out["sim1_groups_max"] = float(groups[0]), float(groups[-1])
    for g in (groups[0], groups[-1]):
        for m, short in (("ols", "ols"), ("hierarchical", "hier")):
            out[f"sim1_rmse_{short}_{g}"] = _sim_lookup(spec, "n_groups", g, m, "rmse_mean")
            out[f"sim1_mcse_{short}_{g}"] = _sim_lookup(spec, "n_groups", g, m, "rmse_mcse")
            out[f"sim1_one_{short}_{g}"] = _sim_lookup(spec_one, "n_groups", g, m, "rmse")
    ratio = [
        _sim_lookup(spec, "n_groups", g, "hierarchical", "rmse_mean")
        / _sim_lookup(spec, "n_groups", g, "ols", "rmse_mean")
        for g in groups
    ]
    out["sim1_ratio_min"], out["sim1_ratio_max"] = min(ratio), max(ratio)
    out["sim1_hier_better_all"] = float(all(r < 1 for r in ratio))
    for s in size["scenario"].unique():
        for m, short in (("ols", "ols"), ("hierarchical", "hier")):
            out[f"sim2_rmse_{short}_{s}"] = _sim_lookup(size, "scenario", s, m, "rmse_mean")
            out[f"sim2_mcse_{short}_{s}"] = _sim_lookup(size, "scenario", s, m, "rmse_mcse")
            out[f"sim2_one_{short}_{s}"] = _sim_lookup(size_one, "scenario", s, m, "rmse")
    if {"balanced", "strong"} <= set(size["scenario"]):
        gain = {
            s: 1 - out[f"sim2_rmse_hier_{s}"] / out[f"sim2_rmse_ols_{s}"]
            for s in ("balanced", "strong")
        }
        out["sim2_gain_balanced"], out["sim2_gain_strong"] = gain["balanced"], gain["strong"]
    if "n_groups" in size:
        out["sim2_groups"] = float(size["n_groups"].iloc[0])
        out["sim2_k"] = float(np.log2(out["sim2_groups"]))
    if bias_bins is not None:
        for _, row in bias_bins.iterrows():
            short = "hier" if row["model"] == "hierarchical" else "ols"
            size_name = "small" if row["small"] else "large"
            out[f"sim2_bias_{short}_{size_name}"] = float(row["mean_abs_bias"])
    return out


def design_numbers(design: Mapping) -> dict[str, float]:
    """The simulation's design as the text quotes it, from the design the simulate stage ran
    (``results/simulation/design.json``; see :class:`ReportInputs`)."""
    n_obs, ks = design["n_obs"], design["equal_group_k"]
    balanced = design["imbalance_scenarios"]["balanced"]
    return {
        "sim_n": n_obs,
        "sim_tau_mean": design["tau_mean"],
        "sim_tau_sd": design["tau_sd"],
        "sim1_size_max": n_obs / 2 ** min(ks),
        "sim1_size_min": n_obs / 2 ** max(ks),
        "sim_k_min": min(ks),
        "sim_k_max": max(ks),
        "sim2_share_low": min(design["imbalance_scenarios"]["strong"]),
        "sim2_k": len(balanced),
        "sim2_groups": 2 ** len(balanced),
    }


#: Group sizes the paper contrasts in Figure 4: "small" below 20, "large" 75 or more.
SMALL_GROUP, LARGE_GROUP = 20, 75


def bias_small_large(
    estimates: pd.DataFrame, small: float = SMALL_GROUP, large: float = LARGE_GROUP
) -> pd.DataFrame:
    """Mean |bias| per model for groups with fewer than ``small`` and at least ``large`` obs."""
    e = estimates.loc[estimates["estimate"].notna()].copy()
    e["abs_bias"] = (e["estimate"] - e["tau"]).abs()
    rows = []
    for model, part in e.groupby("model", sort=True):
        for is_small, mask in ((True, part["n"] < small), (False, part["n"] >= large)):
            rows.append(
                {
                    "model": model,
                    "small": is_small,
                    "mean_abs_bias": float(part.loc[mask, "abs_bias"].mean()),
                }
            )
    return pd.DataFrame(rows)


def bias_small_large_binned(
    bins: pd.DataFrame, small: float = SMALL_GROUP, large: float = LARGE_GROUP
) -> pd.DataFrame:
    """Mean |bias| per model for groups of at most ``small`` and more than ``large`` obs.

    From the committed ``bias_by_size.csv`` of the simulate stage (``model``, ``size_bin``
    such as ``"(10.0, 20.0]"``, ``n_estimates``, ``mean_abs_bias``): the bins wholly below
    ``small`` and wholly above ``large``, averaged with their counts as weights (over
    scenarios and replicates), which is the mean over those estimates.
    """
    edges = bins["size_bin"].str.strip("(]").str.split(",", expand=True).astype(float)
    rows = []
    for model, part in bins.assign(lo=edges[0], hi=edges[1]).groupby("model", sort=True):
        for is_small, mask in ((True, part["hi"] <= small), (False, part["lo"] >= large)):
            chosen = part.loc[mask]
            if chosen.empty:
                raise ValueError(f"bias_by_size has no {model} bins for groups of that size")
            mean = np.average(chosen["mean_abs_bias"], weights=chosen["n_estimates"])
            rows.append({"model": model, "small": is_small, "mean_abs_bias": float(mean)})
    return pd.DataFrame(rows)


def _condition_text(row: Mapping) -> str:
    """``high stakes, low cost intervention for an Eastern European democracy`` (costs 1 = LOW)."""
    stakes = "high-stakes" if row["stakes"] == 1 else "low-stakes"
    costs = "low-cost" if row["costs"] == 1 else "high-cost"
    regime = "democracy" if row["regime"] == 1 else "autocracy"
    region = str(row["region"])
    adjective = {
        "Africa": "African",
        "Asia": "Asian",
        "Eastern Europe": "Eastern European",
        "South America": "South American",
    }.get(region, region)
    return f"{stakes}, {costs} intervention for {_article(adjective)} {adjective} {regime}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _region_column(frame: pd.DataFrame) -> pd.DataFrame:
    if "region" not in frame and "region_txt" in frame:
        frame = frame.rename(columns={"region_txt": "region"})
    return frame


M1_KEYS = ["regime", "stakes", "costs", "region"]


def m1_numbers(
    hier: pd.DataFrame, ols: pd.DataFrame, scale: pd.DataFrame | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers of §4.1: spread of both models' group effects, the OLS minimum, shrinkage.

    Returns numbers and text labels (conditions named with costs = 1 as LOW cost).
    """
    hier, ols = _region_column(hier), _region_column(ols)
    both = hier[M1_KEYS + ["estimate"]].merge(
        ols[M1_KEYS + ["estimate"]], on=M1_KEYS, suffixes=("_hier", "_ols"), validate="1:1"
    )
    if len(both) != len(hier):
        raise ValueError("M1 hierarchical and OLS groups do not match one to one")
    both["shift"] = both["estimate_hier"] - both["estimate_ols"]
    low = both.loc[both["estimate_ols"].idxmin()]
    moved = both.loc[both["shift"].abs().idxmax()]
    drop = both.loc[both["shift"].idxmin()]  # hierarchical furthest below OLS
    nums = {
        "m1_n_groups": float(len(both)),
        "m1_hier_mean": float(both["estimate_hier"].mean()),
        "m1_ols_mean": float(both["estimate_ols"].mean()),
        "m1_hier_sd": float(both["estimate_hier"].std(ddof=1)),
        "m1_ols_sd": float(both["estimate_ols"].std(ddof=1)),
        "m1_hier_min": float(both["estimate_hier"].min()),
        "m1_hier_max": float(both["estimate_hier"].max()),
        "m1_ols_min": float(both["estimate_ols"].min()),
        "m1_ols_max": float(both["estimate_ols"].max()),
        "m1_hier_at_ols_min": float(low["estimate_hier"]),
        "m1_max_shift": float(moved["shift"]),
        "m1_max_shift_abs": float(abs(moved["shift"])),
        "m1_max_shift_ols": float(moved["estimate_ols"]),
        "m1_max_shift_hier": float(moved["estimate_hier"]),
        "m1_max_drop": float(-drop["shift"]),
        "m1_max_drop_ols": float(drop["estimate_ols"]),
        "m1_max_drop_hier": float(drop["estimate_hier"]),
        "m1_ols_negative": float((both["estimate_ols"] < 0).sum()),
        "m1_hier_negative": float((both["estimate_hier"] < 0).sum()),
        "m1_slope_shift": float(np.polyfit(both["estimate_ols"], both["shift"], 1)[0]),
    }
    if "n_obs" in hier:
        nums["m1_n_obs_min"] = float(hier["n_obs"].min())
        nums["m1_n_obs_max"] = float(hier["n_obs"].max())
    for stakes, word in ((0, "low"), (1, "high")):  # mean effect by stakes, both models
        part = both.loc[both["stakes"] == stakes]
        nums[f"m1_ols_{word}_stakes"] = float(part["estimate_ols"].mean())
        nums[f"m1_hier_{word}_stakes"] = float(part["estimate_hier"].mean())
    theta = _scale_term(scale)
    if theta is not None:
        nums["m1_sigma_theta"] = theta
    named = both.loc[
        (both["regime"] == 0)
        & (both["stakes"] == 0)
        & (both["costs"] == 0)
        & (both["region"] == "South America")
    ]
    if len(named) == 1:  # the condition the paper singles out (low stakes, HIGH cost, autocracy)
        nums["m1_drop_named"] = float(-named["shift"].iloc[0])
        nums["m1_drop_named_ols"] = float(named["estimate_ols"].iloc[0])
        nums["m1_drop_named_hier"] = float(named["estimate_hier"].iloc[0])
    labels = {
        "m1_ols_min_condition": _condition_text(low),
        "m1_max_shift_condition": _condition_text(moved),
        "m1_max_drop_condition": _condition_text(drop),
    }
    return nums, labels


def _scale_term(scale: pd.DataFrame | None) -> float | None:
    """Posterior mean of sigma_theta among the ``scale`` rows, if there is one."""
    if scale is None or scale.empty:
        return None
    hit = scale.loc[scale["term"].astype(str).str.contains("theta")]
    return float(hit["mean"].iloc[0]) if len(hit) else None


def _term(name: str) -> str:
    """Normalise coefficient names: ``(Intercept)``, ``Intercept``, ``lambda_dem`` -> ``dem``."""
    t = str(name).strip()
    for prefix in ("lambda_", "controls_", "b_"):
        if t.startswith(prefix):
            t = t[len(prefix) :]
    t = t.strip("()").lower()
    return "intercept" if t == "intercept" else t


def coefs_by_term(coefs: pd.DataFrame, equation: str) -> pd.DataFrame:
    """Rows of one equation, indexed by normalised term."""
    part = coefs.loc[coefs["equation"] == equation].copy()
    part.index = part["term"].map(_term)
    return part


M2_EFFECT_TERMS = ("intercept", "dem", "rep", "high_newsint", "white", "male")
M2_CONTROL_TERMS = (
    "intercept",
    "regime",
    "stakes",
    "costs",
    "africa",
    "asia",
    "europe",
    "age",
    "ed4",
)


def m2_numbers(coefs: pd.DataFrame) -> dict[str, float]:
    """Gamma (``m2_g_*``) and beta (``m2_b_*``) means and 95% bounds of M2."""
    out: dict[str, float] = {}
    for equation, prefix, terms in (
        ("effect", "m2_g", M2_EFFECT_TERMS),
        ("control", "m2_b", M2_CONTROL_TERMS),
    ):
        part = coefs_by_term(coefs, equation)
        for t in terms:
            if t not in part.index:
                raise KeyError(f"M2 coefs.csv has no {equation} term {t!r}")
            row = part.loc[t]
            out[f"{prefix}_{t}"] = float(row["mean"])
            out[f"{prefix}_{t}_lo"] = float(row["q025"])
            out[f"{prefix}_{t}_hi"] = float(row["q975"])
    effect = coefs_by_term(coefs, "effect")
    out["m2_g_excluding_zero"] = float(
        sum(1 for t in M2_EFFECT_TERMS[1:] if effect.loc[t, "q025"] > 0)
    )
    theta = _scale_term(coefs.loc[coefs["equation"] == "scale"])
    if theta is not None:
        out["m2_sigma_theta"] = theta
    return out


def _cell(cells: pd.DataFrame, party: str, white: int, male: int, news: int) -> float:
    hit = cells.loc[
        (cells["party"] == party)
        & (cells["white"] == white)
        & (cells["male"] == male)
        & (cells["high_newsint"] == news),
        "estimate",
    ]
    if len(hit) != 1:
        raise KeyError(
            f"Figure 8 cells: no single cell {party}, white={white}, male={male}, "
            f"high_newsint={news}"
        )
    return float(hit.iloc[0])


def describe_cell(row: Mapping) -> str:
    """``white Republican men with high news interest``."""
    race = "white" if row["white"] == 1 else "non-white"
    sex = "men" if row["male"] == 1 else "women"
    news = "high" if row["high_newsint"] == 1 else "low"
    party = {"Independent": "independent"}.get(row["party"], row["party"])
    return f"{race} {party} {sex} with {news} news interest"


def cells_numbers(cells: pd.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """Figure 8: largest and smallest cell, steps from the baseline cell, news-interest gap.

    The baseline is the paper's weakest cell: non-white independent women with low news
    interest; a "step" changes one of race, party to Democrat, party to Republican.
    """
    if len(cells) != 24:
        raise ValueError(f"Figure 8 needs 24 cells, got {len(cells)}")
    top = cells.loc[cells["estimate"].idxmax()]
    bottom = cells.loc[cells["estimate"].idxmin()]
    base = _cell(cells, "Independent", 0, 0, 0)
    wide = cells.pivot_table(
        index=["party", "white", "male"], columns="high_newsint", values="estimate"
    )
    nums = {
        "m2_cells": float(len(cells)),
        "m2_cells_q10_positive": float((cells["q10"] > 0).sum()),
        "m2_cell_max": float(top["estimate"]),
        "m2_cell_min": float(bottom["estimate"]),
        "m2_cell_base": base,
        "m2_step_white": _cell(cells, "Independent", 1, 0, 0) - base,
        "m2_step_dem": _cell(cells, "Democrat", 0, 0, 0) - base,
        "m2_step_rep": _cell(cells, "Republican", 0, 0, 0) - base,
        "m2_step_male": _cell(cells, "Independent", 0, 1, 0) - base,
        "m2_news_gap": float((wide[1] - wide[0]).mean()),
        "m2_cell_top_white_rep_men_news": _cell(cells, "Republican", 1, 1, 1),
    }
    labels = {"m2_cell_max_who": describe_cell(top), "m2_cell_min_who": describe_cell(bottom)}
    return nums, labels


def appendix_numbers(a1: pd.DataFrame, bp: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """Range of the A1 and Bush–Prather group effects and how many intervals exclude zero."""
    return {
        f"{prefix}a1_min": float(a1["estimate"].min()),
        f"{prefix}a1_max": float(a1["estimate"].max()),
        f"{prefix}a1_groups": float(len(a1)),
        f"{prefix}bp_profiles": float(len(bp)),
        f"{prefix}bp_min": float(bp["estimate"].min()),
        f"{prefix}bp_max": float(bp["estimate"].max()),
        f"{prefix}bp_excluding_zero": float(((bp["q025"] > 0) | (bp["q975"] < 0)).sum()),
    }


# --------------------------------------------------------------------------------------
# Reproduced vs published
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """A number the paper states, and the name of our reproduction of it."""

    name: str  # key of the reproduced number (see the *_numbers functions)
    quantity: str  # what it is, in words
    where: str  # where the paper states it
    published: float  # as printed (a percentage as a proportion: 33% -> 0.33)
    digits: int = 2


#: Every number the paper quotes about its own results (paper §3, §4).
PUBLISHED: tuple[Quote, ...] = (
    Quote("tw_ate", "Average effect of an alliance on support for force", "§4", 0.33),
    Quote("tw_cell_min", "Smallest alliance × condition cell (respondents)", "§4", 11, 0),
    Quote("tw_cell_max", "Largest alliance × condition cell (respondents)", "§4", 32, 0),
    Quote("tw_group_min", "Smallest experimental condition (respondents)", "§4", 26, 0),
    Quote("tw_group_max", "Largest experimental condition (respondents)", "§4", 54, 0),
    Quote("sim1_one_ols_128", "RMSE, OLS, 128 equal groups", "§3, Figure 1", 0.5),
    Quote("sim1_one_hier_128", "RMSE, hierarchical, 128 equal groups", "§3, Figure 1", 0.33),
    Quote("m1_ols_min", "Most negative OLS condition effect", "§4.1, Figure 5", -0.20),
    Quote("m1_hier_at_ols_min", "Hierarchical effect in that condition", "§4.1, Figure 6", 0.30),
    Quote(
        "m1_drop_named",
        "Hierarchical below OLS: low-stakes, high-cost South American "
        "autocracy (the paper: “low-cost”)",
        "§4.1, Figure 6",
        0.30,
    ),
    Quote("m2_g_high_newsint", "γ, high news interest", "§4.2, Figure 7", 0.15),
    Quote("m2_g_high_newsint_lo", "γ, high news interest, lower 95% bound", "§4.2", 0.05),
    Quote("m2_g_high_newsint_hi", "γ, high news interest, upper 95% bound", "§4.2", 0.22),
    Quote(
        "m2_g_intercept",
        "γ, intercept (independent non-white women, low news)",
        "§4.2, Figure 7",
        0.15,
    ),
    Quote("m2_cells", "Demographic cells in Figure 8", "§4.2, Figure 8", 24, 0),
    Quote("m2_cells_q10_positive", "Cells with effect clearly above zero", "§4.2", 24, 0),
    Quote(
        "m2_cell_top_white_rep_men_news",
        "White Republican men, high news interest",
        "§4.2, Figure 8",
        0.5,
    ),
    Quote("m2_cell_min", "Weakest cell", "§4.2, Figure 8", 0.13),
    Quote("m2_news_gap", "High − low news interest, averaged over cells", "§4.2", 0.15),
    Quote("m2_step_white", "Step to white (from the weakest cell)", "§4.2", 0.08),
    Quote("m2_step_dem", "Step to Democrat (from the weakest cell)", "§4.2", 0.04),
    Quote("m2_step_rep", "Step to Republican (from the weakest cell)", "§4.2", 0.10),
)


def compare_with_published(
    ours: Mapping[str, float], quotes: Iterable[Quote] = PUBLISHED
) -> pd.DataFrame:
    """One row per quoted number: published, reproduced, difference (reproduced − published).

    Numbers are compared at the precision the paper printed them: ``reproduced`` is
    rounded to the quote's digits before the difference is taken. A missing reproduced
    number raises ``KeyError`` naming it.
    """
    rows = []
    for q in quotes:
        if q.name not in ours:
            raise KeyError(f"no reproduced value for published quote {q.name!r}")
        value = round(float(ours[q.name]), q.digits)
        rows.append(
            {
                "quantity": q.quantity,
                "where": q.where,
                "name": q.name,
                "published": q.published,
                "reproduced": value,
                "difference": round(value - q.published, q.digits),
                "digits": q.digits,
            }
        )
    return pd.DataFrame(rows)


def published_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison formatted for the manuscript."""
    out = pd.DataFrame(
        {
            "Quantity": table["quantity"],
            "Where": table["where"],
            "Published": [
                fmt_num(v, d) for v, d in zip(table["published"], table["digits"], strict=True)
            ],
            "Reproduced": [
                fmt_num(v, d) for v, d in zip(table["reproduced"], table["digits"], strict=True)
            ],
            "Difference": [
                fmt_signed(v, d) for v, d in zip(table["difference"], table["digits"], strict=True)
            ],
        }
    )
    return out


# --------------------------------------------------------------------------------------
# Published vs corrected coding
# --------------------------------------------------------------------------------------


def compare_codings(
    published: pd.DataFrame,
    corrected: pd.DataFrame,
    keys: list[str],
    value: str = "estimate",
    extra: Iterable[str] = (),
) -> pd.DataFrame:
    """Side by side: ``keys``, ``published``, ``corrected``, ``change`` (corrected − published).

    Rows present in only one coding (e.g. Bush–Prather profiles that vanish with the
    restricted sample) are kept with the other side missing. ``extra`` columns (e.g. the
    95% bounds) are carried with ``_published``/``_corrected`` suffixes.
    """
    cols = [*keys, value, *extra]
    merged = published[cols].merge(
        corrected[cols], on=keys, how="outer", suffixes=("_published", "_corrected"), indicator=True
    )
    merged = merged.rename(
        columns={f"{value}_published": "published", f"{value}_corrected": "corrected"}
    )
    merged["change"] = merged["corrected"] - merged["published"]
    merged["in"] = (
        merged.pop("_merge")
        .map({"both": "both", "left_only": "published only", "right_only": "corrected only"})
        .astype(str)
    )
    return merged.sort_values(keys, kind="stable").reset_index(drop=True)


def _with_interval(compared: pd.DataFrame, side: str) -> list[str]:
    """``"0.14 [0.06, 0.23]"`` per row of a :func:`compare_codings` frame carrying the 95%
    bounds, for one side (``"published"`` or ``"corrected"``)."""
    return [
        f"{fmt_num(e)} [{fmt_num(lo)}, {fmt_num(hi)}]"
        for e, lo, hi in zip(
            compared[side], compared[f"q025_{side}"], compared[f"q975_{side}"], strict=True
        )
    ]


def group_shift_summary(
    published: pd.DataFrame, corrected: pd.DataFrame, keys: list[str]
) -> pd.DataFrame:
    """Summary of group effects under both codings: mean, SD, min, max, largest change
    (estimates: posterior medians, or OLS slopes)."""
    both = compare_codings(published, corrected, keys)
    rows = []
    for stat, fun in (("mean", "mean"), ("SD", "std"), ("min", "min"), ("max", "max")):
        rows.append(
            {
                "statistic": f"{stat} of group estimates",
                "published": float(getattr(both["published"], fun)()),
                "corrected": float(getattr(both["corrected"], fun)()),
            }
        )
    rows.append(
        {
            "statistic": "largest |change| of a group estimate",
            "published": np.nan,
            "corrected": float(both["change"].abs().max()),
        }
    )
    out = pd.DataFrame(rows)
    out["change"] = out["corrected"] - out["published"]
    return out


# --------------------------------------------------------------------------------------
# Diagnostics and simulation Monte Carlo error
# --------------------------------------------------------------------------------------

DIAGNOSTIC_COLUMNS = [
    "sampler",
    "chains",
    "draws",
    "max_r_hat",
    "min_ess_bulk",
    "min_ess_tail",
    "divergences",
]


def diagnostics_table(frames: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """One row per (model, coding) from each fit's ``diagnostics.csv`` (first row)."""
    rows = []
    for (model, coding), frame in frames.items():
        missing = [c for c in DIAGNOSTIC_COLUMNS if c not in frame]
        if missing:
            raise KeyError(f"diagnostics of {model} ({coding}) lack columns {missing}")
        row = frame.iloc[0]
        rows.append(
            {
                "model": model,
                "coding": coding,
                **{c: row[c] for c in DIAGNOSTIC_COLUMNS},
                "pareto_k": row.get("pareto_k", np.nan),
                # importance-sampling fits: the largest MCSE of a group median / 95% bound
                "mcse_estimate_max": row.get("mcse_estimate_max", np.nan),
                "mcse_bounds_max": row.get("mcse_bounds_max", np.nan),
            }
        )
    return pd.DataFrame(rows)


def diagnostics_markdown(table: pd.DataFrame) -> pd.DataFrame:
    def num(v, digits):
        return "–" if pd.isna(v) else fmt_num(v, digits)

    def whole(v):
        return "–" if pd.isna(v) else fmt_int(v)

    def col(name):
        return table[name] if name in table else pd.Series(np.nan, index=table.index)

    return pd.DataFrame(
        {
            "Model": table["model"],
            "Coding": table["coding"],
            "Sampler": table["sampler"],
            "Chains": table["chains"].map(whole),
            "Draws": table["draws"].map(whole),
            "Max R-hat": table["max_r_hat"].map(lambda v: num(v, 3)),
            "Min bulk ESS": table["min_ess_bulk"].map(whole),
            "Min tail ESS": table["min_ess_tail"].map(whole),
            "Divergences": table["divergences"].map(whole),
            "Pareto k": col("pareto_k").map(lambda v: num(v, 2)),
            "Max MCSE (median; 95% bounds)": [
                "–" if pd.isna(a) else f"{fmt_num(a, 4)}; {fmt_num(b, 4)}"
                for a, b in zip(col("mcse_estimate_max"), col("mcse_bounds_max"), strict=True)
            ],
        }
    )


def simulation_mc_table(summary: pd.DataFrame, one: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Per condition x model: one-replicate RMSE next to the mean over replicates ± MCSE."""
    merged = summary.merge(
        one[[condition, "model", "rmse"]], on=[condition, "model"], how="left", validate="1:1"
    )
    merged["z"] = (merged["rmse"] - merged["rmse_mean"]) / (
        merged["rmse_mcse"] * np.sqrt(merged["n_replicates"])
    )
    keep = [condition, "model", "rmse", "rmse_mean", "rmse_mcse", "n_replicates", "z"]
    keep += [c for c in ("coverage_95",) if c in merged]
    order = {"balanced": 0, "mild": 1, "moderate": 2, "strong": 3}
    merged["_c"] = merged[condition].map(lambda v: order.get(v, v))
    merged["_m"] = merged["model"].map({"ols": 0, "hierarchical": 1}).fillna(2)
    merged = merged.sort_values(["_c", "_m"], kind="stable")
    return merged[keep].reset_index(drop=True)


def simulation_mc_markdown(
    table: pd.DataFrame, condition: str, condition_name: str
) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            condition_name: table[condition].astype(str),
            "Model": table["model"]
            .map({"ols": "OLS", "hierarchical": "Hierarchical"})
            .fillna(table["model"]),
            "One replicate": table["rmse"].map(lambda v: fmt_num(v, 3)),
            "Mean over replicates": table["rmse_mean"].map(lambda v: fmt_num(v, 3)),
            "MCSE": table["rmse_mcse"].map(lambda v: fmt_num(v, 3)),
            "Replicates": table["n_replicates"].map(fmt_int),
            "(one − mean) / SD": table["z"].map(lambda v: fmt_num(v, 1)),
        }
    )
    if "coverage_95" in table:
        out["95% coverage"] = table["coverage_95"].map(lambda v: fmt_pct(v))
    return out


# --------------------------------------------------------------------------------------
# Variables
# --------------------------------------------------------------------------------------

#: Numbers written without decimals (counts), as percentages, or with 3 decimals.
COUNT_PREFIXES = (
    "tw_n",
    "tw_cell_",
    "tw_group_",
    "bp_n",
    "bp_profiles",
    "a1_groups",
    "m1_n_",
    "m2_cells",
    "sim_reps",
    "sim1_groups",
    "m1_ols_negative",
    "m1_hier_negative",
    "m2_g_excluding_zero",
    "bp_excluding_zero",
    "sim1_hier_better_all",
    "models_",
    "sim_n",
    "sim_k",
    "diag_fits",
    "diag_divergences",
    "diag_min_ess_bulk",
    "sim1_size",
    "sim2_groups",
    "sim2_k",
    "sim2_small",
    "sim2_large",
)


#: Percent variables that are differences of proportions: also written as ``<name>_pp``, the
#: number of percentage points.
POINTS = ("tw_ate", "m2_step_white", "m2_step_dem", "m2_step_rep", "m2_cell_min",
          "m1_hier_at_ols_min")  # fmt: skip


def _is_count(name: str) -> bool:
    bare = name.removeprefix("pub_").removeprefix("cor_")
    return bare.startswith(COUNT_PREFIXES)


def to_variables(
    numbers: Mapping[str, float],
    labels: Mapping[str, str] = (),
    digits: Mapping[str, int] | None = None,
    percents: Iterable[str] = (),
) -> dict[str, str]:
    """Format every number for ``_variables.yml``; add ``<name>_pct`` for ``percents``.

    Counts (see :data:`COUNT_PREFIXES`) become integers with separators, the rest two
    decimals (``digits`` overrides per name); text labels are passed through.
    """
    digits = dict(digits or {})
    provenance.note(numbers)  # the unrounded values, for the record of sources
    out: dict[str, str] = {}
    for name, value in sorted(numbers.items()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ValueError(f"number {name!r} is missing (NaN)")
        if name.endswith("seed"):
            out[name] = str(int(value))
        elif _is_count(name):
            out[name] = fmt_int(value)
        else:
            out[name] = fmt_num(value, digits.get(name, 2))
    for name in percents:
        out[f"{name}_pct"] = (
            fmt_pct(abs(numbers[name])) if name.endswith("_abs") else fmt_pct(numbers[name])
        )
    for name, text in dict(labels).items():
        out[name] = str(text)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------

CODINGS = ("published", "corrected")


@dataclass
class ReportInputs:
    """Everything the report reads, already loaded (``analysis/report.py`` loads it).

    Attributes
    ----------
    tw_checks, bp_checks : pandas.DataFrame
        The cleaning stages' checks tables (``data/clean/<study>_checks.csv``).
    fits : dict
        ``(model, coding) -> {"groups", "coefs", "diagnostics"}`` frames for m1, m1_ols, m2,
        m2_ols, a1 and bp under both codings.
    cells : dict
        ``coding -> `` Figure 8's cells (``demographics_cells_<coding>.csv``).
    summaries, ones : dict
        ``"spec"``/``"groupsize"`` -> simulation ``summary.csv`` and one-replicate RMSEs.
    groupsize_estimates : pandas.DataFrame or None
        Simulation 2's estimates (for the bias of small and large groups).
    groupsize_bias : pandas.DataFrame or None
        Simulation 2's committed ``bias_by_size.csv``; where given, the bias of small and
        large groups comes from it rather than from the estimates.
    params : mapping
        The parsed ``params.yaml``.
    design : mapping
        The simulation's design as it ran (``results/simulation/design.json``, written by the
        simulate stage): ``n_obs``, ``tau_mean``, ``tau_sd``, ``equal_group_k`` (moderators
        of design 1) and ``imbalance_scenarios`` (name -> moderator probabilities). The text
        quotes these, so a run with other settings prints its own.
    specification : hetfx.paper.verdict.SpecificationInputs, optional
        The main-effects fits and the robustness tables (section "Specification and
        robustness"); without them that section's variables and tables are not written.
    groupsize_bias : pandas.DataFrame, optional
        Simulation 2's committed ``bias_by_size.csv``; when given, the bias of small and large
        groups comes from it rather than from ``groupsize_estimates``.
    """

    tw_checks: pd.DataFrame
    bp_checks: pd.DataFrame
    fits: dict
    cells: dict
    summaries: dict
    ones: dict
    groupsize_estimates: pd.DataFrame | None
    params: Mapping
    design: Mapping
    specification: Any = None
    groupsize_bias: pd.DataFrame | None = None


def build_report(inputs: ReportInputs) -> tuple[dict[str, str], dict[str, str], pd.DataFrame]:
    """Every number and table of the manuscript from the loaded artifacts.

    Returns
    -------
    variables : dict
        Name -> formatted string, the contents of ``_variables.yml``.
    tables : dict
        Name -> markdown table with its caption (``tables/<name>.md``).
    comparison : pandas.DataFrame
        Published against reproduced value of every quoted number.
    """
    numbers: dict[str, float] = {}
    labels: dict[str, str] = {}
    tables: dict[str, str] = {}
    numbers |= tomz_weeks_facts(inputs.tw_checks)
    numbers |= bush_prather_facts(inputs.bp_checks)
    _add_model_numbers(inputs, numbers, labels)
    numbers |= _simulation_report_numbers(inputs)
    numbers |= _settings_numbers(inputs.params)
    comparison = compare_with_published(numbers)
    for q in PUBLISHED:
        numbers[f"pub_{q.name}"] = q.published
    tables["published_vs_reproduced"] = markdown_table(
        published_markdown(comparison),
        "Every number the published paper quotes about its results, the reproduced value "
        "(published coding; the simulation at its single-replicate design) and the "
        "difference (reproduced − published), at the printed precision",
        "published",
        align="llrrr",
    )
    tables |= _coding_tables(inputs, numbers)
    tables |= _diagnostics_tables(inputs, numbers)
    tables |= _simulation_mc_tables(inputs, numbers)
    tables |= _approach_and_prior_tables(inputs.params.get("models") or {})
    variables = _report_variables(numbers, labels)
    if inputs.specification is not None:
        from hetfx.paper.verdict import specification_report

        spec_variables, spec_tables = specification_report(inputs.specification)
        variables = dict(sorted((variables | spec_variables).items()))
        tables |= spec_tables
    return variables, tables, comparison


def _add_model_numbers(inputs: ReportInputs, numbers: dict, labels: dict) -> None:
    """M1, M2, Figure 8's cells and the appendix models under both codings (``cor_`` prefix)."""
    for c, prefix in (("published", ""), ("corrected", "cor_")):
        m1, m1_labels = m1_numbers(
            inputs.fits[("m1", c)]["groups"],
            inputs.fits[("m1_ols", c)]["groups"],
            inputs.fits[("m1", c)]["coefs"].query("equation == 'scale'"),
        )
        m2 = m2_numbers(inputs.fits[("m2", c)]["coefs"])
        cn, cn_labels = cells_numbers(inputs.cells[c])
        app = appendix_numbers(inputs.fits[("a1", c)]["groups"], inputs.fits[("bp", c)]["groups"])
        for d in (m1, m2, cn, app):
            numbers |= {prefix + k: v for k, v in d.items()}
        for d in (m1_labels, cn_labels):
            labels |= {prefix + k: v for k, v in d.items()}


def _simulation_report_numbers(inputs: ReportInputs) -> dict[str, float]:
    """The simulation's numbers: RMSEs, the bias of small and large groups, its design."""
    summaries, ones = inputs.summaries, inputs.ones
    estimates = inputs.groupsize_estimates
    bias = bias_small_large(estimates) if estimates is not None else None
    if inputs.groupsize_bias is not None:
        bias = bias_small_large_binned(inputs.groupsize_bias)
    numbers = simulation_numbers(
        summaries["spec"], ones["spec"], summaries["groupsize"], ones["groupsize"], bias
    )
    numbers |= design_numbers(inputs.design)
    numbers |= {"sim2_small": SMALL_GROUP, "sim2_large": LARGE_GROUP}
    return numbers


def _settings_numbers(params: Mapping) -> dict[str, float]:
    """The sampler settings, the simulation's root seed and its baseline-shift SD."""
    models = params.get("models") or {}
    numbers = {f"models_{k}": v for k, v in sampler_settings(models).items()}
    simulation = params.get("simulation") or {}
    if "root_seed" in simulation:
        numbers["sim_root_seed"] = simulation["root_seed"]
    shifts = params.get("simulation_sensitivity") or {}
    if "baseline_sd" in shifts:  # the SD of the baseline shifts of the sensitivity simulation
        numbers["sim_shift_sd"] = float(shifts["baseline_sd"])
    return numbers


def _coding_tables(inputs: ReportInputs, numbers: dict) -> dict[str, str]:
    """Published against corrected coding: M2, Figure 8's cells, M1 and Bush–Prather."""
    tables = {"coding_m2": _coding_m2_table(inputs)}
    tables["coding_cells"], numbers["coding_cells_max_change"] = _coding_cells_table(inputs)
    tables["coding_m1"] = _coding_m1_table(inputs, numbers)
    tables["coding_bp"], numbers["coding_bp_max_change"] = _coding_bp_table(inputs)
    return tables


def _coding_m2_table(inputs: ReportInputs) -> str:
    """M2's effect and control coefficients under both codings."""
    m2_terms = []
    for c in CODINGS:
        coefs = inputs.fits[("m2", c)]["coefs"].copy()
        coefs = coefs[coefs["equation"].isin(["effect", "control"])]
        coefs["term"] = coefs["term"].map(_term)
        m2_terms.append(coefs.rename(columns={"mean": "estimate"}))
    m2_cmp = compare_codings(*m2_terms, keys=["equation", "term"], extra=("q025", "q975"))
    m2_cmp["equation"] = pd.Categorical(m2_cmp["equation"], ["effect", "control"])
    m2_cmp = m2_cmp.sort_values(["equation"], kind="stable")
    return markdown_table(
        pd.DataFrame(
            {
                "Equation": m2_cmp["equation"]
                .map({"effect": "effect (γ)", "control": "control (β)"})
                .astype(str),
                "Term": m2_cmp["term"],
                "Published": _with_interval(m2_cmp, "published"),
                "Corrected": _with_interval(m2_cmp, "corrected"),
                "Change": m2_cmp["change"].map(fmt_signed),
            }
        ),
        "M2 coefficients (posterior mean and 95% interval) under the published and the "
        "corrected Democrat indicator",
        "coding-m2",
        align="llrrr",
    )


def _coding_cells_table(inputs: ReportInputs) -> tuple[str, float]:
    """Figure 8's cells under both codings, and the largest change of a cell."""
    cell_cmp = compare_codings(inputs.cells["published"], inputs.cells["corrected"], CELL_KEYS)
    table = markdown_table(
        pd.DataFrame(
            {
                "Party": cell_cmp["party"],
                "Race": cell_cmp["white"].map({1: "white", 0: "non-white"}),
                "Sex": cell_cmp["male"].map({1: "men", 0: "women"}),
                "News interest": cell_cmp["high_newsint"].map({1: "high", 0: "low"}),
                "Published": cell_cmp["published"].map(fmt_num),
                "Corrected": cell_cmp["corrected"].map(fmt_num),
                "Change": cell_cmp["change"].map(fmt_signed),
            }
        ),
        "Figure 8 cells (median alliance effect) under both codings; with the published "
        "coding, “Independent” holds the strong Democrats and “Democrat” everyone else who "
        "is not a Republican",
        "coding-cells",
        align="llllrrr",
    )
    return table, float(cell_cmp["change"].abs().max())


def _coding_m1_table(inputs: ReportInputs, numbers: dict) -> str:
    """M1 and M1-OLS's condition effects under both codings; adds their largest changes."""
    m1_keys = ["regime", "stakes", "costs", "region"]
    m1_rows = []
    for model, label in (("m1", "hierarchical"), ("m1_ols", "OLS")):
        pub = _region_column(inputs.fits[(model, "published")]["groups"])
        cor = _region_column(inputs.fits[(model, "corrected")]["groups"])
        summary = group_shift_summary(pub, cor, m1_keys)
        summary.insert(0, "model", label)
        m1_rows.append(summary)
        numbers[f"coding_{model}_max_change"] = float(summary["corrected"].iloc[-1])
    m1_cmp = pd.concat(m1_rows, ignore_index=True)
    return markdown_table(
        pd.DataFrame(
            {
                "Model": m1_cmp["model"],
                "Statistic": m1_cmp["statistic"],
                "Published": m1_cmp["published"].map(fmt_num),
                "Corrected": m1_cmp["corrected"].map(fmt_num),
                "Change": m1_cmp["change"].map(fmt_signed),
            }
        ),
        "M1 and M1-OLS: the 32 condition effects under both codings (the Democrat indicator "
        "is a control there)",
        "coding-m1",
        align="llrrr",
    )


def _coding_bp_table(inputs: ReportInputs) -> tuple[str, float]:
    """Bush–Prather's group effects under both codings, and the largest change."""
    bp_keys = ["w2_vote_hill", "woman", "invest_cond", "pol_engage"]
    bp_cmp = compare_codings(
        inputs.fits[("bp", "published")]["groups"],
        inputs.fits[("bp", "corrected")]["groups"],
        bp_keys,
        extra=("q025", "q975"),
    )
    table = markdown_table(
        pd.DataFrame(
            {
                "Vote": bp_cmp["w2_vote_hill"].map({1: "Clinton", 0: "Trump"}),
                "Sex": bp_cmp["woman"].map({1: "women", 0: "men"}),
                "Vignette": bp_cmp["invest_cond"].map({1: "FDI", 0: "trade"}),
                "Engagement": bp_cmp["pol_engage"].map(fmt_int),
                "Published": _with_interval(bp_cmp, "published"),
                "Corrected": _with_interval(bp_cmp, "corrected"),
                "Change": bp_cmp["change"].map(fmt_signed),
            }
        ),
        "Bush–Prather: effect of Germany rather than Russia as the meddling country "
        "(median, 95% interval), all respondents (published) and side-taking vignettes only "
        "(corrected)",
        "coding-bp",
        align="lllrrrr",
    )
    return table, float(bp_cmp["change"].abs().max())


def _diagnostics_tables(inputs: ReportInputs, numbers: dict) -> dict[str, str]:
    """The sampler diagnostics of every Bayesian fit; adds their extremes to ``numbers``."""
    diag = diagnostics_table(
        {
            (name, c): inputs.fits[(name, c)]["diagnostics"]
            for name in ("m1", "m2", "a1", "bp")
            for c in CODINGS
        }
    )
    names = {"m1": "M1", "m2": "M2", "a1": "A1", "bp": "Bush–Prather"}
    diag["model"] = diag["model"].map(names)
    table = markdown_table(
        diagnostics_markdown(diag),
        "Sampler diagnostics of every Bayesian fit (from each fit's diagnostics.csv). The "
        "importance-sampling engine (qmc) has no chains: its ESS is that of the importance "
        "weights and its Pareto k-hat says whether they are reliable (below 0.7). Run times "
        "differ from run to run and are not committed: the fit stages write them to timings/",
        "diagnostics",
    )
    numbers["diag_max_r_hat"] = float(diag["max_r_hat"].max())
    numbers["diag_min_ess_bulk"] = float(diag["min_ess_bulk"].min())
    numbers["diag_divergences"] = float(diag["divergences"].sum())
    numbers["diag_fits"] = float(len(diag))
    return {"diagnostics": table}


def _simulation_mc_tables(inputs: ReportInputs, numbers: dict) -> dict[str, str]:
    """The simulations' single replicate against the mean over replicates (Monte Carlo)."""
    summaries, ones = inputs.summaries, inputs.ones
    spec_mc = simulation_mc_table(summaries["spec"], ones["spec"], "n_groups")
    size_mc = simulation_mc_table(summaries["groupsize"], ones["groupsize"], "scenario")
    tables = {
        "sim_spec_mc": markdown_table(
            simulation_mc_markdown(spec_mc, "n_groups", "Groups"),
            "Simulation 1 (equal groups): RMSE of the single replicate (the published design) "
            "and mean RMSE over replicates with its Monte Carlo standard error (MCSE); the "
            "last column puts the single replicate in units of the between-replicate SD",
            "sim-spec",
        ),
        "sim_groupsize_mc": markdown_table(
            simulation_mc_markdown(size_mc, "scenario", "Imbalance"),
            "Simulation 2 (64 groups, unequal sizes): single replicate against the mean over "
            "replicates, as in the previous table",
            "sim-groupsize",
            align="llrrrrrr",
        ),
    }
    numbers["sim_max_abs_z"] = float(pd.concat([spec_mc["z"], size_mc["z"]]).abs().max())
    return tables


def _approach_and_prior_tables(models: Mapping) -> dict[str, str]:
    """Table 1 (the three approaches) and the table of priors."""
    return {
        "table1": markdown_table(
            table1(),
            "Characteristics of three ways to estimate heterogeneous effects",
            "approaches",
            align="llll",
        ),
        "priors": markdown_table(
            priors_table(models),
            "Prior distributions of the Bayesian models (from params.yaml, section models)",
            "priors",
            align="llll",
        ),
    }


#: Numbers printed with three decimals (by prefix), and with one.
THREE_DIGITS = (
    "sim1_rmse",
    "sim1_mcse",
    "sim2_rmse",
    "sim2_mcse",
    "sim1_one",
    "sim2_one",
    "diag_max_r_hat",
)
ONE_DIGIT = ("sim_tau_mean", "sim_tau_sd", "sim_max_abs_z", "sim_shift_sd")
#: Numbers also written as a percentage (``<name>_pct``).
PERCENTS = (
    "tw_ate",
    "m1_ols_min",
    "m1_max_drop",
    "m1_hier_at_ols_min",
    "m2_step_white",
    "m2_step_dem",
    "m2_step_rep",
    "m2_cell_min",
    "sim2_gain_balanced",
    "sim2_gain_strong",
    "pub_tw_ate",
    "pub_m1_ols_min",
    "pub_m1_drop_named",
    "m1_drop_named",
    "pub_m1_hier_at_ols_min",
    "pub_m2_step_white",
    "pub_m2_step_dem",
    "pub_m2_step_rep",
    "pub_m2_cell_min",
    "cor_m2_step_white",
    "cor_m2_step_dem",
    "cor_m2_step_rep",
    "cor_m2_cell_min",
    "sim2_share_low",
)


def _report_variables(numbers: Mapping[str, float], labels: Mapping[str, str]) -> dict[str, str]:
    """The formatted variables: digits per name, percentages, percentage points, levels."""
    digits = {k: 3 for k in numbers if k.startswith(THREE_DIGITS)}
    digits |= dict.fromkeys(ONE_DIGIT, 1)
    for k in numbers:
        if k.startswith(("sim2_gain", "sim1_ratio")):
            digits[k] = 2
    variables = to_variables(
        numbers, labels, digits, percents=[p for p in PERCENTS if p in numbers]
    )
    # effects on a proportion, in percentage points (the text writes "percentage points")
    points = [p for p in PERCENTS if p.endswith(POINTS) and p in numbers]
    variables |= {f"{p}_pp": fmt_num(100 * numbers[p], 0) for p in points}
    provenance.note({f"{p}_pp": numbers[p] for p in points})  # shown x 100
    variables |= {"ci_level": "95%", "ci_inner": "10–90%", "ci_inner_level": "80%", "q_low": "10%"}
    return variables
