"""Bush–Prather complete cases and recodes (spec §4), with every exclusion counted."""

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from conftest import BP_FILE, RAW, write_like
from hetfx.paper.data import bush_prather
from hetfx.paper.data.raw import RawDataError

BASE = dict(
    ipe_support=3,
    treat_germrus=1,
    w2_vote_hill=1,
    treat_ipesidetaking=1,
    woman=0,
    employ=1,
    treat_ipetype=1,
    educ=5,
    party=1,
    polknowledge=3,
    polint=4,
)


def rows(*changes):
    return pd.DataFrame([{**BASE, **c} for c in changes]).astype("float64")


def test_recodes():
    raw = rows(dict(), dict(employ=2, treat_ipetype=2, educ=4, polknowledge=0, polint=1))
    out = bush_prather.recode(raw)
    assert out["employ_dum"].tolist() == [1, 0]
    assert out["invest_cond"].tolist() == [1, 0], "treat_ipetype 1 is FDI"
    assert out["college_educ"].tolist() == [1, 0], "college means educ >= 5"
    assert out["pol_engage"].tolist() == [7, 1]
    assert out["respondent"].tolist() == [1, 2]


def test_incomplete_rows_are_dropped_and_counted():
    raw = rows(
        dict(), dict(woman=np.nan), dict(polint=np.nan, woman=np.nan), dict(ipe_support=np.nan)
    )
    out = bush_prather.recode(raw)
    assert out["respondent"].tolist() == [1]
    excluded = bush_prather.exclusions(raw).set_index("reason")["rows"]
    assert excluded.sum() == 3
    assert excluded["missing woman (first missing variable)"] == 2
    assert excluded["missing ipe_support (first missing variable)"] == 1


def test_clean_reproduces_study_facts():
    result = bush_prather.clean(RAW / BP_FILE)
    assert len(result.data) == 468
    assert (result.data["treat_ipesidetaking"] == 0).sum() == 240
    assert result.exclusions["rows"].sum() == 1572 - 468
    assert all(f.ok for f in result.facts)
    assert result.data["pol_engage"].between(1, 7).all()


def test_unexpected_code(tmp_path):
    frame, _ = pyreadstat.read_dta(str(RAW / BP_FILE))
    frame["treat_ipetype"] = frame["treat_ipetype"].astype("float64")
    frame.loc[0, "treat_ipetype"] = 3.0  # "arms trade": labelled, but not in this design
    path = write_like(RAW / BP_FILE, frame, tmp_path / "bp.dta")
    expected = r"treat_ipetype: codes must be in .* 3 in row\(s\) \[0\]"
    with pytest.raises(RawDataError, match=expected):
        bush_prather.clean(path)
