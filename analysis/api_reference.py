"""Write ``docs/api.md``, the API reference, from the docstrings of the public names.

Usage::

    python analysis/api_reference.py            # (re)write docs/api.md
    python analysis/api_reference.py --check    # exit 1 if docs/api.md is out of date

Documented: every name of ``hetfx.__all__`` (the front end and the priors), the results
classes of ``hetfx.results.__all__`` with their public methods and properties, and the plots of
``hetfx.plots.__all__``, each section opened by its module's docstring. numpydoc sections
become markdown (parameters as lists, examples as ``pycon`` code); RST roles become code.
``tests/test_api_docs.py`` checks that the committed page is what this script writes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"

#: (section title, module, names: None = the module's ``__all__``)
SECTIONS = [
    ("Fitting", "hetfx.api", ["fit", "fit_ols", "fit_varying_slopes"]),
    ("Priors", "hetfx.priors", ["Prior", "Priors"]),
    ("Errors", "hetfx.validation", ["DesignError"]),
    ("Results", "hetfx.results", None),
    ("Plots", "hetfx.plots", None),
]
ITEM_SECTIONS = {
    "Parameters",
    "Other Parameters",
    "Returns",
    "Yields",
    "Raises",
    "Warns",
    "Attributes",
}
ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|obj|exc):`~?([^`]+)`")


def inline(text: str) -> str:
    """RST inline markup to markdown: roles and double backquotes become code."""
    text = ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)


def _sections(doc: str) -> list[tuple[str | None, list[str]]]:
    """Split a cleaned docstring into (numpydoc section name or None, lines)."""
    lines = doc.splitlines()
    out: list[tuple[str | None, list[str]]] = [(None, [])]
    i = 0
    while i < len(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if lines[i].strip() and re.fullmatch(r"-{3,}", nxt.strip()):
            out.append((lines[i].strip(), []))
            i += 2
            continue
        out[-1][1].append(lines[i])
        i += 1
    return out


def _prose(lines: list[str]) -> list[str]:
    """Paragraphs, literal blocks (``::`` + indent, RST simple tables) and doctest examples."""
    out: list[str] = []
    para: list[str] = []  # ordinary lines, converted together (markup may span lines)

    def flush() -> None:
        if para:
            out.extend(inline("\n".join(para)).split("\n"))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        if not any(
            (
                line.lstrip().startswith(">>>"),
                re.fullmatch(r"=+( +=+)+", line.strip()),
                line.rstrip().endswith("::"),
            )
        ):
            para.append(line)
            i += 1
            continue
        flush()
        if line.lstrip().startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i].strip("\n"))
                i += 1
            indent = min(len(b) - len(b.lstrip()) for b in block)
            out += ["```pycon", *[b[indent:] for b in block], "```", ""]
            continue
        if re.fullmatch(r"=+( +=+)+", line.strip()):  # RST simple table: keep as text
            block = []
            rules = 0
            while i < len(lines) and rules < 3:
                rules += bool(re.fullmatch(r"=+( +=+)+", lines[i].strip()))
                block.append(lines[i])
                i += 1
            out += [*_table(block), ""]
            continue
        if line.rstrip().endswith("::"):
            text = line.rstrip()[:-1].rstrip()
            text = text[:-1] if text.endswith(":") else text
            out.append(inline(text + ":") if text.strip() else "")
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            out += ["", "```text", *[b[indent:] for b in block], "```", ""]
            continue
    flush()
    return out


def _table(block: list[str]) -> list[str]:
    """An RST simple table (rules of ``=``, one header row) as a markdown pipe table; each
    word goes to the column in which it starts (text may run past a rule's end)."""
    rule = next(b for b in block if set(b.strip()) <= {"=", " "})
    starts = [m.start() for m in re.finditer(r"=+", rule)]

    def cells(line: str) -> str:
        words: list[list[str]] = [[] for _ in starts]
        for m in re.finditer(r"\S+", line):
            col = max(j for j, a in enumerate(starts) if a <= m.start() or j == 0)
            words[col].append(m.group())
        return "| " + " | ".join(inline(" ".join(w)) for w in words) + " |"

    rows = [b for b in block if b.strip() and not set(b.strip()) <= {"=", " "}]
    return [cells(rows[0]), "|" + "---|" * len(starts), *[cells(r) for r in rows[1:]]]


def _items(lines: list[str]) -> list[str]:
    """A numpydoc list (``name : type`` then an indented description) as a markdown list."""
    items: list[tuple[str, list[str]]] = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith(" ") and items:
            items[-1][1].append(inline(line.strip()))
            continue
        name, sep, kind = line.strip().partition(" : ")
        if sep:
            head = f"`{name}` ({inline(kind)})"
        elif re.fullmatch(r"\*{0,2}[A-Za-z_][\w, ]*", name):
            head = f"`{name}`"  # a bare name (e.g. several parameters described together)
        else:
            head = f"*{inline(name)}*"  # a bare type (Returns, Raises)
        items.append((head, []))
    return [f"- {head}" + (": " + " ".join(desc) if desc else "") for head, desc in items] + [""]


def docstring_markdown(doc: str | None) -> list[str]:
    """Markdown lines of a numpydoc docstring."""
    if not doc:
        return ["*(no docstring)*", ""]
    out: list[str] = []
    for name, lines in _sections(inspect.cleandoc(doc)):
        if name is not None:
            out += [f"**{name}**", ""]
        out += _items(lines) if name in ITEM_SECTIONS else _prose(lines)
        out.append("")
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n").split("\n") + [""]


def signature(obj, name: str) -> str:
    """``name(arg, ...)``, one parameter a line when long; annotations as written."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        text = p.name
        if p.kind is p.VAR_POSITIONAL:
            text = "*" + text
        elif p.kind is p.VAR_KEYWORD:
            text = "**" + text
        if p.annotation is not p.empty:
            ann = (
                p.annotation
                if isinstance(p.annotation, str)
                else inspect.formatannotation(p.annotation)
            )
            text += f": {ann}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if p.annotation is not p.empty else f"={p.default!r}"
        params.append((p.kind, text))
    parts, star_done = [], False
    for kind, text in params:
        if kind is inspect.Parameter.KEYWORD_ONLY and not star_done:
            parts.append("*")
        if kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_POSITIONAL):
            star_done = True
        parts.append(text)
    one = f"{name}({', '.join(parts)})"
    if len(one) <= 92:
        return one
    return f"{name}(\n" + "".join(f"    {p},\n" for p in parts) + ")"


def _members(cls) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself (not inherited)."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            out.append((name, value))
        elif isinstance(value, classmethod | staticmethod):
            out.append((name, value.__func__))
    return out


def _anchor(heading: str) -> str:
    """GitHub's (and pandoc's gfm) identifier of a heading: lower case, punctuation dropped."""
    return re.sub(r"[^a-z0-9_ -]", "", heading.lower()).strip().replace(" ", "-")


def document(obj, qualname: str) -> list[str]:
    """Markdown of one public function or class (with its members)."""
    lines = [f"### `{qualname}`", ""]
    if inspect.isclass(obj):
        lines += ["```python", "class " + signature(obj, qualname), "```", ""]
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        if bases:
            lines += [f"Subclass of {', '.join(f'`{b}`' for b in bases)}.", ""]
        lines += docstring_markdown(obj.__doc__)
        for name, member in _members(obj):
            if isinstance(member, property):
                lines += [f"#### `{qualname}.{name}` (property)", ""]
                lines += docstring_markdown(member.fget.__doc__)
            else:
                lines += [f"#### `{qualname}.{name}`", ""]
                lines += ["```python", signature(member, f"{name}"), "```", ""]
                lines += docstring_markdown(member.__doc__)
    else:
        lines += ["```python", signature(obj, qualname), "```", ""]
        lines += docstring_markdown(obj.__doc__)
    return lines


def build() -> str:
    """The text of ``docs/api.md``."""
    import hetfx

    public = [n for n in hetfx.__all__ if not n.startswith("_")]
    lines = [
        "# hetfx API reference",
        "",
        "<!-- Generated by `python analysis/api_reference.py` from the docstrings; do not edit."
        " tests/test_api_docs.py checks that it is up to date. -->",
        "",
        inline(inspect.cleandoc(hetfx.__doc__).split("\n\n")[0]),
        "",
        "Top-level names (`hetfx.__all__`): " + ", ".join(f"`hetfx.{n}`" for n in public) + ".",
        "Worked examples: `docs/worked-examples.qmd` (rendered: "
        "`docs/_output/worked-examples.html`).",
        "",
        "## Contents",
        "",
    ]
    body: list[str] = []
    documented: set[str] = set()
    for title, modname, names in SECTIONS:
        module = importlib.import_module(modname)
        names = list(names if names is not None else module.__all__)
        lines.append(
            f"- {title} (`{modname}`): "
            + ", ".join(
                f"[`{_short(modname, n, public)}`](#{_anchor(_short(modname, n, public))})"
                for n in names
            )
        )
        body += [f"## {title}: `{modname}`", "", *docstring_markdown(module.__doc__)]
        for n in names:
            qual = _short(modname, n, public)
            documented.add(n)
            body += document(getattr(module, n), qual)
    missing = [n for n in public if n not in documented]
    if missing:
        raise RuntimeError(f"hetfx.__all__ names not documented by SECTIONS: {missing}")
    text = "\n".join([*lines, "", *body])
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def _short(modname: str, name: str, public: list[str]) -> str:
    return f"hetfx.{name}" if name in public else f"{modname}.{name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = build()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python analysis/api_reference.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
