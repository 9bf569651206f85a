"""Stage `report`: results artifacts + params.yaml -> manuscript/_variables.yml, manuscript/tables/.

Usage::

    python analysis/report.py                       # paths of the project
    python analysis/report.py --results R --out M   # other results / manuscript directories

Reads the fits of both codings (results/tomz_weeks, results/bush_prather), the simulation
summaries and design (results/simulation), the cleaning checks (data/clean) and the
`models:` section of params.yaml; writes every number the manuscript quotes to
`_variables.yml`, where each comes from to `_provenance.json` (hetfx.paper.provenance), and
every table it includes to `tables/*.md` (hetfx.paper.report does the work).
Output is deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from hetfx.paper import provenance
from hetfx.paper import report as R
from hetfx.paper.cells import demographic_cells
from hetfx.paper.verdict import ANALYSES, SpecificationInputs

TW_MODELS = ("m1", "m1_ols", "m2", "m2_ols", "a1")
#: Which stage writes which input, for the error message when one is missing.
MAKERS = {
    "tomz_weeks": "fit_tomz_weeks",
    "bush_prather": "fit_bush_prather",
    "simulation": "simulate",
    "clean": "clean_tomz_weeks / clean_bush_prather",
    "robustness": "robustness",
    "sensitivity": "simulate_sensitivity",
}
ROBUSTNESS_TABLES = ("condition_effects", "spread", "signs", "prior", "coarse", "loo", "ppc")


class MissingInput(FileNotFoundError):
    pass


def read_csv(path: Path, maker: str) -> pd.DataFrame:
    if not path.exists():
        raise MissingInput(f"{path} is missing: it is written by DVC stage {maker}")
    return pd.read_csv(path)


def load_fit(results: Path, study: str, name: str) -> dict[str, pd.DataFrame]:
    folder = results / study / name
    maker = MAKERS[study]
    out = {}
    for part in ("groups", "coefs", "diagnostics"):
        path = folder / f"{part}.csv"
        if part == "diagnostics" and "_ols" in name and not path.exists():
            continue  # OLS fits have no sampler diagnostics
        out[part] = read_csv(path, maker)
    return out


def one_replicate(folder: Path, estimates: pd.DataFrame | None) -> pd.DataFrame:
    """The published-design (one replicate) RMSEs: a file of the simulate stage, if it wrote
    one (any CSV here with an ``rmse`` column), else replicate 0 of ``estimates.csv``."""
    path = folder / "one_replicate.csv"
    if path.exists():
        return pd.read_csv(path)
    if estimates is None:
        raise MissingInput(
            f"{folder}: neither one_replicate.csv nor estimates.parquet "
            f"(DVC stage {MAKERS['simulation']})"
        )
    return R.one_replicate_rmse(estimates)


def load_specification(results: Path) -> SpecificationInputs:
    """The four analyses of the decomposition and the robustness tables."""
    fits, cells = {}, {}
    for analysis, (suffix, coding) in ANALYSES.items():
        for model in ("m1", "m2"):
            fits[(model, analysis)] = load_fit(results, "tomz_weeks", f"{model}{suffix}_{coding}")
        fits[("m1_ols", analysis)] = load_fit(results, "tomz_weeks", f"m1_ols_{coding}")
        cells[analysis] = demographic_cells(fits[("m2", analysis)]["groups"])
    robustness = {
        name: read_csv(results / "robustness" / f"{name}.csv", MAKERS["robustness"])
        for name in ROBUSTNESS_TABLES
    }
    sensitivity = read_csv(
        results / "simulation" / "sensitivity" / "summary.csv", MAKERS["sensitivity"]
    )
    bins = results / "simulation" / "groupsize" / "bias_by_size.csv"
    return SpecificationInputs(
        fits=fits,
        cells=cells,
        robustness=robustness,
        sensitivity=sensitivity,
        bias_by_size=pd.read_csv(bins) if bins.exists() else None,
    )


def quoted_variables(manuscript: Path) -> set[str]:
    """Names of the variables the manuscript's documents quote (``{{< var name >}}``)."""
    pattern = re.compile(r"\{\{<\s*var\s+(\S+?)\s*>\}\}")
    return {m for qmd in manuscript.glob("*.qmd") for m in pattern.findall(qmd.read_text("utf-8"))}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--clean", default="data/clean")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="manuscript", help="manuscript directory")
    args = parser.parse_args(argv)
    print(f"report: start-up: {time.process_time():.2f} s CPU")  # Python and the imports
    start = time.perf_counter()
    results, clean, out = Path(args.results), Path(args.clean), Path(args.out)
    params = yaml.safe_load(Path(args.params).read_text(encoding="utf-8"))
    try:
        code = build(results, clean, params, out)
    except (MissingInput, KeyError, ValueError) as err:
        print(f"report failed: {err}", file=sys.stderr)
        return 1
    print(f"report: done in {time.perf_counter() - start:.2f} s")
    return code


