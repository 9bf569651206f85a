"""Stage `examples`: execute the worked examples and render them (knitr-style, no Jupyter).

Usage::

    python analysis/examples.py                      # docs/worked-examples.qmd -> docs/_output
    python analysis/examples.py --fallback           # pandoc + typst even if quarto exists
    python analysis/examples.py --no-render          # execute and write the markdown only

The document is Quarto markdown: prose and ```` ```{python} ```` blocks, with the cell options
``#| label: fig-x``, ``#| fig-cap: ...``, ``#| fig-width: 6``, ``#| fig-height: 4`` and
``#| echo: false``. Each block runs in order in one namespace, in the document's directory (as
Quarto runs it). What it prints, the warnings raised from its own lines (e.g. hetfx's report of
dropped rows) and, as in Jupyter, the value of its last line (a table's text, or a plotnine
plot saved as a PNG) are written after it into ``<output-dir>/<stem>.md``, figures into
``<output-dir>/figures/``. The markdown is then rendered to HTML and PDF with the project's
renderer (:mod:`hetfx.paper.render`: ``quarto render`` where installed and ``--fallback`` is
not given, else pandoc + typst) and checked by :func:`hetfx.paper.render.check_outputs`.

Output is deterministic: the document seeds every random draw, figures carry no timestamp,
and run times printed by a fit's summary are masked (:data:`MASKS`), so a rerun of unchanged
sources changes no byte (on the same machine: floating point differs between CPUs).
"""

from __future__ import annotations

import os

# one BLAS thread, before numpy is imported: the stage writes the same bytes whether or not
# it runs under make (which sets this too)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import ast
import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "worked-examples.qmd"
OUTPUT_DIR = ROOT / "docs" / "_output"
LUA_FILTER = ROOT / "manuscript" / "_filters" / "hetfx.lua"
FIGURE_DPI = 150
log = logging.getLogger("examples")

BLOCK = re.compile(r"^```\{python\}[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
#: Printed run times (the diagnostics line of ``Results.summary()``) are replaced, so that
#: reruns give the same bytes.
MASKS = [
    (re.compile(r"(divergences \d+, )\d+(?:\.\d+)? s\b"), r"\1(time masked) s"),
    (re.compile(r"(\w, )\d+(?:\.\d+)? s(; gate )"), r"\1(time masked) s\2"),
]
#: Front-matter keys that only direct execution by Quarto needs (the executed markdown is
#: rendered, not run again).
EXECUTION_KEYS = ("jupyter", "execute", "engine")


class ExampleError(RuntimeError):
    """A code block of the document failed (the message names the block and its line)."""


@dataclass
class Block:
    """One ```` ```{python} ```` block: its code (options removed) and its cell options."""

    code: str
    options: dict
    line: int  # line of the document where the code starts


@dataclass
class Executed:
    """What a block produced."""

    block: Block
    output: str = ""
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def parse(text: str) -> tuple[dict, list[str | Block]]:
    """Front matter and the document's parts in order: prose (str) and code (:class:`Block`)."""
    front = {}
    m = FRONT.match(text)
    if m:
        front = yaml.safe_load(m.group(1)) or {}
    body_start = m.end() if m else 0
    parts: list[str | Block] = []
    pos = body_start
    for b in BLOCK.finditer(text, body_start):
        parts.append(text[pos : b.start()])
        lines = b.group(1).splitlines()
        opts = [ln for ln in lines if ln.startswith("#|")]
        code = "\n".join(ln for ln in lines if not ln.startswith("#|")).strip("\n")
        options = yaml.safe_load("\n".join(ln[2:].strip() for ln in opts)) or {} if opts else {}
        line = text.count("\n", 0, b.start()) + 2 + len(opts)
        parts.append(Block(code, options, line))
        pos = b.end()
    parts.append(text[pos:])
    return front, parts


def _is_plot(value) -> bool:
    try:
        from plotnine import ggplot
        from plotnine.composition import Compose
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, ggplot | Compose)


