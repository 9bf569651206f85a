"""What every stage script shares: parameters, timing, and clean failure messages.

Run times are kept out of the committed artifacts (a rebuild on the same machine must change no
committed byte): :func:`split_timings` writes them to :data:`TIMINGS`, a git-ignored folder that
is no DVC output (so ``dvc.lock`` does not hash it either).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

# arviz's once-a-day notice of its coming 1.0 refactor (a FutureWarning at import) is nothing a
# reader of a stage log can act on; other FutureWarnings still show
warnings.filterwarnings(
    "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
)

from hetfx.paper.params import Params, validate  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

#: Where the stages write run times (``timings/<name>.csv``): git-ignored, no DVC output.
TIMINGS = Path("timings")
#: Significant digits of the Monte Carlo tables (simulation replicates, robustness refits):
#: their last digits are far below their Monte Carlo error.
MONTE_CARLO_DIGITS = 6


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml`` (relative to the working directory)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stages from the project root")
    with open(path) as handle:
        return validate(yaml.safe_load(handle), origin=str(path))


def log(stage: str, message: str) -> None:
    for line in message.splitlines():
        print(f"[{stage}] {line}", flush=True)


@contextmanager
def timed(stage: str):
    # CPU seconds of this process so far: starting Python and importing the libraries
    log(stage, f"start-up: {time.process_time():.2f} s CPU")
    start, cpu = time.perf_counter(), time.process_time()
    yield
    log(
        stage,
        f"done in {time.perf_counter() - start:.2f} s "
        f"({time.process_time() - cpu:.2f} s CPU in this process)",
    )


def run(stage: str, main: Callable[[], None], expected: tuple[type[BaseException], ...]) -> None:
    """Run ``main``; print an expected failure as a message (no traceback) and exit 1. After
    a success the process ends at once (:func:`exit_now`)."""
    try:
        with timed(stage):
            main()
    except expected as exc:
        print(f"[{stage}] FAILED: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    exit_now()


def exit_now() -> None:
    """End a stage that succeeded without the interpreter's teardown.

    Python's exit frees every module and object one by one: after a fit stage (2,300 modules,
    300,000 objects) that took 1.6 s of wall time (0.07 s without it, measured on the shared
    2-core machine), for nothing a stage needs, as every output is written and closed by
    then. The exit handlers still run (``atexit``: logging, temporary folders, weakref
    finalizers) and the standard streams are flushed; forked children (``Background``) end
    the same way already. Only where this process is alone, without another thread
    (a joblib executor's, which the normal exit joins), is the teardown skipped.
    """
    if threading.active_count() != 1:
        return
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def write_csv(frame: pd.DataFrame, path: str | Path, digits: int | None = None) -> None:
    """Write ``frame`` (without its index) to ``path``: the one place where a stage sets the
    precision of a CSV it writes.

    By default every float is written at the resolution of the file's ``make verify``
    tolerance (:func:`hetfx.paper.precision.format_number`): 10 significant digits and 9
    decimals for the deterministic results (tolerance 1e-9), 7 and 6 for A1 and
    Bush-Prather (1e-6). Another CPU moves these numbers by less than a thousandth of that
    (measured under every emulation of tests/test_cross_cpu.py at once: 0 of 16,299 numbers
    changed, 0.08 expected), so a rebuild there rewrites no committed byte in the usual
    case. ``digits`` writes ``%.<digits>g`` instead (:data:`MONTE_CARLO_DIGITS`).
    """
    from hetfx.paper.precision import format_number

    key = Path(path).as_posix()
    fmt = (lambda v: format_number(v, key)) if digits is None else f"%.{digits}g"
    frame.to_csv(path, index=False, float_format=fmt)


def split_timings(frame: pd.DataFrame, name: str, key: str = "fit") -> pd.DataFrame:
    """Write the run-time columns (``*_seconds``) of ``frame`` to ``timings/<name>.csv``
    (with ``key``, when ``frame`` has it) and return ``frame`` without them: the part that is
    committed, the same bytes on every rerun."""
    seconds = [c for c in frame.columns if str(c).endswith("_seconds")]
    path = TIMINGS / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(frame[[c for c in [key] if c in frame] + seconds], path)
    return frame.drop(columns=seconds)


class Background:
    """Jobs run in forked child processes while the stage goes on (at most ``limit`` at a
    time; 0 runs every job at once, in this process): the fit stages write each model's
    ``posterior.nc`` (its log-likelihood and the compressed netCDF, about a second) on the
    second core while the next model is fitted.

    A child runs the same code on the same numbers, so it writes the same bytes. Where
    forking is not safe (not Linux, or another thread is running) a job runs at once, in
    this process. :meth:`close` waits for every job; a job that failed has its ``folder``
    removed (no partial output survives) and fails the stage.
    """

    def __init__(self, limit: int = 2) -> None:
        self.limit = limit
        self.running: list[tuple[Path, object]] = []

    @staticmethod
    def can_fork() -> bool:
        import multiprocessing

        return (
            sys.platform.startswith("linux")
            and "fork" in multiprocessing.get_all_start_methods()
            and threading.active_count() == 1
        )

    def submit(self, folder: Path | None, job: Callable[[], None]) -> object | None:
        """Run ``job`` (which writes into ``folder``, if any) in a child process, or here and
        now; returns a handle for :meth:`wait` (None when the job ran here)."""
        if self.limit < 1 or not self.can_fork():
            job()
            return None
        import multiprocessing

        while len(self.running) >= self.limit:
            self._wait(0)
        sys.stdout.flush()
        sys.stderr.flush()
        child = multiprocessing.get_context("fork").Process(target=job, daemon=False)
        child.start()
        self.running.append((folder and Path(folder), child))
        return child

    def wait(self, handle: object | None) -> None:
        """Wait for the job of ``handle`` (:meth:`submit`'s); raise if it failed."""
        for i, (_, child) in enumerate(self.running):
            if child is handle:
                self._wait(i)
                return

    def _wait(self, i: int) -> None:
        folder, child = self.running.pop(i)
        child.join()
        if child.exitcode != 0:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(
                f"a child process {f'writing {folder}/ ' if folder else ''}failed (exit code "
                f"{child.exitcode}); its traceback is above"
            )

    def close(self) -> None:
        """Wait for every job (the first failure is raised after all have ended)."""
        error = None
        while self.running:
            try:
                self._wait(0)
            except RuntimeError as exc:
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> Background:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the stage failed already: wait for the jobs, report that failure
            self.close()
        except RuntimeError:
            pass
