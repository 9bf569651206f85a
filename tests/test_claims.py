"""The claims register (hetfx.paper.claims) and the manuscript that follows it.

* Every registered claim's places in paper.qmd / appendix.qmd quote one of its variables, and a
  paragraph stripped of that variable is caught.
* The status follows the numbers: altered numbers change the status, and the generated
  variables, substituted into the manuscript's paragraphs, change with it.
* On the committed result artifacts the register reproduces the numbers it is meant to rest on.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from hetfx.paper import claims as C
from hetfx.paper import verdict as V

REPO = Path(__file__).resolve().parents[1]
MANUSCRIPT = REPO / "manuscript"
VAR = re.compile(r"\{\{<\s*var\s+([\w.]+)\s*>\}\}")


# ----------------------------------------------------------------------------- the places


def _abstract(text: str) -> str:
    front = text.split("\n---", 1)[0]
    return front.split("abstract: |", 1)[1]


def _section(text: str, anchor: str) -> str:
    """The text of the section whose heading carries ``{#anchor}`` (up to the next heading of
    the same or a higher level), or the abstract."""
    if anchor == "abstract":
        return _abstract(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(#+) .*\{#" + re.escape(anchor) + r"[ }]", line)
        if match:
            level = len(match.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if re.match(rf"^#{{1,{level}}} ", lines[j])),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    raise KeyError(f"no section {{#{anchor}}}")


def _paragraph(text: str, place: C.Place) -> str:
    """The paragraph of ``place``: the blank-line-separated block containing its phrase
    (line breaks inside the block do not matter)."""
    section = _section(text, place.anchor)
    blocks = [b for b in re.split(r"\n\s*\n", section)]
    hits = [b for b in blocks if place.phrase in " ".join(b.split())]
    if len(hits) != 1:
        raise KeyError(f"{len(hits)} paragraphs of {place.label()} contain {place.phrase!r}")
    return hits[0]


def _quotes(paragraph: str, claim_id: str) -> bool:
    wanted = {f"claim_{claim_id}{s}" for s in ("", "_status", "_verb", "_text")}
    return bool(wanted & set(VAR.findall(paragraph)))


def missing_places(texts: dict[str, str]) -> list[str]:
    """Places whose paragraph does not quote the claim's status (empty: all good)."""
    out = []
    for claim_id, places in C.PLACES.items():
        for place in places:
            if not _quotes(_paragraph(texts[place.document], place), claim_id):
                out.append(f"{claim_id} at {place.label()} ({place.phrase!r})")
    return out


def _texts() -> dict[str, str]:
    return {d: (MANUSCRIPT / f"{d}.qmd").read_text(encoding="utf-8") for d in ("paper", "appendix")}


def test_every_place_of_a_claim_quotes_its_status() -> None:
    assert missing_places(_texts()) == []


def test_a_place_without_its_status_is_caught() -> None:
    texts = _texts()
    for claim_id, places in C.PLACES.items():
        place = places[0]
        paragraph = _paragraph(texts[place.document], place)
        prefix = f"claim_{claim_id}"
        stripped = VAR.sub(
            lambda m, p=prefix: "" if m.group(1).startswith(p) else m.group(0), paragraph
        )
        broken = dict(texts, **{place.document: texts[place.document].replace(paragraph, stripped)})
        assert any(m.startswith(f"{claim_id} at") for m in missing_places(broken)), claim_id


def test_the_register_holds_every_placed_claim() -> None:
    ids = [c.id for c in C.register(_numbers())]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(C.PLACES) == set(C.CLAIMS)


# ----------------------------------------------------------------------------- the rules


