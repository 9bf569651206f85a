"""Shared fixtures: the project's own paths and helpers to make damaged copies of raw files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyreadstat
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
MANIFEST = ROOT / "data" / "manifest.csv"
TW_FILE = "tomz-weeks-2021/2017-04-YouGov-extracted.dta"
BP_FILE = "bush-prather-2020/bush-prather-us-data-all.dta"


def write_like(original: Path, frame, target: Path) -> Path:
    """Write ``frame`` as Stata to ``target`` with the value labels of ``original``."""
    _, meta = pyreadstat.read_dta(str(original), metadataonly=True)
    labels = {
        c: v
        for c, v in meta.variable_value_labels.items()
        if c in frame.columns and frame[c].dtype.kind in "if"  # labels fit numeric columns only
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    pyreadstat.write_dta(frame, str(target), variable_value_labels=labels)
    return target


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root with the raw data, manifest and params of this one."""
    shutil.copytree(RAW, tmp_path / "data" / "raw")
    shutil.copy(MANIFEST, tmp_path / "data" / "manifest.csv")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path
