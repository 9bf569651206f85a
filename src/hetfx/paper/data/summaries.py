"""Checked study facts, exclusion counts and variable summaries of a cleaned data set."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Fact:
    """A fact of an original study: the value computed here and the value expected."""

    name: str
    value: float
    expected: float

    @property
    def ok(self) -> bool:
        return math.isclose(self.value, self.expected, rel_tol=0, abs_tol=1e-9)

    def __str__(self) -> str:
        mark = "ok" if self.ok else "FAILED"
        return f"{self.name}: {self.value:g} (expected {self.expected:g}) {mark}"


class StudyFactError(ValueError):
    """The cleaned data do not reproduce a fact of the original study."""

    def __init__(self, study: str, failed: list[Fact]):
        self.failed = failed
        lines = "\n".join(f"- {f}" for f in failed)
        super().__init__(
            f"{study}: the cleaned data do not reproduce the original study:\n{lines}\n"
            "The raw file or a recode differs from the one behind the published results."
        )


@dataclass
class CleanResult:
    """A cleaned data set with what was checked and what was excluded on the way."""

    data: pd.DataFrame
    facts: list[Fact]
    exclusions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {"reason": pd.Series(dtype=str), "rows": pd.Series(dtype="int64")}
        )
    )

    def summary(self) -> pd.DataFrame:
        """Variable, mean, n, n_missing for every numeric column."""
        numeric = self.data.select_dtypes("number")
        return pd.DataFrame(
            {
                "variable": numeric.columns,
                "mean": numeric.mean().round(6).to_numpy(),
                "n": numeric.notna().sum().to_numpy(),
                "n_missing": numeric.isna().sum().to_numpy(),
            }
        )

    def report(self) -> str:
        """Human-readable lines for the stage log."""
        lines = [f"rows kept: {len(self.data)}"]
        if len(self.exclusions):
            lines += [f"excluded: {r.rows} rows ({r.reason})" for r in self.exclusions.itertuples()]
        else:
            lines.append("excluded: none")
        lines += [f"check {fact}" for fact in self.facts]
        return "\n".join(lines)
