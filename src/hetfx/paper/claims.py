"""The claims register: every claim the paper makes, as data, with its status computed by a rule.

Each :class:`Claim` names where the text makes it (:class:`Place`: document, section anchor and
a phrase of the paragraph), the numbers it rests on (computed by :func:`register_numbers` from
the result artifacts, never typed in), its parts (each a criterion that passes or fails) and
its status, computed from the parts by one rule (:func:`status_of`):

* ``holds`` when every part passes,
* ``weaker`` when some pass and some fail,
* ``does not hold`` when every part fails.

The stricter rules of the register are stated once in :data:`RULES`: pooling is judged against
additive OLS (no pooling, the same additive restriction) as well as saturated OLS; a simulation
comparison counts as a win only when the difference exceeds :data:`RULES` ``["mcse_multiple"]``
Monte Carlo standard errors; a criterion about intervals states its level.

The manuscript quotes, at every place of a claim, one of its generated variables
(:func:`register_variables`): ``claim_<id>_status`` (``holds``, ``weaker``, ``does not
hold``), ``claim_<id>_verb`` (the status as a verb phrase), ``claim_<id>`` (the evidence with
its numbers) and ``claim_<id>_text`` (a sentence for the running text that carries the status).
So the text changes when the numbers do, and cannot contradict the appendix's verdict table
(:func:`register_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hetfx.paper.report import fmt_int, fmt_num, fmt_pct, markdown_table

__all__ = [
    "CLAIMS",
    "RULES",
    "STATUSES",
    "Claim",
    "Part",
    "Place",
    "register",
    "register_numbers",
    "register_table",
    "register_variables",
    "simulation_comparisons",
    "status_of",
]

STATUSES = ("holds", "weaker", "does not hold")
VERBS = {
    "holds": "holds",
    "weaker": "holds only in a weaker form",
    "does not hold": "does not hold",
}

#: The thresholds of every rule, stated once.
RULES = {
    # "much less variable": hierarchical SD at most this share of the OLS SD of the same
    # specification (saturated against saturated, additive against additive)
    "spread_ratio": 0.75,
    # "treated as noise": pulled at least this share of the way from the OLS estimate to the
    # mean of the OLS estimates
    "shrinkage_share": 0.5,
    # "stakes matter far less than OLS suggests": the low-minus-high stakes gap at most this
    # share of the OLS gap
    "stakes_share": 0.5,
    # "prior does not matter": no group median moves by more than this
    "prior_change": 0.01,
    # "the likelihood does not matter": the SD of the condition effects changes by at most
    # this share of the saturated OLS SD
    "likelihood_spread": 0.1,
    # a simulation comparison counts only beyond this many Monte Carlo standard errors of the
    # difference
    "mcse_multiple": 2.0,
}


@dataclass(frozen=True)
class Place:
    """Where the text makes a claim: ``document`` (``paper``, ``appendix``), ``anchor`` (a
    section id such as ``sec-conditions``, or ``abstract``) and a ``phrase`` that the
    paragraph contains. The paragraph must quote one of the claim's variables."""

    document: str
    anchor: str
    phrase: str

    def label(self) -> str:
        """``paper, Introduction``: the document and the section's title (a reference such as
        ``@sec-x`` would not resolve across the two documents)."""
        return f"{self.document}, {SECTION_TITLES.get(self.anchor, self.anchor)}"


#: Section titles for :meth:`Place.label` (the anchors of paper.qmd and appendix.qmd).
SECTION_TITLES = {
    "abstract": "abstract",
    "sec-introduction": "introduction",
    "sec-simulation": "simulation",
    "sec-conditions": "effects across conditions",
    "sec-demographics": "respondents",
    "sec-conclusion": "conclusion",
    "sec-a1": "A1 model",
    "sec-report-coding": "coding report",
    "sec-sim-sensitivity": "shifted baselines",
    "sec-robustness": "robustness",
}


@dataclass(frozen=True)
class Part:
    """One criterion of a claim: what it asks, whether it passes, the evidence with numbers."""

    criterion: str
    ok: bool
    evidence: str


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and its status (see the module docstring)."""

    id: str
    paper: str
    subject: str
    places: tuple[Place, ...]
    numbers: dict[str, float]
    parts: tuple[Part, ...]
    context: str = ""
    status: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", status_of([p.ok for p in self.parts]))

    def _parts_text(self) -> str:
        return "; ".join(f"{p.evidence} ({'passes' if p.ok else 'fails'})" for p in self.parts)

    @property
    def evidence(self) -> str:
        """The parts with their numbers and pass or fail marks, as one sentence."""
        text = self._parts_text()
        return f"{text[:1].upper()}{text[1:]}. {self.context}".strip()

    @property
    def text(self) -> str:
        """A sentence for the running text: the claim's subject, its status and evidence."""
        lead = {
            "holds": "holds up",
            "weaker": "holds up only in part",
            "does not hold": "does not hold up",
        }[self.status]
        return (
            f"{self.subject} {lead} against the package's checks (verdict: {self.status}): "
            f"{self._parts_text()}. {self.context}"
        ).strip()


