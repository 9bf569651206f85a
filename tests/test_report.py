"""Tests of the report stage (hetfx.paper.report, analysis/report.py) on small synthetic frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hetfx.paper import report as R
from hetfx.paper import robustness as ROB

REPO = Path(__file__).resolve().parents[1]
BRMS = REPO / "tests" / "fixtures" / "brms"
#: a simulation design unlike the published one: the text must quote the design that ran
DESIGN = {
    "n_obs": 1000,
    "tau_mean": 0.1,
    "tau_sd": 0.4,
    "equal_group_k": [2, 3, 4],
    "imbalance_scenarios": {"balanced": [0.5] * 5, "strong": [0.15, 0.3, 0.5, 0.6, 0.8]},
}


# ------------------------------------------------------------------------- formatting


def test_number_formats() -> None:
    assert R.fmt_num(0.331) == "0.33"
    assert R.fmt_num(-0.2) == "\u22120.20"
    assert R.fmt_num(-0.001) == "0.00"  # no negative zero
    assert R.fmt_signed(0.05) == "+0.05" and R.fmt_signed(-0.05) == "\u22120.05"
    assert R.fmt_pct(0.331) == "33%"
    assert R.fmt_int(1200) == "1,200"
    assert R.fmt_num(float("nan")) == "–"


def test_markdown_table_has_caption_label_and_alignment() -> None:
    frame = pd.DataFrame({"name": ["a", "b|c"], "value": ["0.10", "\u22120.20"]})
    text = R.markdown_table(frame, "A caption", "x")
    lines = text.splitlines()
    assert lines[0] == "| name | value |"
    assert lines[1].startswith("|:-") and lines[1].endswith("-:|")  # text left, numbers right
    assert "b\\|c" in lines[3]
    assert lines[-1] == ": A caption {#tbl-x}"
    with pytest.raises(ValueError, match="align"):
        R.markdown_table(frame, align="l")


def test_to_variables_formats_by_kind() -> None:
    out = R.to_variables(
        {"tw_n": 1200.0, "tw_ate": 0.331, "models_seed": 12.0, "x": -0.2},
        {"who": "white men"},
        percents=["tw_ate"],
    )
    assert out == {
        "tw_n": "1,200",
        "tw_ate": "0.33",
        "tw_ate_pct": "33%",
        "models_seed": "12",
        "x": "\u22120.20",
        "who": "white men",
    }
    with pytest.raises(ValueError, match="missing"):
        R.to_variables({"a": float("nan")})


# ------------------------------------------------------------------------- tables


def test_table1_is_generated_from_the_data_structure() -> None:
    t = R.table1()
    assert list(t.columns) == ["Characteristic", *R.APPROACHES]
    assert len(t) == 6
    row = t.set_index("Characteristic").loc["Number of modifiers"]
    assert row["Hierarchical model"] == "Two or more" and row["Interactions"] == "One or two"


def test_priors_table_follows_params_yaml() -> None:
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    t = R.priors_table(models)
    assert set(t["Model"]) == set(R.MODEL_NAMES.values())
    m2 = t[t["Model"] == R.MODEL_NAMES["m2"]].set_index("Parameter")["Prior"]
    assert m2["β"] == f"Normal(0, {models['m2']['beta_sd']:g})"
    assert m2["σ_θ"] == "half-Student-t(3, 0, 2.5)"
    changed = dict(models, m1=dict(models["m1"], gamma_sd=2.0))
    t2 = R.priors_table(changed)
    assert "Normal(0, 2)" in set(t2["Prior"])


# ------------------------------------------------------------------------- comparisons


def test_compare_with_published_rounds_to_printed_precision() -> None:
    quotes = (
        R.Quote("a", "A", "§1", 0.33),
        R.Quote("n", "N", "§1", 11, 0),
        R.Quote("b", "B", "§2", -0.20),
    )
    table = R.compare_with_published({"a": 0.3312, "n": 11.0, "b": -0.154}, quotes)
    assert list(table["reproduced"]) == [0.33, 11.0, -0.15]
    assert list(table["difference"]) == [0.0, 0.0, 0.05]
    shown = R.published_markdown(table)
    assert list(shown["Difference"]) == ["0.00", "0", "+0.05"]
    assert R.fmt_signed(0.001) == "0.00"
    with pytest.raises(KeyError, match="'b'"):
        R.compare_with_published({"a": 0.3, "n": 11}, quotes)


def test_every_published_quote_names_a_reproduced_number(report_run) -> None:
    """Each quote's published value is printed as the paper prints it, and the reproduced
    value the text quotes is the one in the published-vs-reproduced table."""
    variables = report_run["variables"]
    table = (report_run["outs"][0] / "tables" / "published_vs_reproduced.md").read_text()
    table = table.replace("\u00a0", " ")  # references and intervals do not wrap in a cell
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in table.splitlines()
        if line.startswith("| ")
    }
    for q in R.PUBLISHED:
        pub = variables[f"pub_{q.name}"]
        assert pub == (
            R.fmt_int(q.published) if q.digits == 0 else R.fmt_num(q.published, q.digits)
        ), q.name
        row = rows[q.quantity]
        assert row[2].strip() == R.fmt_num(q.published, q.digits), q.name  # Published column
        reproduced = row[3].strip()
        shown = variables[q.name]
        # the text prints at least the table's precision; both round the same number
        assert float(shown.replace("\u2212", "-").replace(",", "")) == pytest.approx(
            float(reproduced.replace("\u2212", "-")), abs=0.5 * 10**-q.digits
        ), q.name


def test_compare_codings_keeps_rows_of_either_side() -> None:
    pub = pd.DataFrame({"k": [1, 2, 3], "estimate": [0.1, 0.2, 0.3]})
    cor = pd.DataFrame({"k": [2, 3, 4], "estimate": [0.25, 0.3, 0.5]})
    out = R.compare_codings(pub, cor, ["k"])
    assert list(out["k"]) == [1, 2, 3, 4]
    assert list(out["in"]) == ["published only", "both", "both", "corrected only"]
    assert out["change"].iloc[1] == pytest.approx(0.05)
    assert np.isnan(out["change"].iloc[0])


def test_group_shift_summary() -> None:
    pub = pd.DataFrame({"g": [1, 2], "estimate": [0.1, 0.3]})
    cor = pd.DataFrame({"g": [1, 2], "estimate": [0.2, 0.3]})
    s = R.group_shift_summary(pub, cor, ["g"]).set_index("statistic")
    assert s.loc["mean of group estimates", "change"] == pytest.approx(0.05)
    assert s.loc["largest |change| of a group estimate", "corrected"] == pytest.approx(0.1)


def _cells(base: float = 0.13) -> pd.DataFrame:
    rows = []
    for party, p in (("Independent", 0.0), ("Democrat", 0.04), ("Republican", 0.10)):
        for white in (0, 1):
            for male in (0, 1):
                for news in (0, 1):
                    est = base + p + 0.08 * white + 0.07 * male + 0.15 * news
                    rows.append(
                        {
                            "party": party,
                            "white": white,
                            "male": male,
                            "high_newsint": news,
                            "estimate": est,
                            "q10": est - 0.08,
                            "q90": est + 0.08,
                        }
                    )
    return pd.DataFrame(rows)


def test_cells_numbers_steps_from_the_weakest_cell() -> None:
    nums, labels = R.cells_numbers(_cells())
    assert nums["m2_cell_min"] == pytest.approx(0.13)
    assert nums["m2_step_white"] == pytest.approx(0.08)
    assert nums["m2_step_dem"] == pytest.approx(0.04)
    assert nums["m2_step_rep"] == pytest.approx(0.10)
    assert nums["m2_news_gap"] == pytest.approx(0.15)
    assert nums["m2_cell_max"] == pytest.approx(0.13 + 0.10 + 0.08 + 0.07 + 0.15)
    assert labels["m2_cell_max_who"] == "white Republican men with high news interest"
    assert labels["m2_cell_min_who"] == "non-white independent women with low news interest"
    with pytest.raises(ValueError, match="24"):
        R.cells_numbers(_cells().head(10))


def test_m1_numbers_find_the_extremes_and_label_costs_as_data_say() -> None:
    keys = [
        {"regime": r, "stakes": s, "costs": c, "region": g}
        for r in (0, 1)
        for s in (0, 1)
        for c in (0, 1)
        for g in ("Asia", "Eastern Europe")
    ]
    ols = pd.DataFrame(keys).assign(estimate=np.linspace(-0.2, 0.7, len(keys)))
    hier = ols.assign(estimate=0.33 + 0.3 * (ols["estimate"] - 0.25))
    nums, labels = R.m1_numbers(hier, ols)
    assert nums["m1_ols_min"] == pytest.approx(-0.2)
    assert nums["m1_hier_at_ols_min"] == pytest.approx(0.33 - 0.3 * 0.45)
    assert nums["m1_max_drop"] == pytest.approx(0.7 - (0.33 + 0.3 * 0.45))
    assert nums["m1_hier_sd"] < nums["m1_ols_sd"]
    expected = "low-stakes, high-cost intervention for an Asian autocracy"
    assert labels["m1_ols_min_condition"] == expected
    assert "low-cost" in labels["m1_max_drop_condition"]  # costs = 1 is LOW cost


def test_diagnostics_table_requires_the_contract_columns() -> None:
    good = pd.DataFrame(
        [
            {
                "sampler": "nuts",
                "chains": 4,
                "draws": 1000,
                "max_r_hat": 1.002,
                "min_ess_bulk": 950.0,
                "min_ess_tail": 1100.0,
                "divergences": 0,
            }
        ]
    )
    # the committed diagnostics.csv has no run time (timings/ holds them): none is required
    t = R.diagnostics_table({("m1", "published"): good})
    assert not any(c.endswith("_seconds") for c in t.columns)
    shown = R.diagnostics_markdown(t)
    assert shown.iloc[0]["Max R-hat"] == "1.002" and shown.iloc[0]["Min bulk ESS"] == "950"
    with pytest.raises(KeyError, match="divergences"):
        R.diagnostics_table({("m1", "published"): good.drop(columns="divergences")})


def test_simulation_mc_table_puts_one_replicate_beside_the_mean() -> None:
    summary = pd.DataFrame(
        {
            "n_groups": [8, 8],
            "model": ["ols", "hierarchical"],
            "rmse_mean": [0.12, 0.10],
            "rmse_mcse": [0.002, 0.001],
            "n_replicates": [100, 100],
            "coverage_95": [0.95, 0.93],
        }
    )
    one = pd.DataFrame({"n_groups": [8, 8], "model": ["ols", "hierarchical"], "rmse": [0.14, 0.10]})
    t = R.simulation_mc_table(summary, one, "n_groups")
    assert t["z"].iloc[0] == pytest.approx(0.02 / 0.02)
    shown = R.simulation_mc_markdown(t, "n_groups", "Groups")
    assert list(shown["Model"]) == ["OLS", "Hierarchical"]
    assert shown.iloc[0]["95% coverage"] == "95%"


# ------------------------------------------------------------------------- the stage


def _write(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def make_results(root: Path) -> None:
    """A results tree in the artifact contract's shape, built from the brms fixtures."""
    rng = np.random.default_rng(0)
    diag = pd.DataFrame(
        [
            {
                "sampler": "quadrature",
                "chains": 4,
                "draws": 1000,
                "max_r_hat": 1.003,
                "min_ess_bulk": 900,
                "min_ess_tail": 1000,
                "divergences": 0,
            }
        ]
    )
    rename = {"region_txt": "region", "q50": "estimate", "q2.5": "q025", "q97.5": "q975"}

    def coefs(fixef: pd.DataFrame, shift: float) -> pd.DataFrame:
        v = fixef["variable"]
        out = pd.DataFrame(
            {
                "equation": np.where(v.str.startswith("lambda_"), "effect", "control"),
                "term": v.str.replace("lambda_", "").str.replace("controls_", ""),
                "mean": fixef["Estimate"] + shift,
                "sd": fixef["Est.Error"],
                "q025": fixef["Q2.5"] + shift,
                "q975": fixef["Q97.5"] + shift,
                "r_hat": fixef["Rhat"],
                "ess_bulk": fixef["Bulk_ESS"],
            }
        )
        scale = {
            "equation": "scale",
            "term": "sigma_theta",
            "mean": 0.05,
            "sd": 0.03,
            "q025": 0.01,
            "q975": 0.1,
            "r_hat": 1.0,
            "ess_bulk": 800,
        }
        return pd.concat([out, pd.DataFrame([scale])], ignore_index=True)

    for coding, shift in (("published", 0.0), ("corrected", 0.01)):
        tw = root / "tomz_weeks"
        m1 = pd.read_csv(BRMS / "m1_groups.csv").rename(columns=rename)
        _write(tw / f"m1_{coding}" / "groups.csv", m1.assign(estimate=m1["estimate"] + shift))
        _write(tw / f"m1_{coding}" / "coefs.csv", coefs(pd.read_csv(BRMS / "m1_fixef.csv"), 0))
        ols = pd.read_csv(BRMS / "m1_ols_groups.csv").rename(
            columns={"region_txt": "region", "ols_slope": "estimate", "ols_se": "std_error"}
        )
        _write(tw / f"m1_ols_{coding}" / "groups.csv", ols)
        m2 = pd.read_csv(BRMS / "m2_published_groups.csv").rename(columns=rename)
        _write(tw / f"m2_{coding}" / "groups.csv", m2)
        _write(
            tw / f"m2_{coding}" / "coefs.csv",
            coefs(pd.read_csv(BRMS / "m2_published_fixef.csv"), shift),
        )
        m2o = pd.read_csv(BRMS / "m2_ols_groups.csv").rename(columns={"ols_slope": "estimate"})
        _write(tw / f"m2_ols_{coding}" / "groups.csv", m2o)
        a1 = pd.read_csv(BRMS / "m3_groups.csv").rename(columns=rename)
        _write(tw / f"a1_{coding}" / "groups.csv", a1)
        cells = pd.read_csv(BRMS / "m2_published_cells24.csv").rename(
            columns={"treat_med": "estimate", "treat_10": "q10", "treat_90": "q90"}
        )
        _write(
            tw / f"demographics_cells_{coding}.csv",
            cells.assign(estimate=cells["estimate"] + shift),
        )
        for name in ("m1", "m2", "a1"):
            _write(tw / f"{name}_{coding}" / "diagnostics.csv", diag)
        for name in ("m1_ols", "m2_ols", "a1"):
            path = tw / f"{name}_{coding}" / "coefs.csv"
            if not path.exists():
                _write(path, pd.DataFrame({"term": ["alliance"], "estimate": [0.5]}))
        profiles = pd.DataFrame(
            [
                {"w2_vote_hill": v, "woman": w, "pol_engage": p, "invest_cond": i}
                for v in (0, 1)
                for w in (0, 1)
                for i in (0, 1)
                for p in range(1, 8)
            ]
        )
        est = rng.normal(0.1, 0.1, len(profiles))
        bp = profiles.assign(
            n_obs=8, estimate=est, q025=est - 0.2, q10=est - 0.1, q90=est + 0.1, q975=est + 0.2
        )
        if coding == "corrected":
            bp = bp.iloc[:-2]
        _write(root / "bush_prather" / f"bp_{coding}" / "groups.csv", bp)
        _write(
            root / "bush_prather" / f"bp_{coding}" / "coefs.csv",
            coefs(pd.read_csv(BRMS / "m3_fixef.csv"), 0),
        )
        _write(root / "bush_prather" / f"bp_{coding}" / "diagnostics.csv", diag)

        # the specification fix: M1 close to OLS, M2 with a weaker news-interest coefficient
        _write(
            tw / f"m1_main_effects_{coding}" / "groups.csv",
            m1.assign(
                estimate=ols.set_index(KEYS4)["estimate"]
                .reindex(pd.MultiIndex.from_frame(m1[KEYS4]))
                .to_numpy()
                + shift
            ),
        )
        _write(
            tw / f"m2_main_effects_{coding}" / "groups.csv",
            m2.assign(estimate=m2["estimate"] - 0.02),
        )
        m2_me = coefs(pd.read_csv(BRMS / "m2_published_fixef.csv"), shift)
        news = m2_me["term"] == "high_newsint"
        m2_me.loc[news, ["mean", "q025", "q975"]] = [0.08, -0.04, 0.19]
        _write(tw / f"m2_main_effects_{coding}" / "coefs.csv", m2_me)
        for name in ("m1_main_effects", "m2_main_effects"):
            _write(tw / f"{name}_{coding}" / "diagnostics.csv", diag)
            if name == "m1_main_effects":
                _write(
                    tw / f"{name}_{coding}" / "coefs.csv",
                    coefs(pd.read_csv(BRMS / "m1_fixef.csv"), 0),
                )
    make_robustness(root)

    sim = root / "simulation"
    for design, cond, values in (
        (
            "spec",
            "n_groups",
            {
                8: (0.12, 0.10),
                16: (0.17, 0.14),
                32: (0.25, 0.2),
                64: (0.35, 0.27),
                128: (0.5, 0.33),
            },
        ),
        (
            "groupsize",
            "scenario",
            {
                "balanced": (0.3, 0.22),
                "mild": (0.33, 0.25),
                "moderate": (0.4, 0.33),
                "strong": (0.55, 0.47),
            },
        ),
    ):
        rows, one, est = [], [], []
        for c, pair in values.items():
            for model, v in zip(("ols", "hierarchical"), pair, strict=True):
                rows.append(
                    {
                        cond: c,
                        "model": model,
                        "rmse_mean": v,
                        "rmse_mcse": 0.004,
                        "n_replicates": 20,
                        "coverage_95": 0.94,
                    }
                )
                one.append({cond: c, "model": model, "rmse": v + 0.01, "replicate": 0})
                for g in range(16):
                    n = int(rng.integers(2, 120))
                    tau = float(rng.normal(0.2, 0.3))
                    est.append(
                        {
                            "replicate": 0,
                            cond: c,
                            "model": model,
                            "group": g,
                            "n": n,
                            "tau": tau,
                            "estimate": tau + rng.normal(0, 1 / np.sqrt(n)),
                        }
                    )
        _write(sim / design / "summary.csv", pd.DataFrame(rows))
        _write(sim / design / "one_replicate.csv", pd.DataFrame(one))
        pd.DataFrame(est).to_parquet(sim / design / "estimates.parquet", index=False)
    # the committed binned bias of design 2 (the report reads it, not the estimates)
    bins = pd.read_csv(REPO / "results" / "simulation" / "groupsize" / "bias_by_size.csv")
    _write(sim / "groupsize" / "bias_by_size.csv", bins)
    (sim / "design.json").write_text(json.dumps(DESIGN), encoding="utf-8")
    rows = []  # the sensitivity simulation: the published model loses to OLS under shifts
    for dgp in ("published", "shifted"):
        for design, condition in ((1, "8"), (1, "128"), (2, "balanced")):
            for model, rmse in (
                ("ols", 0.3),
                ("hierarchical", 0.2 if dgp == "published" else 0.35),
                ("hierarchical_fe", 0.25),
                ("hierarchical_pooled", 0.22),
            ):
                rows.append(
                    {
                        "dgp": dgp,
                        "design": design,
                        "condition": condition,
                        "model": model,
                        "rmse_mean": rmse,
                        "rmse_mcse": 0.003,
                        "coverage_90": 0.6 if (dgp, model) == ("shifted", "hierarchical") else 0.9,
                    }
                )
    _write(sim / "sensitivity" / "summary.csv", pd.DataFrame(rows))


