"""Tomz and Weeks (2021), study 1: codebook, recodes and checks (replication spec §2).

All 1,200 respondents are kept; none of the variables used has missing values, and the
raw codebook refuses any code outside the expected sets (including Stata's "skipped" and
"not asked" codes), so no row can be dropped or mis-coded silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from hetfx.paper.data.raw import RawVar, codes, load_raw
from hetfx.paper.data.summaries import CleanResult, Fact, StudyFactError

RAW_FILE = "tomz-weeks-2021/2017-04-YouGov-extracted.dta"
REGIONS = {1: "Africa", 2: "Asia", 3: "Eastern Europe", 4: "South America"}
DEM_CODINGS = ("published", "corrected")
TREAT_KEYS = ["regime", "stakes", "costs", "region_txt"]
HET_KEYS = ["dem", "rep", "high_newsint", "white", "male"]
_AGREE = {1: "Disagree strongly", 5: "Agree strongly"}

CODEBOOK = [
    RawVar("alliance", codes(1, 2), {1: "alliance = Does not have", 2: "alliance = Has a written"}),
    RawVar("regime", codes(1, 2), {1: "Not a democracy", 2: "Democracy"}),
    RawVar("stakes", codes(1, 2), {1: "If attacker succeeds, this would weaken"}),
    RawVar(
        "costs",
        codes(1, 2),
        {
            1: "The U.S. military could stop the invasion, but the military operation would be v",
            2: "The U.S. military could stop the invasion, and the military operation would not",
        },
    ),
    RawVar("region", codes(1, 2, 3, 4), REGIONS),
    RawVar("pref", codes(1, 2, 3, 4, 5), {4: "Favor somewhat", 5: "Favor strongly"}),
    RawVar("hawk", codes(1, 2, 3, 4, 5), _AGREE),
    RawVar("intl", codes(1, 2, 3, 4, 5), _AGREE),
    RawVar("nat1", codes(1, 2, 3, 4, 5), _AGREE),
    RawVar("nat2", codes(1, 2, 3, 4, 5), _AGREE),
    RawVar(
        "pid7",
        codes(1, 2, 3, 4, 5, 6, 7, 8),
        {
            1: "Strong Democrat",
            2: "Not very strong Democrat",
            6: "Not very strong Republican",
            7: "Strong Republican",
            8: "Not sure",
        },
    ),
    RawVar("newsint", codes(1, 2, 3, 4, 7), {1: "Most of the time", 7: "Don't know"}),
    RawVar("gender", codes(1, 2), {1: "Male", 2: "Female"}),
    RawVar("race", codes(1, 2, 3, 4, 5, 6, 7, 8), {1: "White"}),
    RawVar("birthyr", value_range=(1900, 2000)),
    RawVar("educ", codes(1, 2, 3, 4, 5, 6), {1: "No HS", 5: "4-year", 6: "Post-grad"}),
]

_binary = pa.Column("int64", pa.Check.isin([0, 1]))
CLEAN_SCHEMA = pa.DataFrameSchema(
    {
        "respondent": pa.Column("int64", unique=True),
        "force": _binary,
        "alliance": _binary,
        "regime": _binary,
        "stakes": _binary,
        "costs": _binary,
        "region": pa.Column("int64", pa.Check.isin(list(REGIONS))),
        "region_txt": pa.Column(str, pa.Check.isin(list(REGIONS.values()))),
        "africa": _binary,
        "asia": _binary,
        "europe": _binary,
        "high_newsint": _binary,
        "rep": _binary,
        "dem_published": _binary,
        "dem_corrected": _binary,
        "white": _binary,
        "male": _binary,
        "hawk": pa.Column("int64", pa.Check.in_range(1, 5)),
        "intl": pa.Column("int64", pa.Check.in_range(1, 5)),
        "ed4": pa.Column("int64", pa.Check.in_range(1, 4)),
        "age": pa.Column("float64", pa.Check.in_range(1.6, 11.6)),
        "natl_sup": pa.Column("int64", pa.Check.in_range(2, 10)),
        "pid7": pa.Column("int64", pa.Check.in_range(1, 8)),
        "treat_group": pa.Column(str),
        "het_group_published": pa.Column(str),
        "het_group_corrected": pa.Column(str),
    },
    name="tomz_weeks_clean",
    strict=True,
    ordered=True,
)


def _map(series: pd.Series, mapping: dict[float, int]) -> pd.Series:
    """Map raw codes; a code outside ``mapping`` is an error, never a silent NaN."""
    out = series.map(mapping)
    if out.isna().any():
        bad = sorted(series[out.isna()].unique().tolist())
        raise ValueError(f"{series.name}: no recode defined for code(s) {bad}")
    return out.astype("int64")


def recode(raw: pd.DataFrame) -> pd.DataFrame:
    """Apply the recodes of replication spec §2 to the validated raw columns.

    Both codings of the Democrat indicator are kept: ``dem_published`` (``pid7 >= 2``, the
    coding error of the published analysis) and ``dem_corrected`` (``pid7 <= 2``).
    """
    df = pd.DataFrame(index=raw.index)
    df["respondent"] = np.arange(1, len(raw) + 1, dtype="int64")
    df["force"] = raw["pref"].isin([4, 5]).astype("int64")
    df["alliance"] = _map(raw["alliance"], {1: 0, 2: 1})
    df["regime"] = _map(raw["regime"], {1: 0, 2: 1})
    df["stakes"] = _map(raw["stakes"], {1: 1, 2: 0})  # 1 = attack would hurt the US: high stakes
    df["costs"] = _map(raw["costs"], {1: 0, 2: 1})  # 1 = NOT costly: costs = 1 is LOW cost
    df["region"] = _map(raw["region"], {k: k for k in REGIONS})
    df["region_txt"] = df["region"].map(REGIONS).astype(str)
    df["africa"] = (df["region"] == 1).astype("int64")
    df["asia"] = (df["region"] == 2).astype("int64")
    df["europe"] = (df["region"] == 3).astype("int64")
    df["high_newsint"] = (raw["newsint"] == 1).astype("int64")  # "don't know" (7) -> 0
    df["rep"] = raw["pid7"].isin([6, 7]).astype("int64")
    df["dem_published"] = (raw["pid7"] >= 2).astype("int64")
    df["dem_corrected"] = (raw["pid7"] <= 2).astype("int64")
    df["white"] = (raw["race"] == 1).astype("int64")
    df["male"] = (raw["gender"] == 1).astype("int64")
    df["hawk"] = (6 - raw["hawk"]).abs().astype("int64")
    df["intl"] = raw["intl"].astype("int64")
    df["ed4"] = _map(raw["educ"], {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 4})
    df["age"] = (2016 - raw["birthyr"]) / 10
    df["natl_sup"] = (raw["nat1"] + raw["nat2"]).astype("int64")
    df["pid7"] = raw["pid7"].astype("int64")
    df["treat_group"] = group_key(df, TREAT_KEYS)
    for coding in DEM_CODINGS:
        keyed = df.assign(dem=df[f"dem_{coding}"])
        df[f"het_group_{coding}"] = group_key(keyed, HET_KEYS)
    return df.reset_index(drop=True)


def group_key(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Group label joining the key columns with ``_`` (e.g. ``"1_0_1_Asia"``), as in brms."""
    return df[columns].astype(str).agg("_".join, axis=1)