def status_of(parts: list[bool]) -> str:
    """``holds`` if every part passes, ``does not hold`` if none does, else ``weaker``."""
    if not parts:
        raise ValueError("a claim needs at least one part")
    if all(parts):
        return "holds"
    return "does not hold" if not any(parts) else "weaker"


# ----------------------------------------------------------------------------- numbers


def simulation_comparisons(summary: pd.DataFrame, k: float | None = None) -> dict[str, float]:
    """Each hierarchical model against OLS in the sensitivity simulation's ``summary.csv``.

    Per DGP (``published``, ``shifted``) and model: the number of conditions where it wins
    (mean RMSE lower by more than ``k`` Monte Carlo standard errors of the difference), loses
    (higher by as much) or ties, per design too; the largest RMSE ratio to OLS and the lowest
    coverage of 90% intervals. The MCSE of a difference is taken as
    ``sqrt(mcse_a**2 + mcse_b**2)``, which is an upper bound when both models are fitted to the
    same replicates and their errors are positively correlated.
    """
    k = RULES["mcse_multiple"] if k is None else k
    key = ["dgp", "design", "condition"]
    ols = summary.loc[summary["model"] == "ols"].set_index(key)
    out: dict[str, float] = {}
    for (dgp, model), part in summary.loc[summary["model"] != "ols"].groupby(["dgp", "model"]):
        part = part.set_index(key)
        base = ols.loc[part.index]
        diff = part["rmse_mean"] - base["rmse_mean"]
        z = diff / np.sqrt(part["rmse_mcse"] ** 2 + base["rmse_mcse"] ** 2)
        name = f"sim_{dgp}_{model}"
        out[f"{name}_wins_n"] = float((z < -k).sum())
        out[f"{name}_losses_n"] = float((z > k).sum())
        for design in sorted(part.index.get_level_values("design").unique()):
            mask = part.index.get_level_values("design") == design
            out[f"{name}_wins_d{int(design)}_n"] = float((z[mask] < -k).sum())
            out[f"sim_conditions_d{int(design)}_n"] = float(mask.sum())
        ratio = part["rmse_mean"] / base["rmse_mean"]
        out[f"{name}_ratio_max"] = float(ratio.max())
        out[f"{name}_ratio_min"] = float(ratio.min())
        out[f"{name}_cov90_min"] = float(part["coverage_90"].min())
        out["sim_conditions_n"] = float(len(part))
        losses = part.index[(z > k).to_numpy()]
        if len(losses):
            groups = [c for d, c in zip(losses.get_level_values("design"),
                                        losses.get_level_values("condition"), strict=True)
                      if d == 1]  # fmt: skip
            if groups:
                sizes = sorted(int(g) for g in groups)
                out[f"{name}_losses_groups_min"] = float(sizes[0])
                out[f"{name}_losses_groups_max"] = float(sizes[-1])
    out["sim_mcse_multiple"] = k
    return out


def _stakes(effects: pd.DataFrame) -> dict[str, float]:
    """Mean condition effect at low and high stakes per robustness variant."""
    out = {}
    means = effects.groupby(["variant", "stakes"])["estimate"].mean()
    for variant in ("ols_saturated", "m1_published", "m1_main_effects",
                    "additive_main_effects", "pooled_baselines"):  # fmt: skip
        if variant in means.index.get_level_values(0):
            low, high = float(means[(variant, 0)]), float(means[(variant, 1)])
            out[f"stakes_{variant}_low"], out[f"stakes_{variant}_high"] = low, high
            out[f"stakes_{variant}_gap"] = low - high
    return out


def _cells95(groups: pd.DataFrame) -> tuple[float, float]:
    """Figure 8's cells with the median of their groups' 2.5% quantiles above zero, and the
    number of cells (the figure's construction, at the 95% level)."""
    cells = groups.groupby(["high_newsint", "party", "white", "male"])["q025"].median()
    return float((cells > 0).sum()), float(len(cells))


