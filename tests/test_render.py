"""Tests of the manuscript renderers (hetfx.paper.render): the pandoc + typst fallback
(hetfx.lua) on a small sample, and the real manuscript with the real Quarto when ``quarto``
is on PATH (.ci/run installs it): references and shortcodes resolved, the appendix numbered
A1, A2, ... as by the fallback, author-year citations, one reference list, byte-identical
renders, nothing untracked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hetfx.paper import render as R
from test_manuscript import EXPECTED as MANUSCRIPT_FLOATS

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


# --------------------------------------------------------------------------------------
# Reproducible rendering and the project's Quarto settings, with the fallback
# --------------------------------------------------------------------------------------


def test_real_manuscript_config_fixes_date_style_and_numbering() -> None:
    config = yaml.safe_load((REPO / "manuscript" / "_quarto.yml").read_text())
    # a fixed date (not `today`), printed the same by both routes
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(config["date"]))
    for doc in ("paper.qmd", "appendix.qmd"):
        front = (REPO / "manuscript" / doc).read_text().split("---")[1]
        assert "date:" not in front, f"{doc} overrides the project's fixed date"
    assert (REPO / "manuscript" / config["csl"]).exists()
    assert config["format"]["typst"]["citeproc"] is True
    assert "#set document(date: none)" in config["format"]["typst"]["include-in-header"]["text"]
    filters = config["filters"]
    assert {"path": "_filters/number-prefix.lua", "at": "pre-ast"} in filters
    appendix = (REPO / "manuscript" / "appendix.qmd").read_text().split("---")[1]
    assert yaml.safe_load(appendix)["hetfx-number-prefix"] == "A"


def _appendix_setup(root: Path) -> None:
    """Give the sample what the real manuscript has: a fixed date, an appendix prefix, the
    PDF without creation date."""
    _edit(
        root / "appendix.qmd",
        'title: "Appendix to a sample paper"\n',
        'title: "Appendix to a sample paper"\nhetfx-number-prefix: A\n',
    )
    _edit(
        root / "_quarto.yml",
        "    papersize: us-letter\n",
        "    papersize: us-letter\n    include-in-header:\n"
        '      text: "#set document(date: none)"\n',
    )


def test_fallback_numbers_the_appendix_with_the_prefix_and_prints_the_date(sample: Path) -> None:
    _appendix_setup(sample)
    docs = R.render_fallback(sample)
    reports = R.check_outputs(
        sample / "_output",
        ["paper", "appendix"],
        {d.source.stem: d.typst_source for d in docs},
        sample,
    )
    assert reports[1].html_captions == ["Figure A1", "Table A1"]
    assert reports[1].pdf_captions == ["Figure A1", "Table A1"]
    text = R._plain((sample / "_output" / "appendix.html").read_text())
    assert "Figure A1 and Table A1 restate" in text
    # `date: 2026-01-01` printed as Quarto prints it (date-format: long)
    assert "January 1, 2026" in R._plain((sample / "_output" / "paper.html").read_text())
    assert "January 1, 2026" in docs[0].typst_source
    assert "#set document(date: none)" in docs[0].typst_source


def test_fallback_renders_are_byte_identical(sample: Path, tmp_path: Path) -> None:
    _appendix_setup(sample)
    R.render_fallback(sample, tmp_path / "one")
    R.render_fallback(sample, tmp_path / "two")
    for name in ("paper.html", "paper.pdf", "appendix.html", "appendix.pdf"):
        one, two = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        assert one == two, name
    assert b"/CreationDate" not in (tmp_path / "one" / "paper.pdf").read_bytes()


# --------------------------------------------------------------------------------------
# The real Quarto (skipped where `quarto` is not on PATH; .ci/run installs it)
# --------------------------------------------------------------------------------------

DOCS = ("paper", "appendix")
OUTPUTS = tuple(f"{d}.{e}" for d in DOCS for e in ("html", "pdf"))
#: What the appendix numbers, per kind (one list, kept in tests/test_manuscript.py).
APPENDIX_FLOATS = MANUSCRIPT_FLOATS["appendix"]


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=hetfx", "-c", "user.email=hetfx@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.fixture(scope="module")
def quarto_renders(tmp_path_factory):
    """The manuscript rendered by real Quarto twice and by the fallback once, in a scratch git
    repository holding a copy of the project's manuscript/ and .gitignore (never the repo)."""
    if not R.quarto_available():
        pytest.skip("quarto is not on PATH (.ci/run installs Quarto 1.7.34 where it can)")
    base = tmp_path_factory.mktemp("quarto")
    repo = base / "repo"
    files = _git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "manuscript")
    for name in [*files.splitlines(), ".gitignore"]:
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "copy")
    manuscript = repo / "manuscript"
    out = manuscript / "_output"
    R.render(manuscript, use_quarto=True)
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    status = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", "manuscript")
    R.render(manuscript, use_quarto=True)
    second = {name: (out / name).read_bytes() for name in OUTPUTS}
    fallback = base / "fallback"
    docs = R.render_fallback(manuscript, fallback)
    sources = {d.source.stem: d.typst_source for d in docs}
    return {
        "out": out,
        "first": first,
        "second": second,
        "status": status,
        "quarto": R.check_outputs(out, DOCS),
        "fallback": R.check_outputs(fallback, DOCS, sources, manuscript),
        "fallback_out": fallback,
    }


