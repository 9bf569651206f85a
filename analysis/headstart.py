"""Fit the simulation stages' replicates ahead of time, on a core the pipeline leaves idle
(not a stage).

Usage::

    python analysis/headstart.py          # make repro starts it beside dvc repro
    python analysis/headstart.py --stop   # stop one that still runs (make repro, at the end)

Until the stage ``simulate`` starts, ``dvc repro`` runs stages that use one core: the
install, acquire, clean and the four fit stages (about 70 s of a fresh clone's rebuild). The
simulation stages use both and are resumable: ``hetfx.paper.simulation.run_simulation``
keeps each finished replicate in the stage's work directory and reads it back instead of
fitting it again. ``make repro`` therefore starts this script in the background at the lowest
priority (``nice -n 19``: it gets what the stages leave), and it makes the simulation stages'
own calls of ``run_simulation`` (their ``planned_run``), one replicate at a time, into their
work directories: first the stage ``simulate``'s, then ``simulate_sensitivity``'s. Each
simulation stage stops it when it starts (``_stage.stop_headstart``) and fits only the
replicates left. The same code and settings fit the same replicates, so the stages' outputs
and ``dvc.lock`` are the same bytes as without it; files are renamed into place whole, so a
stop at any point leaves only finished ones.

It works only for a stage whose outputs are missing (a fresh clone, or after ``dvc`` removed
them), and never on a work directory that holds another run's replicates (the stage decides
what to do with those): a rebuild that changes neither stage costs it an import and a look.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from _stage import HEADSTART_PID, load_params, stop_headstart  # noqa: E402


def runs(params) -> list[dict]:
    """The stages' calls of ``run_simulation`` (without their workers' settings) for the
    stages whose outputs are missing, in the order in which ``dvc repro`` runs them."""
    import simulate
    import simulate_sensitivity

    planned = []
    if params.simulation is None:
        return planned
    first = simulate.planned_run(params.simulation)
    if not all(Path(p).exists() for p in simulate.outputs()):
        planned.append(first)
    if not all(Path(p).exists() for p in simulate_sensitivity.outputs()):
        planned += simulate_sensitivity.headstart_runs(params, first["n_replicates"])
    return planned


def main() -> None:
    from hetfx.paper import simulation as S

    HEADSTART_PID.write_text(f"{os.getpid()}\n")
    try:
        for kwargs in runs(load_params()):
            try:
                S.run_simulation(
                    **kwargs, n_jobs=1, backend="sequential", progress=False, on_mismatch="raise"
                )
            except ValueError:  # another run's replicates: left to the stage
                continue
    finally:
        HEADSTART_PID.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--stop"]:
        stop_headstart()
    else:
        main()