def register_numbers(
    dec: Mapping[str, Mapping[str, float]],
    rob: Mapping[str, float],
    effects: pd.DataFrame | None = None,
    m2_groups: Mapping[str, pd.DataFrame] | None = None,
    sensitivity: pd.DataFrame | None = None,
    bias_by_size: pd.DataFrame | None = None,
) -> dict[str, float]:
    """The numbers the register rests on, from the decomposition (``dec``, see
    :func:`hetfx.paper.verdict.decomposition`), the robustness numbers (``rob``), the
    robustness stage's condition effects, M2's group effects per analysis, the sensitivity
    simulation's summary and design 2's mean absolute error by group size. Every value is
    computed from the result artifacts."""
    out: dict[str, float] = {}
    for analysis in ("published", "coding_fixes", "corrected"):
        for k, v in dec[analysis].items():
            out[f"{analysis}_{k}"] = float(v)
    out |= {k: float(v) for k, v in rob.items()}
    pub = dec["published"]
    for variant in ("additive_main_effects", "pooled_baselines"):
        if f"{variant}_neg1" in rob:
            out[f"{variant}_shrinkage"] = (rob[f"{variant}_neg1"] - pub["m1_ols_min"]) / (
                pub["m1_ols_mean"] - pub["m1_ols_min"]
            )
    if effects is not None:
        out |= _stakes(effects)
    for analysis, groups in (m2_groups or {}).items():
        out[f"{analysis}_cells_q025_positive"], _ = _cells95(groups)
    if sensitivity is not None:
        out |= simulation_comparisons(sensitivity)
        out |= imbalance_numbers(sensitivity)
    if bias_by_size is not None:
        out |= small_group_numbers(bias_by_size)
    return out


def imbalance_numbers(summary: pd.DataFrame) -> dict[str, float]:
    """Design 2 with data as published: the hierarchical RMSE as a share of the OLS RMSE under
    balance and under the strongest imbalance, and the Monte Carlo standard error of each
    ratio (delta method, the two models' errors taken as independent: an upper bound)."""
    part = summary.loc[(summary["dgp"] == "published") & (summary["design"] == 2)]
    wide = part.set_index(["condition", "model"])
    out: dict[str, float] = {}
    if not {"balanced", "strong"} <= set(part["condition"]):
        return out
    for scenario in ("balanced", "strong"):
        h, o = wide.loc[(scenario, "hierarchical")], wide.loc[(scenario, "ols")]
        ratio = h["rmse_mean"] / o["rmse_mean"]
        rel = np.hypot(h["rmse_mcse"] / h["rmse_mean"], o["rmse_mcse"] / o["rmse_mean"])
        out[f"sim_imbalance_{scenario}_ratio"] = float(ratio)
        out[f"sim_imbalance_{scenario}_ratio_mcse"] = float(ratio * rel)
    return out


def small_group_numbers(bins: pd.DataFrame, small: float = 20) -> dict[str, float]:
    """Design 2's ``bias_by_size.csv``: in how many scenario x size-bin cells the hierarchical
    mean absolute error is below that of OLS by more than :data:`RULES` ``["mcse_multiple"]``
    Monte Carlo standard errors of the difference, among all cells and among the cells of
    groups of at most ``small`` observations."""
    key = ["scenario", "size_bin"]
    h = bins.loc[bins["model"] == "hierarchical"].set_index(key)
    o = bins.loc[bins["model"] == "ols"].set_index(key).loc[h.index]
    z = (h["mean_abs_bias"] - o["mean_abs_bias"]) / np.hypot(h["mcse"], o["mcse"])
    wins = z < -RULES["mcse_multiple"]
    upper = h.index.get_level_values("size_bin").str.extract(r",\s*([^\]]+)\]")[0]
    is_small = (upper.astype(float) <= small).to_numpy()
    return {
        "sim_bins_n": float(len(z)),
        "sim_bins_wins_n": float(wins.sum()),
        "sim_bins_small_n": float(is_small.sum()),
        "sim_bins_small_wins_n": float(wins[is_small].sum()),
        "sim_bins_small_limit": float(small),
    }


# ----------------------------------------------------------------------------- the claims

