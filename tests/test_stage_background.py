"""analysis/_stage.py's Background: the fit stages write posterior.nc in child processes."""

import importlib.util
import os
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


@pytest.mark.skipif(not Background.can_fork(), reason="forking is not safe here")
def test_jobs_run_in_child_processes_at_most_limit_at_a_time(tmp_path):
    out = folders(tmp_path, 5)
    with Background(limit=2) as background:
        for folder in out:
            background.submit(folder, writer(folder))
            assert len(background.running) <= 2
    pids = {int((folder / "pid").read_text()) for folder in out}
    assert len(pids) == 5 and os.getpid() not in pids


@pytest.mark.skipif(not Background.can_fork(), reason="forking is not safe here")
def test_a_failed_job_removes_its_folder_and_fails_after_the_others(tmp_path):
    out = folders(tmp_path, 3)
    background = Background(limit=3)
    for i, folder in enumerate(out):
        background.submit(folder, writer(folder, fail=i == 1))
    with pytest.raises(RuntimeError, match=f"writing {out[1]}/ failed"):
        background.close()
    assert not out[1].exists()  # no partial output survives
    assert (out[0] / "pid").exists() and (out[2] / "pid").exists()
    assert not background.running


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
