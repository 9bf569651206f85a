"""Tests of the real manuscript: its sources, the numbers they name, and the rendered documents.

The rendered documents and ``_variables.yml`` are committed outputs of the `render` and
`report` stages; these tests audit them as a reader would, without re-running anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from hetfx.paper import render as R

REPO = Path(__file__).resolve().parents[1]
MANUSCRIPT = REPO / "manuscript"
DOCUMENTS = ("paper", "appendix")
VAR = re.compile(r"\{\{<\s*var\s+([^\s>]+)\s*>\}\}")
INCLUDE = re.compile(r"\{\{<\s*include\s+(\S+?)\s*>\}\}")
FIGURE = re.compile(r"!\[[^\]]*\]\((figures/[^)\s]+)\)\{#(fig-[\w-]+)")
#: What the rendered documents must number, each exactly once and in this order of kinds.
EXPECTED = {
    "paper": {"Figure": [str(i) for i in range(1, 9)], "Table": ["1"]},
    "appendix": {
        "Figure": [f"A{i}" for i in range(1, 7)],
        "Table": [f"A{i}" for i in range(1, 16)],
    },
}


def _sources() -> dict[str, str]:
    """Each document's text with its includes expanded (tables from the report stage)."""
    return {
        d: R.expand_includes((MANUSCRIPT / f"{d}.qmd").read_text(encoding="utf-8"), MANUSCRIPT)
        for d in DOCUMENTS
    }


def _variables() -> dict:
    path = MANUSCRIPT / "_variables.yml"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python analysis/report.py` (DVC stage report)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_var_in_the_sources_has_a_value() -> None:
    variables = _variables()
    used = {name for text in _sources().values() for name in VAR.findall(text)}
    assert used, "the manuscript names no variables"
    missing = sorted(n for n in used if n not in variables or variables[n] in (None, ""))
    assert not missing, f"variables without a value in _variables.yml: {missing}"
    for name in used:
        assert isinstance(variables[name], str), name


def _prose(text: str) -> str:
    """The text a reader sees, minus what may legitimately hold digits: front matter,
    comments, code, math, shortcodes, labels, image paths, citations, table rows (generated)."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", "", text)
    text = re.sub(r"`[^`]*`", "", text)
    text = VAR.sub("", text)
    text = INCLUDE.sub("", text)
    text = re.sub(r"\{#[\w-]+[^}]*\}", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"-?@[\w-]+", "", text)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))
    text = re.sub(r"(?m)^\s*\d+\.\s", "", text)  # ordered-list markers
    text = re.sub(r"\b(M1|M2|A1)\b", "", text)  # model names
    # references to the published paper's own figures ("Figures 7 and 8 of the paper")
    text = re.sub(r"Figures? A?\d+(, A?\d+)*( and A?\d+)?", "", text)
    return text


def test_no_number_is_typed_by_hand() -> None:
    for name in DOCUMENTS:
        text = (MANUSCRIPT / f"{name}.qmd").read_text(encoding="utf-8")
        digits = [m.group(0) for m in re.finditer(r"[^\s]*\d[^\s]*", _prose(text))]
        assert digits == [], f"{name}.qmd types numbers by hand: {digits}"


def test_no_appendix_label_is_typed_by_hand() -> None:
    """The appendix's floats are numbered by the renderers (A1, A2, ...) and named by
    cross-references; a typed "Figure A2" goes stale when floats move. Figures of the main
    paper may be named in the appendix ("Figure 8 of the paper"): another document."""
    typed = {
        name: re.findall(r"\b(?:Figure|Table)s?\s+A\d+", text) for name, text in _sources().items()
    }
    assert typed == {name: [] for name in DOCUMENTS}


def test_costs_are_labelled_as_the_data_code_them() -> None:
    text = " ".join(_sources().values()).lower()
    assert "costs = 1` is low cost" in text or "costs = 1` marks" in text


def _stage_outputs() -> set[str]:
    """Every output path of every stage of dvc.yaml, templates resolved, relative to the repo."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {
            os.path.relpath(str(out.fs_path), REPO)
            for stage in repo.index.stages
            for out in stage.outs
        }


def test_every_figure_named_is_produced_by_a_stage() -> None:
    named = sorted({f for text in _sources().values() for f, _ in FIGURE.findall(text)})
    assert len(named) == 14
    produced = _stage_outputs()
    orphans = [
        f
        for f in named
        if f"manuscript/{f}" not in produced
        and not any(f"manuscript/{f}".startswith(o + "/") for o in produced)
    ]
    assert not orphans, f"figures no DVC stage writes: {orphans}"


def test_every_included_table_and_the_variables_are_report_outputs() -> None:
    outs = _stage_outputs()
    assert "manuscript/_variables.yml" in outs
    assert "manuscript/tables" in outs
    for name in DOCUMENTS:
        text = (MANUSCRIPT / f"{name}.qmd").read_text(encoding="utf-8")
        for table in INCLUDE.findall(text):
            assert table.startswith("tables/"), table
            assert (MANUSCRIPT / table).exists(), f"{table} missing: run analysis/report.py"
    for doc in DOCUMENTS:
        for ext in ("html", "pdf"):
            assert f"manuscript/_output/{doc}.{ext}" in outs


def _rendered() -> Path:
    out = MANUSCRIPT / "_output"
    missing = [
        f"{d}.{e}" for d in DOCUMENTS for e in ("html", "pdf") if not (out / f"{d}.{e}").exists()
    ]
    if missing:
        pytest.fail(
            f"rendered documents missing {missing}: run `python analysis/render.py manuscript`"
        )
    return out


def test_rendered_documents_pass_the_render_checks() -> None:
    reports = R.check_outputs(_rendered(), DOCUMENTS)
    for report in reports:
        for kind, numbers in EXPECTED[report.stem].items():
            got = [c.split()[1] for c in report.html_captions if c.startswith(kind)]
            assert got == numbers, (report.stem, kind, got)
            if report.pdf_captions is not None:
                pdf = [c.split()[1] for c in report.pdf_captions if c.startswith(kind)]
                assert pdf == numbers, (report.stem, "pdf", kind, pdf)


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_each_caption_number_appears_once(doc: str) -> None:
    out = _rendered()
    html = R._plain((out / f"{doc}.html").read_text(encoding="utf-8"))
    pdf, _ = R.pdf_text(out / f"{doc}.pdf")
    for kind, numbers in EXPECTED[doc].items():
        for n in numbers:
            assert html.count(f"{kind} {n}:") == 1, (doc, kind, n)
            if pdf is not None:
                assert " ".join(pdf.split()).count(f"{kind} {n}:") == 1, (doc, "pdf", kind, n)
    for leftover in ("??", "{{<", "?@", "@fig-", "@tbl-", "@sec-"):
        assert leftover not in html, leftover
        if pdf is not None:
            assert leftover not in pdf, leftover


def test_rendered_numbers_match_the_variables() -> None:
    """Spot checks: quoted values of _variables.yml appear in the rendered paper."""
    variables = _variables()
    html = R._plain((_rendered() / "paper.html").read_text(encoding="utf-8"))
    for name in ("tw_ate_pct", "m2_g_high_newsint", "sim1_rmse_ols_128", "m1_ols_min"):
        assert variables[name] in html, name
