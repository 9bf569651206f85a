"""Tomz–Weeks recodes (spec §2) on hand-built rows, and the codebook's refusals."""

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from conftest import RAW, TW_FILE, write_like
from hetfx.paper.data import tomz_weeks
from hetfx.paper.data.raw import RawDataError
from hetfx.paper.data.summaries import StudyFactError

BASE = dict(
    alliance=1,
    regime=1,
    stakes=1,
    costs=1,
    region=1,
    pref=3,
    hawk=3,
    intl=3,
    nat1=1,
    nat2=1,
    pid7=4,
    newsint=2,
    gender=2,
    race=2,
    birthyr=1966,
    educ=3,
)


def rows(*changes: dict) -> pd.DataFrame:
    """Raw rows (as load_raw returns them: float64) differing from BASE by ``changes``."""
    return pd.DataFrame([{**BASE, **c} for c in changes]).astype("float64")


def recode_one(**change) -> pd.Series:
    return tomz_weeks.recode(rows(change)).iloc[0]


@pytest.mark.parametrize("pref, force", [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1)])
def test_force_is_favor_somewhat_or_strongly(pref, force):
    assert recode_one(pref=pref)["force"] == force


def test_treatments_direction():
    out = tomz_weeks.recode(
        rows(
            dict(alliance=1, regime=1, stakes=1, costs=1),
            dict(alliance=2, regime=2, stakes=2, costs=2),
        )
    )
    assert out["alliance"].tolist() == [0, 1]
    assert out["regime"].tolist() == [0, 1]
    assert out["stakes"].tolist() == [1, 0], "raw 1 (attack would hurt the US) is HIGH stakes"
    assert out["costs"].tolist() == [0, 1], "raw 1 (very costly) is 0: costs = 1 means LOW cost"


@pytest.mark.parametrize(
    "pid7, dem_published, dem_corrected, rep",
    [
        (1, 0, 1, 0),
        (2, 1, 1, 0),
        (3, 1, 0, 0),
        (4, 1, 0, 0),
        (5, 1, 0, 0),
        (6, 1, 0, 1),
        (7, 1, 0, 1),
        (8, 1, 0, 0),
    ],
)
def test_party_codings(pid7, dem_published, dem_corrected, rep):
    # published coding pid7 >= 2 marks Republicans and "not sure" (8) as Democrats (spec §6)
    out = recode_one(pid7=pid7)
    assert (out["dem_published"], out["dem_corrected"], out["rep"]) == (
        dem_published,
        dem_corrected,
        rep,
    )


@pytest.mark.parametrize("newsint, high", [(1, 1), (2, 0), (3, 0), (4, 0), (7, 0)])
def test_high_newsint_dont_know_is_low(newsint, high):
    assert recode_one(newsint=newsint)["high_newsint"] == high


@pytest.mark.parametrize("educ, ed4", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 4)])
def test_ed4(educ, ed4):
    assert recode_one(educ=educ)["ed4"] == ed4


def test_scales_and_derived_variables():
    out = recode_one(hawk=1, intl=5, nat1=2, nat2=5, birthyr=1950, race=1, gender=1, region=3)
    assert out["hawk"] == 5 and out["intl"] == 5
    assert out["natl_sup"] == 7
    assert out["age"] == pytest.approx(6.6)
    assert (out["white"], out["male"]) == (1, 1)
    assert (out["africa"], out["asia"], out["europe"], out["region_txt"]) == (
        0,
        0,
        1,
        "Eastern Europe",
    )


def test_group_keys_follow_brms_labels():
    out = recode_one(regime=2, stakes=2, costs=1, region=4, pid7=1, newsint=1, race=1, gender=2)
    assert out["treat_group"] == "1_0_0_South America"
    assert out["het_group_published"] == "0_0_1_1_0"  # dem_rep_high_newsint_white_male
    assert out["het_group_corrected"] == "1_0_1_1_0"


def test_unmapped_code_is_an_error_not_a_missing_value():
    with pytest.raises(ValueError, match="educ: no recode defined for code"):
        tomz_weeks.recode(rows(dict(educ=9)))


def test_clean_reproduces_study_facts():
    result = tomz_weeks.clean(RAW / TW_FILE)
    assert len(result.data) == 1200 and result.exclusions.empty
    assert all(fact.ok for fact in result.facts)
    facts = {f.name: f.value for f in result.facts}
    assert facts["alliance difference in force"] == 0.331
    assert result.data["het_group_published"].nunique() == 24
    assert set(result.summary().columns) == {"variable", "mean", "n", "n_missing"}


# --- damaged files: each fails with a message that says what is wrong ----------------


def damaged(tmp_path, change):
    frame, _ = pyreadstat.read_dta(str(RAW / TW_FILE))
    return write_like(RAW / TW_FILE, change(frame), tmp_path / "tw.dta")


def test_renamed_column(tmp_path):
    path = damaged(tmp_path, lambda f: f.rename(columns={"pid7": "partyid"}))
    with pytest.raises(RawDataError, match=r"expected column\(s\) \['pid7'\] not found"):
        tomz_weeks.clean(path)


def test_unexpected_code(tmp_path):
    def change(frame):
        frame.loc[5, "pref"] = 8  # "skipped": labelled in the file but not a valid answer
        return frame

    expected = r"pref: codes must be in .*; offending value\(s\) 8 in row\(s\) \[5\]"
    with pytest.raises(RawDataError, match=expected):
        tomz_weeks.clean(damaged(tmp_path, change))


def test_injected_missing_value(tmp_path):
    def change(frame):
        frame["race"] = frame["race"].astype("float64")
        frame.loc[17, "race"] = np.nan
        return frame

    expected = (
        r"race: missing values are not allowed; offending value\(s\) missing in row\(s\) \[17\]"
    )
    with pytest.raises(RawDataError, match=expected):
        tomz_weeks.clean(damaged(tmp_path, change))


def test_wrong_column_type(tmp_path):
    def change(frame):
        frame["gender"] = frame["gender"].map({1: "Male", 2: "Female"})
        return frame

    with pytest.raises(RawDataError, match="gender: expected numeric codes"):
        tomz_weeks.clean(damaged(tmp_path, change))


def test_relabelled_codes_are_refused(tmp_path):
    frame, meta = pyreadstat.read_dta(str(RAW / TW_FILE))
    labels = dict(meta.variable_value_labels)
    labels["costs"] = {1: "not costly", 2: "very costly"}  # codes swapped in meaning
    pyreadstat.write_dta(frame, str(tmp_path / "tw.dta"), variable_value_labels=labels)
    with pytest.raises(RawDataError, match="costs: code 1 should be labelled"):
        tomz_weeks.clean(tmp_path / "tw.dta")


def test_truncated_file(tmp_path):
    data = (RAW / TW_FILE).read_bytes()
    (tmp_path / "tw.dta").write_bytes(data[: len(data) // 2])
    with pytest.raises(RawDataError, match="could not be read as a Stata file"):
        tomz_weeks.clean(tmp_path / "tw.dta")


def test_study_fact_violation(tmp_path):
    path = damaged(tmp_path, lambda f: f.iloc[:-1])  # one respondent fewer
    with pytest.raises(StudyFactError, match=r"rows: 1199 \(expected 1200\) FAILED"):
        tomz_weeks.clean(path)
