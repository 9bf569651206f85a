"""analysis/timing.py: the per-stage table read from a time-stamped `dvc repro` log."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("timing", ROOT / "analysis" / "timing.py")
timing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timing)

LOG = """\
     0.500 Running stage 'acquire':
     0.510 > python analysis/acquire.py
     1.400 [acquire] start-up: 0.40 s CPU
     1.500 [acquire] done in 0.02 s (0.02 s CPU in this process)
     2.000 Updating lock file 'dvc.lock'
     2.100 Running stage 'render':
     3.000 render: start-up: 0.10 s CPU
     9.000 render: done in 5.5 s
     9.600 <exit 0>
"""


def test_stage_table_from_a_log(tmp_path):
    path = tmp_path / "timing.log"
    path.write_text(LOG, encoding="utf-8")
    rows = timing.stage_table(timing.read_log(path))
    assert [r["stage"] for r in rows] == ["acquire", "render"]
    assert abs(rows[0]["wall_s"] - 1.6) < 1e-9 and abs(rows[1]["wall_s"] - 7.5) < 1e-9
    assert (rows[0]["work_s"], rows[0]["import_cpu_s"]) == (0.02, 0.40)
    assert (rows[1]["work_s"], rows[1]["import_cpu_s"]) == (5.5, 0.10)
    table = timing.format_table(rows, 9.6)
    assert "sum of stages" in table and "9.10" in table and "0.50" in table


def test_run_finds_the_stages_python_in_the_given_environment(tmp_path):
    """A forced rebuild started as `.venv/bin/python analysis/timing.py` (no activated
    environment) runs its stages' `python` from that environment: env_bin goes first on
    PATH (before this fix the stages ran the system Python and failed to import hetfx)."""
    import sys

    lines = timing.run(
        [sys.executable, "-c", "import os; print(os.environ['PATH'].split(os.pathsep)[0])"],
        tmp_path / "t.log",
        env_bin=tmp_path / "bin",
    )
    assert lines[0][1] == str(tmp_path / "bin")
    assert lines[-1][1] == "<exit 0>"
