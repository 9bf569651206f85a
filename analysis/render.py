"""Stage `render`: manuscript sources -> manuscript/_output/{paper,appendix}.{html,pdf}.

Usage::

    python analysis/render.py manuscript              # quarto if installed, else the fallback
    python analysis/render.py manuscript --fallback   # pandoc + typst even if quarto exists

Renders every document listed in ``<manuscript>/_quarto.yml`` to the project's output-dir
(or ``--output-dir``) and then checks the outputs (:func:`hetfx.paper.render.check_outputs`):
numbered captions, no unresolved references or shortcodes, a PDF with the same captions.
Unchanged sources render to byte-identical documents (the date is fixed in ``_quarto.yml``);
the committed documents are the fallback's, whose pandoc and typst are pinned in ``uv.lock``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hetfx.paper.render import RenderError, check_outputs, quarto_available, read_project, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manuscript", help="the Quarto project directory (has _quarto.yml)")
    parser.add_argument("--output-dir", help="default: the project's output-dir")
    parser.add_argument(
        "--fallback", action="store_true", help="use pandoc + typst even if quarto is installed"
    )
    parser.add_argument("--no-check", action="store_true", help="skip the output checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    print(f"render: start-up: {time.process_time():.2f} s CPU")  # Python and the imports
    use_quarto = quarto_available() and not args.fallback
    route = "quarto render" if use_quarto else "pandoc + typst fallback (no quarto on PATH)"
    print(f"render: {route}")
    start = time.perf_counter()
    try:
        rendered = render(args.manuscript, args.output_dir, use_quarto=use_quarto)
        for doc in rendered:
            print(f"  {doc.html}\n  {doc.pdf}")
        if not args.no_check:
            project = read_project(args.manuscript)
            sources = {d.source.stem: d.typst_source for d in rendered if d.typst_source}
            out = rendered[0].html.parent if rendered else project.output_dir
            for report in check_outputs(out, project.stems, sources, root=project.root):
                print(
                    f"  check {report.stem}: captions {report.html_captions}, "
                    f"{report.references} references, PDF checked via "
                    f"{report.pdf_text_via or 'nothing (install pypdf to read its text)'}"
                )
    except RenderError as err:
        print(f"render failed: {err}", file=sys.stderr)
        return 1
    print(f"render: done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