#: The places of the claims in the manuscript.
PLACES: dict[str, tuple[Place, ...]] = {
    "sim_accuracy": (
        Place("paper", "sec-simulation", "shows the result"),
        Place("paper", "sec-simulation", "The simulations support two conclusions"),
    ),
    "sim_imbalance": (Place("paper", "sec-simulation", "keeps its edge under balance"),),
    "sim_small_groups": (
        Place("paper", "sec-simulation", "plots the absolute error"),
        Place("paper", "sec-simulation", "The simulations support two conclusions"),
    ),
    "sim_baselines": (
        Place("paper", "sec-simulation", "These simulated data give every group"),
        Place("appendix", "sec-sim-sensitivity", "reports the result"),
    ),
    "pooling": (
        Place("paper", "abstract", "checks every claim"),
        Place("paper", "sec-introduction", "In that reanalysis"),
        Place("paper", "sec-conditions", "shows the regularization"),
        Place("paper", "sec-conditions", "follows the published specification"),
        Place("paper", "sec-demographics", "The two analyses illustrate"),
        Place("paper", "sec-conclusion", "Checked against"),
    ),
    "negative_condition": (
        Place("paper", "sec-conditions", "The lowest OLS estimate"),
        Place("paper", "sec-conditions", "sets out the estimates condition by condition"),
    ),
    "stakes": (Place("paper", "sec-conditions", "average alliance effect is so large"),),
    "a1_agrees": (Place("appendix", "sec-a1", "A simpler hierarchical model"),),
    "news_interest": (
        Place("paper", "abstract", "checks every claim"),
        Place("paper", "sec-introduction", "In that reanalysis"),
        Place("paper", "sec-demographics", "shows both equations"),
        Place("appendix", "sec-report-coding", "Once the indicator means what it says"),
    ),
    "cells_positive": (Place("paper", "sec-demographics", "summarizes the model"),),
    "party": (Place("paper", "sec-demographics", "The remaining modifiers"),),
    "likelihood": (Place("paper", "sec-demographics", "normal likelihood"),),
    "prior": (Place("appendix", "sec-robustness", "Four further checks"),),
}


def _ratio(x: Mapping[str, float], num: str, den: str) -> float:
    return x[num] / x[den]


def _sim_claims(x: Mapping[str, float]) -> list[Claim]:
    if "sim_conditions_n" not in x:  # no sensitivity simulation
        return []
    k = fmt_num(RULES["mcse_multiple"], 0)
    n1, n2 = x["sim_conditions_d1_n"], x["sim_conditions_d2_n"]
    pub = "sim_published_hierarchical"
    shifted, pooled = "sim_shifted_hierarchical", "sim_shifted_hierarchical_pooled"
    accuracy = Claim(
        id="sim_accuracy",
        paper="With data as simulated in the paper, the hierarchical model is more accurate "
        "than OLS in every condition of both designs.",
        subject="The hierarchical model's advantage in these simulations",
        places=PLACES["sim_accuracy"],
        numbers={k_: x[k_] for k_ in (f"{pub}_wins_d1_n", f"{pub}_wins_d2_n")},
        parts=(
            Part(f"lower RMSE by more than {k} MCSE in every equal-size condition",
                 x[f"{pub}_wins_d1_n"] == n1,
                 f"with equal groups it wins beyond {k} MCSE in {fmt_int(x[f'{pub}_wins_d1_n'])}"
                 f" of {fmt_int(n1)} conditions"),
            Part(f"lower RMSE by more than {k} MCSE in every imbalance scenario",
                 x[f"{pub}_wins_d2_n"] == n2,
                 f"with unequal groups in {fmt_int(x[f'{pub}_wins_d2_n'])} of {fmt_int(n2)}"),
        ),
    )  # fmt: skip
    lost = ""
    if f"{shifted}_losses_groups_min" in x:
        lost = (
            f", loses beyond {k} MCSE at {fmt_int(x[f'{shifted}_losses_groups_min'])} to "
            f"{fmt_int(x[f'{shifted}_losses_groups_max'])} equal groups (RMSE up to "
            f"{fmt_num(x[f'{shifted}_ratio_max'], 1)} times that of OLS)"
        )
    baselines = Claim(
        id="sim_baselines",
        paper="The hierarchical model's advantage does not depend on the simulated groups "
        "sharing one baseline (implicit in the simulation design).",
        subject="The advantage under group-specific baselines",
        places=PLACES["sim_baselines"],
        numbers={k_: x[k_] for k_ in x if k_.startswith(("sim_shifted_", "sim_conditions_n"))},
        parts=(
            Part(f"the published specification wins beyond {k} MCSE in every condition",
                 x[f"{shifted}_wins_n"] == x["sim_conditions_n"],
                 f"with shifted baselines the published specification wins beyond {k} MCSE in "
                 f"{fmt_int(x[f'{shifted}_wins_n'])} of {fmt_int(x['sim_conditions_n'])} "
                 f"conditions{lost}, and its 90% intervals cover as little as "
                 f"{fmt_num(x[f'{shifted}_cov90_min'])}"),
            Part(f"the model with pooled baselines wins beyond {k} MCSE in every condition",
                 x[f"{pooled}_wins_n"] == x["sim_conditions_n"],
                 f"the model that pools the baselines too wins beyond {k} MCSE in "
                 f"{fmt_int(x[f'{pooled}_wins_n'])} of {fmt_int(x['sim_conditions_n'])} and "
                 f"loses in {fmt_int(x[f'{pooled}_losses_n'])}"),
        ),
    )  # fmt: skip
    return [accuracy, *_sim_size_claims(x), baselines]


