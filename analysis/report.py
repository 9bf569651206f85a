"""Stage `report`: results artifacts + params.yaml -> manuscript/_variables.yml, manuscript/tables/.

Usage::

    python analysis/report.py                       # paths of the project
    python analysis/report.py --results R --out M   # other results / manuscript directories

Reads the fits of both codings (results/tomz_weeks, results/bush_prather), the simulation
summaries (results/simulation), the cleaning checks (data/clean) and the `models:` section of
params.yaml; writes every number the manuscript quotes to `_variables.yml` and every table it
includes to `tables/*.md` (hetfx.report does the work). Output is deterministic: the same
inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

from hetfx import report as R

CODINGS = ("published", "corrected")
TW_MODELS = ("m1", "m1_ols", "m2", "m2_ols", "a1")
#: Which stage writes which input, for the error message when one is missing.
MAKERS = {
    "tomz_weeks": "fit_tomz_weeks",
    "bush_prather": "fit_bush_prather",
    "simulation": "simulate",
    "clean": "clean_tomz_weeks / clean_bush_prather",
}


class MissingInput(FileNotFoundError):
    pass


def read_csv(path: Path, maker: str) -> pd.DataFrame:
    if not path.exists():
        raise MissingInput(f"{path} is missing: it is written by DVC stage {maker}")
    return pd.read_csv(path)


def load_fit(results: Path, study: str, name: str) -> dict[str, pd.DataFrame]:
    folder = results / study / name
    out = {}
    for part in ("groups", "coefs", "diagnostics"):
        path = folder / f"{part}.csv"
        if part == "diagnostics" and "_ols" in name and not path.exists():
            continue  # OLS fits have no sampler diagnostics
        out[part] = read_csv(path, MAKERS[study])
    return out


def one_replicate(folder: Path, estimates: pd.DataFrame | None) -> pd.DataFrame:
    """The published-design (one replicate) RMSEs: a file of the simulate stage, if it wrote
    one (any CSV here with an ``rmse`` column), else replicate 0 of ``estimates.csv``."""
    path = folder / "one_replicate.csv"
    if path.exists():
        return pd.read_csv(path)
    if estimates is None:
        raise MissingInput(f"{folder}: neither one_replicate.csv nor estimates.parquet "
                           f"(DVC stage {MAKERS['simulation']})")
    return R.one_replicate_rmse(estimates)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def fmt_frame(frame: pd.DataFrame, digits: int = 2, skip: tuple[str, ...] = ()) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if col in skip or not pd.api.types.is_float_dtype(out[col]):
            continue
        out[col] = out[col].map(lambda v: R.fmt_num(v, digits))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--clean", default="data/clean")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="manuscript", help="manuscript directory")
    args = parser.parse_args(argv)
    results, clean, out = Path(args.results), Path(args.clean), Path(args.out)
    params = yaml.safe_load(Path(args.params).read_text(encoding="utf-8"))
    try:
        return build(results, clean, params, out)
    except (MissingInput, KeyError, ValueError) as err:
        print(f"report failed: {err}", file=sys.stderr)
        return 1


def build(results: Path, clean: Path, params: dict, out: Path) -> int:
    numbers: dict[str, float] = {}
    labels: dict[str, str] = {}
    tables: dict[str, str] = {}

    # ---- data facts
    numbers |= R.tomz_weeks_facts(read_csv(clean / "tomz_weeks_checks.csv", MAKERS["clean"]))
    numbers |= R.bush_prather_facts(read_csv(clean / "bush_prather_checks.csv", MAKERS["clean"]))

    # ---- fits
    fits = {(m, c): load_fit(results, "tomz_weeks", f"{m}_{c}") for m in TW_MODELS
            for c in CODINGS}
    for c in CODINGS:
        fits[("bp", c)] = load_fit(results, "bush_prather", f"bp_{c}")
    cells = {c: read_csv(results / "tomz_weeks" / f"demographics_cells_{c}.csv",
                         MAKERS["tomz_weeks"]) for c in CODINGS}

    for c, prefix in (("published", ""), ("corrected", "cor_")):
        m1, m1_labels = R.m1_numbers(
            fits[("m1", c)]["groups"], fits[("m1_ols", c)]["groups"],
            fits[("m1", c)]["coefs"].query("equation == 'scale'"),
        )
        m2 = R.m2_numbers(fits[("m2", c)]["coefs"])
        cn, cn_labels = R.cells_numbers(cells[c])
        app = R.appendix_numbers(fits[("a1", c)]["groups"], fits[("bp", c)]["groups"])
        for d in (m1, m2, cn, app):
            numbers |= {prefix + k: v for k, v in d.items()}
        for d in (m1_labels, cn_labels):
            labels |= {prefix + k: v for k, v in d.items()}

    # ---- simulation
    sim = results / "simulation"
    summaries, ones, estimates = {}, {}, {}
    for design in ("spec", "groupsize"):
        summaries[design] = read_csv(sim / design / "summary.csv", MAKERS["simulation"])
        est_path = sim / design / "estimates.parquet"
        estimates[design] = pd.read_parquet(est_path) if est_path.exists() else None
        ones[design] = one_replicate(sim / design, estimates[design])
    bias = R.bias_small_large(estimates["groupsize"]) if estimates["groupsize"] is not None \
        else None
    numbers |= R.simulation_numbers(summaries["spec"], ones["spec"], summaries["groupsize"],
                                    ones["groupsize"], bias)
    from hetfx import simulation as S

    numbers |= {"sim_n": S.N_OBS, "sim_tau_mean": S.TAU_MEAN, "sim_tau_sd": S.TAU_SD,
                "sim1_size_max": S.N_OBS / 2 ** min(S.EQUAL_GROUP_K),
                "sim1_size_min": S.N_OBS / 2 ** max(S.EQUAL_GROUP_K),
                "sim_k_min": min(S.EQUAL_GROUP_K), "sim_k_max": max(S.EQUAL_GROUP_K),
                "sim2_share_low": min(S.IMBALANCE_SCENARIOS["strong"]),
                "sim2_k": len(S.IMBALANCE_SCENARIOS["balanced"]),
                "sim2_groups": 2 ** len(S.IMBALANCE_SCENARIOS["balanced"]),
                "sim2_small": R.SMALL_GROUP, "sim2_large": R.LARGE_GROUP}

    # ---- settings
    models = params.get("models") or {}
    numbers |= {f"models_{k}": v for k, v in R.sampler_settings(models).items()}
    if "simulation" in params and "root_seed" in (params["simulation"] or {}):
        numbers["sim_root_seed"] = params["simulation"]["root_seed"]

    # ---- published vs reproduced
    comparison = R.compare_with_published(numbers)
    for q in R.PUBLISHED:
        numbers[f"pub_{q.name}"] = q.published
    tables["published_vs_reproduced"] = R.markdown_table(
        R.published_markdown(comparison),
        "Every number the published paper quotes about its results, the reproduced value "
        "(published coding; the simulation at its single-replicate design) and the "
        "difference (reproduced − published), at the printed precision",
        "published", align="llrrr",
    )

    # ---- published vs corrected coding
    m2_terms = []
    for c in CODINGS:
        coefs = fits[("m2", c)]["coefs"].copy()
        coefs = coefs[coefs["equation"].isin(["effect", "control"])]
        coefs["term"] = coefs["term"].map(R._term)
        m2_terms.append(coefs.rename(columns={"mean": "estimate"}))
    m2_cmp = R.compare_codings(*m2_terms, keys=["equation", "term"], extra=("q025", "q975"))
    m2_cmp["equation"] = pd.Categorical(m2_cmp["equation"], ["effect", "control"])
    m2_cmp = m2_cmp.sort_values(["equation"], kind="stable")
    tables["coding_m2"] = R.markdown_table(
        pd.DataFrame({
            "Equation": m2_cmp["equation"].map({"effect": "effect (γ)", "control": "control (β)"})
            .astype(str),
            "Term": m2_cmp["term"],
            "Published": [f"{R.fmt_num(e)} [{R.fmt_num(lo)}, {R.fmt_num(hi)}]" for e, lo, hi in
                          zip(m2_cmp["published"], m2_cmp["q025_published"],
                              m2_cmp["q975_published"], strict=True)],
            "Corrected": [f"{R.fmt_num(e)} [{R.fmt_num(lo)}, {R.fmt_num(hi)}]" for e, lo, hi in
                          zip(m2_cmp["corrected"], m2_cmp["q025_corrected"],
                              m2_cmp["q975_corrected"], strict=True)],
            "Change": m2_cmp["change"].map(R.fmt_signed),
        }),
        "M2 coefficients (posterior mean and 95% interval) under the published and the "
        "corrected Democrat indicator", "coding-m2", align="llrrr",
    )
    cell_cmp = R.compare_codings(cells["published"], cells["corrected"], R.CELL_KEYS)
    tables["coding_cells"] = R.markdown_table(
        pd.DataFrame({
            "Party": cell_cmp["party"], "Race": cell_cmp["white"].map({1: "white", 0: "non-white"}),
            "Sex": cell_cmp["male"].map({1: "men", 0: "women"}),
            "News interest": cell_cmp["high_newsint"].map({1: "high", 0: "low"}),
            "Published": cell_cmp["published"].map(R.fmt_num),
            "Corrected": cell_cmp["corrected"].map(R.fmt_num),
            "Change": cell_cmp["change"].map(R.fmt_signed),
        }),
        "Figure 8 cells (median alliance effect) under both codings; with the published "
        "coding, “Independent” holds the strong Democrats and “Democrat” everyone else who "
        "is not a Republican", "coding-cells", align="llllrrr",
    )
    numbers["coding_cells_max_change"] = float(cell_cmp["change"].abs().max())
    m1_keys = ["regime", "stakes", "costs", "region"]
    m1_rows = []
    for model, label in (("m1", "hierarchical"), ("m1_ols", "OLS")):
        pub = R._region_column(fits[(model, "published")]["groups"])
        cor = R._region_column(fits[(model, "corrected")]["groups"])
        summary = R.group_shift_summary(pub, cor, m1_keys)
        summary.insert(0, "model", label)
        m1_rows.append(summary)
        numbers[f"coding_{model}_max_change"] = float(summary["corrected"].iloc[-1])
    m1_cmp = pd.concat(m1_rows, ignore_index=True)
    tables["coding_m1"] = R.markdown_table(
        pd.DataFrame({"Model": m1_cmp["model"], "Statistic": m1_cmp["statistic"],
                      "Published": m1_cmp["published"].map(R.fmt_num),
                      "Corrected": m1_cmp["corrected"].map(R.fmt_num),
                      "Change": m1_cmp["change"].map(R.fmt_signed)}),
        "M1 and M1-OLS: the 32 condition effects under both codings (the Democrat indicator "
        "is a control there)", "coding-m1", align="llrrr",
    )
    bp_keys = ["w2_vote_hill", "woman", "invest_cond", "pol_engage"]
    bp_cmp = R.compare_codings(fits[("bp", "published")]["groups"],
                               fits[("bp", "corrected")]["groups"], bp_keys,
                               extra=("q025", "q975"))
    tables["coding_bp"] = R.markdown_table(
        pd.DataFrame({
            "Vote": bp_cmp["w2_vote_hill"].map({1: "Clinton", 0: "Trump"}),
            "Sex": bp_cmp["woman"].map({1: "women", 0: "men"}),
            "Vignette": bp_cmp["invest_cond"].map({1: "FDI", 0: "trade"}),
            "Engagement": bp_cmp["pol_engage"].map(R.fmt_int),
            "Published": [f"{R.fmt_num(e)} [{R.fmt_num(lo)}, {R.fmt_num(hi)}]" for e, lo, hi in
                          zip(bp_cmp["published"], bp_cmp["q025_published"],
                              bp_cmp["q975_published"], strict=True)],
            "Corrected": [f"{R.fmt_num(e)} [{R.fmt_num(lo)}, {R.fmt_num(hi)}]" for e, lo, hi in
                          zip(bp_cmp["corrected"], bp_cmp["q025_corrected"],
                              bp_cmp["q975_corrected"], strict=True)],
            "Change": bp_cmp["change"].map(R.fmt_signed),
        }),
        "Bush–Prather: effect of Germany rather than Russia as the meddling country "
        "(median, 95% interval), all respondents (published) and side-taking vignettes only "
        "(corrected)", "coding-bp", align="lllrrrr",
    )
    numbers["coding_bp_max_change"] = float(bp_cmp["change"].abs().max())

    # ---- diagnostics
    diag = R.diagnostics_table({
        (name, c): fits[(name, c)]["diagnostics"]
        for name in ("m1", "m2", "a1", "bp") for c in CODINGS
    })
    names = {"m1": "M1", "m2": "M2", "a1": "A1", "bp": "Bush–Prather"}
    diag["model"] = diag["model"].map(names)
    tables["diagnostics"] = R.markdown_table(
        R.diagnostics_markdown(diag),
        "Sampler diagnostics of every Bayesian fit (from each fit's diagnostics.csv)",
        "diagnostics",
    )
    numbers["diag_max_r_hat"] = float(diag["max_r_hat"].max())
    numbers["diag_min_ess_bulk"] = float(diag["min_ess_bulk"].min())
    numbers["diag_divergences"] = float(diag["divergences"].sum())
    numbers["diag_fits"] = float(len(diag))

    # ---- simulation Monte Carlo error
    spec_mc = R.simulation_mc_table(summaries["spec"], ones["spec"], "n_groups")
    size_mc = R.simulation_mc_table(summaries["groupsize"], ones["groupsize"], "scenario")
    tables["sim_spec_mc"] = R.markdown_table(
        R.simulation_mc_markdown(spec_mc, "n_groups", "Groups"),
        "Simulation 1 (equal groups): RMSE of the single replicate (the published design) "
        "and mean RMSE over replicates with its Monte Carlo standard error (MCSE); the "
        "last column puts the single replicate in units of the between-replicate SD",
        "sim-spec",
    )
    tables["sim_groupsize_mc"] = R.markdown_table(
        R.simulation_mc_markdown(size_mc, "scenario", "Imbalance"),
        "Simulation 2 (64 groups, unequal sizes): single replicate against the mean over "
        "replicates, as in the previous table", "sim-groupsize", align="llrrrrrr",
    )
    numbers["sim_max_abs_z"] = float(pd.concat([spec_mc["z"], size_mc["z"]]).abs().max())

    # ---- Table 1 and the priors
    tables["table1"] = R.markdown_table(
        R.table1(), "Characteristics of three ways to estimate heterogeneous effects",
        "approaches", align="llll",
    )
    tables["priors"] = R.markdown_table(
        R.priors_table(models),
        "Prior distributions of the Bayesian models (from params.yaml, section models)",
        "priors", align="llll",
    )

    # ---- write
    digits = {k: 3 for k in numbers if k.startswith(("sim1_rmse", "sim1_mcse", "sim2_rmse",
                                                     "sim2_mcse", "sim1_one", "sim2_one",
                                                     "diag_max_r_hat"))}
    digits |= {"sim_tau_mean": 1, "sim_tau_sd": 1, "sim_max_abs_z": 1}
    for k in numbers:
        if k.startswith(("sim2_gain", "sim1_ratio")):
            digits[k] = 2
    percents = ["tw_ate", "m1_ols_min", "m1_max_drop", "m1_hier_at_ols_min",
                "m2_step_white", "m2_step_dem", "m2_step_rep", "m2_cell_min", "sim2_gain_balanced",
                "sim2_gain_strong", "pub_tw_ate", "pub_m1_ols_min", "pub_m1_drop_named",
                "m1_drop_named", "pub_m1_hier_at_ols_min", "pub_m2_step_white",
                "pub_m2_step_dem",
                "pub_m2_step_rep", "pub_m2_cell_min", "cor_m2_step_white", "cor_m2_step_dem",
                "cor_m2_step_rep", "cor_m2_cell_min", "sim2_share_low"]
    variables = R.to_variables(numbers, labels, digits, percents=[p for p in percents
                                                                 if p in numbers])
    variables |= {"ci_level": "95%", "ci_inner": "10–90%", "q_low": "10%"}  # interval levels
    header = ("# Written by analysis/report.py (DVC stage `report`); do not edit by hand.\n"
              "# Every number the manuscript quotes, formatted; used as {{< var name >}}.\n")
    write(out / "_variables.yml",
          header + yaml.safe_dump(variables, sort_keys=True, allow_unicode=True, width=1000))
    tables_dir = out / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for stale in tables_dir.glob("*.md"):
        if stale.stem not in tables:
            stale.unlink()
    for name, text in sorted(tables.items()):
        write(tables_dir / f"{name}.md", text)
    print(f"report: {len(variables)} variables -> {out / '_variables.yml'}; "
          f"{len(tables)} tables -> {tables_dir}")
    differing = comparison.loc[comparison["difference"] != 0]
    for row in differing.itertuples():
        print(f"  differs from the paper: {row.name}: published {row.published}, "
              f"reproduced {row.reproduced} ({row.difference:+})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