def _numbers(**changes: float) -> dict[str, float]:
    """A complete set of register numbers, close to the committed results."""
    x = {
        "published_m1_sd": 0.10, "published_m1_ols_sd": 0.19, "corrected_m1_sd": 0.18,
        "corrected_m1_ols_sd": 0.19, "ols_saturated_sd": 0.188, "ols_additive_sd": 0.124,
        "additive_main_effects_sd": 0.122, "pooled_baselines_sd": 0.123,
        "published_m1_ols_min": -0.15, "published_m1_ols_mean": 0.33,
        "published_m1_at_ols_min": 0.30, "corrected_m1_at_ols_min": -0.15,
        "corrected_m1_shrinkage": 0.01, "additive_main_effects_neg1": 0.04,
        "additive_main_effects_shrinkage": 0.39, "pooled_baselines_neg1": 0.05,
        "pooled_baselines_shrinkage": 0.42,
        "corrected_g_high_newsint": 0.08, "corrected_g_high_newsint_lo": -0.03,
        "corrected_g_high_newsint_hi": 0.19, "corrected_g_news_largest": 0.0,
        "corrected_g_white": 0.11, "published_g_high_newsint": 0.14,
        "published_g_high_newsint_lo": 0.06, "published_g_high_newsint_hi": 0.23,
        "coding_fixes_g_high_newsint": 0.14, "coding_fixes_g_high_newsint_lo": 0.05,
        "coding_fixes_g_high_newsint_hi": 0.23,
        "corrected_g_dem": -0.04, "corrected_g_dem_lo": -0.17, "corrected_g_dem_hi": 0.08,
        "corrected_g_rep": 0.03, "corrected_g_rep_lo": -0.11, "corrected_g_rep_hi": 0.18,
        "corrected_cells": 24.0, "corrected_cells_q10_positive": 24.0,
        "corrected_cells_q025_positive": 23.0, "published_cells": 24.0,
        "published_cells_q10_positive": 24.0, "published_cells_q025_positive": 23.0,
        "logit_gap_m1_published": 0.05, "logit_gap_additive_main_effects": 0.07,
        "logit_published_sd": 0.09, "m1_published_sd": 0.10,
        "logit_additive_main_effects_sd": 0.11, "prior_max_change": 0.001,
        "sim_conditions_n": 9.0, "sim_conditions_d1_n": 5.0, "sim_conditions_d2_n": 4.0,
        "sim_published_hierarchical_wins_d1_n": 5.0, "sim_published_hierarchical_wins_d2_n": 4.0,
        "sim_published_hierarchical_ratio_min": 0.58, "sim_published_hierarchical_ratio_max": 0.75,
        "sim_shifted_hierarchical_wins_n": 2.0, "sim_shifted_hierarchical_losses_n": 3.0,
        "sim_shifted_hierarchical_ratio_max": 2.27, "sim_shifted_hierarchical_cov90_min": 0.43,
        "sim_shifted_hierarchical_losses_groups_min": 8.0,
        "sim_shifted_hierarchical_losses_groups_max": 32.0,
        "sim_shifted_hierarchical_pooled_wins_n": 8.0,
        "sim_shifted_hierarchical_pooled_losses_n": 0.0,
        "sim_imbalance_balanced_ratio": 0.673, "sim_imbalance_balanced_ratio_mcse": 0.008,
        "sim_imbalance_strong_ratio": 0.740, "sim_imbalance_strong_ratio_mcse": 0.011,
        "sim_bins_n": 19.0, "sim_bins_wins_n": 19.0, "sim_bins_small_n": 7.0,
        "sim_bins_small_wins_n": 7.0, "sim_bins_small_limit": 20.0,
    }  # fmt: skip
    for variant, low, high in (
        ("ols_saturated", 0.42, 0.24), ("m1_published", 0.30, 0.36),
        ("m1_main_effects", 0.42, 0.24), ("additive_main_effects", 0.43, 0.24),
        ("pooled_baselines", 0.43, 0.23),
    ):  # fmt: skip
        x |= {f"stakes_{variant}_low": low, f"stakes_{variant}_high": high}
        x[f"stakes_{variant}_gap"] = low - high
    return x | changes


def _status(x: dict[str, float]) -> dict[str, str]:
    return {c.id: c.status for c in C.register(x)}


def test_status_is_all_parts_none_or_some() -> None:
    assert C.status_of([True, True]) == "holds"
    assert C.status_of([True, False]) == "weaker"
    assert C.status_of([False, False]) == "does not hold"
    with pytest.raises(ValueError):
        C.status_of([])