def _sim_size_claims(x: Mapping[str, float]) -> list[Claim]:
    out = []
    k = RULES["mcse_multiple"]
    if "sim_imbalance_balanced_ratio" in x:
        bal, strong = x["sim_imbalance_balanced_ratio"], x["sim_imbalance_strong_ratio"]
        se = np.hypot(x["sim_imbalance_balanced_ratio_mcse"], x["sim_imbalance_strong_ratio_mcse"])
        out.append(Claim(
            id="sim_imbalance",
            paper="The hierarchical model's advantage narrows as group sizes grow unequal.",
            subject="The narrowing of the advantage under imbalance",
            places=PLACES["sim_imbalance"],
            numbers={"balanced": bal, "strong": strong, "mcse": float(se)},
            parts=(Part(f"the RMSE ratio to OLS grows by more than {fmt_num(k, 0)} MCSE",
                        strong - bal > k * se,
                        f"the hierarchical RMSE is {fmt_num(bal)} of that of OLS under balance "
                        f"and {fmt_num(strong)} under strong imbalance (MCSE of the "
                        f"difference {fmt_num(se, 3)})"),),
        ))  # fmt: skip
    if "sim_bins_n" in x:
        small = fmt_int(x["sim_bins_small_limit"])
        out.append(Claim(
            id="sim_small_groups",
            paper="Even for small groups the hierarchical estimate is usually better than the "
            "interaction's.",
            subject="The hierarchical model's edge in small groups",
            places=PLACES["sim_small_groups"],
            numbers={k_: x[k_] for k_ in x if k_.startswith("sim_bins_")},
            parts=(
                Part(f"lower mean absolute error beyond {fmt_num(k, 0)} MCSE in every cell of "
                     f"groups of at most {small}",
                     x["sim_bins_small_wins_n"] == x["sim_bins_small_n"],
                     f"its mean absolute error is lower than that of OLS beyond "
                     f"{fmt_num(k, 0)} MCSE in {fmt_int(x['sim_bins_small_wins_n'])} of "
                     f"{fmt_int(x['sim_bins_small_n'])} scenario and size classes of groups of "
                     f"at most {small} observations"),
                Part("the same in every size class", x["sim_bins_wins_n"] == x["sim_bins_n"],
                     f"in {fmt_int(x['sim_bins_wins_n'])} of {fmt_int(x['sim_bins_n'])} classes "
                     f"of all sizes"),
            ),
        ))  # fmt: skip
    return out


def _pooling_claims(x: Mapping[str, float]) -> list[Claim]:
    limit = fmt_num(RULES["spread_ratio"])
    r_pub = _ratio(x, "published_m1_sd", "published_m1_ols_sd")
    r_sat = _ratio(x, "corrected_m1_sd", "corrected_m1_ols_sd")
    r_add = _ratio(x, "additive_main_effects_sd", "ols_additive_sd")
    r_add_ols = _ratio(x, "ols_additive_sd", "ols_saturated_sd")
    pooling = Claim(
        id="pooling",
        paper="Pooling makes the condition effects much less variable than saturated OLS and "
        "tempers extreme subgroup estimates.",
        subject="The pooling of the condition effects",
        places=PLACES["pooling"],
        numbers={"ratio_published": r_pub, "ratio_saturated": r_sat, "ratio_additive": r_add,
                 "ratio_additive_ols": r_add_ols},
        parts=(
            Part(f"with main effects, saturated SD at most {limit} of saturated OLS",
                 r_sat <= RULES["spread_ratio"],
                 f"with the main effects the saturated model's SD is {fmt_num(r_sat)} of "
                 f"saturated OLS (published specification {fmt_num(r_pub)})"),
            Part(f"with main effects, additive SD at most {limit} of additive OLS",
                 r_add <= RULES["spread_ratio"],
                 f"the additive model with main effects has SD "
                 f"{fmt_num(x['additive_main_effects_sd'])}, {fmt_num(r_add)} of additive OLS "
                 f"({fmt_num(x['ols_additive_sd'])}), which pools nothing"),
        ),
        context=f"Additive OLS alone has {fmt_num(r_add_ols)} of the saturated OLS SD: a "
        f"reduction that comes from the additive restriction, not from pooling "
        f"(rule: SD ratio at most {limit}).",
    )  # fmt: skip
    share = RULES["shrinkage_share"]
    shrink = {
        "saturated model with main effects": ("corrected_m1_shrinkage", "corrected_m1_at_ols_min"),
        "additive model with main effects": ("additive_main_effects_shrinkage",
                                             "additive_main_effects_neg1"),
        "model with pooled baselines (A1)": ("pooled_baselines_shrinkage",
                                             "pooled_baselines_neg1"),
    }  # fmt: skip
    noise = Claim(
        id="negative_condition",
        paper="The one condition where OLS finds a drop in support is noise; an effect near "
        "the pooled estimate agrees better with other evidence.",
        subject="Reading the negative OLS condition as noise",
        places=PLACES["negative_condition"],
        numbers={v: x[v] for pair in shrink.values() for v in pair}
        | {"m1_ols_min": x["published_m1_ols_min"], "m1_at_ols_min": x["published_m1_at_ols_min"]},
        parts=tuple(
            Part(f"{name}: pulled at least {fmt_pct(share)} of the way to the OLS mean",
                 x[s] >= share,
                 f"the {name} puts it at {fmt_num(x[at])} ({fmt_pct(max(x[s], 0))} of the way)")
            for name, (s, at) in shrink.items()
        ),
        context=f"OLS finds {fmt_num(x['published_m1_ols_min'])}; the published model "
        f"{fmt_num(x['published_m1_at_ols_min'])}.",
    )  # fmt: skip
    return [pooling, noise]


