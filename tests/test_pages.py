"""Page layout of the rendered PDFs, read from their text positions with pdfplumber.

For the committed documents (the pandoc + typst fallback, ``manuscript/_output``) and, where
Quarto is on ``PATH``, for a fresh Quarto render of the same sources:

* every caption shares a page with its body: a table's caption (above it) with at least its
  header and one row, a figure's caption (below it) with its image;
* a table that continues on the next page repeats its header row there;
* no page is more than :data:`MAX_BLANK` blank at the bottom when the next page starts with a
  float (a figure, a table or a table's continuation);
* no table cell wraps an interval (``0.14 [0.06,`` / ``0.23]``) or a reference
  (``Figure`` / ``1``);
* every image prints at its natural size (300 dpi), never shrunk, so that figure text prints at
  the size :mod:`hetfx.paper.figures` draws it (at least 7 pt, checked in test_figures.py).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT

pdfplumber = pytest.importorskip("pdfplumber")

MANUSCRIPT = ROOT / "manuscript"
DOCUMENTS = ("paper", "appendix")
#: Largest blank share of the text area at the bottom of a page followed by a float.
MAX_BLANK = 0.40
#: Text below this size is table text (tables are set in 8 pt, the body in 11 pt).
TABLE_PT = 9.5
#: Resolution at which hetfx.plots.save writes figures.
DPI = 300
CAPTION = re.compile(r"^(Figure|Table)\s+[A-Z]?\d+:")
REFERENCE_WORD = re.compile(r"^(Figures?|Tables?|§)$")


# --------------------------------------------------------------------------------------
# Reading a PDF
# --------------------------------------------------------------------------------------


def _lines(page, small: bool) -> list[dict]:
    """Text lines of table text (``small``) or of body text, top to bottom."""
    part = page.filter(
        lambda o: o.get("object_type") != "char" or ((o.get("size", 0) < TABLE_PT) == small)
    )
    return part.extract_text_lines(layout=False, strip=True, return_chars=False)


def _text_area(page) -> tuple[float, float]:
    """Top and bottom of the text area: the extent of the page's content, page number excluded.

    The page number is the lowest line, centred, and alone at its height; the area is taken to
    be the margins the typst templates use (1.25 in), which every page's content respects.
    """
    return 90.0, page.height - 90.0


def _content_bottom(page) -> float:
    _, bottom = _text_area(page)
    tops = [c["bottom"] for c in page.chars if c["bottom"] <= bottom + 2]
    tops += [im["bottom"] for im in page.images]
    return max(tops, default=_text_area(page)[0])


def _first_is_float(page) -> bool:
    """Whether the page's topmost content is an image, a caption or table text."""
    top, bottom = _text_area(page)
    body = [ln for ln in _lines(page, small=False) if ln["top"] < bottom]
    table = [ln for ln in _lines(page, small=True) if ln["top"] < bottom]
    first_body = min((ln["top"] for ln in body), default=float("inf"))
    first_table = min((ln["top"] for ln in table), default=float("inf"))
    first_image = min((im["top"] for im in page.images), default=float("inf"))
    caption_first = any(CAPTION.match(ln["text"]) and ln["top"] <= first_body for ln in body)
    return caption_first or min(first_table, first_image) < first_body


# --------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------


def caption_problems(pdf) -> list[str]:
    """Captions on a page without their table's first rows or their figure's image."""
    problems = []
    for number, page in enumerate(pdf.pages, start=1):
        body = _lines(page, small=False)
        table_tops = sorted({round(ln["top"]) for ln in _lines(page, small=True)})
        for k, line in enumerate(body):
            match = CAPTION.match(line["text"])
            if not match:
                continue
            if match.group(1) == "Table":
                # the caption's last line: body lines that follow it closely
                end = line["bottom"]
                for nxt in body[k + 1 :]:
                    if nxt["top"] - end > 6 or CAPTION.match(nxt["text"]):
                        break
                    end = nxt["bottom"]
                rows = [t for t in table_tops if t > end]
                if len(rows) < 2:
                    problems.append(f"p. {number}: {match.group(0)} without its header and a row")
            else:
                above = [im for im in page.images if im["bottom"] <= line["top"] + 2]
                if not above:
                    problems.append(f"p. {number}: {match.group(0)} without its image")
    return problems


def blank_problems(pdf, max_blank: float = MAX_BLANK) -> list[str]:
    """Pages more than ``max_blank`` blank at the bottom before a page that starts with a float."""
    problems = []
    pages = pdf.pages
    for number, (page, following) in enumerate(zip(pages, pages[1:], strict=False), start=1):
        top, bottom = _text_area(page)
        blank = (bottom - _content_bottom(page)) / (bottom - top)
        if blank > max_blank and _first_is_float(following):
            problems.append(f"p. {number}: {blank:.0%} blank before a float on p. {number + 1}")
    return problems


