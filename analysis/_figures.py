"""What the figure-drawing stages share: writing several figures at once."""

from __future__ import annotations

import multiprocessing
import os

from hetfx.paper import figures

_FIGURES: list = []


def _save_one(index: int) -> str:
    plot, stem, width, height = _FIGURES[index]
    figures.save(plot, stem, width=width, height=height)
    return str(stem)


def save_figures(items: list[tuple], jobs: int | None = None) -> list[str]:
    """Write figures ``(plot, stem, width, height)`` with :func:`hetfx.plots.save`, in
    ``jobs`` forked processes (default: one per core, at most one per figure).

    Drawing dominates the figure stages and uses one core; the files are the same as when
    written one after another (each is drawn by the same code from the same plot object).
    """
    jobs = min(jobs or os.cpu_count() or 1, len(items))
    _FIGURES[:] = items
    try:
        if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return [_save_one(i) for i in range(len(items))]
        # fork: the children inherit the plot objects; only indices cross the pipe
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return pool.map(_save_one, range(len(items)), chunksize=1)
    finally:
        _FIGURES.clear()
