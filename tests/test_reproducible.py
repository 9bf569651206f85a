"""A rebuild on the same machine changes no committed byte: no committed artifact
holds a run time or a time stamp. The fit stage end to end, run twice, is in test_stages.py."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from hetfx.inference import Diagnostics, without_timestamps

spec = importlib.util.spec_from_file_location("_stage", ROOT / "analysis" / "_stage.py")
_stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_stage)


def _draws(created_at: str):
    """The same draws, as two runs build them: arviz stamps the time of creation."""
    import arviz as az

    rng = np.random.default_rng(0)
    idata = az.from_dict(
        posterior={"lambda": rng.normal(size=(4, 100, 3)), "sigma": rng.gamma(2.0, size=(4, 100))},
        sample_stats={"diverging": np.zeros((4, 100), dtype=bool)},
        attrs={"engine": "quadrature"},
    )
    for name in idata.groups():
        getattr(idata, name).attrs["created_at"] = created_at
    return idata


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_the_same_draws_write_the_same_netcdf_bytes(tmp_path):
    first, second = _draws("2026-11-27T15:00:00+00:00"), _draws("2026-11-27T15:00:07+00:00")
    # as arviz writes them, the creation time makes the files differ ...
    first.to_netcdf(str(tmp_path / "raw1.nc"))
    second.to_netcdf(str(tmp_path / "raw2.nc"))
    assert _md5(tmp_path / "raw1.nc") != _md5(tmp_path / "raw2.nc")
    # ... without it, the bytes are the same (HDF5 itself stores no time stamp)
    without_timestamps(first).to_netcdf(str(tmp_path / "a.nc"))
    without_timestamps(second).to_netcdf(str(tmp_path / "b.nc"))
    assert (tmp_path / "a.nc").read_bytes() == (tmp_path / "b.nc").read_bytes()


def test_without_timestamps_keeps_the_draws_and_the_other_attributes(tmp_path):
    import arviz as az

    idata = _draws("2026-11-27T15:00:00+00:00")
    clean = without_timestamps(idata)
    assert idata.posterior.attrs["created_at"]  # the engine's object is left as it was
    assert clean.groups() == idata.groups()
    for name in idata.groups():
        assert "created_at" not in getattr(clean, name).attrs
        assert getattr(clean, name).attrs["arviz_version"] == az.__version__
    assert clean.attrs == {"engine": "quadrature"}
    clean.to_netcdf(str(tmp_path / "p.nc"))
    back = az.from_netcdf(str(tmp_path / "p.nc"))
    np.testing.assert_array_equal(back.posterior["lambda"], idata.posterior["lambda"])
    assert back.attrs["engine"] == "quadrature"


def test_split_timings_moves_run_times_out_of_the_committed_frame(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = Diagnostics("quadrature", 4, 1000, 1.002, 3400.0, 3300.0, 0, 6.5, 0.01, 0.2)
    frame = record.to_frame().assign(fit="m1")
    committed = _stage.split_timings(frame, "robustness")
    assert not any(c.endswith("_seconds") for c in committed.columns)
    assert list(committed.columns) == [c for c in frame.columns if not c.endswith("_seconds")]
    timings = pd.read_csv(tmp_path / "timings" / "robustness.csv")
    assert timings.to_dict("records") == [
        {"fit": "m1", "wall_seconds": 6.5, "compile_seconds": 0.01, "sampling_seconds": 0.2}
    ]
    # a fit's own file, in the study's folder
    _stage.split_timings(record.to_frame(), "tomz_weeks/m1_published")
    assert (tmp_path / "timings" / "tomz_weeks" / "m1_published.csv").is_file()


def test_timings_folder_is_git_ignored_and_no_dvc_output():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/timings/" in ignored
    assert "timings" not in (ROOT / "dvc.yaml").read_text()


DIAGNOSTICS = sorted((ROOT / "results").glob("**/diagnostics.csv"))


@pytest.mark.parametrize("path", DIAGNOSTICS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_diagnostics_hold_no_run_time(path):
    """Written by the stages (results/, committed): no ``*_seconds`` column."""
    columns = pd.read_csv(path, nrows=0).columns
    assert not [c for c in columns if c.endswith("_seconds")]


def test_every_diagnostics_file_is_checked():
    # seven Tomz-Weeks models and Bush-Prather, two codings each, and the robustness fits
    assert len(DIAGNOSTICS) == 17