def build(results: Path, clean: Path, params: dict, out: Path) -> int:
    inputs = load_inputs(results, clean, params)
    with provenance.Ledger() as ledger:
        variables, tables, comparison = R.build_report(inputs)
    # where each number comes from: the HTML's hover text and the appendix's last table
    entries = provenance.provenance(variables, ledger.values)
    quoted = quoted_variables(out) or set(variables)  # without documents: every variable
    tables["provenance"] = provenance.provenance_table(entries, quoted)
    write_outputs(out, variables, tables, entries)
    differing = comparison.loc[comparison["difference"] != 0]
    for row in differing.itertuples():
        print(
            f"  differs from the paper: {row.name}: published {row.published}, "
            f"reproduced {row.reproduced} ({row.difference:+})"
        )
    return 0


def load_inputs(results: Path, clean: Path, params: dict) -> R.ReportInputs:
    """Every artifact the report reads (fits, simulation, checks, robustness), loaded."""
    fits = {
        (m, c): load_fit(results, "tomz_weeks", f"{m}_{c}") for m in TW_MODELS for c in R.CODINGS
    }
    for c in R.CODINGS:
        fits[("bp", c)] = load_fit(results, "bush_prather", f"bp_{c}")
    sim = results / "simulation"
    summaries, ones, estimates = {}, {}, {}
    for design in ("spec", "groupsize"):
        summaries[design] = read_csv(sim / design / "summary.csv", MAKERS["simulation"])
        est_path = sim / design / "estimates.parquet"  # not committed: only a fallback
        one_path = sim / design / "one_replicate.csv"
        estimates[design] = (
            pd.read_parquet(est_path) if est_path.exists() and not one_path.exists() else None
        )
        ones[design] = one_replicate(sim / design, estimates[design])
    design_path = sim / "design.json"
    if not design_path.exists():
        raise MissingInput(
            f"{design_path} is missing: it is written by DVC stage {MAKERS['simulation']}"
        )
    inputs = R.ReportInputs(
        tw_checks=read_csv(clean / "tomz_weeks_checks.csv", MAKERS["clean"]),
        bp_checks=read_csv(clean / "bush_prather_checks.csv", MAKERS["clean"]),
        fits=fits,
        cells={
            c: read_csv(
                results / "tomz_weeks" / f"demographics_cells_{c}.csv", MAKERS["tomz_weeks"]
            )
            for c in R.CODINGS
        },
        summaries=summaries,
        ones=ones,
        groupsize_estimates=None,  # the bias of small and large groups: from the bins
        groupsize_bias=read_csv(sim / "groupsize" / "bias_by_size.csv", MAKERS["simulation"]),
        params=params,
        design=json.loads(design_path.read_text(encoding="utf-8")),
    )
    inputs.specification = load_specification(results)
    return inputs


def write_outputs(out: Path, variables: dict, tables: dict, entries) -> None:
    """``_variables.yml``, ``_provenance.json`` and ``tables/*.md`` (stale tables removed)."""
    header = (
        "# Written by analysis/report.py (DVC stage `report`); do not edit by hand.\n"
        "# Every number the manuscript quotes, formatted; used as {{< var name >}}.\n"
    )
    write(
        out / "_variables.yml",
        header + yaml.safe_dump(variables, sort_keys=True, allow_unicode=True, width=1000),
    )
    write(
        out / "_provenance.json",
        json.dumps(provenance.as_json(entries), indent=1, ensure_ascii=False, sort_keys=True)
        + "\n",
    )
    tables_dir = out / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    for stale in tables_dir.glob("*.md"):
        if stale.stem not in tables:
            stale.unlink()
    for name, text in sorted(tables.items()):
        write(tables_dir / f"{name}.md", text)
    print(
        f"report: {len(variables)} variables -> {out / '_variables.yml'}; "
        f"{len(tables)} tables -> {tables_dir}"
    )


if __name__ == "__main__":
    sys.exit(main())
