"""Render the Quarto manuscript to HTML and PDF, with or without the Quarto CLI.

The manuscript is a Quarto project (``_quarto.yml``, ``paper.qmd``, ``appendix.qmd``,
``references.bib``, ``_variables.yml``). Where ``quarto`` is installed, :func:`render` runs
``quarto render``. Where it is not, :func:`render_fallback` reproduces the small subset of
Quarto the manuscript uses with pandoc (the ``pypandoc-binary`` wheel) and Typst (the ``typst``
wheel):

* ``{{< include file >}}`` is expanded as text before parsing (:func:`expand_includes`), since
  included files hold whole tables;
* a Lua filter (by default ``<manuscript>/_filters/hetfx.lua``) expands ``{{< var name >}}``,
  numbers labelled figures, tables and sections and resolves ``@fig-``/``@tbl-``/``@sec-``
  references, failing on undefined names or unknown labels;
* ``--citeproc`` formats citations and the reference list with the project's ``csl`` style
  (author-year), identically in both outputs;
* HTML is standalone and self-contained (images embedded, MathML for math); the PDF is
  pandoc's Typst output compiled by the ``typst`` wheel, with page numbers.

Both routes read the same ``_quarto.yml``: the documents to render (``project.render``), the
output directory (``project.output-dir``), project-wide metadata such as ``date``,
``bibliography``, ``csl`` and ``number-sections``, and the Typst format's
``include-in-header`` text. Both number a document's figures and tables A1, A2, ... when its
front matter says ``hetfx-number-prefix: A`` (real Quarto through the project's filter
``_filters/number-prefix.lua``). :func:`check_outputs` then audits what either route produced.

Rendering is reproducible: the date is fixed in ``_quarto.yml`` and the PDFs carry no creation
date, so unchanged sources give byte-identical HTML and PDF with either route.

Nothing here knows the project layout: functions take the manuscript and output directories.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

FORMATS = ("html", "pdf")
INCLUDE = re.compile(r"\{\{<\s*include\s+(\S+?)\s*>\}\}")
#: Typst set rules of the fallback PDF only: numbering is done by the Lua filter (so that HTML
#: and PDF agree by construction). The rules both routes share (tables, floats, image sizes)
#: are the ``include-in-header`` text of ``_quarto.yml``.
TYPST_HEADER = "#set figure(numbering: none)"
#: Pandoc metadata keys that only Quarto understands; left out of the fallback's metadata.
QUARTO_ONLY = {
    "project",
    "format",
    "embed-resources",
    "keep-typ",
    "html-math-method",
    "filters",
    "citeproc",
    "include-in-header",
    "section-numbering",  # the fallback numbers sections 1.1.1 itself; passed on, it doubles them
}
#: Metadata paths that Quarto resolves against the project directory.
PROJECT_PATHS = ("bibliography", "csl")


class RenderError(RuntimeError):
    """Rendering failed, or a rendered document failed its checks."""


@dataclass(frozen=True)
class Project:
    """What the renderers need from ``_quarto.yml``."""

    root: Path
    documents: tuple[str, ...]
    output_dir: Path
    metadata: dict = field(default_factory=dict)
    formats: dict = field(default_factory=dict)

    @property
    def stems(self) -> tuple[str, ...]:
        """Output file names without extension (``paper``, ``appendix``)."""
        return tuple(Path(d).stem for d in self.documents)


@dataclass
class Rendered:
    """One rendered document: its outputs and (fallback only) the intermediate Typst source."""

    source: Path
    html: Path
    pdf: Path
    typst_source: str | None = None
    seconds: float = 0.0


@dataclass
class CheckReport:
    """What :func:`check_outputs` found in one document's HTML and PDF."""

    stem: str
    html_captions: list[str]
    pdf_captions: list[str] | None
    references: int
    pdf_text_via: str | None


# --------------------------------------------------------------------------------------
# Project and sources
# --------------------------------------------------------------------------------------


def read_project(manuscript_dir: str | Path) -> Project:
    """Read ``_quarto.yml`` of a Quarto project.

    Documents are ``project.render`` if given, else every ``*.qmd`` not starting with ``_``
    (Quarto's rule). The output directory is ``project.output-dir`` (default: the project
    itself). All top-level keys except ``project`` and ``format`` are project-wide metadata.
    """
    root = Path(manuscript_dir).resolve()
    config_path = root / "_quarto.yml"
    if not config_path.exists():
        raise RenderError(f"{config_path} not found: not a Quarto project")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    project = config.get("project") or {}
    documents = project.get("render") or sorted(
        p.name for p in root.glob("*.qmd") if not p.name.startswith("_")
    )
    missing = [d for d in documents if not (root / d).exists()]
    if missing:
        raise RenderError(f"documents listed in {config_path} do not exist: {missing}")
    metadata = {k: v for k, v in config.items() if k not in QUARTO_ONLY}
    return Project(
        root=root,
        documents=tuple(documents),
        output_dir=root / project.get("output-dir", "."),
        metadata=metadata,
        formats=config.get("format") or {},
    )