def test_the_statuses_of_the_committed_numbers() -> None:
    assert _status(_numbers()) == {
        "sim_accuracy": "holds",
        "sim_imbalance": "holds",
        "sim_small_groups": "holds",
        "sim_baselines": "does not hold",
        "pooling": "does not hold",
        "negative_condition": "does not hold",
        "stakes": "does not hold",
        "a1_agrees": "weaker",
        "news_interest": "does not hold",
        "cells_positive": "weaker",
        "party": "holds",
        "likelihood": "holds",
        "prior": "holds",
    }


@pytest.mark.parametrize(
    ("changes", "claim", "status"),
    [
        # pooling for real: the additive model well below additive OLS
        ({"additive_main_effects_sd": 0.06}, "pooling", "weaker"),
        ({"additive_main_effects_sd": 0.06, "corrected_m1_sd": 0.10}, "pooling", "holds"),
        # news interest: a positive interval alone is not enough
        ({"corrected_g_high_newsint_lo": 0.01}, "news_interest", "weaker"),
        (
            {"corrected_g_high_newsint_lo": 0.01, "corrected_g_news_largest": 1.0},
            "news_interest",
            "holds",
        ),
        ({"corrected_cells_q025_positive": 24.0}, "cells_positive", "holds"),
        ({"corrected_cells_q10_positive": 20.0, "corrected_cells_q025_positive": 18.0},
         "cells_positive", "does not hold"),
        ({"pooled_baselines_shrinkage": 0.6}, "negative_condition", "weaker"),
        ({"sim_shifted_hierarchical_pooled_wins_n": 9.0}, "sim_baselines", "weaker"),
        ({"sim_published_hierarchical_wins_d1_n": 4.0}, "sim_accuracy", "weaker"),
        ({"prior_max_change": 0.05}, "prior", "does not hold"),
        # the narrowing must exceed its Monte Carlo noise
        ({"sim_imbalance_strong_ratio": 0.69}, "sim_imbalance", "does not hold"),
        ({"sim_bins_small_wins_n": 5.0, "sim_bins_wins_n": 17.0}, "sim_small_groups",
         "does not hold"),
        ({"sim_bins_wins_n": 17.0}, "sim_small_groups", "weaker"),
        ({"logit_additive_main_effects_sd": 0.06}, "likelihood", "weaker"),
        ({"corrected_g_rep_lo": 0.01}, "party", "weaker"),
    ],
)  # fmt: skip
def test_status_follows_the_numbers(changes, claim, status) -> None:
    assert _status(_numbers(**changes))[claim] == status


def test_stakes_claim_holds_when_the_main_effects_shrink_the_gap() -> None:
    x = _numbers()
    for v in ("m1_main_effects", "additive_main_effects", "pooled_baselines"):
        x[f"stakes_{v}_low"], x[f"stakes_{v}_high"], x[f"stakes_{v}_gap"] = 0.34, 0.31, 0.03
    stakes = next(c for c in C.register(x) if c.id == "stakes")
    assert stakes.status == "holds"
    assert "reverses the sign" in stakes.evidence  # the published model still does


def _fill(paragraph: str, variables: dict[str, str]) -> str:
    return VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), paragraph)


def test_the_generated_text_follows_a_changed_status() -> None:
    """Feed the register altered numbers: the status changes, and so does every paragraph of
    the manuscript that makes the claim."""
    before = C.register_variables(C.register(_numbers()))
    after = C.register_variables(
        C.register(_numbers(additive_main_effects_sd=0.06, corrected_m1_sd=0.10))
    )
    assert before["claim_pooling_status"] == "does not hold"
    assert after["claim_pooling_status"] == "holds"
    assert "(verdict: does not hold)" in before["claim_pooling_text"]
    assert "(verdict: holds)" in after["claim_pooling_text"]
    assert "0.48 of additive OLS" in after["claim_pooling"]
    texts = _texts()
    before, after = ({k: v for k, v in d.items() if k.startswith("claim_pooling")}
                     for d in (before, after))  # fmt: skip
    for place in C.PLACES["pooling"]:
        paragraph = _paragraph(texts[place.document], place)
        old, new = _fill(paragraph, before), _fill(paragraph, after)
        assert "does not hold" in old and new != old, place
        assert "does not hold" not in new, place


