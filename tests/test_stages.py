"""The stage scripts end to end in a scratch project: outputs, and no outputs on failure."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import MANIFEST, RAW, ROOT, TW_FILE
from hetfx.paper.params import ParamsError, validate

ANALYSIS = ROOT / "analysis"


def stage(project: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ANALYSIS / script), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_acquire_and_clean_end_to_end(project):
    done = stage(project, "acquire.py")
    assert done.returncode == 0, done.stderr
    assert "verified tomz-weeks-2021/2017-04-YouGov-extracted.dta" in done.stdout
    for study in ["tomz_weeks", "bush_prather"]:
        done = stage(project, "clean.py", study)
        assert done.returncode == 0, done.stderr
        assert "FAILED" not in done.stdout
    clean = project / "data" / "clean"
    tw = pd.read_parquet(clean / "tomz_weeks.parquet")
    bp = pd.read_parquet(clean / "bush_prather.parquet")
    assert (len(tw), len(bp)) == (1200, 468)
    checks = pd.read_csv(clean / "bush_prather_checks.csv")
    assert checks.loc[checks.kind == "exclusion", "value"].sum() == 1572 - 468
    summary = pd.read_csv(clean / "tomz_weeks_summary.csv").set_index("variable")
    assert summary.loc["force", "n"] == 1200 and summary["n_missing"].sum() == 0
    # the cleaned data equal what the library gives for the committed raw file
    assert tw["force"].mean() == pytest.approx(757 / 1200)


def test_acquire_refuses_changed_file_and_writes_nothing(project):
    path = project / "data" / "raw" / TW_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    done = stage(project, "acquire.py")
    assert done.returncode == 1
    assert "checksum mismatch" in done.stderr and "Traceback" not in done.stderr
    assert files_under(project / "data" / "acquired") == []


def test_missing_source_directory_from_params(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["acquire"]["source"] = "data/nowhere"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(project, "acquire.py")
    assert done.returncode == 1 and "source directory not found: data/nowhere" in done.stderr


def test_clean_with_damaged_file_leaves_no_output(project):
    assert stage(project, "acquire.py").returncode == 0
    assert stage(project, "clean.py", "tomz_weeks").returncode == 0
    clean = project / "data" / "clean"
    assert len(files_under(clean)) == 3
    acquired = project / "data" / "acquired" / TW_FILE
    acquired.write_bytes(acquired.read_bytes()[:5000])
    done = stage(project, "clean.py", "tomz_weeks")
    assert done.returncode == 1 and "could not be read as a Stata file" in done.stderr
    assert files_under(clean) == [], "outputs of the earlier run must not survive a failure"


@pytest.mark.parametrize(
    "section, value, message",
    [
        ({"acquire": {"source": ""}}, None, "acquire.source: String should have at least 1"),
        ({"acquire": {"source": 5}}, None, "acquire.source: Input should be a valid string"),
        ({"acquire": {"source": "data/raw", "sorce": "x"}}, None, "acquire.sorce: Extra inputs"),
        ({"clean": {"tomz_weeks": {}}}, None, "clean.tomz_weeks.file: Field required"),
    ],
)
def test_invalid_params_are_refused(section, value, message):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(section)
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")):
        validate(params)


def test_invalid_params_stop_the_stage_before_it_writes(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["acquire"]["source"] = ""
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(project, "acquire.py")
    assert done.returncode == 1 and "params.yaml is invalid" in done.stderr
    assert files_under(project / "data" / "acquired") == []


def test_clean_file_not_acquired(project):
    assert stage(project, "acquire.py").returncode == 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["clean"]["tomz_weeks"]["file"] = "tomz-weeks-2021/other.dta"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(project, "clean.py", "tomz_weeks")
    assert done.returncode == 1 and "raw file not found" in done.stderr


def _with_params(project: Path, **changes) -> None:
    """Set dotted keys (``models__gate__min_ess_bulk=...``) in the scratch params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def cleaned_once(tmp_path_factory) -> Path:
    """A scratch project after the acquire and clean (Tomz-Weeks) stages, run once."""
    root = tmp_path_factory.mktemp("cleaned")
    shutil.copytree(RAW, root / "data" / "raw")
    shutil.copy(MANIFEST, root / "data" / "manifest.csv")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    for args in [("acquire.py",), ("clean.py", "tomz_weeks")]:
        assert stage(root, *args).returncode == 0
    return root


@pytest.fixture
def cleaned(cleaned_once, tmp_path):
    """A fresh copy of that project for each test (the tests edit params.yaml)."""
    return Path(shutil.copytree(cleaned_once, tmp_path / "project"))