def expand_includes(text: str, base_dir: Path, _seen: tuple[Path, ...] = ()) -> str:
    """Replace each ``{{< include path >}}`` by that file's text, recursively.

    Paths are relative to the including file's directory. A missing file or a cycle raises
    :class:`RenderError` naming it.
    """

    def include(match: re.Match) -> str:
        path = (base_dir / match.group(1)).resolve()
        if path in _seen:
            raise RenderError(f"include cycle: {' -> '.join(map(str, (*_seen, path)))}")
        if not path.exists():
            raise RenderError(f"{{{{< include {match.group(1)} >}}}}: {path} not found")
        body = path.read_text(encoding="utf-8").rstrip("\n")
        return expand_includes(body, path.parent, (*_seen, path))

    return INCLUDE.sub(include, text)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def quarto_available() -> bool:
    """Whether the Quarto CLI is on ``PATH``."""
    return shutil.which("quarto") is not None


def render(
    manuscript_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    use_quarto: bool | None = None,
    filter_path: str | Path | None = None,
) -> list[Rendered]:
    """Render every document of the project to HTML and PDF.

    Uses ``quarto render`` when ``use_quarto`` is true, or is ``None`` and Quarto is installed;
    otherwise :func:`render_fallback`. ``output_dir`` defaults to the project's ``output-dir``.
    """
    project = read_project(manuscript_dir)
    out = Path(output_dir).resolve() if output_dir else project.output_dir
    if use_quarto is None:
        use_quarto = quarto_available()
    if not use_quarto:
        return render_fallback(project.root, out, filter_path=filter_path)
    command = ["quarto", "render", str(project.root)]
    if out != project.output_dir:
        command += ["--output-dir", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RenderError(f"{' '.join(command)} failed:\n{result.stderr}")
    seconds = time.perf_counter() - start
    for line in result.stderr.splitlines():
        if "WARN" in line:  # e.g. an unresolved cross-reference, which Quarto renders as ?@x
            log.warning("quarto: %s", line.strip())
    return [
        Rendered(project.root / d, out / f"{s}.html", out / f"{s}.pdf", seconds=seconds)
        for d, s in zip(project.documents, project.stems, strict=True)
    ]


def render_fallback(
    manuscript_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    filter_path: str | Path | None = None,
) -> list[Rendered]:
    """Render the project's documents with pandoc and Typst, without Quarto.

    ``filter_path`` defaults to ``<manuscript_dir>/_filters/hetfx.lua``.
    """
    project = read_project(manuscript_dir)
    out = Path(output_dir).resolve() if output_dir else project.output_dir
    lua = Path(filter_path or project.root / "_filters" / "hetfx.lua").resolve()
    if not lua.exists():
        raise RenderError(f"Lua filter {lua} not found")
    out.mkdir(parents=True, exist_ok=True)
    return [render_document(project.root / d, out, project, lua) for d in project.documents]


def header_includes(project: Project, fmt: str) -> list[str]:
    """The ``include-in-header`` texts of format ``fmt`` in ``_quarto.yml``.

    Quarto accepts a file name, ``{text: ...}``, ``{file: ...}`` or a list of them; files are
    relative to the project.
    """
    options = project.formats.get(fmt) or {}
    value = options.get("include-in-header") if isinstance(options, dict) else None
    items = value if isinstance(value, list) else [value] if value else []
    texts = []
    for item in items:
        if isinstance(item, dict) and "text" in item:
            texts.append(str(item["text"]))
        else:
            name = item["file"] if isinstance(item, dict) else item
            path = project.root / str(name)
            if not path.exists():
                raise RenderError(f"include-in-header of format {fmt}: {path} not found")
            texts.append(path.read_text(encoding="utf-8"))
    return texts


def render_document(source: Path, output_dir: Path, project: Project, lua: Path) -> Rendered:
    """Render one ``.qmd`` file to ``<output_dir>/<stem>.html`` and ``.pdf``."""
    start = time.perf_counter()
    text = expand_includes(source.read_text(encoding="utf-8"), source.parent)
    html = output_dir / f"{source.stem}.html"
    pdf = output_dir / f"{source.stem}.pdf"
    _pandoc(text, source, project, lua, "html", ["--embed-resources", "--mathml", "-o", str(html)])
    header = "\n".join([TYPST_HEADER, *header_includes(project, "typst")])
    typst_options = ["-V", "page-numbering=1", "-V", f"header-includes={header}"]
    typst_source = _pandoc(text, source, project, lua, "typst", typst_options)
    _compile_typst(typst_source, source.parent, pdf)
    seconds = time.perf_counter() - start
    log.info("rendered %s in %.1f s", source.name, seconds)
    return Rendered(source, html, pdf, typst_source, seconds)


def _metadata_file(project: Project, fmt: str, directory: Path) -> Path:
    """Project-wide and format-specific metadata, for ``--metadata-file``.

    Document front matter takes precedence over it, as in Quarto. Paths that Quarto resolves
    against the project (bibliography, CSL style, ``_variables.yml``) are made absolute.
    """
    meta = dict(project.metadata)
    fmt_options = project.formats.get(fmt) or {}
    if isinstance(fmt_options, dict):
        meta.update({k: v for k, v in fmt_options.items() if k not in QUARTO_ONLY})
    for key in PROJECT_PATHS:
        value = meta.get(key)
        if isinstance(value, str):
            meta[key] = str(project.root / value)
        elif value:
            meta[key] = [str(project.root / v) for v in value]
    meta["hetfx-variables"] = str(project.root / "_variables.yml")
    path = directory / f"metadata-{fmt}.yml"
    path.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return path


def _pandoc(
    text: str, source: Path, project: Project, lua: Path, fmt: str, extra: list[str]
) -> str:
    """Run pandoc on markdown ``text`` (the expanded ``source``); return its standard output.

    Runs in the document's directory, so that relative image and bibliography paths resolve.
    Fails on a filter error and on citeproc's "citation ... not found" warnings.
    """
    import pypandoc  # imported here: only the fallback needs it

    with tempfile.TemporaryDirectory(prefix="hetfx-render-") as tmp:
        command = [
            pypandoc.get_pandoc_path(),
            "--from=markdown",
            f"--to={fmt}",
            "--standalone",
            f"--metadata-file={_metadata_file(project, fmt, Path(tmp))}",
            f"--lua-filter={lua}",
            "--citeproc",
            f"--resource-path={source.parent}",
            *extra,
        ]
        result = subprocess.run(
            command, input=text, capture_output=True, text=True, cwd=source.parent, encoding="utf-8"
        )
    problems = [
        line for line in result.stderr.splitlines() if "citation" in line and "not found" in line
    ]
    if result.returncode != 0 or problems:
        detail = "\n".join(problems) or result.stderr.split("stack traceback:")[0].strip()
        raise RenderError(f"pandoc ({fmt}) failed on {source.name}:\n{detail}")
    if result.stderr.strip():
        log.warning("pandoc (%s) on %s:\n%s", fmt, source.name, result.stderr.strip())
    return result.stdout


def _compile_typst(typst_source: str, root: Path, pdf: Path) -> None:
    """Compile Typst source to ``pdf``; images resolve relative to ``root``.

    Identical inputs give byte-identical PDFs on any machine (the rendered documents are
    committed and hashed by DVC): only the fonts bundled with the ``typst`` wheel are used,
    never the machine's (a system DejaVu Sans Mono, say, would otherwise replace the bundled
    one), and the creation date is ``SOURCE_DATE_EPOCH`` if set, else 0, where the document
    does not drop it (the manuscript's ``#set document(date: none)``).
    """
    import typst

    compiler = typst.Compiler(root=str(root), ignore_system_fonts=True)
    timestamp = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    try:
        _, warnings = compiler.compile_with_warnings(
            typst_source.encode("utf-8"), output=str(pdf), format="pdf", timestamp=timestamp
        )
    except typst.TypstError as err:
        raise RenderError(f"typst failed on {pdf.name}: {err.message}\n{err.diagnostic}") from err
    for warning in warnings:
        log.warning("typst (%s): %s", pdf.name, warning.message)


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

CAPTION = re.compile(r"^(Figure|Table)\s+([A-Z]?\d+)\s*:")
HTML_CAPTION = re.compile(r"<(figcaption|caption)\b[^>]*>(.*?)</\1>", re.S)
LEFTOVERS = {
    "{{<": "an unexpanded shortcode",
    "?@": "an unresolved cross-reference (Quarto)",
    "??": "an unresolved reference or variable",
    "@fig-": "an unresolved figure reference",
    "@tbl-": "an unresolved table reference",
    "@sec-": "an unresolved section reference",
}


def _plain(html: str) -> str:
    """Visible text of an HTML fragment: tags removed, entities decoded, spaces collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _numbered(captions: list[str]) -> list[str]:
    """``["Figure 1", "Table 1", ...]`` for the captions that start with a number."""
    found = (CAPTION.match(" ".join(c.split())) for c in captions)
    return [f"{m.group(1)} {m.group(2)}" for m in found if m]


def _sequence_problems(labels: list[str], where: str) -> list[str]:
    """Each kind must be numbered 1..n (or A1..An), each number once."""
    problems = []
    for kind in ("Figure", "Table"):
        numbers = [
            int(x.split()[1].lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
            for x in labels
            if x.startswith(kind)
        ]
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{where}: {kind.lower()} captions numbered {numbers}")
    return problems


def pdf_text(pdf: Path) -> tuple[str | None, str | None]:
    """Text of a PDF and the tool that extracted it: ``pypdf`` or ``pdftotext``, else ``None``."""
    try:
        import pypdf
    except ImportError:
        pypdf = None
    if pypdf is not None:
        pages = pypdf.PdfReader(pdf).pages
        return "\n".join(page.extract_text() or "" for page in pages), "pypdf"
    if shutil.which("pdftotext"):
        result = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True)
        if result.returncode == 0:
            return result.stdout.decode("utf-8", "replace"), "pdftotext"
    return None, None


def typst_captions(typst_source: str, root: Path) -> list[str]:
    """Caption texts of all figures and tables in Typst source, via ``typst query``."""
    import typst

    found = json.loads(typst.query(typst_source.encode("utf-8"), "figure", root=str(root)))

    def text(node) -> str:
        if isinstance(node, dict):
            if node.get("func") == "space":
                return " "
            if "text" in node and isinstance(node["text"], str):
                return node["text"]
            return "".join(text(v) for k, v in node.items() if k not in ("func", "label"))
        if isinstance(node, list):
            return "".join(text(v) for v in node)
        return ""

    captions = [(fig.get("caption") or {}).get("body", "") for fig in found]
    return [text(c).replace("\u00a0", " ").strip() for c in captions]


def check_outputs(
    output_dir: str | Path,
    stems: list[str] | tuple[str, ...],
    typst_sources: dict[str, str] | None = None,
    root: str | Path | None = None,
) -> list[CheckReport]:
    """Audit rendered documents; raise :class:`RenderError` listing every problem found.

    For each ``stem``: ``<stem>.html`` and ``<stem>.pdf`` exist and are not empty; the HTML's
    visible text has no ``{{<``, ``??`` or ``@fig-``/``@tbl-``/``@sec-`` left; its figure and
    table captions are numbered 1..n with each number once; every internal link points to an
    existing id. The PDF is a PDF, and its text (``pypdf`` or ``pdftotext``, else the captions
    of the Typst source in ``typst_sources[stem]`` via ``typst query``, with ``root`` for
    images) has the same numbered captions as the HTML and no leftovers.
    """
    out = Path(output_dir)
    problems: list[str] = []
    reports = []
    for stem in stems:
        html_path, pdf_path = out / f"{stem}.html", out / f"{stem}.pdf"
        missing = [p.name for p in (html_path, pdf_path) if not p.exists() or not p.stat().st_size]
        if missing:
            problems.append(f"{stem}: missing or empty output {missing}")
            continue
        html = html_path.read_text(encoding="utf-8")
        text = _plain(html)
        # "{{< var x >}}" looks like a tag to _plain, so look for shortcodes in the raw HTML too
        text += " {{<" if "{{<" in html or "{{&lt;" in html else ""
        problems += [f"{stem}.html: {why} ({s!r})" for s, why in LEFTOVERS.items() if s in text]
        captions = _numbered([_plain(m.group(2)) for m in HTML_CAPTION.finditer(html)])
        problems += _sequence_problems(captions, f"{stem}.html")
        ids = set(re.findall(r'\bid="([^"]+)"', html))
        dangling = sorted({h for h in re.findall(r'href="#([^"]+)"', html) if h not in ids})
        if dangling:
            problems.append(f"{stem}.html: links to missing ids {dangling}")
        references = len(re.findall(r'\bid="ref-', html))

        is_pdf = pdf_path.read_bytes().startswith(b"%PDF")
        if not is_pdf:
            problems.append(f"{stem}.pdf: not a PDF")
        pdf_captions = None
        body, via = pdf_text(pdf_path) if is_pdf else (None, None)
        if body is not None:
            lines = [" ".join(line.split()) for line in body.splitlines()]
            pdf_captions = _numbered(lines)
            problems += [f"{stem}.pdf: {why} ({s!r})" for s, why in LEFTOVERS.items() if s in body]
        elif typst_sources and stem in typst_sources:
            via = "typst query"
            pdf_captions = _numbered(typst_captions(typst_sources[stem], Path(root or out)))
        if pdf_captions is not None:
            problems += _sequence_problems(pdf_captions, f"{stem}.pdf")
            if sorted(pdf_captions) != sorted(captions):
                problems.append(f"{stem}.pdf: captions {pdf_captions} differ from HTML {captions}")
        reports.append(CheckReport(stem, captions, pdf_captions, references, via))
    if problems:
        raise RenderError("rendered documents failed their checks:\n  " + "\n  ".join(problems))
    return reports
