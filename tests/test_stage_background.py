"""analysis/_stage.py's Background: the fit stages write posterior.nc in child processes."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("_stage", ROOT / "analysis" / "_stage.py")
_stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_stage)
Background = _stage.Background


def writer(folder: Path, fail: bool = False):
    def job():
        if fail:
            raise OSError("disk full")
        (folder / "pid").write_text(str(os.getpid()))

    return job


def folders(tmp_path: Path, n: int) -> list[Path]:
    out = [tmp_path / f"m{i}" for i in range(n)]
    for folder in out:
        folder.mkdir()
    return out


#: The two scenarios in a fresh interpreter: a test process may hold other threads (a
#: joblib executor, a progress bar's monitor) left by earlier tests, where the stage rightly
#: refuses to fork.
FRESH = """
import importlib.util, json, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("_stage", sys.argv[1])
_stage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_stage)
Background, tmp = _stage.Background, Path(sys.argv[2])
assert Background.can_fork()

def writer(folder, fail=False):
    def job():
        if fail:
            raise OSError("disk full")
        (folder / "pid").write_text(str(os.getpid()))
    return job

out = [tmp / f"a{i}" for i in range(5)]
most = 0
with Background(limit=2) as background:
    for folder in out:
        folder.mkdir()
        background.submit(folder, writer(folder))
        most = max(most, len(background.running))
pids = {int((folder / "pid").read_text()) for folder in out}
failed = [tmp / f"b{i}" for i in range(3)]
background = Background(limit=3)
for i, folder in enumerate(failed):
    folder.mkdir()
    background.submit(folder, writer(folder, fail=i == 1))
try:
    background.close()
    error = ""
except RuntimeError as exc:
    error = str(exc)
print(json.dumps({"pids": sorted(pids), "me": os.getpid(), "most": most, "error": error,
                  "left": [f.exists() and (f / "pid").exists() for f in failed],
                  "running": len(background.running)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stage forks on Linux only")
def test_jobs_run_in_child_processes_and_a_failed_job_removes_its_folder(tmp_path):
    """At most ``limit`` children at a time, each job in its own; a failed job's folder is
    removed and the failure raised after the others have ended."""
    run = subprocess.run(
        [sys.executable, "-c", FRESH, str(ROOT / "analysis" / "_stage.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(res["pids"]) == 5 and res["me"] not in res["pids"] and res["most"] <= 2
    assert f"writing {tmp_path / 'b1'}/ failed" in res["error"]
    assert res["left"] == [True, False, True]  # no partial output survives
    assert res["running"] == 0


def test_jobs_run_here_where_forking_is_not_safe(tmp_path):
    """Another thread running (or limit 0): each job runs at once, in this process, and its
    error is raised as it is."""
    out = folders(tmp_path, 2)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not Background.can_fork()
        background = Background()
        background.submit(out[0], writer(out[0]))
        assert not background.running
        assert int((out[0] / "pid").read_text()) == os.getpid()
    finally:
        stop.set()
        other.join()
    with pytest.raises(OSError, match="disk full"):
        Background(limit=0).submit(out[1], writer(out[1], fail=True))
