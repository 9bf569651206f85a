"""The paper's figures, one function each, drawn with plotnine in one shared theme.

Every function takes the tidy frames of the artifact contract (``groups.csv``, ``coefs.csv``,
simulation ``summary.csv``/``estimates``) and returns a plotnine object;
:func:`hetfx.plots.save` writes it as PNG (300 dpi) and SVG. Labels follow the data's coding:
``costs = 1`` is LOW cost (replication spec §6, problem 2), ``stakes = 1`` high stakes,
``regime = 1`` democracy.
"""

from __future__ import annotations

import pandas as pd
from mizani.breaks import breaks_extended
from plotnine import (
    aes,
    coord_flip,
    element_text,
    expand_limits,
    facet_grid,
    facet_wrap,
    geom_abline,
    geom_errorbar,
    geom_histogram,
    geom_hline,
    geom_line,
    geom_linerange,
    geom_point,
    geom_pointrange,
    geom_smooth,
    geom_text,
    ggplot,
    guide_legend,
    guides,
    labs,
    position_dodge,
    scale_color_manual,
    scale_fill_manual,
    scale_x_continuous,
    theme,
)

from hetfx.plots import save, theme_hetfx  # noqa: F401  (save: re-exported for the stages)

#: Width of the manuscript's text block in inches (US letter, 1.25 in margins, both renderers).
TEXT_WIDTH = 6.0
#: The smallest text a figure may print, in points.
MIN_TEXT_PT = 7.0
#: Size (width, height) in inches at which the stages save each figure. The PDFs place a figure
#: at its natural size, so a figure no wider than the text prints its text at the size drawn:
#: the theme's smallest text is 8 pt (tick, strip and legend labels), explicit sizes are 7 pt
#: or more (tests/test_figures.py draws every figure at these sizes and checks).
SIZES: dict[str, tuple[float, float]] = {
    "figure1": (6.0, 4.2),
    "figure2": (6.0, 3.8),
    "figure3": (6.0, 4.2),
    "figure4": (6.0, 4.2),
    "figure5": (6.0, 6.0),
    "figure6": (6.0, 7.2),
    "figure7": (6.0, 4.0),
    "figure8": (6.0, 4.6),
    "figure_a1": (6.0, 7.2),
    "figure_a2": (6.0, 5.0),
    "figure_robustness": (6.0, 7.2),
}

MODEL_COLOURS = {"OLS": "#D55E00", "Hierarchical": "#0072B2"}
MODEL_NAMES = {"ols": "OLS", "hierarchical": "Hierarchical"}
SCENARIOS = ["balanced", "mild", "moderate", "strong"]


# ---------------------------------------------------------------- labels


def condition_label(frame: pd.DataFrame) -> pd.Series:
    """Readable label of an experimental condition from its 0/1 keys (costs = 1 is LOW)."""
    regime = frame["regime"].map({1: "Democracy", 0: "Autocracy"})
    stakes = frame["stakes"].map({1: "high stakes", 0: "low stakes"})
    costs = frame["costs"].map({1: "low cost", 0: "high cost"})
    return regime + ", " + stakes + ", " + costs