def _pdf_text(path: Path) -> str:
    text, _ = R.pdf_text(path)
    if text is None:
        pytest.fail("pypdf (a locked dependency) is needed to read the PDFs")
    return text


def test_quarto_resolves_every_reference_and_shortcode(quarto_renders) -> None:
    out = quarto_renders["out"]
    for doc in DOCS:
        # the visible text: Quarto's embedded scripts contain "?@" in a regular expression
        html = R._plain((out / f"{doc}.html").read_text(encoding="utf-8"))
        pdf = _pdf_text(out / f"{doc}.pdf")
        for text, where in ((html, "html"), (pdf, "pdf")):
            for leftover in ("?@", "{{<", "??", "@fig-", "@tbl-", "@sec-"):
                assert leftover not in text, (doc, where, leftover)


def test_quarto_numbers_the_appendix_like_the_fallback(quarto_renders) -> None:
    quarto = {r.stem: r for r in quarto_renders["quarto"]}
    fallback = {r.stem: r for r in quarto_renders["fallback"]}
    appendix = quarto["appendix"].html_captions
    for kind, numbers in APPENDIX_FLOATS.items():
        assert [c.split()[1] for c in appendix if c.startswith(kind)] == numbers, kind
    for doc in DOCS:
        assert quarto[doc].html_captions == fallback[doc].html_captions, doc
        assert quarto[doc].pdf_captions == fallback[doc].pdf_captions, doc
        # figures float in the PDF (to the top of the next page where they do not fit), so
        # a table may come before a figure there: each kind keeps its order
        for kind in ("Figure", "Table"):
            pdf = [c for c in quarto[doc].pdf_captions if c.startswith(kind)]
            assert pdf == [c for c in quarto[doc].html_captions if c.startswith(kind)], doc
    # references read "Figure A1" too, never "Figure A 1"
    out = quarto_renders["out"]
    html = R._plain((out / "appendix.html").read_text(encoding="utf-8"))
    pdf = " ".join(_pdf_text(out / "appendix.pdf").split())
    for text in (html, pdf):
        assert not re.search(r"(Figure|Table)\s+A\s+\d", text)
        assert re.search(r"Figure\sA2 on the side-taking vignettes", text)


def _section_numbers(text: str) -> list[str]:
    """Numbers of the section headings on the PDF's lines, e.g. ["1", "1.1", ..., "4.3.1"]."""
    return re.findall(r"(?m)^\s*(\d+(?:\.(?:\d+|[a-z]))+)\s+[A-Z]", text)