def _stakes_claim(x: Mapping[str, float]) -> Claim:
    share = RULES["stakes_share"]
    ols = x["stakes_ols_saturated_gap"]
    models = {
        "saturated model with main effects": "m1_main_effects",
        "additive model with main effects": "additive_main_effects",
        "model with pooled baselines (A1)": "pooled_baselines",
    }

    def low_high(v: str) -> str:
        return f"{fmt_num(x[f'stakes_{v}_low'])} low, {fmt_num(x[f'stakes_{v}_high'])} high"

    reversed_ = np.sign(x["stakes_m1_published_gap"]) != np.sign(ols)
    return Claim(
        id="stakes",
        paper="Pooled estimates give stakes far less influence on the alliance effect than "
        "OLS suggests.",
        subject="The smaller role of stakes",
        places=PLACES["stakes"],
        numbers={k: x[k] for k in x if k.startswith("stakes_")},
        parts=tuple(
            Part(f"{name}: stakes gap at most {fmt_pct(share)} of the OLS gap",
                 abs(x[f"stakes_{v}_gap"]) <= share * abs(ols),
                 f"the {name} gives {low_high(v)}")
            for name, v in models.items()
        ),
        context=f"Saturated OLS gives {low_high('ols_saturated')}, the published model "
        f"{low_high('m1_published')}"
        + ("; the published model reverses the sign of the moderation." if reversed_ else "."),
    )  # fmt: skip


def _a1_claim(x: Mapping[str, float]) -> Claim:
    limit = RULES["spread_ratio"]
    r_sat = _ratio(x, "pooled_baselines_sd", "ols_saturated_sd")
    r_add = _ratio(x, "pooled_baselines_sd", "ols_additive_sd")
    same_sign = np.sign(x["stakes_pooled_baselines_gap"]) == np.sign(x["stakes_m1_published_gap"])
    return Claim(
        id="a1_agrees",
        paper="The model with varying intercepts and alliance slopes (A1) reaches the same "
        "conclusion about the conditions as the two-equation model.",
        subject="The agreement of A1 with the published two-equation model",
        places=PLACES["a1_agrees"],
        numbers={"ratio_saturated": r_sat, "ratio_additive": r_add,
                 "neg1": x["pooled_baselines_neg1"],
                 "stakes_gap": x["stakes_pooled_baselines_gap"]},
        parts=(
            Part(f"SD at most {fmt_num(limit)} of saturated OLS", r_sat <= limit,
                 f"the SD of A1 is {fmt_num(r_sat)} of saturated OLS"),
            Part(f"SD at most {fmt_num(limit)} of additive OLS", r_add <= limit,
                 f"{fmt_num(r_add)} of additive OLS"),
            Part("the negative OLS condition treated as noise",
                 x["pooled_baselines_shrinkage"] >= RULES["shrinkage_share"],
                 f"it puts the negative OLS condition at {fmt_num(x['pooled_baselines_neg1'])}"
                 f" (published model {fmt_num(x['published_m1_at_ols_min'])})"),
            Part("stakes moderate in the same direction as in the published model", same_sign,
                 f"it gives {fmt_num(x['stakes_pooled_baselines_low'])} at low and "
                 f"{fmt_num(x['stakes_pooled_baselines_high'])} at high stakes (published "
                 f"model {fmt_num(x['stakes_m1_published_low'])} and "
                 f"{fmt_num(x['stakes_m1_published_high'])})"),
        ),
    )  # fmt: skip