def study_facts(clean: pd.DataFrame) -> list[Fact]:
    """Facts of the original study (spec §2) that the cleaned data must reproduce."""
    by_alliance = clean.groupby("alliance")["force"].mean()
    cells = clean.groupby(["alliance", "treat_group"]).size()
    groups = clean.groupby("treat_group").size()
    return [
        Fact("rows", len(clean), 1200),
        Fact("mean of force without alliance", round(by_alliance[0], 3), 0.465),
        Fact("mean of force with alliance", round(by_alliance[1], 3), 0.796),
        Fact("alliance difference in force", round(by_alliance[1] - by_alliance[0], 3), 0.331),
        Fact("alliance x treat_group cells", len(cells), 64),
        Fact("smallest alliance x treat_group cell", int(cells.min()), 11),
        Fact("largest alliance x treat_group cell", int(cells.max()), 32),
        Fact("treat_groups", len(groups), 32),
        Fact("smallest treat_group", int(groups.min()), 26),
        Fact("largest treat_group", int(groups.max()), 54),
    ]


def clean(path: str | Path) -> CleanResult:
    """Read, validate and recode the raw Tomz–Weeks file (no row is excluded).

    Raises
    ------
    hetfx.paper.data.raw.RawDataError
        If the file fails the codebook.
    StudyFactError
        If a fact of the original study is not reproduced.
    """
    raw = load_raw(path, CODEBOOK, "Tomz-Weeks raw")
    data = CLEAN_SCHEMA.validate(recode(raw))
    facts = study_facts(data)
    failed = [f for f in facts if not f.ok]
    if failed:
        raise StudyFactError("Tomz-Weeks", failed)
    return CleanResult(data, facts)
