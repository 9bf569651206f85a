"""Where each number of the manuscript comes from: stage, file, row and column (or the
computation) and the unrounded value.

The report stage formats every number the manuscript quotes into ``_variables.yml``
(:mod:`hetfx.paper.report`, :mod:`hetfx.paper.verdict`). This module keeps the record of their
sources, without changing how they are computed:

* the unrounded values: the functions that format numbers hand them to :func:`note`, which
  stores them in the active :class:`Ledger` (a no-op without one);
* the sources: :data:`RULES`, one rule per family of variable names (a regular expression and
  a :class:`Source` template filled from the name's groups), in the order they are tried;
* :func:`provenance` joins both for the variables of a report, :func:`title` writes the hover
  text of the HTML, :func:`provenance_table` the appendix's table of every quoted variable.

A source with a ``row`` and a ``column`` names one cell of a committed file; the value there is
the unrounded value (tests/test_provenance.py reads every such cell back).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

__all__ = [
    "RULES",
    "Entry",
    "Ledger",
    "Source",
    "note",
    "provenance",
    "provenance_table",
    "title",
]


@dataclass(frozen=True)
class Source:
    """Where a number comes from.

    Attributes
    ----------
    stage : str
        The DVC stage that writes ``file`` (``report`` for numbers the report itself sets).
    file : str
        The committed file, relative to the project root (several joined by ``" + "``).
    row : str
        The row, as a pandas query on ``file`` (empty where the number uses many rows).
    column : str
        The column holding the number (empty where it is computed).
    computation : str
        How the number is computed from the file(s), where it is not one cell.
    """

    stage: str
    file: str
    row: str = ""
    column: str = ""
    computation: str = ""


@dataclass(frozen=True)
class Entry:
    """One variable of ``_variables.yml``: its printed text, unrounded value and source."""

    name: str
    shown: str
    value: float | str
    source: Source


# --------------------------------------------------------------------------------------
# Unrounded values
# --------------------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("ledger", default=None)


class Ledger:
    """Collects unrounded values while active (``with Ledger() as ledger: ...``)."""

    def __init__(self) -> None:
        self.values: dict[str, float | str] = {}
        self._token = None

    def __enter__(self) -> Ledger:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)


def note(values: Mapping[str, object], prefix: str = "") -> None:
    """Record unrounded ``values`` (name -> number) in the active ledger, if any."""
    ledger = _ACTIVE.get()
    if ledger is None:
        return
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ledger.values[prefix + name] = float(value)
        elif isinstance(value, bool):
            ledger.values[prefix + name] = float(value)


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------

TW = "results/tomz_weeks/{model}_{coding}/{part}.csv"
FIT = "fit_tomz_weeks@{coding}"
CHECKS = {
    "tw_n": "rows",
    "tw_force_no_alliance": "mean of force without alliance",
    "tw_force_alliance": "mean of force with alliance",
    "tw_ate": "alliance difference in force",
    "tw_n_cells": "alliance x treat_group cells",
    "tw_cell_min": "smallest alliance x treat_group cell",
    "tw_cell_max": "largest alliance x treat_group cell",
    "tw_n_groups": "treat_groups",
    "tw_group_min": "smallest treat_group",
    "tw_group_max": "largest treat_group",
}
M1_GROUPS = (
    "results/tomz_weeks/m1_{coding}/groups.csv + results/tomz_weeks/m1_ols_{coding}/groups.csv"
)
#: How each design number is read from the simulation's design.json.
DESIGN = {
    "sim_n": "key n_obs",
    "sim_tau_mean": "key tau_mean",
    "sim_tau_sd": "key tau_sd",
    "sim1_size_max": "n_obs / 2^min(equal_group_k)",
    "sim1_size_min": "n_obs / 2^max(equal_group_k)",
    "sim_k_min": "min(equal_group_k)",
    "sim_k_max": "max(equal_group_k)",
    "sim2_share_low": "smallest probability of imbalance_scenarios.strong",
    "sim2_k": "number of moderators of imbalance_scenarios.balanced",
    "sim2_groups": "2^(number of moderators of imbalance_scenarios.balanced)",
}
SIM = "results/simulation/{design}/summary.csv"
ONE = "results/simulation/{design}/one_replicate.csv"
SHORT = {"hier": "hierarchical", "ols": "ols"}
ANALYSIS_FILES = (
    "results/tomz_weeks/m1*, m1_ols* and m2* (with and without _main_effects, both codings): "
    "groups.csv, coefs.csv"
)


#: What each M1 statistic is, over the 32 conditions' estimates of M1 (hierarchical) and OLS.
M1_WHAT = {
    "n_groups": "number of conditions",
    "n_obs_min": "smallest n_obs of M1's groups.csv",
    "n_obs_max": "largest n_obs of M1's groups.csv",
    "hier_at_ols_min": "M1's estimate in the condition with the lowest OLS estimate",
    "max_shift": "M1 − OLS where it is largest in absolute value",
    "max_shift_abs": "largest |M1 − OLS|",
    "max_shift_ols": "OLS estimate where |M1 − OLS| is largest",
    "max_shift_hier": "M1 estimate where |M1 − OLS| is largest",
    "max_drop": "largest OLS − M1",
    "max_drop_ols": "OLS estimate where OLS − M1 is largest",
    "max_drop_hier": "M1 estimate where OLS − M1 is largest",
    "slope_shift": "least-squares slope of M1 − OLS on OLS",
    "drop_named": "OLS − M1 in the low-stakes, high-cost South American autocracy",
    "drop_named_ols": "OLS estimate there",
    "drop_named_hier": "M1 estimate there",
}
M1_STAT = {"mean": "mean", "sd": "SD (ddof 1)", "min": "smallest", "max": "largest"}


def _m1_what(what: str) -> str:
    if what in M1_WHAT:
        return M1_WHAT[what]
    model, _, stat = what.partition("_")
    name = {"hier": "M1", "ols": "OLS"}.get(model, model)
    if stat in M1_STAT:
        return f"{M1_STAT[stat]} of the {name} estimates"
    if stat == "negative":
        return f"conditions with a negative {name} estimate"
    if stat.endswith("_stakes"):
        level = stat.removesuffix("_stakes")
        return f"mean {name} estimate of the {level}-stakes conditions"
    if stat.endswith("condition") or what.endswith("_condition"):
        return "that condition in words (costs = 1 is low cost)"
    return what


def _m1(m: re.Match) -> Source:
    return Source(
        FIT.format(**m.groupdict()),
        M1_GROUPS.format(**m.groupdict()),
        computation=f"{_m1_what(m['what'])}, column estimate",
    )


def _coef(m: re.Match) -> Source:
    equation = "effect" if m["eq"] == "g" else "control"
    term = {"intercept": "Intercept"}.get(m["term"], m["term"])
    column = {"": "mean", "_lo": "q025", "_hi": "q975"}[m["bound"] or ""]
    return Source(
        FIT.format(**m.groupdict()),
        TW.format(model="m2", coding=m["coding"], part="coefs"),
        row=f"equation == '{equation}' and term == '{term}'",
        column=column,
    )


def _sim(m: re.Match) -> Source:
    design, key = ("spec", "n_groups") if m["d"] == "1" else ("groupsize", "scenario")
    value = m["cond"] if m["d"] == "1" else f"'{m['cond']}'"
    model = SHORT[m["model"]]
    if m["what"] == "one":
        return Source(
            "simulate",
            ONE.format(design=design),
            f"{key} == {value} and model == '{model}'",
            "rmse",
        )
    column = {"rmse": "rmse_mean", "mcse": "rmse_mcse"}[m["what"]]
    row = f"{key} == {value} and model == '{model}'"
    return Source("simulate", SIM.format(design=design), row, column)


def _fixed(stage: str, file: str, computation: str = "", row: str = "", column: str = ""):
    """A source whose fields are templates filled from the match's groups."""

    def make(m) -> Source:
        g = m.groupdict()
        return Source(
            stage, file.format(**g), row.format(**g), column.format(**g), computation.format(**g)
        )

    return make