def header_problems(pdf) -> list[str]:
    """Pages that continue a table (start with table text) without repeating its header row.

    A table's header is its first line of table text after its caption.
    """
    problems, header, expect_header = [], None, False
    for number, page in enumerate(pdf.pages, start=1):
        body = [(ln["top"], False, ln["text"]) for ln in _lines(page, small=False)]
        small = [(ln["top"], True, ln["text"]) for ln in _lines(page, small=True)]
        lines = sorted(ln for ln in body + small if ln[0] < _text_area(page)[1])
        if lines and lines[0][1] and not expect_header and header is not None:
            if lines[0][2] != header:
                problems.append(f"p. {number}: a table continues without its header {header!r}")
        for _, is_table, text in lines:
            if not is_table and CAPTION.match(text):
                expect_header = text.startswith("Table")
            elif is_table and expect_header:
                header, expect_header = text, False
    return problems


def wrap_problems(pdf) -> list[str]:
    """Table cells that wrap inside an interval or between ``Figure`` and its number.

    An interval is wrapped where a line of table text holds an unmatched bracket (or brackets
    nested, two cells' halves side by side); a reference where the word ``Figure``, ``Table``
    or ``§`` has no word right after it on its line.
    """
    problems = []
    for number, page in enumerate(pdf.pages, start=1):
        for line in _lines(page, small=True):
            text = line["text"]
            depth, broken = 0, False
            for ch in text:
                depth += (ch == "[") - (ch == "]")
                broken |= depth < 0 or depth > 1
            if broken or depth != 0:
                problems.append(f"p. {number}: interval wrapped in a cell: {text!r}")
        small = page.filter(lambda o: o.get("object_type") != "char" or o["size"] < TABLE_PT)
        words = small.extract_words()
        for w in words:
            if not REFERENCE_WORD.match(w["text"]):
                continue
            follows = [
                v for v in words if abs(v["top"] - w["top"]) < 1 and 0 <= v["x0"] - w["x1"] <= 4.5
            ]
            if not follows:
                problems.append(f"p. {number}: reference wrapped in a cell after {w['text']!r}")
    return problems


def scale_problems(pdf, dpi: int = DPI) -> list[str]:
    """Images placed smaller than their natural size (their text would print smaller)."""
    problems = []
    for number, page in enumerate(pdf.pages, start=1):
        for image in page.images:
            natural = image["srcsize"][0] / dpi * 72
            placed = image["x1"] - image["x0"]
            if placed < 0.99 * natural:
                problems.append(
                    f"p. {number}: an image {natural / 72:.2f} in wide printed at "
                    f"{placed / 72:.2f} in ({placed / natural:.0%}): draw it at most as wide "
                    "as the text"
                )
    return problems


def page_problems(pdf_path: Path) -> list[str]:
    """All layout problems of one PDF."""
    with pdfplumber.open(pdf_path) as pdf:
        return (
            caption_problems(pdf)
            + header_problems(pdf)
            + blank_problems(pdf)
            + wrap_problems(pdf)
            + scale_problems(pdf)
        )


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quarto_output(tmp_path_factory):
    """The manuscript rendered by real Quarto, in a copy of manuscript/ (never the repo's)."""
    from hetfx.paper.render import quarto_available, render

    if not quarto_available():
        pytest.skip("quarto is not on PATH")
    copy = tmp_path_factory.mktemp("quarto-pages") / "manuscript"
    shutil.copytree(MANUSCRIPT, copy, ignore=shutil.ignore_patterns("_output", ".quarto"))
    render(copy, use_quarto=True)
    return copy / "_output"


@pytest.mark.parametrize("stem", DOCUMENTS)
def test_fallback_pages(stem):
    pdf = MANUSCRIPT / "_output" / f"{stem}.pdf"
    if not pdf.exists():
        pytest.skip(f"{pdf} not rendered (dvc repro render)")
    assert page_problems(pdf) == []


@pytest.mark.parametrize("stem", DOCUMENTS)
def test_quarto_pages(quarto_output, stem):
    assert page_problems(quarto_output / f"{stem}.pdf") == []


def _pdf(tmp_path, typst_source: str) -> Path:
    typst = pytest.importorskip("typst")
    path = tmp_path / "doc.pdf"
    typst.compile(typst_source.encode("utf-8"), output=str(path))
    return path