KEYS4 = ["regime", "stakes", "costs", "region"]


def make_robustness(root: Path) -> None:
    """The robustness stage's tables, from the fixture's M1 and OLS groups."""
    tw = root / "tomz_weeks"
    m1 = pd.read_csv(tw / "m1_published" / "groups.csv")
    ols = pd.read_csv(tw / "m1_ols_published" / "groups.csv")
    me = pd.read_csv(tw / "m1_main_effects_published" / "groups.csv")
    parts = []
    for name, frame in (
        ("ols_saturated", ols),
        ("ols_additive", ols),
        ("m1_published", m1),
        ("m1_main_effects", me),
        ("additive", m1),
        ("additive_main_effects", ols),
        ("pooled_baselines", ols),
    ):
        est = frame["estimate"].to_numpy()
        if name in ("additive_main_effects", "pooled_baselines"):
            est = 0.33 + 0.6 * (est - est.mean())  # partial pooling toward the mean
        parts.append(
            frame[[c for c in frame if c in (*KEYS4, "treat_group", "n_obs")]].assign(
                variant=name, label=name, estimate=est, q025=est - 0.1, q975=est + 0.1
            )
        )
    for name, base in (("logit_published", m1), ("logit_additive_main_effects", ols)):
        est = 0.33 + 0.6 * (base["estimate"].to_numpy() - base["estimate"].mean()) + 0.01
        parts.append(
            base[[c for c in base if c in (*KEYS4, "treat_group", "n_obs")]].assign(
                variant=name, label=name, estimate=est, q025=est - 0.1, q975=est + 0.1
            )
        )
    effects = pd.concat(parts, ignore_index=True)
    spread = ROB.spread_table(effects)
    out = root / "robustness"
    _write(out / "condition_effects.csv", effects)
    _write(
        out / "spread.csv", spread.assign(neg_conditions=";".join(spread.attrs["neg_conditions"]))
    )
    _write(out / "signs.csv", ROB.sign_disagreements(effects))
    _write(
        out / "prior.csv",
        pd.DataFrame(
            {
                "variant": ["m1_published"] * 2,
                "prior": ["a", "b"],
                "max_abs_change": [0, 0.002],
                "cor_default": [1, 0.999],
                "sd": 0.1,
                "min": 0.1,
                "max": 0.5,
            }
        ),
    )
    coarse = pd.DataFrame(
        [
            {"variant": v, "label": v, "treat_group": g, "estimate": e + d}
            for v, d in (("ols_saturated", 0), ("m1_published", 0.1), ("m1_main_effects", 0.005))
            for g, e in enumerate(np.linspace(0.1, 0.5, 8))
        ]
    )
    _write(out / "coarse.csv", coarse)
    _write(
        out / "loo.csv",
        pd.DataFrame(
            {
                "variant": ["m1_published", "m1_main_effects", "additive", "additive_main_effects"],
                "label": ["a", "b", "c", "d"],
                "elpd_loo": [-716.0, -692.0, -705.0, -685.0],
                "se": 17.0,
                "p_loo": [33.0, 68.0, 17.0, 52.0],
                "elpd_diff": [31.0, 7.0, 20.0, 0.0],
                "diff_se": [10.0, 4.0, 10.0, 0.0],
                "max_k": [0.4, 0.4, 0.3, 0.4],
                "n_k_above_0_7": 0,
            }
        ),
    )
    _write(
        out / "ppc.csv",
        pd.DataFrame(
            [
                {
                    "variant": v,
                    "condition": c,
                    "arm": a,
                    "n": 18,
                    "observed": 0.5,
                    "predicted": 0.5,
                    "lower": 0.3,
                    "upper": 0.7,
                    "inside": (v != "m1_published") or (c % 4 != 0),
                }
                for v in ("m1_published", "m1_main_effects", "additive", "additive_main_effects")
                for c in range(32)
                for a in (0, 1)
            ]
        ),
    )


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    make_results(root / "results")
    outs = []
    for run in ("a", "b"):
        out = root / f"manuscript_{run}"
        result = subprocess.run(
            [sys.executable, str(REPO / "analysis" / "report.py"), "--results",
             str(root / "results"), "--out", str(out), "--clean", str(REPO / "data" / "clean"),
             "--params", str(REPO / "params.yaml")],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outs.append(out)
    variables = yaml.safe_load((outs[0] / "_variables.yml").read_text())
    return {"root": root, "outs": outs, "variables": variables, "stdout": result.stdout}


def test_stage_writes_variables_and_tables_deterministically(report_run) -> None:
    a, b = report_run["outs"]
    names = sorted(p.name for p in (a / "tables").iterdir())
    assert names == sorted(p.name for p in (b / "tables").iterdir())
    assert {
        "table1.md",
        "priors.md",
        "published_vs_reproduced.md",
        "coding_m2.md",
        "coding_cells.md",
        "coding_m1.md",
        "coding_bp.md",
        "diagnostics.md",
        "sim_spec_mc.md",
        "sim_groupsize_mc.md",
        "decomposition.md",
        "robustness_spread.md",
        "robustness_loo.md",
        "verdict.md",
        "sim_sensitivity.md",
        "provenance.md",
    } == set(names)
    for name in ["_variables.yml", *(f"tables/{n}" for n in names)]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    v = report_run["variables"]
    assert all(isinstance(x, str) for x in v.values())
    assert v["tw_ate"] == "0.33" and v["tw_ate_pct"] == "33%"
    assert v["m2_cell_max"] == "0.50" and v["m2_cell_min"] == "0.13"  # the brms cells
    # the design numbers are those of results/simulation/design.json, not code constants
    assert (v["sim_n"], v["sim_tau_mean"], v["sim_tau_sd"]) == ("1,000", "0.1", "0.4")
    assert (v["sim_k_min"], v["sim_k_max"], v["sim1_size_max"], v["sim1_size_min"]) == (
        "2",
        "4",
        "250",
        "62",
    )
    assert (v["sim2_k"], v["sim2_groups"]) == ("5", "32")
    # the verdict (the claims register) is computed from the fixture's numbers
    assert v["claim_pooling_status"] == "weaker"  # the fixture's additive model pools
    assert v["claim_news_interest_status"] == "does not hold"  # both parts fail
    assert (
        v["dec_corrected_g_high_newsint"] == "0.08"
        and "0.08 [−0.04, 0.19]" in v["claim_news_interest"]
    )
    assert v["rob_ppc_inside_published"] == "75%"
    assert v["claim_sim_baselines_status"] == "weaker"
    assert "wins beyond 2 MCSE in 0 of 3 conditions" in v["claim_sim_baselines"]
    assert v["claim_likelihood_status"] == "weaker"  # the fixture's published logit moves a lot
    assert v["claims_n"] == "12"  # the fixture's sensitivity summary has no imbalance range
    # the small-group bias comes from the committed bias_by_size.csv where there is one
    assert v["sim2_bias_ols_small"] == "0.27" and v["sim_shift_sd"] == "0.3"


def test_stage_fails_naming_a_missing_file_and_its_stage(tmp_path: Path) -> None:
    make_results(tmp_path / "results")
    (tmp_path / "results" / "tomz_weeks" / "m2_corrected" / "coefs.csv").unlink()
    result = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "report.py"), "--results",
         str(tmp_path / "results"), "--out", str(tmp_path / "m")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1
    assert "m2_corrected/coefs.csv is missing" in result.stderr
    assert "fit_tomz_weeks" in result.stderr
