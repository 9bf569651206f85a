"""Figures: labels follow the coding, every figure draws and saves as PNG and SVG."""

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from hetfx.paper import figures

FIXTURES = ROOT / "tests" / "fixtures" / "brms"
QUANTILES = {
    "q50": "estimate",
    "q2.5": "q025",
    "q10": "q10",
    "q90": "q90",
    "q97.5": "q975",
    "region_txt": "region",
}


def test_condition_labels_costs_one_is_low_cost():
    keys = pd.DataFrame({"regime": [1, 0], "stakes": [0, 1], "costs": [1, 0]})
    assert figures.condition_label(keys).tolist() == [
        "Democracy, low stakes, low cost",
        "Autocracy, high stakes, high cost",
    ]


def tw_groups():
    hier = pd.read_csv(FIXTURES / "m1_groups.csv").rename(columns=QUANTILES)
    ols = pd.read_csv(FIXTURES / "m1_ols_groups.csv").rename(
        columns={"ols_slope": "estimate", "region_txt": "region"}
    )
    ols["q025"] = ols["estimate"] - 1.96 * ols["ols_se"]
    ols["q975"] = ols["estimate"] + 1.96 * ols["ols_se"]
    return hier, ols


def simulation_frames():
    rng = np.random.default_rng(1)
    summary = pd.DataFrame(
        [
            {"n_groups": g, "model": m, "rmse_mean": r, "rmse_mcse": 0.01}
            for g in [8, 16, 32, 64, 128]
            for m, r in [("ols", 0.1 * np.log2(g)), ("hierarchical", 0.2)]
        ]
    )
    published = summary.rename(columns={"rmse_mean": "rmse"}).drop(columns="rmse_mcse")
    estimates = pd.DataFrame(
        {
            "n_groups": np.repeat([8, 16], 24),
            "model": np.tile(["ols", "hierarchical"], 24),
            "scenario": np.tile(figures.SCENARIOS, 12),
            "tau": rng.normal(0.2, 0.3, 48),
            "n": rng.integers(5, 100, 48),
        }
    )
    estimates["estimate"] = estimates["tau"] + rng.normal(0, 0.1, 48)
    scen = pd.DataFrame(
        [
            {"scenario": s, "model": m, "rmse_mean": 0.3, "rmse_mcse": 0.02}
            for s in figures.SCENARIOS
            for m in ["ols", "hierarchical"]
        ]
    )
    return summary, published, estimates, scen


@pytest.fixture(scope="module")
def all_plots():
    hier, ols = tw_groups()
    fixef = pd.read_csv(FIXTURES / "m2_published_fixef.csv")
    coefs = pd.DataFrame(
        {
            "equation": fixef["variable"]
            .str.split("_")
            .str[0]
            .map({"lambda": "effect", "controls": "control"}),
            "term": fixef["variable"].str.split("_", n=1).str[1],
            "mean": fixef["Estimate"],
            "q025": fixef["Q2.5"],
            "q975": fixef["Q97.5"],
        }
    )
    cells = pd.read_csv(FIXTURES / "m2_published_cells24.csv").rename(
        columns={"treat_med": "estimate", "treat_10": "q10", "treat_90": "q90"}
    )
    a1 = pd.read_csv(FIXTURES / "m3_groups.csv").rename(columns=QUANTILES)
    bp = pd.DataFrame(
        [
            {
                "w2_vote_hill": v,
                "woman": w,
                "invest_cond": i,
                "pol_engage": e,
                "estimate": 0.1 * v,
                "q025": -0.2,
                "q975": 0.3,
            }
            for v in (0, 1)
            for w in (0, 1)
            for i in (0, 1)
            for e in range(1, 8)
        ]
    )
    summary, published, estimates, scen = simulation_frames()
    return {
        "fig1": figures.figure1(summary, published),
        "fig2": figures.figure2(estimates),
        "fig3": figures.figure3(scen),
        "fig4": figures.figure4(estimates),
        "fig5": figures.figure5(hier, ols),
        "fig6": figures.figure6(hier, ols),
        "fig7": figures.figure7(coefs),
        "fig8": figures.figure8(cells),
        "figA1": figures.figure_a1(a1),
        "figA2": figures.figure_a2(bp),
        "figRob": figures.figure_robustness(
            pd.concat([hier.assign(label=lab) for lab in figures.VARIANT_COLOURS])
        ),
    }


@pytest.mark.parametrize(
    "name", ["fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "figA1", "figA2"]
)
def test_figure_saves_png_and_svg(tmp_path, all_plots, name):
    paths = figures.save(all_plots[name], tmp_path / name, width=6, height=4)
    png, svg = paths
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:500]


def test_figure6_labels_low_cost_conditions():
    hier, ols = tw_groups()
    plot = figures.figure6(hier, ols)
    labels = set(plot.data["condition"])
    assert "Democracy, high stakes, low cost" in labels and len(labels) == 8


FIXTURE_STEMS = {
    "fig1": "figure1",
    "fig2": "figure2",
    "fig3": "figure3",
    "fig4": "figure4",
    "fig5": "figure5",
    "fig6": "figure6",
    "fig7": "figure7",
    "fig8": "figure8",
    "figA1": "figure_a1",
    "figA2": "figure_a2",
    "figRob": "figure_robustness",
}


def _text_sizes(plot, width: float, height: float) -> list[tuple[str, float]]:
    """(text, font size in points) of every visible text of ``plot`` drawn at its saved size."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    from plotnine import theme

    figure = (plot + theme(figure_size=(width, height))).draw()
    try:
        return [
            (t.get_text(), t.get_fontsize())
            for t in figure.findobj(Text)
            if t.get_visible() and t.get_text().strip()
        ]
    finally:
        plt.close(figure)


def test_every_figure_has_a_size_no_wider_than_the_text():
    assert set(FIXTURE_STEMS.values()) == set(figures.SIZES)
    assert all(w <= figures.TEXT_WIDTH for w, _ in figures.SIZES.values())


@pytest.mark.parametrize("name", sorted(FIXTURE_STEMS))
def test_figure_text_prints_at_least_7_pt(all_plots, name):
    """Drawn at its saved size, placed at its natural size (tests/test_pages.py), no text of a
    figure is smaller than MIN_TEXT_PT."""
    sizes = _text_sizes(all_plots[name], *figures.SIZES[FIXTURE_STEMS[name]])
    assert sizes, "no text found"
    small = [(text, size) for text, size in sizes if size < figures.MIN_TEXT_PT]
    assert small == []


def test_text_size_check_can_fail(all_plots):
    from plotnine import element_text, theme

    plot = all_plots["fig1"] + theme(axis_text_x=element_text(size=5))
    sizes = _text_sizes(plot, *figures.SIZES["figure1"])
    assert min(size for _, size in sizes) == 5