#: (pattern, source) in the order tried; a pattern's ``coding`` group is filled in from the
#: ``cor_`` prefix (published coding without it).
RULES: list[tuple[str, object]] = [
    (
        r"pub_(?P<what>.+)",
        _fixed(
            "report",
            "src/hetfx/paper/report.py",
            "as printed in the published paper (report.PUBLISHED, quote {what})",
        ),
    ),
    (
        r"(?P<fact>tw_.+?)(_pct|_pp)?",
        lambda m: (
            Source(
                "clean_tomz_weeks",
                "data/clean/tomz_weeks_checks.csv",
                f"name == '{CHECKS[m['fact']]}'",
                "value",
            )
            if m["fact"] in CHECKS
            else None
        ),
    ),
    (
        r"bp_n(?P<which>_no_side|_side)?",
        _fixed(
            "clean_bush_prather",
            "data/clean/bush_prather_checks.csv",
            "complete cases (_no_side: without side-taking; _side: the difference)",
        ),
    ),
    (
        r"m2_(?P<eq>[gb])_(?P<term>[a-z0-9_]+?)(?P<bound>_lo|_hi)?",
        lambda m: _coef(m) if m["term"] != "excluding_zero" else None,
    ),
    (
        r"m2_g_excluding_zero",
        _fixed(
            FIT,
            TW.format(model="m2", coding="{coding}", part="coefs"),
            "effect terms other than the intercept whose q025 is above 0",
        ),
    ),
    (
        r"(?P<model>m[12])_sigma_theta",
        _fixed(
            FIT,
            TW.format(model="{model}", coding="{coding}", part="coefs"),
            row="equation == 'scale' and term == 'sigma_theta'",
            column="mean",
        ),
    ),
    (
        r"m2_(?P<what>cell.*|step.*|news_gap)(_pct|_pp)?",
        _fixed(
            "figures_tomz_weeks@{coding}",
            "results/tomz_weeks/demographics_cells_{coding}.csv",
            "Figure 8's 24 cells (column estimate; steps from the cell Independent, white = 0, "
            "male = 0, high_newsint = 0; news gap: mean of high − low; q10_positive: cells with "
            "q10 > 0): {what}",
        ),
    ),
    (r"m1_(?P<what>.+?)(_pct|_pp)?", _m1),
    (
        r"(?P<model>a1|bp)_(?P<what>min|max|groups|profiles|excluding_zero)",
        lambda m: Source(
            FIT.format(coding=m["coding"])
            if m["model"] == "a1"
            else f"fit_bush_prather@{m['coding']}",
            f"results/tomz_weeks/a1_{m['coding']}/groups.csv"
            if m["model"] == "a1"
            else f"results/bush_prather/bp_{m['coding']}/groups.csv",
            computation=f"{m['what']} over the rows (column estimate; q025/q975 for intervals)",
        ),
    ),
    (
        r"sim(?P<d>[12])_(?P<what>rmse|mcse|one)_(?P<model>hier|ols)_(?P<cond>[a-z0-9]+)",
        _sim,
    ),
    (
        r"sim2_bias_(?P<model>hier|ols)_(?P<size>small|large)",
        _fixed(
            "simulate",
            "results/simulation/groupsize/bias_by_size.csv",
            "mean_abs_bias of the model's size bins up to 20 (small) or from 75 (large), "
            "weighted by n_estimates",
        ),
    ),
    (
        r"sim1_(?P<what>ratio_min|ratio_max|hier_better_all|groups_min|groups_max)",
        _fixed(
            "simulate",
            SIM.format(design="spec"),
            "rmse_mean hierarchical / ols by n_groups: {what}",
        ),
    ),
    (
        r"sim2_gain_(?P<s>balanced|strong)(_pct|_pp)?",
        _fixed(
            "simulate",
            SIM.format(design="groupsize"),
            "1 − rmse_mean hierarchical / rmse_mean ols, scenario {s}",
        ),
    ),
    (
        r"sim_reps",
        _fixed("simulate", SIM.format(design="spec"), "smallest n_replicates"),
    ),
    (
        r"sim_max_abs_z",
        _fixed(
            "simulate",
            SIM.format(design="spec") + " + " + SIM.format(design="groupsize"),
            "largest |rmse_one_replicate − rmse_mean| / (rmse_mcse · √n_replicates)",
        ),
    ),
    (
        r"sim_root_seed",
        _fixed("report", "params.yaml", row="simulation", column="root_seed"),
    ),
    (
        r"(?P<name>sim_n|sim_tau_.+|sim1_size_.+|sim_k_.+|sim2_share_low|sim2_k|sim2_groups)"
        r"(_pct|_pp)?",
        lambda m: Source(
            "simulate", "results/simulation/design.json", computation=DESIGN[m["name"]]
        ),
    ),
    (
        r"sim2_(small|large)",
        _fixed("report", "src/hetfx/paper/report.py", "SMALL_GROUP / LARGE_GROUP (Figure 4)"),
    ),
    (
        r"models_(?P<key>.+)",
        _fixed("report", "params.yaml", row="models", column="{key}"),
    ),
    (
        r"coding_(?P<what>.+)",
        _fixed(
            "report",
            "results/tomz_weeks/*_published/ + *_corrected/ (groups.csv, coefs.csv)",
            "largest change between the codings: {what}",
        ),
    ),
    (
        r"diag_(?P<what>.+)",
        _fixed(
            "report",
            "results/{{tomz_weeks,bush_prather}}/*/diagnostics.csv",
            "{what} over the Bayesian fits' diagnostics",
        ),
    ),
    (
        r"dec_(?P<analysis>published|coding_fixes|specification_fix|corrected)_(?P<what>.+)",
        _fixed(
            "report",
            ANALYSIS_FILES,
            "decomposition (hetfx.paper.verdict.decomposition), analysis {analysis}: {what}",
        ),
    ),
    (
        r"rob_sim_(?P<what>.+)",
        _fixed(
            "simulate_sensitivity",
            "results/simulation/sensitivity/summary.csv",
            "hetfx.paper.verdict.sensitivity_numbers: {what}",
        ),
    ),
    (
        r"rob_(?P<what>.+)",
        _fixed(
            "robustness",
            "results/robustness/*.csv",
            "hetfx.paper.verdict.robustness_numbers: {what}",
        ),
    ),
    (
        r"(verdict|claims?|rule)_(?P<what>.+)",
        _fixed(
            "report",
            "src/hetfx/paper/claims.py",
            "the claims register's rules applied to the numbers each claim rests on: {what}",
        ),
    ),
    (
        r"sim_shift_sd",
        _fixed("report", "params.yaml", row="simulation_sensitivity", column="baseline_sd"),
    ),
    (
        r"ci_level|ci_inner|ci_inner_level|q_low|sim_interval_level",
        _fixed("report", "src/hetfx/paper/report.py", "interval level the text states"),
    ),
]


