"""The stated tolerances of the committed outputs, and the precision the stages write them at.

One table, :data:`TOLERANCES`, says how far a rebuilt number may be from the committed one
(``make verify``, :mod:`hetfx.paper.verify`); :func:`format_number` writes each number of a
CSV at the resolution of its file's tolerance, so that one unit of its last digit stays
within the tolerance and another CPU's last-bit differences change no written digit in the
usual case. A module of its own (the stages that write CSVs depend on it, not on the
comparison code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch

__all__ = ["TOLERANCES", "Rule", "format_number", "tolerance_for"]


@dataclass(frozen=True)
class Rule:
    """Tolerance of the cells of files matching ``path`` and columns matching ``column``
    (shell patterns); ``tol=None`` ignores those cells."""

    path: str
    column: str
    tol: float | None
    why: str = ""


#: The stated tolerances, first match wins. Deterministic computations (cleaning, OLS, the
#: quadrature engine of M1/M2 and the simulation) must agree within 1e-9; A1 (a
#: four-dimensional quadrature grid) and Bush-Prather (importance sampling of its scale
#: parameters) within 1e-6.
TOLERANCES: tuple[Rule, ...] = (
    Rule("*", "wall_seconds", None, "time of the run"),
    Rule("*", "compile_seconds", None, "time of the run"),
    Rule("*", "sampling_seconds", None, "time of the run"),
    Rule("results/tomz_weeks/a1_*/*", "*", 1e-6, "A1: NUTS on 4 scale parameters"),
    Rule("results/bush_prather/*", "*", 1e-6, "Bush-Prather: NUTS on 13 scale parameters"),
    Rule("results/*", "*", 1e-9, "OLS, quadrature (M1, M2) and the simulation"),
    Rule("data/clean/*", "*", 1e-9, "cleaning: exact arithmetic on the raw data"),
    Rule("*", "*", 0.0, "anything else: identical"),
)


def tolerance_for(path: str, column: str, rules: Sequence[Rule] = TOLERANCES) -> Rule:
    """The first rule of ``rules`` that matches ``path`` and ``column``."""
    for rule in rules:
        if fnmatch(path, rule.path) and fnmatch(column, rule.column):
            return rule
    return Rule("*", "*", 0.0)


def format_number(value: float, path: str, rules: Sequence[Rule] = TOLERANCES) -> str:
    """``value`` as a CSV at ``path`` stores it: at the resolution of the file's tolerance.

    With tolerance ``tol = 10**-k`` (:func:`tolerance_for` of the file, all columns), the
    number is rounded to ``k`` decimals and printed with at most ``k + 1`` significant
    digits, so one unit of its last digit is at most ``tol * max(1, |value|)``: a rebuild
    whose numbers round the other way in the last digit stays within the tolerance, and
    another CPU's last-bit differences (measured below ``1e-3 tol``) change no written
    digit in the usual case. Negative zero is written as ``0``.

    Parameters
    ----------
    value : float
        The number (NaN is left to the caller).
    path : str
        The file's path relative to the project root (selects the tolerance).
    rules : sequence of Rule
        Tolerances (default :data:`TOLERANCES`); a file whose tolerance is not a positive
        number is written at full precision (``repr``).
    """
    tol = tolerance_for(path, "*", rules).tol
    if not tol or tol <= 0:
        return repr(float(value))
    k = max(0, round(-math.log10(tol)))
    return f"{round(float(value), k) + 0.0:.{k + 1}g}"