def _interval(x: Mapping[str, float], name: str) -> str:
    return f"{fmt_num(x[name])} [{fmt_num(x[name + '_lo'])}, {fmt_num(x[name + '_hi'])}]"


def _m2_claims(x: Mapping[str, float]) -> list[Claim]:
    news = Claim(
        id="news_interest",
        paper="High news interest is the strongest, clearly positive modifier of the alliance "
        "effect.",
        subject="News interest as the strongest, clearly positive modifier",
        places=PLACES["news_interest"],
        numbers={k: x[f"corrected_{k}"] for k in ("g_high_newsint", "g_high_newsint_lo",
                                                   "g_high_newsint_hi", "g_white")},
        parts=(
            Part("its 95% interval excludes zero", x["corrected_g_high_newsint_lo"] > 0,
                 f"with the main effects its coefficient is "
                 f"{_interval(x, 'corrected_g_high_newsint')} (95% interval)"),
            Part("it is the largest modifier", x["corrected_g_news_largest"] == 1,
                 f"the white coefficient, {fmt_num(x['corrected_g_white'])}, is "
                 + ("smaller" if x["corrected_g_news_largest"] == 1 else "larger")),
        ),
        context=f"As published it is {_interval(x, 'published_g_high_newsint')}, with the "
        f"corrected Democrat indicator alone {_interval(x, 'coding_fixes_g_high_newsint')}.",
    )  # fmt: skip
    n = x["corrected_cells"]
    q10, q025 = x["corrected_cells_q10_positive"], x["corrected_cells_q025_positive"]
    cells = Claim(
        id="cells_positive",
        paper="Alliances raise support in every demographic cell.",
        subject="A positive alliance effect in every demographic cell",
        places=PLACES["cells_positive"],
        numbers={"q10_positive": q10, "q025_positive": q025, "cells": n},
        parts=(
            Part("every cell above zero at the 80% level (10% quantile, the paper's level)",
                 q10 == n, f"{fmt_int(q10)} of {fmt_int(n)} cells have their 10% quantile "
                 f"above zero (80% intervals)"),
            Part("every cell above zero at the 95% level (2.5% quantile)", q025 == n,
                 f"{fmt_int(q025)} of {fmt_int(n)} their 2.5% quantile (95% intervals)"),
        ),
        context=f"Published analysis: {fmt_int(x['published_cells_q10_positive'])} and "
        f"{fmt_int(x['published_cells_q025_positive'])} of {fmt_int(x['published_cells'])}.",
    )  # fmt: skip
    party = Claim(
        id="party",
        paper="Partisanship makes little difference to the alliance effect.",
        subject="The small role of partisanship",
        places=PLACES["party"],
        numbers={k: x[f"corrected_{k}"] for k in ("g_dem", "g_rep")},
        parts=tuple(
            Part(f"the {who} 95% interval includes zero",
                 x[f"corrected_g_{t}_lo"] <= 0 <= x[f"corrected_g_{t}_hi"],
                 f"{who} {_interval(x, f'corrected_g_{t}')} with the main effects")
            for t, who in (("dem", "the Democrat coefficient is"), ("rep", "the Republican one"))
        ),
    )  # fmt: skip
    return [news, cells, party]


