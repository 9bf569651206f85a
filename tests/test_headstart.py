"""analysis/headstart.py: the simulation stages' replicates fitted ahead of time by make repro,
and the stop every simulation stage makes at its start (analysis/_stage.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "analysis"))

import _stage  # noqa: E402
import headstart  # noqa: E402

SLEEPER = ["-c", "import time; time.sleep(60)"]


def _spawn(cwd: Path, *args: str) -> subprocess.Popen:
    """A sleeping Python with ``args`` on its command line, once it runs (after the fork and
    before the exec, /proc shows the parent's command line)."""
    proc = subprocess.Popen([sys.executable, *SLEEPER, *args, "started"], cwd=cwd)
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 20
    while b"started" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def _work_files(root: Path, pid: int) -> dict[str, Path]:
    work = root / "results" / "simulation" / "work" / "design1"
    work.mkdir(parents=True)
    files = {
        "finished": work / "replicate_00001.parquet",
        "partial": work / f".replicate_00002.parquet.{pid}.tmp",
        "manifest": work.parent / f".manifest.json.{pid}.tmp",
        "other": work / f".replicate_00003.parquet.{pid + 1}.tmp",
    }
    for path in files.values():
        path.write_text("x")
    return files


def test_stop_ends_the_head_start_and_removes_its_partial_files(tmp_path, monkeypatch, capsys):
    proc = _spawn(tmp_path, "headstart.py")
    try:
        (tmp_path / ".headstart.pid").write_text(f"{proc.pid}\n")
        files = _work_files(tmp_path, proc.pid)
        monkeypatch.chdir(tmp_path)
        _stage.stop_headstart("demo", wait=20)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
    assert not (tmp_path / ".headstart.pid").exists()
    assert files["finished"].exists() and files["other"].exists()  # not its own: kept
    assert not files["partial"].exists() and not files["manifest"].exists()
    assert f"stopped the head start (process {proc.pid})" in capsys.readouterr().out


def test_stop_leaves_a_process_that_is_not_the_head_start(tmp_path, monkeypatch):
    """A stale pid file whose number another process now has (or a head start of another
    folder) kills nothing."""
    other = _spawn(tmp_path)
    elsewhere = tmp_path / "other_clone"
    elsewhere.mkdir()
    foreign = _spawn(elsewhere, "headstart.py")
    try:
        monkeypatch.chdir(tmp_path)
        for proc in (other, foreign):
            Path(".headstart.pid").write_text(f"{proc.pid}\n")
            _stage.stop_headstart("demo", wait=1)
            assert proc.poll() is None
            assert not Path(".headstart.pid").exists()
    finally:
        other.kill()
        foreign.kill()
    _stage.stop_headstart("demo")  # no pid file: nothing to do


def test_plan_is_the_stages_own_calls_for_missing_outputs(tmp_path, monkeypatch):
    params = _stage.load_params(ROOT / "params.yaml")
    monkeypatch.chdir(tmp_path)  # no outputs here: both stages will run
    runs = headstart.runs(params)
    import simulate
    import simulate_sensitivity

    assert runs[0] == simulate.planned_run(params.simulation)
    sens = params.simulation_sensitivity
    estimators = {m: simulate_sensitivity.ESTIMATORS[m] for m in sens.models}
    assert runs[1] == simulate_sensitivity.planned_run(params, "shifted", estimators)
    # the published DGP without what the stage reads from the stage simulate's estimates
    here = {m: f for m, f in estimators.items() if m not in simulate_sensitivity.REUSED}
    assert runs[2] == simulate_sensitivity.planned_run(params, "published", here)
    assert runs[2]["baseline_sd"] == 0.0 and runs[1]["baseline_sd"] == sens.baseline_sd
    assert len(runs) == 3
    # with every output present neither stage is fitted ahead
    for path in [*simulate.outputs(), *simulate_sensitivity.outputs()]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("x")
    assert headstart.runs(params) == []


def test_the_makefile_starts_it_at_the_lowest_priority_and_stops_it():
    text = (ROOT / "Makefile").read_text()
    assert "nice -n 19 $(VENV_BIN)/python analysis/headstart.py" in text
    assert f"echo $$! > {_stage.HEADSTART_PID}" in text  # before dvc starts any stage
    assert "analysis/headstart.py --stop" in text
