"""Every number the manuscript quotes names its source: stage, committed file, row and column
(or the computation) and the unrounded value; the HTML shows it on hover."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from hetfx.paper import provenance as P

MANUSCRIPT = ROOT / "manuscript"
VAR = re.compile(r"\{\{<\s*var\s+(\S+?)\s*>\}\}")
SPAN = re.compile(r'<span class="hetfx-source" title="([^"]*)">([^<]*)</span>')
NUMBER = re.compile(r"^[−+]?[\d,]*\.?\d+%?$")


def quoted(directory: Path = MANUSCRIPT) -> dict[str, set[str]]:
    """Document stem -> names of the variables it quotes."""
    return {q.stem: set(VAR.findall(q.read_text("utf-8"))) for q in directory.glob("*.qmd")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """``_provenance.json`` of the report stage run on the committed results."""
    out = tmp_path_factory.mktemp("report")
    for qmd in MANUSCRIPT.glob("*.qmd"):
        shutil.copy2(qmd, out / qmd.name)
    result = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "report.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "_provenance.json").read_text("utf-8"))


def test_every_quoted_variable_has_a_stage_a_file_and_an_unrounded_value(sources):
    names = set().union(*quoted().values())
    assert names, "the documents quote no variables"
    missing = sorted(names - set(sources))
    assert missing == []
    for name in sorted(names):
        entry = sources[name]
        assert entry["stage"] and entry["file"], name
        assert entry["row"] and entry["column"] or entry["computation"], name
        if NUMBER.match(entry["shown"]):
            assert isinstance(entry["value"], float), name  # a number, not its printed text
            assert name in entry["title"] and entry["stage"] in entry["title"]


def _cell(entry: dict) -> float:
    path = ROOT / entry["file"]
    if path.suffix == ".yaml":
        return float(yaml.safe_load(path.read_text("utf-8"))[entry["row"]][entry["column"]])
    hit = pd.read_csv(path).query(entry["row"])[entry["column"]]
    assert len(hit) == 1, f"{entry['file']}: {entry['row']} is not one row"
    return float(hit.iloc[0])


def test_a_named_cell_holds_the_unrounded_value(sources):
    """Where a source names a row and a column of a committed file, that cell is the value."""
    cells = {n: e for n, e in sources.items() if e["row"] and e["column"]}
    assert len(cells) > 50
    for name, entry in sorted(cells.items()):
        assert (ROOT / entry["file"]).is_file(), f"{name}: {entry['file']} is not committed"
        assert _cell(entry) == pytest.approx(entry["value"], rel=1e-9), name


def test_every_named_file_is_committed(sources):
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.splitlines()
    )
    for name, entry in sources.items():
        for file in entry["file"].split(" + "):
            if "*" in file or " " in file:
                continue  # a family of files, described in words
            assert file in tracked, f"{name}: {file}"


def test_a_variable_without_a_rule_is_an_error():
    with pytest.raises(KeyError, match="no_such_number"):
        P.provenance({"no_such_number": "1.0", "tw_ate": "0.33"})


def test_title_names_stage_file_cell_and_unrounded_value():
    entry = P.provenance({"tw_ate": "0.33"}, {"tw_ate": 0.3312})["tw_ate"]
    text = P.title(entry)
    assert text.startswith("tw_ate = 0.3312; stage clean_tomz_weeks")
    assert "file data/clean/tomz_weeks_checks.csv" in text
    assert "row name == 'alliance difference in force'; column value" in text


def hover_problems(html_text: str, names: set[str], entries: dict) -> list[str]:
    """Numbers of ``names`` that the HTML does not show with their source as the title."""
    shown = {(html.unescape(t), html.unescape(v)) for t, v in SPAN.findall(html_text)}
    problems = []
    for name in sorted(names):
        entry = entries[name]
        if not NUMBER.match(entry["shown"]):
            continue
        if (entry["title"], entry["shown"]) not in shown:
            problems.append(name)
    return problems


def test_rendered_html_shows_each_numbers_source():
    """The committed HTML (the fallback's): every quoted number sits in a span whose title is
    its source (tests/test_pages.py checks the same for a Quarto render)."""
    path = MANUSCRIPT / "_provenance.json"
    if not path.exists() or not (MANUSCRIPT / "_output" / "paper.html").exists():
        pytest.skip("the report and render stages have not run (dvc repro render)")
    entries = json.loads(path.read_text("utf-8"))
    for stem, names in quoted().items():
        page = (MANUSCRIPT / "_output" / f"{stem}.html").read_text("utf-8")
        assert len(SPAN.findall(page)) >= len(names) > 0
        assert hover_problems(page, names, entries) == [], stem


def test_hover_check_can_fail():
    entries = {"x": {"title": "x = 0.331; stage s", "shown": "0.33"}}
    good = '<p><span class="hetfx-source" title="x = 0.331; stage s">0.33</span></p>'
    assert hover_problems(good, {"x"}, entries) == []
    assert hover_problems("<p>0.33</p>", {"x"}, entries) == ["x"]
