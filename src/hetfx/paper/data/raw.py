"""Read a raw Stata file and validate it against a declared codebook.

Each study module declares the raw variables it uses as :class:`RawVar` entries: the codes
that may occur, the Stata value labels those codes must carry in the file (so that a file
whose codes mean something else is refused), and whether missing values are allowed. From
that codebook a pandera schema is built; every problem is reported at once, by column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyreadstat


class RawDataError(ValueError):
    """A raw data file does not have the columns, types, codes or labels expected."""


@dataclass(frozen=True)
class RawVar:
    """One raw variable of a codebook.

    Parameters
    ----------
    name
        Column name in the Stata file.
    codes
        The values that may occur (``None``: any value in ``value_range``).
    labels
        Value labels the file must attach to these codes. A label is matched by prefix,
        case-insensitively, because Stata truncates long labels.
    nullable
        Whether missing values are allowed (they are then counted and reported downstream).
    value_range
        Inclusive bounds for variables without a code set (e.g. birth year).
    """

    name: str
    codes: frozenset[float] | None = None
    labels: dict[int, str] = field(default_factory=dict)
    nullable: bool = False
    value_range: tuple[float, float] | None = None


def codes(*values: float) -> frozenset[float]:
    """Shorthand for a code set."""
    return frozenset(float(v) for v in values)


def read_stata(path: str | Path) -> tuple[pd.DataFrame, pyreadstat.metadata_container]:
    """Read a Stata file with its metadata; a file that is not Stata fails clearly."""
    path = Path(path)
    if not path.is_file():
        raise RawDataError(f"raw file not found: {path}")
    try:
        frame, meta = pyreadstat.read_dta(str(path))
    except Exception as exc:  # pyreadstat raises its own ReadstatError and others
        raise RawDataError(
            f"{path} could not be read as a Stata file ({type(exc).__name__}: {exc}); "
            "it may be truncated or not the original file"
        ) from exc
    return frame, meta


def _numeric(series: pd.Series) -> pd.Series:
    """Make a column float64 if every value is a number or missing; leave it otherwise."""
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    converted = pd.to_numeric(series, errors="coerce")
    if converted.notna().sum() == series.notna().sum():
        return converted.astype("float64")
    return series


def schema_for(codebook: list[RawVar], name: str) -> pa.DataFrameSchema:
    """Build the pandera schema of a raw codebook (numeric columns, codes, missingness)."""
    columns = {}
    for var in codebook:
        checks = []
        if var.codes is not None:
            allowed = sorted(var.codes)
            checks.append(pa.Check.isin(allowed, error=f"codes must be in {allowed}"))
        if var.value_range is not None:
            lo, hi = var.value_range
            checks.append(pa.Check.in_range(lo, hi, error=f"values must lie in [{lo}, {hi}]"))
        columns[var.name] = pa.Column("float64", checks=checks, nullable=var.nullable)
    return pa.DataFrameSchema(columns, name=name, strict=False)


def _label_problems(codebook: list[RawVar], meta) -> list[str]:
    problems = []
    for var in codebook:
        if not var.labels:
            continue
        label_set = meta.variable_to_label.get(var.name)
        file_labels = meta.value_labels.get(label_set, {}) if label_set else {}
        for code, expected in var.labels.items():
            found = file_labels.get(code, file_labels.get(float(code)))
            if found is None or not found.lower().startswith(expected.lower()):
                problems.append(
                    f"- {var.name}: code {code} should be labelled '{expected}...', "
                    f"the file says {found!r}"
                )
    return problems


def load_raw(path: str | Path, codebook: list[RawVar], name: str) -> pd.DataFrame:
    """Read ``path`` and validate the codebook's columns; return them as float64.

    Raises
    ------
    RawDataError
        Listing every missing column, wrong type, unexpected code, unexpected missing
        value and mismatched value label found.
    """
    frame, meta = read_stata(path)
    wanted = [var.name for var in codebook]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise RawDataError(
            f"{path}: expected column(s) {missing} not found (the file has "
            f"{len(frame.columns)} columns: {list(frame.columns)})"
        )
    problems = _label_problems(codebook, meta)
    data = frame[wanted].apply(_numeric)
    wrong_type = [c for c in wanted if not pd.api.types.is_float_dtype(data[c])]
    for column in wrong_type:
        sample = data[column].dropna().astype(str).unique()[:3].tolist()
        problems.append(f"- {column}: expected numeric codes, found values such as {sample}")
    if not wrong_type:
        try:
            schema_for(codebook, name).validate(data, lazy=True)
        except pa.errors.SchemaErrors as exc:
            problems.extend(_describe_schema_errors(exc.failure_cases))
    if problems:
        raise RawDataError(f"{path} fails the {name} codebook:\n" + "\n".join(problems))
    return data


def _describe_schema_errors(cases: pd.DataFrame) -> list[str]:
    out = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        if check == "not_nullable":
            check = "missing values are not allowed"
        values = group["failure_case"].tolist()
        shown = ", ".join("missing" if pd.isna(v) else f"{v:g}" for v in values[:5])
        more = f" (and {len(values) - 5} more)" if len(values) > 5 else ""
        rows = group["index"].dropna().astype(int).tolist()[:5]
        out.append(f"- {column}: {check}; offending value(s) {shown}{more} in row(s) {rows}")
    return out