def _both(hier: pd.DataFrame, ols: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stack the hierarchical and OLS group effects, with lower/upper 95% bounds."""
    parts = []
    for name, frame in (("Hierarchical", hier), ("OLS", ols)):
        part = frame[keys + ["estimate", "q025", "q975"]].copy()
        part["model"] = name
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["model"] = pd.Categorical(out["model"], ["OLS", "Hierarchical"])
    return out


# ---------------------------------------------------------------- Tomz–Weeks


def figure5(hier: pd.DataFrame, ols: pd.DataFrame, key: str = "treat_group"):
    """Distribution of the group effects of both models (top) and hierarchical − OLS (bottom)."""
    both = _both(hier, ols, [key])
    top = (
        ggplot(both, aes("estimate", fill="model"))
        + geom_histogram(binwidth=0.05, boundary=0, alpha=0.6, position="identity", color="white")
        + scale_fill_manual(values=MODEL_COLOURS)
        + labs(
            x="Effect of alliance on support for force",
            y="Groups",
            title="Distribution of the group estimates",
        )
        + theme_hetfx()
    )
    diff = hier[[key, "estimate"]].merge(ols[[key, "estimate"]], on=key, suffixes=("_h", "_o"))
    diff["difference"] = diff["estimate_h"] - diff["estimate_o"]
    bottom = (
        ggplot(diff, aes("estimate_o", "difference"))
        + geom_hline(yintercept=0, linetype="dashed", color="grey")
        + geom_point(color=MODEL_COLOURS["Hierarchical"], size=2)
        + labs(
            x="OLS estimate",
            y="Hierarchical − OLS",
            title="Shrinkage: hierarchical minus OLS estimate, by OLS estimate",
        )
        + theme_hetfx()
    )
    return top / bottom


def figure6(hier: pd.DataFrame, ols: pd.DataFrame):
    """Both models' estimate in each of the 32 experimental conditions, by region."""
    keys = ["regime", "stakes", "costs", "region"]
    both = _both(hier, ols, keys)
    both["condition"] = condition_label(both)
    dodge = position_dodge(width=0.6)
    return (
        ggplot(both, aes("condition", "estimate", color="model"))
        + geom_hline(yintercept=0, color="grey")
        + geom_linerange(aes(ymin="q025", ymax="q975"), position=dodge, alpha=0.5)
        + geom_point(position=dodge, size=1.8)
        + facet_wrap("region", ncol=2)
        + coord_flip()
        + scale_color_manual(values=MODEL_COLOURS)
        + labs(x="", y="Effect of alliance on support for force (95% interval)")
        + theme_hetfx()
        + theme(axis_text_y=element_text(size=7))
    )


#: Colours of the specification variants (Okabe-Ito), in the order of the legend.
VARIANT_COLOURS = {
    "Saturated OLS": "#D55E00",
    "M1 as published (no main effects)": "#0072B2",
    "M1 with main effects": "#56B4E9",
    "Additive Z with main effects": "#009E73",
    "Additive Z, pooled baselines (A1)": "#CC79A7",
}


def figure_robustness(effects: pd.DataFrame):
    """Condition effects under the specification variants (``results/robustness``), by
    region, like Figure 6; only the variants with a colour in :data:`VARIANT_COLOURS`."""
    data = effects[effects["label"].isin(VARIANT_COLOURS)].copy()
    data["condition"] = condition_label(data)
    data["label"] = pd.Categorical(data["label"], list(VARIANT_COLOURS))
    dodge = position_dodge(width=0.75)
    return (
        ggplot(data, aes("condition", "estimate", color="label"))
        + geom_hline(yintercept=0, color="grey")
        + geom_point(position=dodge, size=1.5)
        + facet_wrap("region", ncol=2)
        + coord_flip()
        + scale_color_manual(values=VARIANT_COLOURS)
        + labs(x="", y="Effect of alliance on support for force (posterior median or OLS)")
        + theme_hetfx()
        + theme(axis_text_y=element_text(size=7), legend_text=element_text(size=7))
        + guides(color=guide_legend(ncol=2))
    )


COEF_LABELS = {
    "Intercept": "Intercept",
    "dem": "Democrat",
    "rep": "Republican",
    "high_newsint": "High news interest",
    "white": "White",
    "male": "Male",
    "regime": "Democracy (target)",
    "stakes": "High stakes",
    "costs": "Low cost",
    "africa": "Africa",
    "europe": "Eastern Europe",
    "asia": "Asia",
    "age": "Age (decades)",
    "ed4": "Education (4 levels)",
}
EQUATION_LABELS = {
    "effect": "Heterogeneity equation (effect of alliance)",
    "control": "Outcome equation (controls)",
}


def figure7(coefs: pd.DataFrame):
    """Coefficients of both equations of the demographic model (mean, 95% interval)."""
    data = coefs[coefs["equation"].isin(EQUATION_LABELS)].copy()
    data["label"] = data["term"].map(COEF_LABELS).fillna(data["term"])
    data["panel"] = data["equation"].map(EQUATION_LABELS)
    order = [lab for lab in dict.fromkeys(data["label"][::-1]) if lab != "Intercept"]
    order.append("Intercept")  # top of each panel once flipped
    data["label"] = pd.Categorical(data["label"], order)
    return (
        ggplot(data, aes("label", "mean"))
        + geom_hline(yintercept=0, linetype="dashed", color="grey")
        + geom_pointrange(aes(ymin="q025", ymax="q975"), color=MODEL_COLOURS["Hierarchical"])
        + facet_wrap("panel", scales="free_y", ncol=2)
        + coord_flip()
        + labs(x="", y="Coefficient (posterior mean, 95% interval)")
        + theme_hetfx()
        + theme(axis_text_y=element_text(size=8))
    )


def figure8(cells: pd.DataFrame):
    """The 24 demographic cells: median effect with 10–90% interval and its value as text."""
    data = cells.copy()
    data["who"] = (
        data["white"].map({1: "White", 0: "Non-white"})
        + " "
        + data["male"].map({1: "men", 0: "women"})
    )
    data["news"] = data["high_newsint"].map({1: "High news interest", 0: "Low news interest"})
    data["text"] = data["estimate"].map(lambda v: f"{v:.2f}")
    return (
        ggplot(data, aes("who", "estimate", color="party"))
        + geom_hline(yintercept=0, color="grey")
        + geom_pointrange(aes(ymin="q10", ymax="q90"))
        + geom_text(aes(label="text", y="q90"), ha="left", nudge_y=0.015, size=7, show_legend=False)
        + facet_grid("news ~ party")
        + expand_limits(y=data["q90"].max() + 0.1)  # room for the text labels
        + coord_flip()
        + scale_color_manual(
            values={"Democrat": "#0072B2", "Republican": "#D55E00", "Independent": "#6B6B6B"}
        )
        + labs(x="", y="Effect of alliance (posterior median, 10–90% interval)")
        + theme_hetfx()
        + theme(legend_position="none")
    )


def figure_a1(groups: pd.DataFrame):
    """Appendix A1: alliance effect by condition from the varying-slopes model (95%)."""
    data = groups.copy()
    data["condition"] = condition_label(data)
    return (
        ggplot(data, aes("condition", "estimate"))
        + geom_hline(yintercept=0, color="grey")
        + geom_pointrange(aes(ymin="q025", ymax="q975"), color=MODEL_COLOURS["Hierarchical"])
        + facet_wrap("region", ncol=2)
        + coord_flip()
        + labs(x="", y="Effect of alliance (posterior median, 95% interval)")
        + theme_hetfx()
        + theme(axis_text_y=element_text(size=7))
    )


def figure_a2(groups: pd.DataFrame):
    """Appendix A2: Bush–Prather effect of Germany vs Russia by political engagement."""
    data = groups.copy()
    data["vote"] = data["w2_vote_hill"].map({1: "Clinton voter", 0: "Trump voter"})
    data["panel"] = (
        data["invest_cond"].map({1: "FDI", 0: "Trade"})
        + ", "
        + data["woman"].map({1: "women", 0: "men"})
    )
    dodge = position_dodge(width=0.5)
    return (
        ggplot(data, aes("pol_engage", "estimate", color="vote"))
        + geom_hline(yintercept=0, color="grey")
        + geom_pointrange(aes(ymin="q025", ymax="q975"), position=dodge)
        + facet_wrap("panel", ncol=2)
        + scale_color_manual(values={"Clinton voter": "#0072B2", "Trump voter": "#D55E00"})
        + scale_x_continuous(breaks=list(range(1, 8)))
        + labs(
            x="Political engagement (knowledge + interest)",
            y="Effect of Germany vs Russia on support (95% interval)",
        )
        + theme_hetfx()
    )


# ---------------------------------------------------------------- simulation


def _models(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["model"] = pd.Categorical(
        out["model"].map(MODEL_NAMES).fillna(out["model"]), ["OLS", "Hierarchical"]
    )
    return out


def _plain(breaks) -> list[str]:
    """Axis labels of a log scale as plain numbers (8, not 2^3)."""
    return [f"{b:g}" for b in breaks]


def _mean_pm_mcse(summary: pd.DataFrame) -> pd.DataFrame:
    data = _models(summary)
    data["lo"] = data["rmse_mean"] - data["rmse_mcse"].fillna(0)
    data["hi"] = data["rmse_mean"] + data["rmse_mcse"].fillna(0)
    return data


def _replicates_note(summary: pd.DataFrame) -> str:
    if "n_replicates" not in summary:
        return "mean over replicates ± Monte Carlo SE"
    r = int(summary["n_replicates"].min())
    return f"mean over {r} replicates ± Monte Carlo SE"


def figure1(summary: pd.DataFrame, published: pd.DataFrame | None = None):
    """RMSE against the number of groups: mean ± MCSE over replicates, and one replicate.

    ``summary`` has ``n_groups``, ``model``, ``rmse_mean``, ``rmse_mcse`` (and
    ``n_replicates``); ``published`` (optional) ``n_groups``, ``model``, ``rmse`` of the
    single replicate of the published design, drawn as crosses.
    """
    data = _mean_pm_mcse(summary)
    plot = (
        ggplot(data, aes("n_groups", "rmse_mean", color="model"))
        + geom_line()
        + geom_point(size=2)
        + geom_errorbar(aes(ymin="lo", ymax="hi"), width=0.12)
        + scale_x_continuous(trans="log2", breaks=[8, 16, 32, 64, 128], labels=_plain)
        + scale_color_manual(values=MODEL_COLOURS)
        + expand_limits(y=0)
        + labs(
            x="Number of groups (n = 2,000, equal group sizes)", y="RMSE of group effect estimates"
        )
        + theme_hetfx()
    )
    if published is not None:
        one = _models(published)
        plot += geom_point(
            one, aes("n_groups", "rmse", color="model"), shape="x", size=3.5, show_legend=False
        )
        plot += labs(
            caption=f"Lines: {_replicates_note(summary)}; "
            "crosses: one replicate (the published design)"
        )
    return plot


def figure2(estimates: pd.DataFrame):
    """Estimate against true effect, one replicate, by model and number of groups."""
    data = _models(estimates.dropna(subset=["estimate"]))
    data["groups"] = pd.Categorical(
        data["n_groups"].map(lambda g: f"{g} groups"),
        [f"{g} groups" for g in sorted(data["n_groups"].unique())],
    )
    return (
        ggplot(data, aes("tau", "estimate"))
        + geom_abline(intercept=0, slope=1, linetype="dashed", color="grey")
        + geom_point(aes(color="model"), alpha=0.6, size=1.2)
        + facet_grid("model ~ groups")
        + scale_color_manual(values=MODEL_COLOURS)
        + scale_x_continuous(breaks=breaks_extended(n=3))  # five narrow panels side by side
        + labs(x="True group effect", y="Estimated group effect")
        + theme_hetfx()
        + theme(legend_position="none")
    )


def figure3(summary: pd.DataFrame, published: pd.DataFrame | None = None):
    """RMSE by imbalance scenario (64 groups): mean ± MCSE over replicates, one replicate."""
    data = _mean_pm_mcse(summary)
    data["scenario"] = pd.Categorical(data["scenario"], SCENARIOS)
    dodge = position_dodge(width=0.4)
    plot = (
        ggplot(data, aes("scenario", "rmse_mean", color="model"))
        + geom_point(size=2.5, position=dodge)
        + geom_errorbar(aes(ymin="lo", ymax="hi"), width=0.2, position=dodge)
        + scale_color_manual(values=MODEL_COLOURS)
        + expand_limits(y=0)
        + labs(
            x="Imbalance of group sizes (64 groups, n = 2,000)", y="RMSE of group effect estimates"
        )
        + theme_hetfx()
    )
    if published is not None:
        one = _models(published)
        one["scenario"] = pd.Categorical(one["scenario"], SCENARIOS)
        plot += geom_point(
            one,
            aes("scenario", "rmse", color="model"),
            shape="x",
            size=3.5,
            position=dodge,
            show_legend=False,
        )
        plot += labs(
            caption=f"Points: {_replicates_note(summary)}; "
            "crosses: one replicate (the published design)"
        )
    return plot


def figure4(estimates: pd.DataFrame):
    """Absolute bias against group size, by model and scenario, with a loess curve.

    Points are one replicate (the lowest-numbered, i.e. the published design); the loess
    curve is fitted to every replicate in ``estimates`` (the expected |bias| at a size).
    """
    data = _models(estimates.dropna(subset=["estimate"]))
    data["scenario"] = pd.Categorical(data["scenario"], SCENARIOS)
    data["abs_bias"] = (data["estimate"] - data["tau"]).abs()
    points = data
    caption = None
    if "replicate" in data and data["replicate"].nunique() > 1:
        points = data.loc[data["replicate"] == data["replicate"].min()]
        caption = (
            f"Points: one replicate (the published design); curves: loess over all "
            f"{data['replicate'].nunique()} replicates"
        )
    plot = (
        ggplot(data, aes("n", "abs_bias", color="model"))
        + geom_point(points, alpha=0.35, size=0.8)
        + geom_smooth(method="loess", se=False, size=1)
        + facet_grid("model ~ scenario")
        + scale_x_continuous(trans="log10", breaks=[1, 3, 10, 30, 100, 300], labels=_plain)
        + scale_color_manual(values=MODEL_COLOURS)
        + labs(
            x="Observations in the group (log scale)", y="|estimate − true effect|", caption=caption
        )
        + theme_hetfx()
        + theme(legend_position="none")
    )
    return plot
