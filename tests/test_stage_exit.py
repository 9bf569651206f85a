"""analysis/_stage.py's run: a stage that succeeded ends without the interpreter's teardown,
its exit handlers run and its output complete; a failure still exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

STAGE = """
import atexit, sys, threading, time
sys.path.insert(0, {analysis!r})
from _stage import run

mode, marker = sys.argv[1], sys.argv[2]

class Teardown:
    def __del__(self):  # runs in the interpreter's teardown only
        print("teardown", flush=True)

KEEP = Teardown()
atexit.register(lambda: open(marker, "w").write("exit handler ran"))

def main():
    print("x" * 100_000, end="")  # buffered: flushed before the process ends
    print("|end of output")
    if mode == "thread":
        threading.Thread(target=time.sleep, args=(0.2,)).start()
    if mode == "fail":
        raise ValueError("bad input")

run("demo", main, (ValueError,))
"""


def stage(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "stage.py"
    script.write_text(STAGE.format(analysis=str(ROOT / "analysis")), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path / "marker")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_a_successful_stage_skips_the_teardown_but_not_its_exit_handlers(tmp_path):
    out = stage(tmp_path, "ok")
    assert out.returncode == 0, out.stderr
    assert "|end of output" in out.stdout and "[demo] done in" in out.stdout
    assert "teardown" not in out.stdout  # the teardown was skipped
    assert (tmp_path / "marker").read_text() == "exit handler ran"


def test_with_another_thread_or_a_failure_the_stage_exits_as_before(tmp_path):
    out = stage(tmp_path, "thread")
    assert out.returncode == 0 and "teardown" in out.stdout
    assert (tmp_path / "marker").read_text() == "exit handler ran"
    (tmp_path / "marker").unlink()
    out = stage(tmp_path, "fail")
    assert out.returncode == 1 and "[demo] FAILED: bad input" in out.stderr
    assert (tmp_path / "marker").read_text() == "exit handler ran"