def _source(name: str) -> Source | None:
    coding = "corrected" if name.startswith("cor_") else "published"
    bare = name.removeprefix("cor_")
    for pattern, make in RULES:
        match = re.fullmatch(pattern, bare)
        if match is None:
            continue
        source = make(_Match(match, coding))
        if source is not None:
            if bare.endswith("_pp"):  # the value shown x 100, in percentage points
                shown = "shown x 100, in percentage points"
                note = f"{source.computation}; {shown}" if source.computation else shown
                source = replace(source, computation=note)
            return replace(source, stage=source.stage.format(coding=coding))
    return None


class _Match:
    """A regex match whose groups include ``coding`` and whose missing groups read as ``""``."""

    def __init__(self, match: re.Match, coding: str) -> None:
        self._groups = {k: v or "" for k, v in match.groupdict().items()} | {"coding": coding}

    def __getitem__(self, key: str) -> str:
        return self._groups[key]

    def groupdict(self) -> dict[str, str]:
        return dict(self._groups)


def provenance(
    variables: Mapping[str, str], values: Mapping[str, float | str] | None = None
) -> dict[str, Entry]:
    """An :class:`Entry` for every variable; the unrounded value from ``values`` (a ledger's),
    else the printed text. Raises ``KeyError`` naming every variable no rule covers."""
    values = values or {}
    entries, missing = {}, []
    for name, shown in sorted(variables.items()):
        source = _source(name)
        if source is None:
            missing.append(name)
            continue
        value = values.get(name, values.get(name.removesuffix("_pct")))
        entries[name] = Entry(
            name, str(shown), _parse(str(shown)) if value is None else value, source
        )
    if missing:
        raise KeyError("no provenance rule for variable(s): " + ", ".join(missing))
    return entries