def _save_figure(plot, path: Path, width: float, height: float) -> None:
    """PNG without a timestamp (byte-identical on reruns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot.save(
        path, width=width, height=height, dpi=FIGURE_DPI, verbose=False, metadata={"Software": None}
    )


def execute(
    parts: list[str | Block],
    figure_dir: Path,
    *,
    workdir: Path,
    name: str = "document",
    namespace: dict | None = None,
) -> list[Executed]:
    """Run every block in one namespace, in ``workdir``; return what each produced.

    A block's last line, if an expression, is evaluated apart (as in Jupyter): a plotnine plot
    is saved to ``figure_dir`` (``<label>.png``, or ``<name>-<k>.png``), any other value other
    than None is printed. Raises :class:`ExampleError` if a block fails. ``namespace`` (default:
    a new one) receives the document's variables, so that tests can check what it claims.
    """
    namespace = {} if namespace is None else namespace
    namespace.setdefault("__name__", "__main__")
    results = []
    figure_no = 0
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        for k, block in enumerate(p for p in parts if isinstance(p, Block)):
            filename = f"<{name} block {k + 1}, line {block.line}>"
            tree = ast.parse(block.code, filename=filename)
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            out, err = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            with (
                warnings.catch_warnings(record=True) as caught,
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                warnings.simplefilter("always")
                try:
                    exec(compile(tree, filename, "exec"), namespace)
                    value = eval(compile(last, filename, "eval"), namespace) if last else None
                except Exception as exc:
                    raise ExampleError(
                        f"{filename} failed: {type(exc).__name__}: {exc}\n--- code ---\n"
                        f"{block.code}"
                    ) from exc
                shown = None
                if _is_plot(value):
                    figure_no += 1
                    label = str(block.options.get("label") or f"{name}-{figure_no}")
                    path = figure_dir / f"{label}.png"
                    _save_figure(
                        value,
                        path,
                        float(block.options.get("fig-width", 6)),
                        float(block.options.get("fig-height", 4)),
                    )
                elif value is not None:
                    shown = repr(value)
            ex = Executed(block, seconds=time.perf_counter() - start)
            ex.output = out.getvalue() + (shown + "\n" if shown else "")
            for mask, repl in MASKS:
                ex.output = mask.sub(repl, ex.output)
            if _is_plot(value):
                ex.figures.append(path)
            for w in caught:  # the block's own warnings; the libraries' go to the log
                if w.filename == filename:
                    ex.warnings.append(f"{w.category.__name__}: {w.message}")
                else:
                    log.debug("warning in %s: %s", w.filename, w.message)
            if err.getvalue().strip():
                log.info("%s wrote to stderr:\n%s", filename, err.getvalue().rstrip())
            results.append(ex)
            log.info("%s: %.1f s", filename, ex.seconds)
    finally:
        os.chdir(cwd)
    return results


def to_markdown(front: dict, parts: list[str | Block], executed: list[Executed], base: Path) -> str:
    """The executed document: prose, code, its output and figures (paths relative to
    ``base``)."""
    meta = {k: v for k, v in front.items() if k not in EXECUTION_KEYS}
    chunks = ["---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"]
    it = iter(executed)
    for part in parts:
        if isinstance(part, str):
            chunks.append(part)
            continue
        ex = next(it)
        text = []
        if part.options.get("echo", True):
            text.append(f"```python\n{part.code}\n```\n")
        body = "".join(f"{w}\n" for w in ex.warnings) + ex.output
        if body.strip():
            text.append(f"``` {{.output}}\n{body.rstrip()}\n```\n")
        for fig in ex.figures:
            cap = part.options.get("fig-cap", "")
            label = part.options.get("label")
            attr = f"{{#{label}}}" if label and str(label).startswith("fig-") else ""
            text.append(f"![{cap}]({fig.relative_to(base).as_posix()}){attr}\n")
        chunks.append("\n".join(text))
    return "".join(chunks)


def run_document(
    document: Path = DOCUMENT, output_dir: Path = OUTPUT_DIR, namespace: dict | None = None
) -> tuple[Path, list[Executed]]:
    """Execute ``document`` and write ``<output_dir>/<stem>.md`` (figures under
    ``figures/``); return its path and the blocks' results (variables into ``namespace``)."""
    document, output_dir = Path(document).resolve(), Path(output_dir).resolve()
    front, parts = parse(document.read_text(encoding="utf-8"))
    figures = output_dir / "figures"
    if figures.exists():  # no stale figures of removed blocks
        shutil.rmtree(figures)
    executed = execute(
        parts, figures, workdir=document.parent, name=document.stem, namespace=namespace
    )
    md = output_dir / f"{document.stem}.md"
    md.write_text(to_markdown(front, parts, executed, output_dir), encoding="utf-8")
    return md, executed


def render_markdown(md: Path, *, use_quarto: bool) -> list[Path]:
    """Render the executed markdown to HTML and PDF next to it; check the outputs."""
    from hetfx.paper import render as R

    out = md.parent
    if use_quarto:
        for fmt in ("html", "typst"):
            done = subprocess.run(
                ["quarto", "render", md.name, "--to", fmt], cwd=out, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise R.RenderError(f"quarto render {md.name} --to {fmt} failed:\n{done.stderr}")
        sources = {}
    else:
        project = R.Project(
            root=out,
            documents=(md.name,),
            output_dir=out,
            formats={"typst": {"include-in-header": {"text": "#set document(date: none)"}}},
        )
        doc = R.render_document(md, out, project, LUA_FILTER)
        sources = {md.stem: doc.typst_source}
    R.check_outputs(out, [md.stem], sources, root=out)
    return [out / f"{md.stem}.html", out / f"{md.stem}.pdf"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("document", nargs="?", default=str(DOCUMENT))
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR))
    parser.add_argument("--fallback", action="store_true", help="pandoc + typst, not quarto")
    parser.add_argument("--no-render", action="store_true", help="write the markdown only")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        md, executed = run_document(Path(args.document), Path(args.output_dir))
    except ExampleError as err:
        print(f"examples failed: {err}", file=sys.stderr)
        return 1
    print(
        f"examples: {len(executed)} blocks executed in {time.perf_counter() - start:.1f} s "
        f"({time.process_time() - cpu:.1f} s CPU) -> {md}"
    )
    if not args.no_render:
        from hetfx.paper.render import RenderError, quarto_available

        use_quarto = quarto_available() and not args.fallback
        t = time.perf_counter()
        try:
            paths = render_markdown(md, use_quarto=use_quarto)
        except RenderError as err:
            print(f"examples: render failed: {err}", file=sys.stderr)
            return 1
        route = "quarto" if use_quarto else "pandoc + typst"
        print(f"examples: rendered ({route}) in {time.perf_counter() - t:.1f} s: {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