def test_fit_stage_writes_the_artifact_contract(cleaned):
    done = stage(cleaned, "fit.py", "tomz_weeks", "corrected", "m2")
    assert done.returncode == 0, done.stderr
    out = cleaned / "results" / "tomz_weeks" / "m2_corrected"
    assert {p.name for p in out.iterdir()} == {
        "posterior.nc",
        "groups.csv",
        "coefs.csv",
        "diagnostics.csv",
        "diagnostics.json",
    }
    # the run times, outside results/ (git-ignored, no DVC output)
    timings = pd.read_csv(cleaned / "timings" / "tomz_weeks" / "m2_corrected.csv")
    assert list(timings.columns) == ["wall_seconds", "compile_seconds", "sampling_seconds"]
    assert timings["wall_seconds"].iloc[0] > 0
    groups = pd.read_csv(out / "groups.csv")
    assert {
        "dem",
        "rep",
        "high_newsint",
        "white",
        "male",
        "n_obs",
        "estimate",
        "q025",
        "q10",
        "q90",
        "q975",
    } <= set(groups.columns)
    assert groups["n_obs"].sum() == 1200
    diag = pd.read_csv(out / "diagnostics.csv")
    assert {
        "sampler",
        "chains",
        "draws",
        "max_r_hat",
        "min_ess_bulk",
        "min_ess_tail",
        "divergences",
    } <= set(diag.columns)
    assert not any(c.endswith("_seconds") for c in diag.columns)
    # the DVC metrics: the numeric diagnostics without run times
    metrics = json.loads((out / "diagnostics.json").read_text())
    assert metrics["max_r_hat"] == diag["max_r_hat"].iloc[0] and metrics["chains"] == 4
    assert not any(key.endswith("_seconds") for key in metrics)


def test_fit_stage_rerun_writes_the_same_bytes(cleaned):
    """A rerun on the same machine changes no committed byte and no hash in dvc.lock: every
    file the fit stage writes under results/ (the CSVs, diagnostics.json and posterior.nc,
    whose md5 dvc.lock records) is byte-identical; only timings/ (not committed) may differ."""
    models = ("m2", "m2_ols")  # a quadrature fit (with posterior.nc) and an OLS fit: fast

    def run_once() -> dict[str, bytes]:
        done = stage(cleaned, "fit.py", "tomz_weeks", "corrected", *models)
        assert done.returncode == 0, done.stderr
        results = cleaned / "results"
        return {str(p.relative_to(results)): p.read_bytes() for p in files_under(results)}

    first = run_once()
    second = run_once()
    assert sorted(first) == sorted(second)
    assert {name.rsplit("/", 1)[1] for name in first} >= {"posterior.nc", "diagnostics.csv"}
    changed = [name for name in first if first[name] != second[name]]
    assert changed == []
    assert len(files_under(cleaned / "timings")) == len(models)


def test_posterior_on_disk_supports_loo_and_the_log_prints_the_settings_used(cleaned):
    """posterior.nc carries the pointwise log-likelihood (float32, one value per draw and
    row): ``az.loo`` runs on the file loaded from disk, for a lambda model (quadrature) and a
    varying-slopes model (qmc). The stage log prints the settings each model was fitted with
    (``main_effects`` True for the variant) and no warning."""
    import arviz as az
    import numpy as np

    done = stage(cleaned, "fit.py", "tomz_weeks", "corrected", "m2_main_effects", "a1")
    assert done.returncode == 0, done.stderr
    for model in ("m2_main_effects", "a1"):
        idata = az.from_netcdf(
            cleaned / "results" / "tomz_weeks" / f"{model}_corrected" / "posterior.nc"
        )
        (ll,) = idata.log_likelihood.data_vars.values()
        post = idata.posterior
        assert ll.dtype == np.float32
        assert ll.shape == (post.sizes["chain"], post.sizes["draw"], 1200)
        loo = az.loo(idata, pointwise=True)
        assert np.isfinite(loo.elpd_loo) and (loo.pareto_k.values < 0.7).mean() > 0.99, model
    settings = [line for line in done.stdout.splitlines() if "settings" in line]
    assert len(settings) == 2 and "'main_effects': True" in settings[0], settings
    # A1 (quadrature engine): only what its engine reads, not the NUTS or qmc settings
    assert "'engine': 'quadrature'" in settings[1], settings
    assert "qmc_points_log2" not in settings[1] and "target_accept" not in settings[1]
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stderr


def test_fit_stage_fails_the_gate_and_leaves_nothing(cleaned):
    _with_params(cleaned, models__gate__min_ess_bulk=1e9)
    done = stage(cleaned, "fit.py", "tomz_weeks", "published", "m2")
    assert done.returncode == 1
    assert "bulk ESS" in done.stderr and "models.m2" in done.stderr  # which, and what to change
    assert not (cleaned / "results" / "tomz_weeks" / "m2_published").exists()


def test_fit_stage_refuses_a_coding_not_in_params(cleaned):
    _with_params(cleaned, models__codings=["published"])
    done = stage(cleaned, "fit.py", "tomz_weeks", "corrected", "m1_ols")
    assert done.returncode == 1 and "models.codings" in done.stderr
    assert not (cleaned / "results").exists() or not files_under(cleaned / "results")