#: A page and tables as the manuscript sets them: body 11 pt, tables 8 pt.
PAGE = (
    '#set page(paper: "us-letter", margin: 1.25in)\n#set text(size: 11pt)\n'
    "#show table: set text(size: 8pt)\n"
)
TABLE = "#table(columns: 2, table.header([A], [B]), {rows})\n"


def _rows(n: int, cell: str = "0.14 [0.06, 0.23]") -> str:
    return ", ".join(f"[{cell}], [x]" for _ in range(n))


def test_checks_find_a_caption_apart_from_its_table(tmp_path):
    apart = PAGE + "#lorem(200)\n\nTable 1: A table\n#pagebreak()\n" + TABLE.format(rows=_rows(3))
    with pdfplumber.open(_pdf(tmp_path, apart)) as pdf:
        assert caption_problems(pdf) == ["p. 1: Table 1: without its header and a row"]
    together = PAGE + "#lorem(200)\n\nTable 1: A table\n" + TABLE.format(rows=_rows(3))
    with pdfplumber.open(_pdf(tmp_path, together)) as pdf:
        assert caption_problems(pdf) == []


def test_checks_find_a_blank_page_before_a_float(tmp_path):
    before_table = PAGE + "#lorem(100)\n#pagebreak()\n" + TABLE.format(rows=_rows(3))
    with pdfplumber.open(_pdf(tmp_path, before_table)) as pdf:
        problems = blank_problems(pdf)
        assert len(problems) == 1 and problems[0].startswith("p. 1:")
    before_text = PAGE + "#lorem(100)\n#pagebreak()\n#lorem(100)\n"
    with pdfplumber.open(_pdf(tmp_path, before_text)) as pdf:
        assert blank_problems(pdf) == []


def test_checks_find_a_table_continued_without_its_header(tmp_path):
    rows = _rows(60, "0.1")
    repeated = PAGE + "Table 1: A table\n" + TABLE.format(rows=rows)
    with pdfplumber.open(_pdf(tmp_path, repeated)) as pdf:
        assert len(pdf.pages) == 2 and header_problems(pdf) == []
    bare = repeated.replace("table.header([A], [B])", "[A], [B]")
    with pdfplumber.open(_pdf(tmp_path, bare)) as pdf:
        assert header_problems(pdf) == ["p. 2: a table continues without its header 'A B'"]


def test_checks_find_a_wrapped_interval(tmp_path):
    narrow = TABLE.replace("columns: 2", "columns: (1.4cm, 1fr)")
    source = PAGE + narrow.format(rows=_rows(2))
    with pdfplumber.open(_pdf(tmp_path, source)) as pdf:
        assert any("interval wrapped" in p for p in wrap_problems(pdf))
    narrow = TABLE.replace("columns: 2", "columns: (1.5cm, 1fr)")  # "§3, Figure" fits, not "1"
    reference = PAGE + narrow.format(rows=_rows(2, "§3, Figure 1"))
    with pdfplumber.open(_pdf(tmp_path, reference)) as pdf:
        assert any("reference wrapped" in p for p in wrap_problems(pdf))
    wide = PAGE + TABLE.format(rows=_rows(2, "0.14~[0.06,~0.23]"))
    with pdfplumber.open(_pdf(tmp_path, wide)) as pdf:
        assert wrap_problems(pdf) == []


def test_checks_find_a_shrunk_image(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    pil.new("RGB", (2700, 300), "white").save(tmp_path / "wide.png", dpi=(DPI, DPI))
    pil.new("RGB", (1500, 300), "white").save(tmp_path / "narrow.png", dpi=(DPI, DPI))
    typst = pytest.importorskip("typst")
    for name, expected in (("wide", 1), ("narrow", 0)):
        source = PAGE + f'#image("{name}.png")\n'
        path = tmp_path / f"{name}.pdf"
        typst.compile(source.encode(), output=str(path), root=str(tmp_path))
        with pdfplumber.open(path) as pdf:
            assert len(scale_problems(pdf)) == expected


def test_quarto_html_shows_each_numbers_source(quarto_output):
    """As tests/test_provenance.py checks for the fallback's HTML: each quoted number sits in
    a span whose title is its source (_filters/provenance.lua)."""
    from test_provenance import SPAN, hover_problems, quoted

    entries = json.loads((MANUSCRIPT / "_provenance.json").read_text("utf-8"))
    for stem, names in quoted(MANUSCRIPT).items():
        page = (quarto_output / f"{stem}.html").read_text("utf-8")
        assert len(SPAN.findall(page)) >= len(names) > 0
        assert hover_problems(page, names, entries) == [], stem