def _check_claims(x: Mapping[str, float]) -> list[Claim]:
    out = []
    if "logit_gap_m1_published" in x and "logit_gap_additive_main_effects" in x:
        parts = []
        for logit, linear, name in (
            ("logit_published", "m1_published", "published specification"),
            ("logit_additive_main_effects", "additive_main_effects", "additive one with main "
             "effects"),
        ):  # fmt: skip
            shift = abs(x[f"{logit}_sd"] - x[f"{linear}_sd"]) / x["ols_saturated_sd"]
            parts.append(Part(
                f"{name}: SD changes by at most {fmt_pct(RULES['likelihood_spread'])} of the "
                "OLS SD", shift <= RULES["likelihood_spread"],
                f"a logit likelihood gives SD {fmt_num(x[f'{logit}_sd'])} in the {name} "
                f"(Gaussian {fmt_num(x[f'{linear}_sd'])})"))  # fmt: skip
        gap = max(x["logit_gap_m1_published"], x["logit_gap_additive_main_effects"])
        out.append(Claim(
            id="likelihood", paper="A Gaussian likelihood is adequate for the binary outcome.",
            subject="The Gaussian likelihood", places=PLACES["likelihood"],
            numbers={"gap": gap}, parts=tuple(parts),
            context=f"Single conditions move by up to {fmt_num(gap)}."))  # fmt: skip
    out.append(Claim(
        id="prior", paper="The results do not hinge on the prior of the group SD (implicit).",
        subject="Insensitivity to the prior on σθ", places=PLACES["prior"],
        numbers={"max_change": x["prior_max_change"]},
        parts=(Part(f"no condition median moves by more than {fmt_num(RULES['prior_change'])}",
                    x["prior_max_change"] <= RULES["prior_change"],
                    f"half-normal priors (scale one or one half) instead of brms's "
                    f"half-Student-t move no condition median by more than "
                    f"{fmt_num(x['prior_max_change'], 3)}"),),
    ))  # fmt: skip
    return out


#: The builders of the register, in the paper's order.
BUILDERS: tuple[Callable[[Mapping[str, float]], list[Claim]], ...] = (
    _sim_claims,
    _pooling_claims,
    lambda x: [_stakes_claim(x), _a1_claim(x)],
    _m2_claims,
    _check_claims,
)
#: The ids of the register, in order (the likelihood claim needs the logit fits).
CLAIMS = tuple(PLACES)


def register(numbers: Mapping[str, float]) -> list[Claim]:
    """Every claim with its status, from the numbers of :func:`register_numbers`."""
    return [c for build in BUILDERS for c in build(numbers)]


# ----------------------------------------------------------------------------- outputs


def summary_sentence(claims: list[Claim]) -> str:
    """One sentence on the methodological message, from the statuses of the register."""
    status = {c.id: c.status for c in claims}
    if status["pooling"] == "holds":
        return (
            "The application's central illustration, the pooling of the condition effects, "
            "survives the corrected specification."
        )
    lead = (
        "The simulations support the method where its assumptions hold"
        if status["sim_accuracy"] == "holds"
        else "The simulations support the method only in part"
    )
    return (
        f"{lead}; in the application, the pooling of the condition effects "
        f"{VERBS[status['pooling']]} once the outcome equation has the grouping variables' "
        f"main effects, so its most striking illustration comes from a specification choice "
        f"rather than from partial pooling."
    )


def register_variables(claims: list[Claim]) -> dict[str, str]:
    """``claim_<id>``, ``claim_<id>_status``, ``claim_<id>_verb``, ``claim_<id>_text`` per
    claim, the tally ``claims_n``, ``claims_n_hold``, ``claims_n_weaker``, ``claims_n_fail``
    and ``claims_summary``; the rules as ``rule_<name>``."""
    out: dict[str, str] = {}
    for c in claims:
        out[f"claim_{c.id}"] = c.evidence
        out[f"claim_{c.id}_status"] = c.status
        out[f"claim_{c.id}_verb"] = VERBS[c.status]
        out[f"claim_{c.id}_text"] = c.text
    statuses = [c.status for c in claims]
    out["claims_n"] = fmt_int(len(claims))
    out["claims_n_hold"] = fmt_int(statuses.count("holds"))
    out["claims_n_weaker"] = fmt_int(statuses.count("weaker"))
    out["claims_n_fail"] = fmt_int(statuses.count("does not hold"))
    out["claims_summary"] = summary_sentence(claims)
    out["rule_spread_ratio"] = fmt_num(RULES["spread_ratio"])
    out["rule_shrinkage_share"] = fmt_pct(RULES["shrinkage_share"])
    out["rule_stakes_share"] = fmt_pct(RULES["stakes_share"])
    out["rule_mcse_multiple"] = fmt_num(RULES["mcse_multiple"], 0)
    return out


def register_table(claims: list[Claim]) -> str:
    """The verdict table of the appendix: every registered claim, where the text makes it,
    its status and the evidence with its numbers."""
    frame = pd.DataFrame(
        {
            "Claim of the paper": [c.paper for c in claims],
            "Where": ["; ".join(dict.fromkeys(p.label() for p in c.places)) for c in claims],
            "Verdict": [c.status for c in claims],
            "Evidence (each part passes or fails)": [c.evidence for c in claims],
        }
    )
    return markdown_table(
        frame,
        "The claims register: each claim of the paper, where the text makes it, and its "
        "status against the corrected analysis (holds: every part passes; weaker: some do; "
        "does not hold: none does)",
        "verdict",
        align="llll",
    )
