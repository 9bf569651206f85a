"""Compare rebuilt outputs with the committed ones, cell by cell (``make verify``).

A replication package promises that a rerun gives the committed results. This module checks
that promise for two kinds of artifact, given as text (the caller reads the files, e.g. the
committed version with ``git show HEAD:path``):

* **CSV tables** (results and cleaning summaries): every cell is classified as

  - ``identical``: the same text, or the same number (``0.5`` and ``0.50``; both missing);
  - ``within``: numbers that differ by no more than the file's and column's stated tolerance
    (:data:`TOLERANCES`; mixed absolute/relative: ``|a - b| <= tol * max(1, |a|, |b|)``);
  - ``ignored``: a column that measures the run, not the result (``wall_seconds``), counted
    from the committed version and left out of the header comparison: the stages no longer
    commit run times (they write them to the git-ignored ``timings/``), so a file that has
    lost such a column against an older commit is not a difference;
  - ``different``: anything else, including a changed shape, header or text cell.

* **Quoted numbers** (``manuscript/_variables.yml``): each entry is the string the manuscript
  prints, so it is ``identical`` only as the same string at its printed precision, otherwise
  ``different``; an entry added or removed is ``different`` too.

:func:`compare_csv` and :func:`compare_variables` return a :class:`FileReport` each;
:func:`format_reports` prints the table of counts per file and the worst cells.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml

from hetfx.paper.precision import TOLERANCES, Rule, format_number, tolerance_for

__all__ = [
    "CLASSES",
    "TOLERANCES",
    "CellDifference",
    "FileReport",
    "Rule",
    "compare_csv",
    "compare_variables",
    "format_reports",
    "format_number",
    "tolerance_for",
]

CLASSES = ("identical", "within", "ignored", "different")


@dataclass(frozen=True)
class CellDifference:
    """One compared cell that is not identical."""

    where: str  # "row 3, column q975" or a variable's name
    committed: str
    current: str
    abs_diff: float  # nan for text or structure
    tol: float | None
    status: str


@dataclass
class FileReport:
    """Counts of each class for one file and its non-identical cells."""

    path: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    cells: list[CellDifference] = field(default_factory=list)
    note: str = ""

    @property
    def different(self) -> int:
        return self.counts["different"]

    def add(self, status: str, cell: CellDifference | None = None) -> None:
        self.counts[status] += 1
        if cell is not None and status in ("within", "different"):
            self.cells.append(cell)

    def worst(self, n: int = 3) -> list[CellDifference]:
        """The ``n`` largest differences, real differences first."""

        def key(c: CellDifference):
            d = c.abs_diff
            return (c.status != "different", -(math.inf if math.isnan(d) else d))

        return sorted(self.cells, key=key)[:n]


def _number(text: str) -> float | None:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "none", "null"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _classify(a: str, b: str, tol: float | None) -> tuple[str, float]:
    """Class of committed ``a`` vs current ``b`` under tolerance ``tol``."""
    if tol is None:
        return "ignored", math.nan
    if a == b:
        return "identical", 0.0
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return "different", math.nan
    if math.isnan(x) or math.isnan(y):
        return ("identical", 0.0) if math.isnan(x) and math.isnan(y) else ("different", math.nan)
    diff = abs(x - y)
    if diff == 0:
        return "identical", 0.0
    # a few ulps of slack: the difference of two parsed decimals is itself rounded (2.789e-6
    # - 2.788e-6 is 1.0000000000004e-9), and one unit of a number's last written digit
    # (hetfx.paper.verify.format_number) may equal the tolerance exactly
    slack = 4 * math.ulp(max(abs(x), abs(y)))
    return ("within" if diff <= tol * max(1.0, abs(x), abs(y)) + slack else "different"), diff


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _without_ignored(
    path: str, rows: list[list[str]], rules: Sequence[Rule]
) -> tuple[list[list[str]], int]:
    """``rows`` without the columns whose rule ignores them (run times), and how many cells
    that drops: a file that gains or loses such a column keeps the same header."""
    if not rows:
        return rows, 0
    keep = [j for j, col in enumerate(rows[0]) if tolerance_for(path, col, rules).tol is not None]
    dropped = sum(len(row) - sum(j < len(row) for j in keep) for row in rows[1:])
    return [[row[j] for j in keep if j < len(row)] for row in rows], dropped


def compare_csv(
    path: str, committed: str, current: str | None, rules: Sequence[Rule] = TOLERANCES
) -> FileReport:
    """Compare two versions of the CSV file ``path`` cell by cell.

    Parameters
    ----------
    path : str
        The file's path relative to the project root (selects the tolerances).
    committed, current : str
        The two versions' text; ``current=None`` if the file no longer exists.
    rules : sequence of Rule
        Tolerances (default :data:`TOLERANCES`).
    """
    report = FileReport(path)
    if current is None:
        report.note = "missing in the working tree"
        report.add(
            "different", CellDifference("file", "present", "missing", math.nan, None, "different")
        )
        return report
    # ignored columns (run times) are counted, not compared: older commits have them in
    # diagnostics.csv, the stages now write them to the git-ignored timings/
    old, ignored = _without_ignored(path, _rows(committed), rules)
    new, _ = _without_ignored(path, _rows(current), rules)
    report.counts["ignored"] += ignored
    if not old or not new or old[0] != new[0]:
        report.note = "header changed"
        report.add(
            "different",
            CellDifference(
                "header",
                ",".join(old[0] if old else []),
                ",".join(new[0] if new else []),
                math.nan,
                None,
                "different",
            ),
        )
        return report
    header = old[0]
    if len(old) != len(new):
        report.note = f"{len(old) - 1} rows committed, {len(new) - 1} now"
        report.add(
            "different",
            CellDifference(
                "rows", str(len(old) - 1), str(len(new) - 1), math.nan, None, "different"
            ),
        )
    tolerances = [tolerance_for(path, col, rules).tol for col in header]
    for i, (a_row, b_row) in enumerate(zip(old[1:], new[1:], strict=False), start=1):
        for j, col in enumerate(header):
            a = a_row[j] if j < len(a_row) else ""
            b = b_row[j] if j < len(b_row) else ""
            status, diff = _classify(a, b, tolerances[j])
            cell = None
            if status in ("within", "different"):
                cell = CellDifference(f"row {i}, {col}", a, b, diff, tolerances[j], status)
            report.add(status, cell)
    return report


def _variables(text: str) -> dict[str, str]:
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError("a variables file must be a mapping of names to printed values")
    return {str(k): "" if v is None else str(v) for k, v in data.items()}


def compare_variables(path: str, committed: str, current: str | None) -> FileReport:
    """Compare two versions of a ``_variables.yml``: each quoted number must be the same
    string (its printed precision included)."""
    report = FileReport(path)
    if current is None:
        report.note = "missing in the working tree"
        report.add(
            "different", CellDifference("file", "present", "missing", math.nan, None, "different")
        )
        return report
    old, new = _variables(committed), _variables(current)
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a == b:
            report.add("identical")
            continue
        x = _number((a or "").replace("\u2212", "-").replace(",", "").rstrip("%"))
        y = _number((b or "").replace("\u2212", "-").replace(",", "").rstrip("%"))
        diff = abs(x - y) if x is not None and y is not None else math.nan
        report.add(
            "different",
            CellDifference(
                name,
                "(absent)" if a is None else a,
                "(absent)" if b is None else b,
                diff,
                0.0,
                "different",
            ),
        )
    return report


def format_reports(reports: Iterable[FileReport], worst: int = 3) -> str:
    """A table of counts per file, then the worst cells of every file that has any."""
    reports = list(reports)
    width = max([len(r.path) for r in reports] + [4])
    head = f"{'file':<{width}} " + " ".join(f"{c:>10}" for c in CLASSES)
    lines = [head, "-" * len(head)]
    totals = dict.fromkeys(CLASSES, 0)
    for r in reports:
        lines.append(
            f"{r.path:<{width}} "
            + " ".join(f"{r.counts[c]:>10}" for c in CLASSES)
            + (f"  ({r.note})" if r.note else "")
        )
        for c in CLASSES:
            totals[c] += r.counts[c]
    lines.append("-" * len(head))
    lines.append(f"{'total':<{width}} " + " ".join(f"{totals[c]:>10}" for c in CLASSES))
    details = [r for r in reports if r.cells]
    if details:
        lines.append("")
        lines.append("largest differences (committed -> current, |difference|, tolerance):")
        for r in details:
            for c in r.worst(worst):
                diff = "" if math.isnan(c.abs_diff) else f"{c.abs_diff:.3g}"
                tol = "-" if c.tol is None else f"{c.tol:g}"
                lines.append(
                    f"  {c.status:<9} {r.path}: {c.where}: {c.committed} -> "
                    f"{c.current}  |d| {diff or '-'}  tol {tol}"
                )
    return "\n".join(lines)
