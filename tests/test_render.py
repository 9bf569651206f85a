"""Tests of the manuscript renderer's pandoc + typst fallback (hetfx.render, hetfx.lua)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hetfx import render as R

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "fixtures" / "render_sample"
FILTER = REPO / "manuscript" / "_filters" / "hetfx.lua"
EXPECTED = {
    "paper": ["Figure 1", "Table 1", "Figure 2"],
    "appendix": ["Figure 1", "Table 1"],
}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A copy of the sample manuscript, with the project's Lua filter, in a temporary dir."""
    root = tmp_path / "manuscript"
    shutil.copytree(SAMPLE, root)
    (root / "_filters").mkdir()
    shutil.copy(FILTER, root / "_filters" / "hetfx.lua")
    return root


@pytest.fixture
def rendered(sample: Path) -> tuple[Path, list[R.Rendered]]:
    return sample, R.render_fallback(sample)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_read_project_follows_quarto_yml(sample: Path) -> None:
    project = R.read_project(sample)
    assert project.documents == ("paper.qmd", "appendix.qmd")
    assert project.output_dir == sample / "_output"
    assert project.metadata["bibliography"] == "references.bib"
    assert "project" not in project.metadata and "format" not in project.metadata


def test_real_manuscript_config_lists_both_documents() -> None:
    config = yaml.safe_load((REPO / "manuscript" / "_quarto.yml").read_text())
    assert config["project"]["render"] == ["paper.qmd", "appendix.qmd"]
    assert config["project"]["output-dir"] == "_output"
    assert set(config["format"]) == {"html", "typst"}


def test_expand_includes_is_recursive_and_relative(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("A {{< include b.md >}}\n")
    (tmp_path / "sub" / "b.md").write_text("B\n")
    text = "x\n{{< include sub/a.md >}}\ny"
    assert R.expand_includes(text, tmp_path) == "x\nA B\ny"
    with pytest.raises(R.RenderError, match="nothere.md"):
        R.expand_includes("{{< include nothere.md >}}", tmp_path)


def test_sample_renders_and_passes_checks(rendered) -> None:
    root, docs = rendered
    out = root / "_output"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["appendix.html", "appendix.pdf", "paper.html", "paper.pdf"]
    sources = {d.source.stem: d.typst_source for d in docs}
    reports = R.check_outputs(out, ["paper", "appendix"], sources, root)
    for report in reports:
        assert report.html_captions == EXPECTED[report.stem]
        assert report.pdf_captions == EXPECTED[report.stem]
    assert {r.stem: r.references for r in reports} == {"paper": 2, "appendix": 1}


def test_each_caption_appears_once_and_references_link_to_it(rendered) -> None:
    root, _ = rendered
    html = (root / "_output" / "paper.html").read_text()
    text = R._plain(html)
    for label in EXPECTED["paper"]:
        assert text.count(f"{label}:") == 1, label
    links = dict(re.findall(r'<a href="#([^"]+)" class="quarto-xref">([^<]+)</a>', html))
    assert links["fig-effects"] == "Figure\u00a01"
    assert links["tbl-effects"] == "Table\u00a01"
    assert links["fig-second"] == "Figure\u00a02"
    assert links["sec-methods"] in ("Section\u00a02", "2")  # `[-@sec-methods]` gives "2"
    assert 'id="fig-effects"' in html and 'id="tbl-effects"' in html
    assert "data:image/png;base64," in html  # self-contained
    assert "(200 replicates)" in text and "1,234" in text  # vars in captions and cells
    assert "among 1,234 respondents" in text  # and in the abstract


def test_citations_produce_a_reference_list(rendered) -> None:
    root, docs = rendered
    text = R._plain((root / "_output" / "paper.html").read_text())
    assert "(Gelman 2006)" in text and "Tomz and Weeks (2013)" in text
    assert "References" in text and "Bayesian Analysis" in text
    assert "#link(<ref-gelman2006>)" not in docs[0].typst_source  # citeproc text, not typst cites
    assert "Gelman, Andrew. 2006." in docs[0].typst_source


def test_pdf_has_page_numbers_and_numbered_captions(rendered) -> None:
    root, docs = rendered
    assert 'pagenumbering: "1"' in docs[0].typst_source
    text, via = R.pdf_text(root / "_output" / "paper.pdf")
    if text is None:
        pytest.skip("neither pypdf nor pdftotext is available to read the PDF")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert R._numbered(lines) == EXPECTED["paper"]
    assert "Figure 1 and Table 1" in " ".join(text.split())
    assert "1" in lines and "2" in lines  # page numbers on their own line


def test_check_uses_typst_query_without_pdf_reader(rendered, monkeypatch) -> None:
    root, docs = rendered
    monkeypatch.setattr(R, "pdf_text", lambda pdf: (None, None))
    sources = {d.source.stem: d.typst_source for d in docs}
    reports = R.check_outputs(root / "_output", ["paper", "appendix"], sources, root)
    assert [r.pdf_text_via for r in reports] == ["typst query", "typst query"]
    assert reports[0].pdf_captions == EXPECTED["paper"]


def test_undefined_variables_fail_naming_each(sample: Path) -> None:
    undefined = "ran {{< var tw.missing >}} {{< var nope >}}."
    _edit(sample / "paper.qmd", "ran the experiment.", undefined)
    with pytest.raises(R.RenderError, match=r"undefined .*var.*: nope, tw\.missing"):
        R.render_fallback(sample)


def test_undefined_variable_in_included_table_fails(sample: Path) -> None:
    _edit(sample / "tables" / "x.md", "{{< var sim_reps >}}", "{{< var sim.reps >}}")
    with pytest.raises(R.RenderError, match=r"sim\.reps"):
        R.render_fallback(sample)


def test_unknown_label_fails(sample: Path) -> None:
    _edit(sample / "paper.qmd", "@fig-second repeats", "@fig-gone repeats")
    with pytest.raises(R.RenderError, match="unknown cross-reference label.*@fig-gone"):
        R.render_fallback(sample)


def test_label_on_unsupported_element_fails(sample: Path) -> None:
    div_figure = "::: {#fig-div}\n![x](figures/x.png)\n\nCaption\n:::\n"
    _edit(sample / "appendix.qmd", "![Appendix figure]", div_figure + "\n![Appendix figure]")
    with pytest.raises(R.RenderError, match=r"cannot number.*fig-div \(on Div\)"):
        R.render_fallback(sample)


def test_unknown_citation_fails(sample: Path) -> None:
    _edit(sample / "paper.qmd", "[@gelman2006]", "[@nobody1999]")
    with pytest.raises(R.RenderError, match="nobody1999"):
        R.render_fallback(sample)


def test_check_outputs_reports_leftovers(tmp_path: Path) -> None:
    (tmp_path / "doc.html").write_text(
        "<p>See ?@fig-x and {{< var a >}}.</p><figure><figcaption>Figure 2: x</figcaption></figure>"
    )
    (tmp_path / "doc.pdf").write_bytes(b"not a pdf")
    with pytest.raises(R.RenderError) as err:
        R.check_outputs(tmp_path, ["doc"])
    message = str(err.value)
    for expected in ("shortcode", "figure reference", "numbered [2]", "not a PDF"):
        assert expected in message
    with pytest.raises(R.RenderError, match="missing"):
        R.check_outputs(tmp_path, ["other"])


def test_stage_script_renders_the_sample(sample: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "render.py"), str(sample), "--fallback"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "check paper: captions ['Figure 1', 'Table 1', 'Figure 2']" in result.stdout
    assert (sample / "_output" / "appendix.pdf").exists()