def test_the_verdict_table_holds_every_claim() -> None:
    claims = C.register(_numbers())
    table = C.register_table(claims)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == len(claims) + 1  # header and one row per claim
    for c in claims:
        assert c.paper in table
    assert "80% intervals" in table and "95% intervals" in table  # levels named


# ----------------------------------------------------------------------------- simulation


def test_a_simulation_win_counts_only_beyond_two_mcse() -> None:
    import pandas as pd

    rows = []
    for cond, hier in (("8", 0.118), ("16", 0.10), ("32", 0.13)):  # tie, win, loss
        for model, rmse in (("ols", 0.12), ("hierarchical", hier)):
            rows.append({"dgp": "shifted", "design": 1, "condition": cond, "model": model,
                         "rmse_mean": rmse, "rmse_mcse": 0.003, "coverage_90": 0.9})  # fmt: skip
    out = C.simulation_comparisons(pd.DataFrame(rows))
    assert out["sim_shifted_hierarchical_wins_n"] == 1
    assert out["sim_shifted_hierarchical_losses_n"] == 1
    assert out["sim_shifted_hierarchical_losses_groups_min"] == 32
    assert C.simulation_comparisons(pd.DataFrame(rows), k=0)["sim_shifted_hierarchical_wins_n"] == 2


# ----------------------------------------------------------------------------- committed results


def _load_report_script():
    spec = importlib.util.spec_from_file_location("report_stage", REPO / "analysis" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not (REPO / "results" / "robustness" / "spread.csv").exists(), reason="no results"
)
def test_the_register_on_the_committed_results() -> None:
    inputs = _load_report_script().load_specification(REPO / "results")
    dec, rob = V.decomposition(inputs), V.robustness_numbers(inputs.robustness)
    m2 = {a: inputs.fits[("m2", a)]["groups"] for a in V.ANALYSES}
    effects = inputs.robustness["condition_effects"]
    x = C.register_numbers(dec, rob, effects, m2, inputs.sensitivity, inputs.bias_by_size)
    assert x["ols_additive_sd"] == pytest.approx(0.124, abs=5e-4)
    assert x["ols_additive_sd"] / x["ols_saturated_sd"] == pytest.approx(0.66, abs=5e-3)
    assert x["additive_main_effects_sd"] == pytest.approx(0.122, abs=5e-4)
    assert (x["stakes_m1_published_low"], x["stakes_m1_published_high"]) == pytest.approx(
        (0.30, 0.36), abs=5e-3
    )
    assert x["corrected_cells_q025_positive"] == 23 and x["corrected_cells"] == 24
    assert x["sim_shifted_hierarchical_wins_n"] == 2
    assert x["sim_shifted_hierarchical_pooled_wins_n"] == 8
    assert x["sim_bins_small_wins_n"] == x["sim_bins_small_n"] == 7
    statuses = _status(x)
    assert statuses["news_interest"] == "does not hold"
    assert statuses["pooling"] == "does not hold"
    assert statuses["stakes"] == "does not hold"


@pytest.mark.parametrize(
    "phrase",
    [
        "treats it as noise",  # the negative condition, stated as a finding
        "agrees better with evidence",
        "give stakes far\nless influence",
        "tempers several extreme subgroup estimates",
        "loses much of its advantage",
        "reaches the same conclusion about the experimental conditions",
        "news interest matters most is unchanged",
        "increase of\n{{< var tw_ate_pct >}}",  # an effect on a proportion is in points
    ],
)
def test_the_text_no_longer_endorses_what_the_register_refutes(phrase: str) -> None:
    flat = {d: " ".join(t.split()) for d, t in _texts().items()}
    assert not any(" ".join(phrase.split()) in t for t in flat.values())
