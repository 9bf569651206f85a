"""What every stage script shares: parameters, timing, and clean failure messages.

Run times are kept out of the committed artifacts (a rebuild on the same machine must change no
committed byte): :func:`split_timings` writes them to :data:`TIMINGS`, a git-ignored folder that
is no DVC output (so ``dvc.lock`` does not hash it either).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from hetfx.paper.params import Params, validate

if TYPE_CHECKING:
    import pandas as pd

#: Where the stages write run times (``timings/<name>.csv``): git-ignored, no DVC output.
TIMINGS = Path("timings")


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
    """Run ``main``; print an expected failure as a message (no traceback) and exit 1."""
    try:
        with timed(stage):
            main()
    except expected as exc:
        print(f"[{stage}] FAILED: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def split_timings(frame: pd.DataFrame, name: str, key: str = "fit") -> pd.DataFrame:
    """Write the run-time columns (``*_seconds``) of ``frame`` to ``timings/<name>.csv``
    (with ``key``, when ``frame`` has it) and return ``frame`` without them: the part that is
    committed, the same bytes on every rerun."""
    seconds = [c for c in frame.columns if str(c).endswith("_seconds")]
    path = TIMINGS / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[[c for c in [key] if c in frame] + seconds].to_csv(path, index=False)
    return frame.drop(columns=seconds)