def test_quarto_pdf_numbers_sections_and_sets_tables_like_the_fallback(quarto_renders) -> None:
    """Quarto's Typst default numbers subsections 4.3.a; the project asks for 1.1.1, as the
    fallback and HTML print. The table rules of _quarto.yml's header reach Quarto's table
    figures too: a wide table keeps each row's labels on one line (Quarto's justified 11 pt
    cells wrapped "shifted base-/lines" and ran the table over the page number)."""
    out, fallback = quarto_renders["out"], quarto_renders["fallback_out"]
    for doc in DOCS:
        quarto_pdf = _pdf_text(out / f"{doc}.pdf")
        numbers = _section_numbers(quarto_pdf)
        assert numbers and numbers == _section_numbers(_pdf_text(fallback / f"{doc}.pdf")), doc
        assert not [n for n in numbers if re.search(r"[a-z]", n)], doc
    for root in (out, fallback):
        text = " ".join(_pdf_text(root / "appendix.pdf").split())
        assert "shifted baselines 1: 128 groups" in text, root


def _citations(text: str) -> list[str]:
    """Parenthetical author-year citations, e.g. "(Feller and Gelman 2015; McElreath 2016)"."""
    return re.findall(r"\([^()]*?\b\d{4}[a-z]?\)", " ".join(text.split()))


def test_quarto_pdf_cites_author_year_like_the_fallback(quarto_renders) -> None:
    out, fallback = quarto_renders["out"], quarto_renders["fallback_out"]
    for doc in DOCS:
        quarto_pdf = _pdf_text(out / f"{doc}.pdf")
        cites = _citations(quarto_pdf)
        # the same citations (text extraction may order footnotes differently)
        assert sorted(cites) == sorted(_citations(_pdf_text(fallback / f"{doc}.pdf"))), doc
        assert not re.search(r"\[\d{1,2}(, ?\d{1,2})*\]", quarto_pdf), f"{doc}: numbered cites"
    assert "(Feller and Gelman 2015; McElreath 2016; Dorie et al. 2022)" in _citations(
        _pdf_text(out / "paper.pdf")
    )


def test_quarto_documents_have_one_references_heading(quarto_renders) -> None:
    out = quarto_renders["out"]
    for doc in DOCS:
        html = (out / f"{doc}.html").read_text(encoding="utf-8")
        headings = [R._plain(h) for h in re.findall(r"<h[1-6]\b[^>]*>(.*?)</h[1-6]>", html, re.S)]
        assert headings.count("References") == 1, (doc, headings)
        lines = [" ".join(line.split()) for line in _pdf_text(out / f"{doc}.pdf").splitlines()]
        assert lines.count("References") == 1, doc
        assert "Bibliography" not in lines, doc


def test_quarto_prints_the_fixed_date_and_no_creation_date(quarto_renders) -> None:
    out, fallback = quarto_renders["out"], quarto_renders["fallback_out"]
    config = yaml.safe_load((REPO / "manuscript" / "_quarto.yml").read_text())
    date = config["date"]  # yaml reads 2026-11-27 as a date
    printed = f"{date:%B} {date.day}, {date.year}"
    for doc in DOCS:
        for root in (out, fallback):
            assert printed in R._plain((root / f"{doc}.html").read_text(encoding="utf-8"))
            assert printed in " ".join(_pdf_text(root / f"{doc}.pdf").split())
            assert b"/CreationDate" not in (root / f"{doc}.pdf").read_bytes()


def test_two_quarto_renders_are_byte_identical(quarto_renders) -> None:
    first, second = quarto_renders["first"], quarto_renders["second"]
    assert [n for n in OUTPUTS if first[n] != second[n]] == []


def test_quarto_leaves_nothing_untracked(quarto_renders) -> None:
    """Only the committed documents change (Quarto's differ from the fallback's); its cache,
    copied figures and the .gitignore it would write are accounted for."""
    expected = {f" M manuscript/_output/{name}" for name in OUTPUTS}
    changed = set(quarto_renders["status"].splitlines())
    assert changed - expected == set(), "rendering left files that are not committed or ignored"
