"""Bush and Prather (2020), US survey: codebook, complete cases and recodes (spec §4).

The appendix model uses complete cases on eleven variables. Rows with a missing value are
excluded, and every exclusion is counted by the first variable (in codebook order) on which
the row is missing.
``treat_ipesidetaking`` is kept so that the corrected run can restrict to side-taking
vignettes (spec §6, problem 3).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from hetfx.paper.data.raw import RawVar, codes, load_raw
from hetfx.paper.data.summaries import CleanResult, Fact, StudyFactError

RAW_FILE = "bush-prather-2020/bush-prather-us-data-all.dta"

CODEBOOK = [
    RawVar(
        "ipe_support",
        codes(1, 2, 3, 4),
        {1: "strongly disagree", 4: "strongly agree"},
        nullable=True,
    ),
    RawVar("treat_germrus", codes(0, 1), {0: "Russia", 1: "Germany"}, nullable=True),
    RawVar("w2_vote_hill", codes(0, 1), {0: "Trump voter", 1: "Clinton voter"}, nullable=True),
    RawVar(
        "treat_ipesidetaking", codes(0, 1), {0: "no sidetaking", 1: "sidetaking"}, nullable=True
    ),
    RawVar("woman", codes(0, 1), {0: "man", 1: "woman"}, nullable=True),
    RawVar("employ", codes(1, 2, 3, 4, 5, 6, 7), nullable=True),
    RawVar("treat_ipetype", codes(1, 2), {1: "fdi", 2: "goods trade"}, nullable=True),
    RawVar("educ", codes(1, 2, 3, 4, 5, 6), {5: "college grad", 6: "post-grad"}, nullable=True),
    RawVar("party", codes(1, 2, 3, 4, 5), {1: "Democrat", 2: "Republican"}, nullable=True),
    RawVar("polknowledge", codes(0, 1, 2, 3), nullable=True),
    RawVar("polint", codes(1, 2, 3, 4), {1: "hardly at all", 4: "most of the time"}, nullable=True),
]
COMPLETE_CASE_VARS = [var.name for var in CODEBOOK]

_binary = pa.Column("int64", pa.Check.isin([0, 1]))
CLEAN_SCHEMA = pa.DataFrameSchema(
    {
        "respondent": pa.Column("int64", unique=True),
        "ipe_support": pa.Column("int64", pa.Check.in_range(1, 4)),
        "treat_germrus": _binary,
        "w2_vote_hill": _binary,
        "woman": _binary,
        "treat_ipesidetaking": _binary,
        "invest_cond": _binary,
        "college_educ": _binary,
        "employ_dum": _binary,
        "party": pa.Column("int64", pa.Check.in_range(1, 5)),
        "polknowledge": pa.Column("int64", pa.Check.in_range(0, 3)),
        "polint": pa.Column("int64", pa.Check.in_range(1, 4)),
        "pol_engage": pa.Column("int64", pa.Check.in_range(1, 7)),
    },
    name="bush_prather_clean",
    strict=True,
    ordered=True,
)


def exclusions(raw: pd.DataFrame) -> pd.DataFrame:
    """Count the rows that complete-case analysis removes, by first missing variable."""
    missing = raw[COMPLETE_CASE_VARS].isna()
    first = missing.idxmax(axis=1).where(missing.any(axis=1))
    counts = first.value_counts().reindex(COMPLETE_CASE_VARS).dropna().astype("int64")
    return pd.DataFrame(
        {
            "reason": [f"missing {var} (first missing variable)" for var in counts.index],
            "rows": counts.to_numpy(),
        }
    )


def recode(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep complete cases (spec §4) and build the model variables."""
    kept = raw.loc[raw[COMPLETE_CASE_VARS].notna().all(axis=1), COMPLETE_CASE_VARS]
    df = pd.DataFrame(index=kept.index)
    df["respondent"] = (kept.index + 1).astype("int64")  # row number in the raw file
    for var in ["ipe_support", "treat_germrus", "w2_vote_hill", "woman", "treat_ipesidetaking"]:
        df[var] = kept[var].astype("int64")
    df["invest_cond"] = (kept["treat_ipetype"] == 1).astype("int64")  # 1 = FDI, 0 = trade
    df["college_educ"] = (kept["educ"] >= 5).astype("int64")
    df["employ_dum"] = (kept["employ"] == 1).astype("int64")
    for var in ["party", "polknowledge", "polint"]:
        df[var] = kept[var].astype("int64")
    df["pol_engage"] = df["polknowledge"] + df["polint"]
    return df.reset_index(drop=True)


def study_facts(clean: pd.DataFrame) -> list[Fact]:
    """Facts of the appendix analysis (spec §4, §6) that the cleaned data must reproduce."""
    return [
        Fact("complete cases", len(clean), 468),
        Fact(
            "complete cases without side-taking", int((clean.treat_ipesidetaking == 0).sum()), 240
        ),
    ]


def clean(path: str | Path) -> CleanResult:
    """Read, validate and recode the raw Bush–Prather US file.

    Raises
    ------
    hetfx.paper.data.raw.RawDataError
        If the file fails the codebook.
    StudyFactError
        If a fact of the original study is not reproduced.
    """
    raw = load_raw(path, CODEBOOK, "Bush-Prather raw")
    data = CLEAN_SCHEMA.validate(recode(raw))
    excluded = exclusions(raw)
    if len(raw) - excluded["rows"].sum() != len(data):  # every row is kept or counted
        raise AssertionError("exclusion counts do not add up to the rows removed")
    facts = study_facts(data)
    failed = [f for f in facts if not f.ok]
    if failed:
        raise StudyFactError("Bush-Prather", failed)
    return CleanResult(data, facts, excluded)