def _parse(shown: str) -> float | str:
    """A number set as text (an interval level, ``"95%"``) as a number; other text as is."""
    text = shown.replace("\u2212", "-").replace(",", "")
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return shown


def _value_text(value: float | str) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def title(entry: Entry) -> str:
    """The hover text of a number in the HTML."""
    s = entry.source
    parts = [f"{entry.name} = {_value_text(entry.value)}", f"stage {s.stage}", f"file {s.file}"]
    if s.row:
        parts.append(f"row {s.row}")
    if s.column:
        parts.append(f"column {s.column}")
    if s.computation:
        parts.append(s.computation)
    return "; ".join(parts)


def as_json(entries: Mapping[str, Entry]) -> dict[str, dict]:
    """``name -> {shown, value, title, stage, file, row, column, computation}``; numbers to
    12 significant digits (a value computed here, e.g. a correlation, moves in its last bits
    on another CPU; a committed cell is written with fewer digits and stays exact)."""
    return {
        name: {
            "shown": e.shown,
            "value": float(f"{e.value:.12g}") if isinstance(e.value, float) else e.value,
            "title": title(e),
            **asdict(e.source),
        }
        for name, e in sorted(entries.items())
    }


ZWSP = "\u200b"


def _breakable(text: str) -> str:
    """``text`` with a zero-width space after each ``_`` and ``/``: long names and paths may
    wrap there in a narrow table column."""
    return text.replace("_", "_" + ZWSP).replace("/", "/" + ZWSP)


def _escape(text: str) -> str:
    return text.replace("_", "\\_").replace("*", "\\*")


def provenance_table(entries: Mapping[str, Entry], names: Iterable[str]) -> str:
    """The appendix's table: each quoted variable, its printed and unrounded value, its source."""
    import pandas as pd

    from hetfx.paper.report import markdown_table

    rows = []
    for name in sorted(set(names)):
        e = entries[name]
        s = e.source
        parts = [s.stage, s.file]
        parts += [f"row {s.row}" if s.row else "", f"column {s.column}" if s.column else ""]
        parts.append(s.computation)
        value = _value_text(e.value) if isinstance(e.value, float) else "(text)"
        rows.append(
            {
                "Variable": _escape(_breakable(name)),
                "Printed": e.shown if len(e.shown) <= 12 else "(text)",
                "Unrounded": value,
                "Source": _escape(_breakable("; ".join(p for p in parts if p))),
            }
        )
    return markdown_table(
        pd.DataFrame(rows),
        "Every number the paper and this appendix quote: the value printed, the unrounded "
        "value and its source: the DVC stage, the committed file, and the row and column (or "
        "the computation); in the HTML, hovering a number shows the same",
        "provenance",
        align="lrrl",
    )
